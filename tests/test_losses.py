"""Losses against closed forms and brute-force NumPy versions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import losses


def sig(x):
    return 1 / (1 + np.exp(-x))


def test_bce_closed_form_and_padding():
    pos = np.array([[0.5, 2.0]])
    neg = np.array([[[-1.0, 0.3], [9.0, 9.0]]])
    w = np.array([[1.0, 0.0]])  # second position is padding: ignored whatever its logits
    want = -np.log(sig(0.5)) - np.log(1 - sig(-1.0)) - np.log(1 - sig(0.3))
    assert float(losses.bce(pos, neg, w)) == pytest.approx(want, rel=1e-5)


def test_gbce_beta_and_reduction_to_bce():
    n, k = 3417, 256
    alpha = k / (n - 1)
    assert losses.gbce_beta(k, n, 0.0) == pytest.approx(1.0)
    assert losses.gbce_beta(k, n, 1.0) == pytest.approx(alpha)
    assert losses.gbce_beta(k, n, 0.75) == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))
    rng = np.random.default_rng(0)
    pos, neg, w = rng.normal(size=(2, 3)), rng.normal(size=(2, 3, 4)), np.ones((2, 3))
    assert float(losses.gbce(pos, neg, w, 1.0)) == pytest.approx(float(losses.bce(pos, neg, w)), rel=1e-5)
    beta = 0.3
    want = np.mean(-np.log(sig(pos) ** beta) - np.log(1 - sig(neg)).sum(-1))
    assert float(losses.gbce(pos, neg, w, beta)) == pytest.approx(want, rel=1e-5)


def test_catalog_ce_brute_force_value_and_gradient():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(2, 3, 4)).astype(np.float32)
    table = rng.normal(size=(6, 4)).astype(np.float32)
    targets = np.array([[1, 5, 0], [2, 3, 5]])
    w = (targets > 0).astype(np.float32)
    logits = h @ table.T
    per = []
    for b in range(2):
        for l in range(3):
            if targets[b, l]:
                z = logits[b, l, 1:]  # column 0 (padding) is not a class
                per.append(np.log(np.exp(z).sum()) - logits[b, l, targets[b, l]])
    for chunk in (1, 4, 256):  # chunks that split, pad and exceed the 6 positions
        assert float(losses.catalog_ce(h, table, targets, w, chunk)) == pytest.approx(np.mean(per), rel=1e-5)

    def naive(h, table):  # the textbook version, differentiated by JAX
        lg = jnp.einsum("bld,vd->blv", h, table).at[..., 0].set(-1e9)
        nll = jax.nn.logsumexp(lg, -1) - jnp.take_along_axis(lg, targets[..., None], -1)[..., 0]
        return (nll * w).sum() / w.sum()

    want = jax.grad(naive, (0, 1))(h, table)
    got = jax.grad(lambda h, t: 3.0 * losses.catalog_ce(h, t, targets, w, 4), (0, 1))(h, table)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, 3.0 * np.asarray(b), rtol=1e-5, atol=1e-6)


def test_sampled_softmax_logq_subtracted_and_hits_masked():
    pos = np.array([[1.0]])
    neg = np.array([[[0.5, 2.0, 1.0]]])
    ids = np.array([[[4, 7, 9]]])
    targets = np.array([[9]])  # the third negative is an accidental hit of the positive
    lq_pos, lq_neg = np.array([[np.log(0.1)]]), np.log(np.array([[[0.2, 0.05, 0.1]]]))
    got = float(losses.sampled_softmax(pos, neg, np.ones((1, 1)), neg_ids=ids, targets=targets,
                                       log_q_pos=lq_pos, log_q_neg=lq_neg))
    zp = 1.0 - np.log(0.1)
    zn = np.array([0.5 - np.log(0.2), 2.0 - np.log(0.05)])
    want = np.log(np.exp(zp) + np.exp(zn).sum()) - zp
    assert got == pytest.approx(want, rel=1e-5)


def test_sampled_softmax_ignores_padding_negatives():
    """A negative with id 0 (a draw that ran out of unseen items) counts as nothing."""
    pos, neg = np.array([[1.0]]), np.array([[[0.5, 3.0, 2.0]]])
    got = float(losses.sampled_softmax(pos, neg, np.ones((1, 1)), neg_ids=np.array([[[4, 0, 7]]]),
                                       targets=np.array([[9]])))
    assert got == pytest.approx(np.log(np.exp(1.0) + np.exp(0.5) + np.exp(2.0)) - 1.0, rel=1e-5)


def test_uniform_logq_is_a_no_op():
    rng = np.random.default_rng(2)
    pos, neg = rng.normal(size=(2, 3)), rng.normal(size=(2, 3, 5))
    ids, t, w = np.ones((2, 3, 5), int), np.zeros((2, 3), int) + 2, np.ones((2, 3))
    lq = jnp.log(1 / 100.0)
    a = losses.sampled_softmax(pos, neg, w, neg_ids=ids, targets=t)
    b = losses.sampled_softmax(pos, neg, w, neg_ids=ids, targets=t,
                               log_q_pos=jnp.full((2, 3), lq), log_q_neg=jnp.full((2, 3, 5), lq))
    assert float(a) == pytest.approx(float(b), rel=1e-5)


def test_catalog_ce_with_excluded_items_equals_a_masked_brute_force():
    """``exclude``: a row's excluded items are no class at its positions, except where one is
    the position's own target; value and gradient against the masked textbook softmax."""
    rng = np.random.default_rng(4)
    h = rng.normal(size=(2, 3, 4)).astype(np.float32)
    table = rng.normal(size=(7, 4)).astype(np.float32)
    inputs = np.array([[0, 1, 5], [2, 3, 6]])
    targets = np.array([[1, 5, 4], [3, 6, 5]])
    w = (targets > 0).astype(np.float32)
    ex = losses.window_items(inputs, targets, 7)
    np.testing.assert_array_equal(np.asarray(ex), [[0, 1, 0, 0, 1, 1, 0], [0, 0, 1, 1, 0, 1, 1]])

    def masked(h, table):
        lg = jnp.einsum("bld,vd->blv", h, table)
        cols = jnp.arange(7)
        out = (cols == 0) | (jnp.asarray(ex)[:, None, :] & (cols != targets[..., None]))
        lg = jnp.where(out, -1e9, lg)
        nll = jax.nn.logsumexp(lg, -1) - jnp.take_along_axis(lg, targets[..., None], -1)[..., 0]
        return (nll * w).sum() / w.sum()

    for chunk in (1, 4, 256):
        assert float(losses.catalog_ce(h, table, targets, w, chunk, exclude=ex)) == pytest.approx(
            float(masked(h, table)), rel=1e-5)
    assert float(losses.catalog_ce(h, table, targets, w, 4, exclude=ex)) < float(
        losses.catalog_ce(h, table, targets, w, 4))  # fewer classes, lower loss
    got = jax.grad(lambda h, t: losses.catalog_ce(h, t, targets, w, 4, exclude=ex), (0, 1))(h, table)
    for a, b in zip(got, jax.grad(masked, (0, 1))(h, table)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_catalog_ce_with_sparse_uneven_weights_scores_only_the_weighted_positions():
    """Mostly-zero, uneven weights scattered through the batch (a cloze step's masked positions,
    left padding): the weighted positions are sorted to the front and the rest are never scored,
    so value and gradients must still equal the masked textbook softmax."""
    rng = np.random.default_rng(7)
    B, L, D, V = 3, 10, 4, 40  # a catalog wider than a window, so each position keeps classes
    h = rng.normal(size=(B, L, D)).astype(np.float32)
    table = rng.normal(size=(V, D)).astype(np.float32)
    targets = rng.integers(1, V, size=(B, L))
    w = (rng.random((B, L)) < 0.2) * rng.uniform(0.5, 2.0, (B, L))
    w[1, 3] = w[2, 9] = 1.0  # at least two weighted positions, in different rows
    w = w.astype(np.float32)
    inputs = rng.integers(0, V, size=(B, L))
    ex = losses.window_items(inputs, targets, V)

    def masked(h, table):
        lg = jnp.einsum("bld,vd->blv", h, table)
        cols = jnp.arange(V)
        out = (cols == 0) | (jnp.asarray(ex)[:, None, :] & (cols != targets[..., None]))
        lg = jnp.where(out, -1e9, lg)
        nll = jax.nn.logsumexp(lg, -1) - jnp.take_along_axis(lg, targets[..., None], -1)[..., 0]
        return (nll * w).sum() / w.sum()

    want = float(masked(h, table))
    for chunk in (1, 3, 8, 256):
        assert float(losses.catalog_ce(h, table, targets, w, chunk, exclude=ex)) == pytest.approx(want, rel=1e-5)
    got = jax.grad(lambda h, t: losses.catalog_ce(h, t, targets, w, 3, exclude=ex), (0, 1))(h, table)
    for a, b in zip(got, jax.grad(masked, (0, 1))(h, table)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(got[0])[w == 0] == 0)  # an unweighted position gets no gradient
    empty = np.zeros_like(w)  # no weighted position at all: loss 0, no NaN
    assert float(losses.catalog_ce(h, table, targets, empty, 4)) == 0.0


def test_future_targets_shift_within_the_window():
    targets = np.array([[0, 0, 3, 4, 5], [1, 2, 3, 4, 6]])
    ids, valid = losses.future_targets(targets, (targets > 0).astype(np.float32), 2)
    np.testing.assert_array_equal(np.asarray(ids)[0], [[0, 3], [3, 4], [4, 5], [5, 0], [0, 0]])
    np.testing.assert_array_equal(np.asarray(valid)[0], [[0, 0], [0, 0], [1, 1], [1, 0], [0, 0]])
    np.testing.assert_array_equal(np.asarray(valid)[1], [[1, 1], [1, 1], [1, 1], [1, 0], [0, 0]])


@pytest.mark.parametrize("windowed", [False, True])
def test_catalog_ce_with_future_targets_equals_the_dense_formula(windowed):
    """``future``: each position adds w/K x the cross-entropy of each of the next K targets, over
    its own classes (with ``exclude``: y and the items outside the window); value and gradient
    against the textbook version written with dense logits and differentiated by JAX."""
    rng = np.random.default_rng(7)
    B, L, V, K, w_f = 2, 5, 9, 2, 0.6
    h = rng.normal(size=(B, L, 4)).astype(np.float32)
    table = rng.normal(size=(V, 4)).astype(np.float32)
    inputs = np.array([[0, 0, 1, 5, 2], [3, 6, 8, 7, 1]])
    targets = np.array([[0, 1, 5, 2, 4], [6, 8, 7, 1, 2]])
    w = (targets > 0).astype(np.float32)
    ex = losses.window_items(inputs, targets, V) if windowed else None

    def dense(h, table):
        lg = jnp.einsum("bld,vd->blv", h, table)  # (B, L, V)
        cols = jnp.arange(V)
        total = 0.0
        for b in range(B):
            for t in range(L):
                if not w[b, t]:
                    continue
                ys = [(targets[b, t], 1.0)] + [(targets[b, t + j], w_f / K) for j in range(1, K + 1)
                                               if t + j < L and w[b, t + j]]
                for y, wy in ys:
                    out = cols == 0
                    if ex is not None:
                        out = out | (jnp.asarray(ex)[b] & (cols != y))
                    z = jnp.where(out, -1e9, lg[b, t])
                    total = total + wy * (jax.nn.logsumexp(z) - lg[b, t, y])
        return total / w.sum()

    def ours(h, table, chunk=3):
        return losses.catalog_ce(h, table, targets, w, chunk, exclude=ex, future=K, future_weight=w_f)

    for chunk in (1, 3, 256):
        assert float(ours(h, table, chunk)) == pytest.approx(float(dense(h, table)), rel=1e-5)
    assert float(ours(h, table)) > float(losses.catalog_ce(h, table, targets, w, 3, exclude=ex))
    got, want = jax.grad(ours, (0, 1))(h, table), jax.grad(dense, (0, 1))(h, table)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
