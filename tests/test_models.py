"""Model pieces: causality, padding invariance, a reference attention, and short training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.models import build_model
from jaxrec.models.layers import MultiHeadAttention, TransformerBlock, attention_mask, dropout, split_key

from zoo import RETRIEVAL as MODELS


def hist(rng, n, b=3, l=50, min_len=5):
    h = np.zeros((b, l), np.int32)
    for i in range(b):
        k = rng.integers(min_len, l)
        h[i, -k:] = rng.integers(1, n + 1, k)
    return h


@pytest.mark.parametrize("name", ["sasrec/small", "hstu/small", "sasrec/ligr"])
def test_causal_cannot_see_future(name):
    m = build_model(name, 60)
    h = hist(np.random.default_rng(0), 60, min_len=20)
    h2 = h.copy()
    h2[:, -1] = (h2[:, -1] % 60) + 1  # change only the last item
    a, b = np.asarray(m.hidden(h)), np.asarray(m.hidden(h2))
    np.testing.assert_allclose(a[:, :-1], b[:, :-1], atol=1e-5)
    assert not np.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("name", MODELS + ["sasrec/ligr"])
def test_padding_does_not_change_outputs(name):
    """The same history in a longer, more padded window gives the same user vector."""
    m = build_model(name, 60)
    h = hist(np.random.default_rng(1), 60, l=20, min_len=3)
    wide = np.concatenate([np.zeros((3, 30), np.int32), h], axis=1)
    np.testing.assert_allclose(np.asarray(m.encode(h)), np.asarray(m.encode(wide)), atol=1e-5)


@pytest.mark.parametrize("name", ["sasrec/small", "sasrec/base", "sasrec/ligr", "bert4rec/small"])
def test_last_only_serving_path_equals_full_forward(name):
    m = build_model(name, 60)
    h = hist(np.random.default_rng(4), 60, l=m.config.max_len)
    full = m.hidden(m.with_mask_slot(h) if name.startswith("bert") else h)[:, -1]
    np.testing.assert_allclose(np.asarray(m.encode(h)), np.asarray(full), atol=1e-5)


def test_attention_matches_reference():
    rngs = nnx.Rngs(0)
    att = MultiHeadAttention(8, 2, 0.0, rngs=rngs)
    items = jnp.array([[0, 0, 3, 4, 5]])
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 5, 8))
    y, w = att(x, x, attention_mask(items, True))
    q = x @ att.q.kernel[...] + att.q.bias[...]
    kv = x @ att.kv.kernel[...] + att.kv.bias[...]
    k, v = kv[..., :8], kv[..., 8:]
    out = []
    for hd in range(2):
        s = slice(4 * hd, 4 * hd + 4)
        lg = np.asarray(q[0, :, s] @ k[0, :, s].T) / 2.0
        for i in range(5):
            for j in range(5):
                if j > i or items[0, j] == 0:
                    lg[i, j] = -1e9
        p = np.exp(lg - lg.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        out.append(p @ np.asarray(v[0, :, s]))
    ref = np.concatenate(out, -1) @ np.asarray(att.out.kernel[...]) + np.asarray(att.out.bias[...])
    np.testing.assert_allclose(np.asarray(y[0, 2:]), ref[2:], atol=1e-4)  # real query rows


def test_swiglu_feed_forward_matches_reference():
    """SwiGLU: down(silu(gate x) * up x), no biases (LiGR's feed-forward)."""
    from jaxrec.models.layers import FeedForward
    ff = FeedForward(6, 10, 0.0, "swiglu", rngs=nnx.Rngs(0))
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (2, 3, 6)))
    g, u, d = (np.asarray(m.kernel[...]) for m in (ff.gate, ff.up, ff.down))
    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    np.testing.assert_allclose(np.asarray(ff(x)), (silu(x @ g) * (x @ u)) @ d, atol=1e-5)
    assert ff.up.bias is None and ff.down.bias is None


def test_ligr_gates_interpolate_between_identity_and_the_pre_layout():
    """A LiGR block whose gates are shut (sigmoid -> 0) passes its input through; with the gates
    open (sigmoid -> 1) it is the ``pre`` block with the same weights."""
    from jaxrec.models.layers import TransformerBlock
    items = jnp.array([[0, 3, 4, 5, 6]])
    x = jax.random.normal(jax.random.PRNGKey(3), (1, 5, 8))
    mask = attention_mask(items, True)
    ligr = TransformerBlock(8, 2, 8, 0.0, "ligr", "relu", rngs=nnx.Rngs(0))
    pre = TransformerBlock(8, 2, 8, 0.0, "pre", "relu", rngs=nnx.Rngs(0))
    for gate in (ligr.gate1, ligr.gate2):
        gate.kernel[...] = jnp.zeros_like(gate.kernel[...])
        gate.bias[...] = jnp.full_like(gate.bias[...], -1e4)
    np.testing.assert_allclose(np.asarray(ligr(x, mask)[0]), np.asarray(x), atol=1e-6)
    for gate in (ligr.gate1, ligr.gate2):
        gate.bias[...] = jnp.full_like(gate.bias[...], 1e4)
    np.testing.assert_allclose(np.asarray(ligr(x, mask)[0]), np.asarray(pre(x, mask)[0]), atol=1e-5)


COSINE = {"similarity": "cosine"}
MOL = {"similarity": "mol", "mol_query_groups": 2, "mol_item_groups": 2, "mol_dim": 8, "mol_query_hidden": 16,
       "mol_gate_hidden": 8}


@pytest.mark.parametrize("name,loss,negs,args", [("sasrec/small", "bce", 1, {}), ("sasrec/small", "ce", 0, {}),
                                                 ("sasrec/small", "ce", 0, COSINE),
                                                 ("sasrec/ligr", "ce", 0, {}),
                                                 ("gsasrec/small", "gbce", 16, {}),
                                                 ("hstu/small", "sampled_softmax", 16, {}),
                                                 ("hstu/small", "sampled_softmax", 16, COSINE),
                                                 ("hstu/small", "sampled_softmax", 16, MOL),
                                                 ("bert4rec/small", "cloze", 0, {}),
                                                 ("target_attention/small", "listwise", 15, {}),
                                                 ("bst/small", "pointwise", 7, {}),
                                                 ("encdec/small", "listwise", 15, {})])
def test_trains_with_falling_finite_loss(name, loss, negs, args):
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.train import Config, build_run
    from jaxrec.train.step import make_loss_fn, make_train_step

    cfg = Config(model=name, data="synthetic:tiny", loss=loss, num_negatives=max(negs, 1), model_args=args,
                 batch_size=32, lr=3e-3, sampler="popularity")
    run = build_run(cfg, leave_one_out(load_dataset(cfg.data)))
    step = make_train_step(run.graphdef, make_loss_fn(loss, cfg, run.split.data.num_items,
                                                      run.batches.neg.prob), run.tx)
    state, seen = run.state, []
    for epoch in range(6):
        for i, b in enumerate(run.batches.epoch(epoch)):
            state, m = step(state, b, jax.random.PRNGKey(epoch * 100 + i))
            seen.append(float(m["loss"]))
    assert np.isfinite(seen).all()
    k = len(seen) // 4
    assert np.mean(seen[-k:]) < np.mean(seen[:k]), seen


@pytest.mark.parametrize("loss", ["gbce", pytest.param("bce", marks=pytest.mark.slow),
                                  pytest.param("sampled_softmax", marks=pytest.mark.slow)])
def test_negatives_scored_from_dense_logits_equal_gathered_rows(loss):
    """``make_loss_fn(dense=True)`` scores per-position negatives from the (B, L, N+1) catalog
    logits (cheaper when the catalog is small against the negatives); loss and gradients must be
    the gathered rows' (``dense=False``), logQ and accidental hits included."""
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.scoring import merge
    from jaxrec.train import Config, build_run
    from jaxrec.train.step import dense_negatives, make_loss_fn

    cfg = Config(model="gsasrec/small", data="synthetic:tiny", loss=loss, num_negatives=24, batch_size=16,
                 sampler="popularity")
    run = build_run(cfg, leave_one_out(load_dataset(cfg.data)))
    assert dense_negatives(24, 101) and not dense_negatives(256, 54_543)  # beauty: gather the rows
    b = next(run.batches.epoch(0))
    assert b["negatives"].shape[1] > 1  # per position
    out = {}
    for dense in (False, True):
        fn = make_loss_fn(loss, cfg, run.split.data.num_items, run.batches.neg.prob, dense=dense)
        out[dense] = jax.jit(jax.value_and_grad(lambda p: fn(merge(run.graphdef, p), b, jax.random.PRNGKey(1))))(
            run.state["params"])
    (l0, g0), (l1, g1) = out[False], out[True]
    np.testing.assert_allclose(float(l0), float(l1), rtol=1e-5)
    for a, c in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-4, atol=1e-6)


def test_bf16_compute_keeps_f32_params():
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.train import Config, build_run
    from jaxrec.train.step import make_loss_fn, make_train_step

    cfg = Config(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32,
                      model_args={"dtype": "bfloat16"})
    run = build_run(cfg, leave_one_out(load_dataset(cfg.data)))
    step = make_train_step(run.graphdef, make_loss_fn("ce", cfg, run.split.data.num_items), run.tx,
                           "bfloat16")
    state, m = step(run.state, next(run.batches.epoch(0)), jax.random.PRNGKey(0))
    assert np.isfinite(float(m["loss"]))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state["params"]))


def test_dropout_mask_rate_scale_and_determinism():
    x = jnp.ones((64, 1, 100, 100))
    a = dropout(x, 0.1, jax.random.PRNGKey(3))
    dropped = float((a == 0).mean())
    assert abs(dropped - 0.1) < 0.005  # 640k draws: 5 sigma is about 0.002
    np.testing.assert_allclose(np.asarray(a)[np.asarray(a) != 0], 1 / 0.9, rtol=1e-6)  # inverted scaling
    np.testing.assert_array_equal(a, dropout(x, 0.1, jax.random.PRNGKey(3)))  # same key, same mask
    b = dropout(x, 0.1, jax.random.PRNGKey(4))
    both = float(((a == 0) & (b == 0)).mean())
    assert abs(both - 0.01) < 0.002  # two keys drop independently
    rows = np.asarray(a == 0).reshape(64, -1).mean(1)
    assert rows.std() < 0.02  # no row-level structure in the mask
    assert dropout(x, 0.1, None) is x and dropout(x, 0.0, jax.random.PRNGKey(0)) is x


def test_separate_output_table_scores_against_its_own_table():
    """``tied_output=False`` (gSASRec): scores are user . out_emb, the input table only feeds the
    encoder; the tied default scores against the input table's item rows."""
    h = hist(np.random.default_rng(5), 60)
    tied = build_model("gsasrec/small", 60, tied_output=True)
    sep = build_model("gsasrec/small", 60)
    assert tied.out_emb is None and sep.out_emb.embedding[...].shape == (61, 32)
    u = np.asarray(sep.encode(h))
    np.testing.assert_allclose(np.asarray(sep.score_all(h)), u @ np.asarray(sep.out_emb.embedding[...]).T,
                               rtol=1e-5, atol=1e-5)
    before = np.asarray(sep.score_all(h))
    sep.out_emb.embedding[...] = sep.out_emb.embedding[...] * 2.0  # only the output side changes
    np.testing.assert_allclose(np.asarray(sep.encode(h)), u, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sep.score_all(h)), 2 * before, rtol=1e-5, atol=1e-5)
    ut = np.asarray(tied.encode(h))
    np.testing.assert_allclose(np.asarray(tied.score_all(h)), ut @ np.asarray(tied.item_table()).T,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["sasrec/small", "hstu/small", "gsasrec/small"])
def test_item_tables_start_at_the_configured_scale(name):
    """``embed_init_std``: every item table (input, separate output) starts N(0, std); by
    default N(0, dim ** -0.5)."""
    for std, want in ((None, 32 ** -0.5), (0.02, 0.02)):
        m = build_model(name, 2000, embed_init_std=std)
        tables = [m.item_emb.embedding[...]] + ([m.out_emb.embedding[...]] if m.out_emb is not None else [])
        for t in tables:
            assert float(np.std(np.asarray(t))) == pytest.approx(want, rel=0.05)


@pytest.mark.parametrize("name", ["sasrec/small", "bert4rec/small", "gsasrec/small"])
def test_residual_writers_start_at_the_configured_scale(name):
    """``dense_init_std``: the attention's output layer and both feed-forward layers of every
    block start N(0, std); the query/key/value layers keep their LeCun start, and so does
    everything by default (the same draws as before the setting existed)."""
    plain, small = build_model(name, 300), build_model(name, 300, dense_init_std=0.02)
    for bp, bs in zip(plain.blocks, small.blocks):
        for layer in (lambda b: b.attn.out, lambda b: b.ffn.up, lambda b: b.ffn.down):
            fan_in = layer(bp).kernel.shape[0]
            assert float(np.std(np.asarray(layer(bp).kernel[...]))) == pytest.approx(fan_in ** -0.5, rel=0.15)
            assert float(np.std(np.asarray(layer(bs).kernel[...]))) == pytest.approx(0.02, rel=0.1)
        np.testing.assert_array_equal(np.asarray(bp.attn.q.kernel[...]), np.asarray(bs.attn.q.kernel[...]))
    with pytest.raises(Exception, match="dense_init_std"):
        build_model("hstu/small", 300, dense_init_std=0.02)  # a family without these blocks says so


@pytest.mark.parametrize("layout", ["sasrec", "pre"])
def test_attention_output_dropout_can_be_switched_off(layout):
    """``attn_out_dropout=False`` (``out_dropout``): in training the block drops the attention
    weights but adds the attention's output whole, as the published SASRec codes do; checked
    against the block's formula written out; the default block differs (it drops the output)."""
    x = jax.random.normal(jax.random.key(0), (2, 7, 16))  # (B, L, D)
    mask = attention_mask(jnp.array([[0, 0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]]), causal=True)
    key = jax.random.key(1)
    blk = TransformerBlock(16, 2, 16, 0.5, layout, "relu", rngs=nnx.Rngs(0), out_dropout=False)
    k1, _, k3 = split_key(key, 3)
    if layout == "sasrec":
        q = blk.ln1(x)
        h = blk.ln2(q + blk.attn(q, x, mask, k1)[0])
        want = h + blk.ffn(h, k3)
    else:
        h = x + blk.attn(blk.ln1(x), blk.ln1(x), mask, k1)[0]
        want = h + blk.ffn(blk.ln2(h), k3)
    np.testing.assert_allclose(np.asarray(blk(x, mask, key)[0]), np.asarray(want), rtol=1e-5, atol=1e-5)
    default = TransformerBlock(16, 2, 16, 0.5, layout, "relu", rngs=nnx.Rngs(0))
    assert not np.allclose(np.asarray(default(x, mask, key)[0]), np.asarray(want), atol=1e-3)
    m = build_model("sasrec/small", 300, attn_out_dropout=False)
    assert all(b.out_rate == 0.0 for b in m.blocks)


@pytest.mark.parametrize("name", ["sasrec/small", "hstu/small", "bert4rec/small", "gsasrec/small"])
def test_cosine_similarity_scores_unit_vectors_over_the_temperature(name):
    """``similarity="cosine"`` (generative-recommenders' HSTU and SASRec): every position's score
    is cos(state, item) / temperature, from the same parameters as the dot-product model; the
    encoder's input lookups still read the raw table (the states before normalising agree)."""
    h = hist(np.random.default_rng(6), 60)
    dot, cos = build_model(name, 60), build_model(name, 60, similarity="cosine", temperature=0.1)

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
    np.testing.assert_allclose(np.asarray(cos.hidden(h)), unit(np.asarray(dot.hidden(h))) / 0.1,
                               rtol=1e-4, atol=1e-4)
    u, table = unit(np.asarray(dot.encode(h))), unit(np.asarray(dot.output_table()))
    got = np.asarray(cos.score_all(h))
    np.testing.assert_allclose(got, u @ table.T / 0.1, rtol=1e-4, atol=1e-4)
    assert np.isfinite(got).all() and np.abs(got).max() <= 1 / 0.1 + 1e-4
