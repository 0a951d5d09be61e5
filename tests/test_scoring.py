"""The scoring core against numpy references: masks, masked top-k, the compiled Scorer."""

import numpy as np
import pytest

from jaxrec.data import load_dataset
from jaxrec.errors import UserError
from jaxrec.inference import Recommender
from jaxrec.models import build_model
from jaxrec.scoring import (MASKED, allowed_mask, catalog_ranks, catalog_top_k, host_allowed, masked_top_k,
                            ranks_from_scores)
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
    # float32 dot products in another shape (an einsum over candidates vs the full matmul) round
    # differently on XLA CPU: ulps apart, e.g. 1.5e-7 on a score of 0.068 (jax 0.10)
    np.testing.assert_allclose(np.asarray(rec.score(h, cands)), full[:, 5:8], rtol=1e-5, atol=1e-6)
    out = rec.scorer.top_k(h, 10, exclude=h, explain=True)
    vals, idx = (np.asarray(x) for x in masked_top_k(full, h, 10))
    np.testing.assert_array_equal(np.asarray(out.items), idx)
    np.testing.assert_allclose(np.asarray(out.values), vals, rtol=1e-5)
    att = np.asarray(out.attention)
    assert att.shape == h.shape and np.allclose(att.sum(1), 1, atol=1e-4) and (att[h == 0] == 0).all()
    allow = np.array([[8, 9]] * 3, np.int32)  # an allow-list of two items, in rows 0 and 2
    out = rec.scorer.top_k(h, 5, exclude=np.zeros((3, 1), np.int32), allow=allow,
                           restricted=np.array([True, False, True]))
    got, vals = np.asarray(out.items), np.asarray(out.values)
    assert set(got[[0, 2], :2].ravel()) <= {8, 9} and (got[[0, 2], 2:] == 0).all()
    assert np.isinf(vals[[0, 2], 2:]).all() and np.isfinite(vals[1]).all()
    np.testing.assert_array_equal(got[1], np.asarray(masked_top_k(full, np.zeros((3, 1), np.int32), 5)[1])[1])
    ranker = Recommender.from_model(build_model("bst/small", data.num_items, 1), data.catalog,
                                    Config(model="bst/small"))
    with pytest.raises(UserError, match="ranker alone cannot recommend"):
        ranker.scorer.top_k(h, 5)


def _exact_case(seed, b=6, n=997, d=8):
    """Integer-valued users and items: every dot product is exact in float32 whatever the
    summation order, so chunked and full results must agree bit for bit, and ties abound."""
    rng = np.random.default_rng(seed)
    user = rng.integers(-2, 3, (b, d)).astype(np.float32)
    table = rng.integers(-2, 3, (n + 1, d)).astype(np.float32)
    exclude = rng.integers(0, n + 1, (b, 40)).astype(np.int32)
    targets = rng.integers(1, n + 1, b).astype(np.int32)
    return user, table, exclude, targets


@pytest.mark.parametrize("chunk", [1, 7, 64, 100, 333, 997, 998, 4096])
def test_chunked_scoring_is_exactly_the_full_matrix(chunk):
    user, table, exclude, targets = _exact_case(chunk)
    scores = user @ table.T  # (B, N+1), exact
    full_v, full_i = (np.asarray(x) for x in masked_top_k(scores, exclude, 50))
    v, i = (np.asarray(x) for x in catalog_top_k(user, table, 50, exclude=exclude, chunk=chunk))
    np.testing.assert_array_equal(v, full_v)
    np.testing.assert_array_equal(i, full_i)  # ties: the lower index first, in both
    ranks, rv, ri = catalog_ranks(user, table, targets, exclude, k=20, chunk=chunk)
    want = np.asarray(ranks_from_scores(scores, targets, exclude)[0])
    np.testing.assert_array_equal(np.asarray(ranks), want)
    np.testing.assert_array_equal(np.asarray(ri), full_i[:, :20])
    # the slow reference: 1 + items (not padding, not excluded, not the target) scoring >= it
    for r in range(len(user)):
        ok = np.ones(len(table), bool)
        ok[0] = False
        ok[exclude[r]] = False
        ok[targets[r]] = False
        assert want[r] == 1 + int((scores[r][ok] >= scores[r, targets[r]]).sum())


@pytest.mark.parametrize("k,chunk", [(1, 1024), (5, 2048), (8, 4096), (30, 8192)])
def test_blocked_top_k_is_exact_ties_included(k, chunk):
    """The blocked top-k (k blocks of 32-128 columns with the largest maxima) on integer
    scores, where ties are everywhere: exactly lax.top_k's answer, lower index first."""
    user, table, exclude, _ = _exact_case(k, b=5, n=20_000, d=4)
    full_v, full_i = (np.asarray(x) for x in masked_top_k(user @ table.T, exclude, k))
    v, i = (np.asarray(x) for x in catalog_top_k(user, table, k, exclude=exclude, chunk=chunk))
    np.testing.assert_array_equal(v, full_v)
    np.testing.assert_array_equal(i, full_i)


def test_chunked_allow_lists_and_too_few_items():
    user, table, exclude, _ = _exact_case(3, b=3, n=300)
    allow = np.array([[5, 250, 299, 0], [7, 0, 0, 0], [1, 2, 3, 4]], np.int32)
    restricted = np.array([True, True, False])
    want = [catalog_top_k(user, table, 6, exclude=exclude[:, :2], allow=allow, restricted=restricted, chunk=c)
            for c in (None, 50, 128)]
    for v, i in want[1:]:
        np.testing.assert_array_equal(np.asarray(i), np.asarray(want[0][1]))
        np.testing.assert_array_equal(np.asarray(v), np.asarray(want[0][0]))
    items, vals = np.asarray(want[0][1]), np.asarray(want[0][0])
    allowed0 = {5, 250, 299} - set(exclude[0, :2].tolist())
    assert set(items[0][np.isfinite(vals[0])].tolist()) == allowed0
    assert (items[0][~np.isfinite(vals[0])] == 0).all()  # past the allowed items: 0, MASKED
    assert len(set(items[2].tolist())) == 6  # an unrestricted row ranks the whole catalog


def test_approximate_top_k_is_an_option():
    user, table, exclude, _ = _exact_case(5, b=4, n=2000)
    v, i = catalog_top_k(user, table, 10, exclude=exclude, chunk=512, recall=0.95)
    ev, ei = catalog_top_k(user, table, 10, exclude=exclude, chunk=512)
    # exact scores of what it returned: never better than the exact top-k, row by row
    assert (np.asarray(v)[:, 0] <= np.asarray(ev)[:, 0]).all()
    assert np.asarray(i).shape == (4, 10)


@pytest.mark.parametrize("model_name", ["sasrec/small", "bert4rec/small"])
@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_a_compact_table_scores_as_the_float_model_on_its_dequantized_table(model_name, dtype):
    """--table-dtype: the compact scorer (float32 table dropped from its parameters, every read
    dequantized) answers exactly as a float32 scorer whose item table is the dequantized one:
    the only change is the rounding of the table. BERT4Rec: its mask-token row is kept too."""
    import jax
    import jax.numpy as jnp

    from jaxrec.scoring import CompactTable, Scorer, Stage

    data = load_dataset("synthetic:tiny")
    rec = Recommender.from_model(build_model(model_name, data.num_items, 0), data.catalog,
                                 Config(model=model_name))
    stage = rec.stage
    compact = Scorer(stage, chunk=32, table_dtype=dtype)
    assert compact.table_bytes() < rec.scorer.table_bytes() / (1.9 if dtype == "bfloat16" else 3.5)
    inp = compact.tables[0]
    deq = np.asarray(inp.take(jnp.arange(inp.values.shape[0])))  # (R, D) every row, extra tokens included
    emb = np.asarray(stage.model().item_emb.embedding[...])
    tol = np.abs(emb).max(axis=1, keepdims=True) * (1 / 254 if dtype == "int8" else 2 ** -8)
    assert (np.abs(deq - emb) <= tol + 1e-12).all()  # half a quantisation step per row

    def swap(path, x):
        return jnp.asarray(deq) if "['item_emb']['embedding']" in jax.tree_util.keystr(path) else x
    ref = Scorer(Stage(stage.graphdef, jax.tree_util.tree_map_with_path(swap, stage.params), stage.max_len),
                 chunk=32)
    h = np.random.default_rng(3).integers(0, data.num_items + 1, (4, 50)).astype(np.int32)
    got, want = compact.top_k(h, 10, exclude=h, explain=True), ref.top_k(h, 10, exclude=h, explain=True)
    np.testing.assert_array_equal(np.asarray(got.items), np.asarray(want.items))
    np.testing.assert_allclose(np.asarray(got.values), np.asarray(want.values), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got.attention), np.asarray(want.attention), atol=1e-6)
    cands = np.array([[5, 6, 7]] * 4, np.int32)
    np.testing.assert_allclose(np.asarray(compact.score(h, cands)), np.asarray(ref.score(h, cands)), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(compact.item_vectors([5, 6]), deq[[5, 6]], rtol=1e-6)
    # the float rows are gone from the compact scorer's parameters: a read that bypassed the
    # compact table would fail, not read stale rows
    assert jax.tree_util.tree_leaves(compact._first_params)[0].shape[0] == 0 or any(
        x.shape[0] == 0 for x in jax.tree_util.tree_leaves(compact._first_params))
    assert isinstance(compact.tables[1], CompactTable) and compact.tables[1].n == data.num_items + 1


# ---------------------------------------------------------------- diversity (maximal marginal relevance)

def _ref_mmr(vals, items, vecs, k, d):
    """One row by hand: the textbook greedy loop over the allowed candidates."""
    ok = np.isfinite(vals)
    lo, hi = vals[ok].min(), vals[ok].max()
    rel = np.where(ok, (vals - lo) / max(hi - lo, 1e-9), 0.0)
    sim = vecs @ vecs.T
    picked = []
    while len(picked) < k and len(picked) < ok.sum():
        best, arg = -np.inf, None
        for j in np.flatnonzero(ok):
            if j in picked:
                continue
            g = rel[j] if not picked else (1 - d) * rel[j] - d * max(sim[j, p] for p in picked)
            if g > best + 1e-7:  # ties: the earlier (more relevant) candidate
                best, arg = g, j
        picked.append(arg)
    out_i = np.zeros(k, np.int64)
    out_i[: len(picked)] = items[picked]
    return out_i


@pytest.mark.parametrize("d", [0.0, 0.3, 0.7, 1.0])
def test_mmr_equals_the_greedy_reference(d):
    from jaxrec.numerics import unit_rows
    from jaxrec.scoring import cosine, mmr

    rng = np.random.default_rng(int(d * 10))
    b, n, e, k = 4, 30, 5, 12
    vals = -np.sort(-rng.normal(size=(b, n)).astype(np.float32), axis=1)
    vals[3, 8:] = -np.inf  # a row with only 8 allowed candidates
    items = rng.permutation(np.arange(1, 200))[: b * n].reshape(b, n).astype(np.int32)
    vecs = np.asarray(unit_rows(rng.normal(size=(b, n, e)).astype(np.float32)))
    got_v, got_i = (np.asarray(x) for x in mmr(vals, items, cosine(vecs), k, np.full(b, d, np.float32)))
    for r in range(b):
        np.testing.assert_array_equal(got_i[r], _ref_mmr(vals[r], items[r], vecs[r], k, d))
    assert (got_i[3, 8:] == 0).all() and np.isinf(got_v[3, 8:]).all()
    short = np.asarray(mmr(vals, items, cosine(vecs), 5, np.full(b, d, np.float32))[1])
    np.testing.assert_array_equal(short, got_i[:, :5])  # greedy: a shorter list is the longer one's prefix
    if d == 0:  # no diversity: the top k unchanged
        np.testing.assert_array_equal(got_i[:3], items[:3, :k])
        np.testing.assert_allclose(got_v[:3], vals[:3, :k])


def test_set_cosine_of_value_codes_equals_unit_multi_hot_dot_products():
    from jaxrec.data.features import categorical_feature, code_lists, unit_multi_hot
    from jaxrec.scoring import set_cosine
    rng = np.random.default_rng(2)
    sets = [sorted(set(rng.integers(0, 9, rng.integers(0, 5)).tolist())) for _ in range(40)]  # some empty
    dense = unit_multi_hot(sets, 9)  # (40, 9)
    got = np.asarray(set_cosine(code_lists(sets)[None]))[0]  # (40, 40)
    np.testing.assert_allclose(got, dense @ dense.T, atol=1e-6)
    assert categorical_feature(sets)["vocab"]  # the same codes a catalog feature stores


def test_diversify_by_embeddings_and_features_raises_list_diversity():
    from jaxrec.data.features import feature_lists, feature_vectors

    data = load_dataset("synthetic:tiny")
    rec = Recommender.from_model(build_model("sasrec/small", data.num_items, 0), data.catalog,
                                 Config(model="sasrec/small"))
    h = np.random.default_rng(4).integers(1, data.num_items + 1, (8, 30)).astype(np.int32)
    top = rec.scorer.top_k(h, 60, exclude=h)
    feats = feature_vectors(data.catalog, "topic")
    assert feats.shape[0] == data.num_items + 1 and np.allclose(np.linalg.norm(feats[1:], axis=1), 1)
    emb = rec.scorer.item_vectors()
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)

    def ild(items, vecs):  # mean pairwise (1 - cosine) within each list
        v = vecs[items]  # (B, k, E)
        s = np.einsum("bke,bje->bkj", v, v)
        kk = items.shape[1]
        return float((1 - (s.sum((1, 2)) - kk) / (kk * (kk - 1))).mean())

    base = np.asarray(top.items)[:, :10]
    lists = feature_lists(data.catalog, "topic")  # what diversify reads: codes, not the rows
    assert lists.shape[0] == data.num_items + 1 and (lists[0] == -1).all()
    for vecs, f in ((emb, None), (feats, lists)):
        out = rec.scorer.diversify(top, 10, np.full(8, 0.7, np.float32), pool=60, feats=f)
        items = np.asarray(out.items)
        assert ild(items, vecs) > ild(base, vecs)
        assert (items[:, 0] == base[:, 0]).all()  # the most relevant item stays first
        assert not any(np.isin(items[r], h[r]).any() for r in range(8))  # exclusions hold
        assert (np.sort(items, 1)[:, 1:] != np.sort(items, 1)[:, :-1]).all()  # no item twice
    same = rec.scorer.diversify(top, 10, np.zeros(8, np.float32), pool=60)
    np.testing.assert_array_equal(np.asarray(same.items), base)
    with pytest.raises(UserError, match="must be in 1..60"):
        rec.scorer.diversify(top, 61, np.zeros(8, np.float32))
