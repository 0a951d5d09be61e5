"""Ensembles of retrieval runs: the mean of log-probabilities, against a NumPy reference."""

import json

import numpy as np
import pytest

from jaxrec.cli import main
from jaxrec.data import leave_one_out, load_dataset
from jaxrec.ensemble import Ensemble
from jaxrec.errors import UserError
from jaxrec.inference import Recommender
from jaxrec.metrics import evaluate
from jaxrec.models import build_model
from jaxrec.train import Config

from test_rankers import hist


def _rec(name, data, seed, **model_args):
    model = build_model(name, data.num_items, seed, catalog=data.catalog, **model_args)
    return Recommender.from_model(model, data.catalog, Config(model=name), step=0)


def _log_softmax(s):
    s = s[:, 1:].astype(np.float64)
    s = s - s.max(1, keepdims=True)
    return s - np.log(np.exp(s).sum(1, keepdims=True))


def test_ensemble_scores_are_the_mean_of_the_members_log_probabilities():
    data = load_dataset("synthetic:tiny")
    a, b = _rec("sasrec/small", data, 0), _rec("sasrec/small", data, 1, max_len=20)  # another window
    ens = Ensemble([a, b])
    h = hist(np.random.default_rng(3), b=6, l=50)
    got = np.asarray(ens.score_all(h))
    want = (_log_softmax(np.asarray(a.score_all(h))) + _log_softmax(np.asarray(b.score_all(h[:, -20:])))) / 2
    assert got.shape == (6, data.num_items + 1) and np.all(np.isneginf(got[:, 0]))
    np.testing.assert_allclose(got[:, 1:], want, rtol=1e-4, atol=1e-4)
    # top-k: the best unseen items by that score; recommend speaks external ids
    vals, items = ens.top_k(h, 5)
    ref = want.copy()
    for i, row in enumerate(h):
        ref[i, row[row > 0] - 1] = -np.inf
    np.testing.assert_array_equal(np.asarray(items), np.argsort(-ref, axis=1, kind="stable")[:, :5] + 1)
    rec = ens.recommend([data.catalog.ids[i] for i in h[0][h[0] > 0]], k=5)
    assert rec.items == data.catalog.external(np.asarray(items)[0])


def test_members_that_read_event_times_get_them():
    """A time-aware member (HSTU's relative time bias) gets its own window's times; one that
    reads none is scored without; a time-aware member with itself evaluates as it alone."""
    data = load_dataset("synthetic:tiny")
    t = _rec("hstu/small", data, 0, time_buckets=32)
    plain = _rec("sasrec/small", data, 1, max_len=20)
    ens = Ensemble([t, plain])
    assert t.uses_time and ens.uses_time
    rng = np.random.default_rng(5)
    h = hist(rng, b=4, l=50)
    times = np.cumsum(rng.integers(1, 10 ** 5, size=(4, 51)), axis=1)  # (B, L + 1) rising
    got = np.asarray(ens.score_all(h, times))
    want = (_log_softmax(np.asarray(t.score_all(h, times))) + _log_softmax(np.asarray(plain.score_all(h[:, -20:])))) / 2
    np.testing.assert_allclose(got[:, 1:], want, rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="reads event times"):
        ens.score_all(h)
    split = leave_one_out(data)
    alone = evaluate(t, split, "test", beyond_k=None).metrics
    twice = evaluate(Ensemble([t, t]), split, "test", beyond_k=None).metrics
    assert twice["NDCG@10"] == pytest.approx(alone["NDCG@10"], abs=1e-6)


def test_an_ensemble_of_one_run_twice_ranks_as_the_run():
    """log-softmax keeps each member's order, so a run with itself evaluates exactly as the run."""
    data = load_dataset("synthetic:tiny")
    a = _rec("sasrec/small", data, 0)
    split = leave_one_out(data)
    alone = evaluate(a, split, "test", beyond_k=None).metrics
    twice = evaluate(Ensemble([a, a]), split, "test", beyond_k=None).metrics
    for k in ("NDCG@10", "HR@10", "HR@50"):
        assert twice[k] == pytest.approx(alone[k], abs=1e-6)


def test_what_cannot_be_an_ensemble_is_a_clear_error():
    data = load_dataset("synthetic:tiny")
    other = load_dataset("synthetic:users=50,items=40,mean_len=8,max_len=20")
    a = _rec("sasrec/small", data, 0)
    with pytest.raises(UserError, match="at least two"):
        Ensemble([a])
    with pytest.raises(UserError, match="another item catalog"):
        Ensemble([a, _rec("sasrec/small", other, 0)])
    with pytest.raises(UserError, match="retrieval models"):
        Ensemble([a, _rec("target_attention/small", data, 1)])
    with pytest.raises(UserError, match="diversity"):
        Ensemble([a, a]).recommend([data.catalog.ids[1]], k=3, diversity=0.5)


def test_cli_eval_and_recommend_an_ensemble(tiny_run, capsys):
    assert main(["eval", "--ensemble", str(tiny_run), str(tiny_run), "--json"]) == 0
    ens = json.loads(capsys.readouterr().out)
    assert main(["eval", "--checkpoint", str(tiny_run), "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert ens["model"].startswith("ensemble(") and ens["metrics"]["NDCG@10"] == pytest.approx(
        alone["metrics"]["NDCG@10"], abs=1e-6)
    assert main(["recommend", "--ensemble", str(tiny_run), str(tiny_run), "--history", "1,2,3", "-k", "4",
                 "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 4
    assert main(["eval", "--ensemble", str(tiny_run), str(tiny_run), "--checkpoint", str(tiny_run)]) == 2
    assert "one of them" in capsys.readouterr().err
