"""HSTU's relative time bias: buckets against the closed form, what the times may and may not
change, and times flowing through batches, training, evaluation, inference."""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.data import load_dataset
from jaxrec.data.batching import TrainBatches
from jaxrec.data.splits import leave_one_out, pad_histories, pad_times, query_times
from jaxrec.errors import DataError, UserError
from jaxrec.models import build_model
from jaxrec.models.hstu import time_buckets


def test_time_buckets_closed_form():
    dts = [0, 1, 2, 3, 10, 100, 3600, 86400, 10**8, -5]
    got = []
    for dt in dts:
        t = jnp.array([[0, dt]], jnp.int32)  # one key at 0, query time dt
        got.append(int(time_buckets(t, 128)[0, 0, 0]))
    want = [min(128, int(math.floor(math.log(max(abs(d), 1)) / 0.301))) for d in dts]
    assert got == want
    assert int(time_buckets(jnp.array([[0, 10**9]], jnp.int32), 16)[0, 0, 0]) == 16  # clipped


def _time_model(seed=0):
    m = build_model("hstu/small", 60, seed=seed, time_buckets=32)
    for layer in m.layers:  # a visible bias, not the small initial one
        layer.rab_time.value = 3.0 * jnp.sin(jnp.arange(layer.rab_time.value.size, dtype=jnp.float32)
                                             ).reshape(layer.rab_time.value.shape)
    return m


def _batch(rng, b=3, l=20):
    h = np.zeros((b, l), np.int32)
    t = np.zeros((b, l + 1), np.int32)
    for i in range(b):
        k = rng.integers(8, l)
        h[i, -k:] = rng.integers(1, 61, k)
        t[i, -(k + 1):] = np.cumsum(rng.integers(1, 10**5, k + 1))
    return h, t


def test_times_change_outputs_only_as_they_should():
    m = _time_model()
    rng = np.random.default_rng(0)
    h, t = _batch(rng)
    base = np.asarray(m.hidden(h, None, t))
    # only differences matter: shifting every time leaves everything unchanged
    np.testing.assert_allclose(base, np.asarray(m.hidden(h, None, t + 12345)), atol=1e-5)
    # a later event's time cannot reach earlier positions: times[:, j] is the query time of
    # position j - 1 and a key of positions >= j
    j = 15
    t2 = t.copy()
    t2[:, j:] += 10**6
    out = np.asarray(m.hidden(h, None, t2))
    np.testing.assert_allclose(base[:, : j - 1], out[:, : j - 1], atol=1e-5)
    assert not np.allclose(base[:, j - 1:], out[:, j - 1:])
    # padding times do not matter
    pad = np.concatenate([(h == 0), np.zeros((len(h), 1), bool)], axis=1)
    t3 = np.where(pad, 999, t)
    np.testing.assert_allclose(base, np.asarray(m.hidden(h, None, t3)), atol=1e-5)


def test_time_models_require_times_and_others_ignore_them():
    rng = np.random.default_rng(1)
    h, t = _batch(rng)
    with pytest.raises(UserError, match="event times"):
        _time_model().encode(h)
    sas = build_model("sasrec/small", 60)
    np.testing.assert_allclose(np.asarray(sas.encode(h)), np.asarray(sas.encode(h, t)))
    with pytest.raises(UserError, match="model_args.time_buckets: not a setting of sasrec"):
        build_model("sasrec/small", 60, time_buckets=8)


def test_pad_times_and_query_times_by_hand():
    items = np.array([5, 6, 7, 8, 9], np.int32)
    times = np.array([100, 160, 200, 260, 1000], np.int64)
    start, end = np.array([0, 3]), np.array([4, 5])  # slices [5,6,7,8] and [8,9]
    np.testing.assert_array_equal(pad_histories(items, start, end, 3), [[6, 7, 8], [0, 8, 9]])
    np.testing.assert_array_equal(pad_times(times, start, end, 3), [[-100, -60, 0], [0, -740, 0]])
    np.testing.assert_array_equal(pad_times(times, start, end, 3, query="last"),
                                  [[-100, -60, 0, 0], [0, -740, 0, 0]])
    np.testing.assert_array_equal(query_times([100, 160], now=400), [-60, 0, 240])
    np.testing.assert_array_equal(query_times([100, 160]), [-60, 0, 0])
    with pytest.raises(ValueError, match="decrease"):
        query_times([160, 100])
    with pytest.raises(ValueError, match="before the last event"):
        query_times([100, 160], now=150)
    with pytest.raises(DataError, match="has none"):
        pad_times(None, start, end, 3)


def test_train_batches_carry_target_aligned_times():
    data = load_dataset("synthetic:tiny")
    split = leave_one_out(data)
    tb = TrainBatches(split, max_len=8, batch_size=4, with_times=True)
    b = next(iter(tb.epoch(0)))
    assert b["times"].shape == (b["inputs"].shape[0], 9)
    real = b["inputs"] > 0
    # the query time of a real position is its target's time: never before the input's own
    assert (b["times"][:, 1:][real] >= b["times"][:, :-1][real]).all()
    no_times = dataclasses.replace(data, times=None, name="no-times")
    with pytest.raises(UserError, match="no timestamps"):
        TrainBatches(leave_one_out(no_times), max_len=8, batch_size=4, with_times=True)


def test_hstu_with_time_bias_trains_evaluates_and_recommends(tmp_path):
    from jaxrec.inference import Recommender
    from jaxrec.train import Config, train

    res = train(Config(model="hstu/small", data="synthetic:tiny", loss="ce", batch_size=32, epochs=2,
                            seed=0, model_args={"time_buckets": 32}), tmp_path / "run", progress=False)
    assert np.isfinite(res["metrics"]["NDCG@10"]) and res["metrics"]["NDCG@10"] > 0
    rec = Recommender.from_checkpoint(tmp_path / "run")
    assert rec.uses_time
    hist = ["1", "2", "3", "4"]
    with pytest.raises(UserError, match="event times"):
        rec.recommend(hist, k=5)
    with pytest.raises(UserError, match="one per history item"):
        rec.recommend(hist, k=5, times=[1, 2])
    a = rec.recommend(hist, k=5, times=[0, 60, 120, 180])
    b = rec.recommend(hist, k=5, times=[10**6, 10**6 + 60, 10**6 + 120, 10**6 + 180])
    assert a.items == b.items  # only differences matter
    c = rec.recommend(hist, k=5, times=[0, 60, 120, 180], now=180 + 10**7)
    assert len(c.items) == 5
