"""Cross-attention rankers: padding, candidate independence, list awareness, attention."""

import numpy as np
import pytest

from jaxrec.models import build_model
from jaxrec.models.layers import NEG_INF
from zoo import RANKING_VARIANTS

RANKERS = [m for m in RANKING_VARIANTS if m != "encdec/listaware"]
N = 60


def hist(rng, b=4, l=30, min_len=3):
    h = np.zeros((b, l), np.int32)
    for i in range(b):
        k = rng.integers(min_len, l)
        h[i, -k:] = rng.integers(1, N + 1, k)
    return h


@pytest.mark.parametrize("name", RANKING_VARIANTS)
def test_history_padding_does_not_change_scores(name):
    m = build_model(name, N)
    h = hist(np.random.default_rng(0), l=10)
    wide = np.concatenate([np.zeros((4, 25), np.int32), h], axis=1)
    c = np.random.default_rng(1).integers(1, N + 1, (4, 6)).astype(np.int32)
    np.testing.assert_allclose(np.asarray(m.score(h, c)), np.asarray(m.score(wide, c)), atol=1e-5)


@pytest.mark.parametrize("name", RANKING_VARIANTS)
def test_padded_candidates_are_masked_and_change_nothing(name):
    m = build_model(name, N)
    h = hist(np.random.default_rng(2))
    c = np.random.default_rng(3).integers(1, N + 1, (4, 5)).astype(np.int32)
    padded = np.concatenate([c, np.zeros((4, 3), np.int32)], axis=1)
    a, b = np.asarray(m.score(h, c)), np.asarray(m.score(h, padded))
    np.testing.assert_allclose(a, b[:, :5], atol=1e-5)
    assert (b[:, 5:] == NEG_INF).all()


@pytest.mark.parametrize("name", RANKERS)
def test_score_does_not_depend_on_other_candidates(name):
    m = build_model(name, N)
    h = hist(np.random.default_rng(4))
    c = np.random.default_rng(5).integers(1, N + 1, (4, 6)).astype(np.int32)
    c2 = c.copy()
    c2[:, 1:] = np.random.default_rng(6).integers(1, N + 1, (4, 5))
    np.testing.assert_allclose(np.asarray(m.score(h, c))[:, 0], np.asarray(m.score(h, c2))[:, 0], atol=1e-5)


def test_candidate_self_attention_makes_scores_list_aware():
    m = build_model("encdec/listaware", N)
    h = hist(np.random.default_rng(4))
    c = np.random.default_rng(5).integers(1, N + 1, (4, 6)).astype(np.int32)
    c2 = c.copy()
    c2[:, 1:] = np.random.default_rng(6).integers(1, N + 1, (4, 5))
    assert not np.allclose(np.asarray(m.score(h, c))[:, 0], np.asarray(m.score(h, c2))[:, 0], atol=1e-5)


def test_history_is_attended_and_padding_history_is_not():
    """Target attention weights are zero on padding and sum to one over real items."""
    m = build_model("target_attention/small", N)
    h = hist(np.random.default_rng(7))
    c = np.random.default_rng(8).integers(1, N + 1, (4, 3)).astype(np.int32)
    _, w, _ = m.interest(h, c)  # (B, C, L)
    w = np.asarray(w)
    assert (w[np.broadcast_to((h == 0)[:, None, :], w.shape)] == 0).all()
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
