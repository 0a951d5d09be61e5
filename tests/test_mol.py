"""Mixture-of-logits similarity (``similarity="mol"``, jaxrec.models.mol): scores against a
per-pair numpy reference written from the paper's formula, the load-balancing term against its
closed forms, the scoring core's chunked paths against the full matrix, and the refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.errors import UserError
from jaxrec.models import build_model

MOL = {"similarity": "mol", "mol_query_groups": 3, "mol_item_groups": 2, "mol_dim": 8, "mol_query_hidden": 16,
       "mol_gate_hidden": 8, "temperature": 0.1}


def _hist(rng, n, b=5, length=50):
    h = rng.integers(1, n + 1, size=(b, length))
    h[:, : length // 2] = 0  # left padding
    return jnp.asarray(h, jnp.int32)


def _reference_scores(head, state: np.ndarray, item: np.ndarray) -> float:
    """One (user state (D,), item embedding (D,)) pair, the formula spelled out in numpy."""
    def lin(layer, x):
        y = x @ np.asarray(layer.kernel[...])
        return y + np.asarray(layer.bias[...]) if layer.bias is not None else y

    def silu(x):
        return x / (1 + np.exp(-x))

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
    a, b = np.split(lin(head.q_in, state), 2)
    f = unit(lin(head.q_out, silu(a) * b).reshape(head.pq, head.dp))  # (P_Q, d')
    g = unit(lin(head.i_proj, item).reshape(head.px, head.dp))  # (P_X, d')
    logits = np.array([f[p] @ g[q] for p in range(head.pq) for q in range(head.px)]) / head.temperature  # (P,)
    z = (lin(head.gq[1], silu(lin(head.gq[0], state))) * lin(head.gi[1], silu(lin(head.gi[0], item)))
         + lin(head.gl[1], silu(lin(head.gl[0], logits))))
    w = np.exp(silu(z) - silu(z).max())
    return float((w / w.sum()) @ logits)


@pytest.mark.parametrize("name", ["hstu/small", "sasrec/small"])
def test_mol_scores_equal_the_per_pair_reference_in_every_form(name):
    """score_all (user x table), pair_scores on per-user rows (B, X, U) and on broadcast rows all
    equal the per-pair formula computed from the raw user state and item embedding."""
    n = 40
    model = build_model(name, n, **MOL)
    h = _hist(np.random.default_rng(0), n)
    got = np.asarray(model.score_all(h))  # (B, N+1)
    dot = build_model(name, n, similarity="dot")  # same seed: the same encoder and item table
    states = np.asarray(dot.encode(h), np.float64)  # (B, D) the state MoL's query side reads
    table = np.asarray(model.item_table(), np.float64)
    want = np.array([[_reference_scores(model.mol, s, table[j]) for j in range(n + 1)] for s in states])
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
    user, rows = model.encode(h), model.output_table()
    cand = jnp.asarray(np.random.default_rng(1).integers(1, n + 1, size=(h.shape[0], 7)), jnp.int32)
    per_user = np.asarray(model.pair_scores(user, rows[cand]))  # (B, 7)
    np.testing.assert_allclose(per_user, np.take_along_axis(got, np.asarray(cand), axis=1), rtol=1e-5, atol=1e-5)
    shared = np.asarray(model.pair_scores(user[:, None, :], rows[cand[:1]]))  # (B, 1, 7): one list for all
    np.testing.assert_allclose(shared[:, 0], got[:, np.asarray(cand[0])], rtol=1e-5, atol=1e-5)


def test_load_balancing_closed_forms():
    """Uniform gates: each pair's entropy log P, the mean's log P -> 0. Every pair one-hot on the
    same component: 0 - 0. One-hot spread evenly over the P components: 0 - log P. Padding
    positions (weight 0) count nothing."""
    from jaxrec.models.mol import MoLHead
    p = 4
    lb = MoLHead.load_balancing
    assert float(lb(jnp.full((2, 3, 5, p), 1 / p))) == pytest.approx(0.0, abs=1e-5)
    same = jnp.zeros((2, 3, 5, p)).at[..., 1].set(1.0)
    assert float(lb(same)) == pytest.approx(0.0, abs=1e-5)
    spread = jax.nn.one_hot(jnp.arange(2 * 3 * 4) % p, p).reshape(2, 3, 4, p)
    assert float(lb(spread)) == pytest.approx(-np.log(p), abs=1e-4)
    weights = jnp.asarray([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # the third position is padding
    padded = spread.at[:, 2].set(same[:, 2, :4])
    assert float(lb(padded, weights)) == pytest.approx(float(lb(spread[:, :2])), abs=1e-5)


def test_mol_chunked_catalog_ranking_equals_the_full_matrix():
    """The scoring core's catalog chunks with MoL's score function: top-k and ranks equal those
    read from the full (B, N+1) score matrix."""
    from jaxrec.scoring import catalog_ranks, catalog_top_k, ranks_from_scores
    n = 45
    model = build_model("hstu/small", n, **MOL)
    h = _hist(np.random.default_rng(2), n)
    user, table = model.encode(h), model.output_table()
    full = model.score_all(h)
    exclude = jnp.asarray(h[:, -5:])
    targets = jnp.asarray(np.random.default_rng(3).integers(1, n + 1, size=h.shape[0]), jnp.int32)
    want_r, want_v, want_i = ranks_from_scores(full, targets, exclude, k=6)
    for chunk in (None, 8, 13):
        v, i = catalog_top_k(user, table, 6, exclude=exclude, chunk=chunk, score=model.pair_scores)
        np.testing.assert_allclose(np.asarray(v), np.asarray(want_v), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(i), np.asarray(want_i))
        r, _, _ = catalog_ranks(user, table, targets, exclude, chunk=chunk, score=model.pair_scores)
        np.testing.assert_array_equal(np.asarray(r), np.asarray(want_r))


def test_mol_refuses_the_full_softmax_and_an_inner_product_index():
    """The full-catalog softmax (a fused dot-product pass) and an approximate inner-product
    index cannot score a gated mixture: both are refused with errors that say why."""
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.inference import Recommender
    from jaxrec.train import Config, build_run
    from jaxrec_server.engine import Engine

    split = leave_one_out(load_dataset("synthetic:tiny"))
    with pytest.raises(UserError, match="similarity='mol': loss 'ce'"):
        build_run(Config(model="hstu/small", data="synthetic:tiny", loss="ce", model_args=MOL), split)
    model = build_model("hstu/small", split.data.num_items, **MOL)
    rec = Recommender.from_model(model, split.data.catalog, Config(model="hstu/small", model_args=MOL))
    assert not rec.scorer.inner_product
    with pytest.raises(UserError, match="mixture of logits"):
        Engine(rec, index="auto")


@pytest.mark.slow  # ~30 s alone: a training run, its checkpoint and the served path
def test_mol_trains_and_serves_its_own_score_order(tmp_path):
    """Trained with sampled softmax on synthetic data and reloaded from its checkpoint: the
    Recommender's top-k (catalog chunks, seen items excluded) is the model's own score order."""
    from jaxrec.inference import Recommender
    from jaxrec.train import Config, train

    cfg = Config(model="hstu/small", data="synthetic:tiny", loss="sampled_softmax", num_negatives=16,
                 model_args=MOL, batch_size=32, epochs=1, seed=0)
    res = train(cfg, tmp_path / "run", progress=False)
    assert np.isfinite(res["metrics"]["NDCG@10"]) and res["metrics"]["NDCG@10"] > 0
    rec = Recommender.from_checkpoint(tmp_path / "run")
    h = _hist(np.random.default_rng(4), rec.catalog.num_items, b=4, length=rec.max_len)
    vals, idx = rec.top_k(np.asarray(h), 5)
    scores = np.array(rec.score_all(np.asarray(h)))
    for row, s, got in zip(np.asarray(h), scores, np.asarray(idx)):
        s[np.r_[0, row]] = -np.inf
        assert list(got) == list(np.argsort(-s, kind="stable")[:5])
    np.testing.assert_allclose(np.asarray(vals), -np.sort(-scores, axis=1)[:, :5], rtol=1e-5, atol=1e-5)
