"""The scoring core against numpy references: masks, masked top-k, the compiled Scorer."""

import numpy as np
import pytest

from jaxrec.data import load_dataset
from jaxrec.errors import UserError
from jaxrec.inference import Recommender
from jaxrec.models import build_model
from jaxrec.scoring import MASKED, allowed_mask, host_allowed, masked_top_k
from jaxrec.train import Config


def _ref_allowed(n_cols, exclude=None, allow=None, deny=None):
    """One row by hand: padding never, allow-list only (if any), deny and exclude removed."""
    ok = np.ones(n_cols, bool) if allow is None else np.isin(np.arange(n_cols), allow)
    for lst in (deny, exclude):
        if lst is not None:
            ok[lst] = False
    ok[0] = False
    return ok


def test_device_and_host_masks_equal_the_reference():
    rng = np.random.default_rng(0)
    n_cols, b = 30, 6
    rows = [(None, None, rng.integers(1, 30, 5)), (rng.integers(1, 30, 8), None, None),
            (None, rng.integers(1, 30, 4), rng.integers(1, 30, 3)), (np.array([3, 4]), np.array([4]), None),
            (None, None, None)]
    got = host_allowed(n_cols, b, rows)
    for i, (allow, deny, excl) in enumerate(rows):
        np.testing.assert_array_equal(got[i], _ref_allowed(n_cols, excl, allow, deny))
    np.testing.assert_array_equal(got[len(rows):], _ref_allowed(n_cols)[None].repeat(b - len(rows), 0))
    exclude = np.zeros((b, 5), np.int32)  # index lists padded with 0
    exclude[0] = rows[0][2]
    dev = np.asarray(allowed_mask(n_cols, b, exclude))
    np.testing.assert_array_equal(dev[0], _ref_allowed(n_cols, rows[0][2]))
    np.testing.assert_array_equal(dev[1:], _ref_allowed(n_cols)[None].repeat(b - 1, 0))


def test_masked_top_k_equals_a_numpy_sort():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(4, 40)).astype(np.float32)
    exclude = rng.integers(0, 40, (4, 7)).astype(np.int32)
    vals, idx = (np.asarray(x) for x in masked_top_k(scores, exclude, 10))
    for i in range(4):
        s = np.where(_ref_allowed(40, exclude[i]), scores[i], -np.inf)
        want = np.argsort(-s, kind="stable")[:10]
        np.testing.assert_array_equal(idx[i], want)
        np.testing.assert_allclose(vals[i], s[want])
    # fewer allowed items than k: the rest are MASKED, never padding or an excluded item
    vals, idx = (np.asarray(x) for x in masked_top_k(scores[:1, :4], np.array([[1]], np.int32), 4))
    assert np.isfinite(vals[0, :2]).all() and (vals[0, 2:] == MASKED).all()
    assert set(idx[0, :2].tolist()) == {2, 3}


def test_one_scorer_for_score_all_score_and_top_k():
    data = load_dataset("synthetic:tiny")
    rec = Recommender.from_model(build_model("sasrec/small", data.num_items, 0), data.catalog,
                                 Config(model="sasrec/small"))
    h = np.random.default_rng(2).integers(0, data.num_items + 1, (3, 50)).astype(np.int32)
    full = np.asarray(rec.score_all(h))
    cands = np.array([[5, 6, 7]] * 3, np.int32)
    np.testing.assert_allclose(np.asarray(rec.score(h, cands)), full[:, 5:8], rtol=1e-6)
    out = rec.scorer.top_k(h, 10, exclude=h, explain=True)
    vals, idx = (np.asarray(x) for x in masked_top_k(full, h, 10))
    np.testing.assert_array_equal(np.asarray(out.items), idx)
    np.testing.assert_allclose(np.asarray(out.values), vals, rtol=1e-5)
    att = np.asarray(out.attention)
    assert att.shape == h.shape and np.allclose(att.sum(1), 1, atol=1e-4) and (att[h == 0] == 0).all()
    allowed = np.zeros((3, data.num_items + 1), bool)
    allowed[:, [8, 9]] = True  # an allow-list of two items
    got = np.asarray(rec.scorer.top_k(h, 5, allowed=allowed).items)
    assert set(got[:, :2].ravel()) <= {8, 9}
    ranker = Recommender.from_model(build_model("bst/small", data.num_items, 1), data.catalog,
                                    Config(model="bst/small"))
    with pytest.raises(UserError, match="ranker alone cannot recommend"):
        ranker.scorer.top_k(h, 5)
