import numpy as np
import pytest

from jaxrec.data import Interactions, build_sequences, leave_one_out, load_dataset
from jaxrec.data.batching import NegativeSampler, TrainBatches, prefetch


def test_batches_fixed_shape_aligned_and_weighted():
    d = build_sequences(Interactions(np.repeat([1, 2, 3], [6, 4, 9]), np.arange(1, 20)))
    split = leave_one_out(d)
    tb = TrainBatches(split, max_len=5, batch_size=2, num_negatives=3, seed=0)
    batches = list(tb.epoch(0))
    assert len(batches) == 2 == tb.batches_per_epoch
    for b in batches:
        assert b["inputs"].shape == b["targets"].shape == b["weights"].shape == (2, 5)
        assert b["negatives"].shape == (2, 5, 3)
        assert not (b["negatives"] == b["targets"][..., None]).any()
    rows = np.concatenate([b["inputs"] for b in batches])
    tg = np.concatenate([b["targets"] for b in batches])
    w = np.concatenate([b["weights"] for b in batches])
    # user 1 trains on 1..4 (6 items minus 2 held out): inputs 1 2 3, targets 2 3 4
    i = [k for k in range(len(rows)) if 1 in rows[k]][0]
    assert rows[i].tolist() == [0, 0, 1, 2, 3] and tg[i].tolist() == [0, 0, 2, 3, 4]
    assert w[i].tolist() == [0, 0, 1, 1, 1]
    # user 3 trains on 11..17 (7 items): the most recent 5 inputs
    j = [k for k in range(len(rows)) if 16 in rows[k]][0]
    assert rows[j].tolist() == [12, 13, 14, 15, 16] and tg[j].tolist() == [13, 14, 15, 16, 17]
    assert w.sum() == 3 + 1 + 5 + 0  # padded row has weight 0
    assert tb.targets_per_epoch == 3 + 1 + 5


def test_epoch_order_is_deterministic_and_resumable():
    split = leave_one_out(load_dataset("synthetic:tiny"))
    tb = TrainBatches(split, max_len=8, batch_size=16, num_negatives=2, seed=5)
    full = list(tb.epoch(3))
    resumed = list(tb.epoch(3, start_batch=4))
    for a, b in zip(full[4:], resumed):
        for k in a:
            assert np.array_equal(a[k], b[k])
    other = next(tb.epoch(4))
    assert not np.array_equal(full[0]["inputs"], other["inputs"])


def test_popularity_sampler_follows_counts():
    counts = np.array([0, 100, 1, 0, 899])
    s = NegativeSampler(4, "popularity", counts)
    x = s.sample(np.random.default_rng(0), np.full(20000, 2), 1).ravel()
    assert set(np.unique(x).tolist()) <= {1, 4}  # never the positive 2, never count-0 item 3
    assert abs((x == 4).mean() - 899 / 999) < 0.02


def test_prefetch_preserves_order_and_errors():
    assert list(prefetch(iter(range(10)))) == list(range(10))

    def bad():
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(prefetch(bad()))
