import numpy as np
import pytest

from jaxrec.data import generate, leave_one_out, load_dataset, parse_spec
from jaxrec.errors import DataError
from jaxrec.metrics import evaluate
from jaxrec.models import MostPopular


def test_deterministic_and_shaped():
    a = load_dataset("synthetic:tiny,seed=3")
    b = load_dataset("synthetic:tiny,seed=3")
    c = load_dataset("synthetic:tiny,seed=4")
    assert np.array_equal(a.items, b.items) and not np.array_equal(a.items, c.items)
    assert a.num_users == 200 and a.num_items == 100
    assert a.catalog.ids[1] == "1" and a.catalog.ids[-1] == "100"
    assert a.lengths.min() >= 5
    assert (np.diff(a.times)[np.diff(np.repeat(np.arange(a.num_users), a.lengths)) == 0] > 0).all()


def test_spec_errors():
    with pytest.raises(DataError, match="unknown synthetic option"):
        parse_spec("synthetic:colour=3")
    with pytest.raises(DataError, match="unknown synthetic size"):
        parse_spec("synthetic:huge")
    with pytest.raises(DataError, match="not a number"):
        parse_spec("synthetic:users=abc")


class Markov:
    """First-order Markov baseline: counts of (previous item -> next item) in training data."""

    max_len = 1

    def __init__(self, split):
        n = split.data.num_items
        self.t = np.zeros((n + 1, n + 1), np.float32)
        for u in range(split.data.num_users):
            s = split.data.items[split.train_start[u]:split.train_end[u]]
            np.add.at(self.t, (s[:-1], s[1:]), 1.0)
        self.t += 1e-3 * split.train_item_counts()[None, :]  # popularity breaks ties

    def score_all(self, history):
        return self.t[history[:, -1]]


def test_markov_beats_popularity():
    split = leave_one_out(generate(parse_spec("synthetic:small")))
    pop = evaluate(MostPopular.fit(split), split, "test").metrics["NDCG@10"]
    mk = evaluate(Markov(split), split, "test").metrics["NDCG@10"]
    assert mk > 1.5 * pop, (mk, pop)
