"""Cross-attention rankers, item side features, list metrics, and the two-stage pipeline."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from jaxrec.data import leave_one_out, load_dataset
from jaxrec.data.batching import RankBatches
from jaxrec.data.features import item_features
from jaxrec.inference import Recommender
from jaxrec.errors import UserError
from jaxrec.metrics import evaluate, list_metrics, pooled_auc
from jaxrec.models import build_model
from jaxrec.models.layers import NEG_INF
from jaxrec.pipeline import Pipeline
from jaxrec.scoring import masked_top_k
from jaxrec.train import Config

RANKERS = ["target_attention/small", "target_attention/din", "bst/small", "encdec/small"]
N = 60


def hist(rng, b=4, l=30, min_len=3):
    h = np.zeros((b, l), np.int32)
    for i in range(b):
        k = rng.integers(min_len, l)
        h[i, -k:] = rng.integers(1, N + 1, k)
    return h


@pytest.mark.parametrize("name", RANKERS + ["encdec/listaware"])
def test_history_padding_does_not_change_scores(name):
    m = build_model(name, N)
    h = hist(np.random.default_rng(0), l=10)
    wide = np.concatenate([np.zeros((4, 25), np.int32), h], axis=1)
    c = np.random.default_rng(1).integers(1, N + 1, (4, 6)).astype(np.int32)
    np.testing.assert_allclose(np.asarray(m.score(h, c)), np.asarray(m.score(wide, c)), atol=1e-5)


@pytest.mark.parametrize("name", RANKERS + ["encdec/listaware"])
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


# ---------------------------------------------------------------- features

@pytest.mark.parametrize("name", ["sasrec/small", "target_attention/small"])
def test_features_change_scores_as_configured(name):
    data = load_dataset("synthetic:tiny")
    m = build_model(name, data.num_items, catalog=data.catalog, features=["topic"])
    plain = build_model(name, data.num_items)
    assert plain.item_feats is None and m.item_feats is not None
    h = np.zeros((1, 20), np.int32)
    h[0, -3:] = [1, 2, 3]
    c = np.array([[5, 6, 7]], np.int32)

    def scores(model):
        return np.asarray(model.score(h, c) if model.kind == "ranking" else model.score_all(h)[:, 5:8])

    before = scores(m)
    ids = m.item_feats.features.ids.copy()
    ids[5] = ids[6] % data.catalog.features["topic"]["offsets"].size + 1  # item 5 gets another topic
    m.item_feats.features = dataclasses.replace(m.item_feats.features, ids=ids)
    after = scores(m)
    assert not np.isclose(before[0, 0], after[0, 0])  # item 5 changed
    np.testing.assert_allclose(before[0, 1:], after[0, 1:], atol=1e-6)  # the others did not


def test_feature_matrix_from_catalog():
    data = load_dataset("synthetic:tiny")
    f = item_features(data.catalog, ["topic"])
    assert f.ids.shape == (data.num_items + 1, 1) and (f.ids[0] == 0).all() and (f.ids[1:] > 0).all()
    assert f.vocab_size == len(data.catalog.features["topic"]["vocab"])
    with pytest.raises(UserError, match="not in the catalog"):
        item_features(data.catalog, ["genres"])


def _without_items(data, cold):
    """The same catalog with every event of the ``cold`` items removed (they stay in the catalog)."""
    keep = ~np.isin(data.items, cold)
    seg = np.repeat(np.arange(data.num_users), data.lengths)
    lens = np.bincount(seg[keep], minlength=data.num_users)
    return dataclasses.replace(data, items=data.items[keep], offsets=np.r_[0, np.cumsum(lens)],
                               times=None if data.times is None else data.times[keep])


def test_new_item_gets_a_sensible_score_from_its_features(tmp_path):
    """Items never seen in training: with topic features a user's own-topic cold items score
    above other cold items; without features the order is random."""
    from jaxrec.train import Config, train

    data = load_dataset("synthetic:small")
    topic = item_features(data.catalog, ["topic"]).ids[:, 0]
    cold = np.arange(1, data.num_items + 1)[np.random.default_rng(0).random(data.num_items) < 0.1]
    split = leave_one_out(_without_items(data, cold))
    results = {}
    for feats in (["topic"], []):
        cfg = Config(model="sasrec/small", data="synthetic:small", loss="ce", batch_size=64,
                          epochs=4, lr=3e-3, model_args={"features": feats}, seed=0)
        out = tmp_path / f"run{len(feats)}"
        train(cfg, out, progress=False, split=split)
        rec = Recommender.from_checkpoint(out)
        es = split.test
        from jaxrec.data.splits import pad_histories
        h = pad_histories(split.data.items, es.start[:300], es.end[:300], rec.max_len)
        s = np.asarray(rec.score_all(h))[:, cold]  # (U, cold)
        # a user's main topic: the most frequent topic in the history
        main = np.array([np.bincount(topic[r[r > 0]], minlength=topic.max() + 1).argmax() for r in h])
        same = topic[cold][None, :] == main[:, None]
        ok = same.any(1) & (~same).any(1)
        aucs = [pooled_auc(s[u][same[u]], s[u][~same[u]]) for u in np.flatnonzero(ok)]
        results[bool(feats)] = float(np.mean(aucs))
    assert results[True] > 0.8, results
    assert results[True] > results[False] + 0.15, results


# ---------------------------------------------------------------- metrics

def test_list_metrics_hand_computed():
    scores = np.array([[3.0, 1.0, 2.0, 5.0],    # positive beaten by one of 3: AUC 2/3, rank 2
                       [1.0, 1.0, 0.0, 0.0]])   # tie with one of 3: AUC (2 + 0.5)/3, rank 2
    valid = np.array([[True, True, True, True], [True, True, True, False]])  # row 2: 2 negatives
    m = list_metrics(scores, valid, ks=(1, 2))
    assert m["GAUC"] == pytest.approx(np.mean([2 / 3, 1.5 / 2]))
    assert m["HR@1"] == 0 and m["HR@2"] == 1
    assert m["NDCG@2"] == pytest.approx(1 / np.log2(3))
    # pooled: positives 3, 1 vs negatives 1, 2, 5, 1, 0
    pairs = [(p, n) for p in (3.0, 1.0) for n in (1.0, 2.0, 5.0, 1.0, 0.0)]
    ref = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert m["AUC"] == pytest.approx(ref)


def test_pooled_auc_matches_brute_force():
    rng = np.random.default_rng(0)
    p, n = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 70).astype(float)
    ref = np.mean([(a > b) + 0.5 * (a == b) for a in p for b in n])
    assert pooled_auc(p, n) == pytest.approx(ref)


# ---------------------------------------------------------------- batches

def test_rank_batches_shapes_positive_first_and_hard_negatives():
    split = leave_one_out(load_dataset("synthetic:tiny"))
    pool = np.arange(1, 11)

    def hard(items, start, end):  # a fixed "top-N" and scores = item id / 100
        return np.tile(pool, (len(start), 1)), np.tile(np.arange(split.data.num_items + 1) / 100, (len(start), 1))

    rb = RankBatches(split, 20, 16, 8, "popularity", seed=1, cuts_per_user=2, retriever=hard, hard_fraction=0.5,
                     prior=True)
    batches = list(rb.epoch(0))
    assert len(batches) == rb.batches_per_epoch
    s = split  # every (history window, next item) pair of the training sequences
    cuts = set()
    for u in range(len(s.train_start)):
        seq = s.data.items[s.train_start[u]:s.train_end[u]]
        cuts |= {(tuple(seq[max(0, t - 20):t].tolist()), int(seq[t])) for t in range(1, len(seq))}
    for b in batches:
        assert b["history"].shape == (16, 20) and b["candidates"].shape == (16, 9)
        real = b["weights"] > 0
        c = b["candidates"][real]
        np.testing.assert_allclose(b["prior"][real], c / 100, rtol=1e-6)  # the retriever's score per candidate
        assert (c[:, 1:] != c[:, :1]).all()  # no negative equals its positive
        # the 4 hard negatives come from the pool; one is a sampled stand-in only where the
        # positive itself is in the pool (a hard negative equal to it is replaced)
        hard_part = c[:, 1:5]
        outside = (~np.isin(hard_part, pool)).sum(1)
        assert (outside <= np.isin(c[:, 0], pool)).all()
        # the positive is the item right after the history, in some user's training sequence
        for row, cand in zip(b["history"][real], c):
            assert (tuple(row[row > 0].tolist()), int(cand[0])) in cuts
    again = list(RankBatches(split, 20, 16, 8, "popularity", seed=1, cuts_per_user=2, retriever=hard).epoch(0))
    assert "prior" not in again[0]
    np.testing.assert_array_equal(batches[3]["candidates"], again[3]["candidates"])


# ---------------------------------------------------------------- pipeline

def _rec(name, data, seed):
    model = build_model(name, data.num_items, seed, catalog=data.catalog)
    return Recommender.from_model(model, data.catalog, Config(model=name), step=0)


def test_pipeline_equals_the_two_stages_by_hand():
    data = load_dataset("synthetic:tiny")
    retr, rank = _rec("sasrec/small", data, 0), _rec("target_attention/small", data, 1)
    pipe = Pipeline(retr, rank, candidates=20)
    h = hist(np.random.default_rng(9), b=5, l=50)
    _, vals, items = pipe.stages(h, 10)
    # by hand: retrieval top-20 unseen, then the ranker's order
    _, c = masked_top_k(retr.score_all(h), h, 20)
    c = np.asarray(c)
    rs = np.asarray(rank.score(h[:, -rank.max_len:], c))
    order = np.argsort(-rs, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(np.asarray(items), np.take_along_axis(c, order, 1))
    np.testing.assert_allclose(np.asarray(vals), np.take_along_axis(rs, order, 1), rtol=1e-5)
    # the evaluation view ranks the same 10 first, in the same order
    s = np.array(pipe.score_all(h))
    s[np.arange(5)[:, None], h] = -np.inf
    s[:, 0] = -np.inf
    np.testing.assert_array_equal(np.argsort(-s, axis=1)[:, :10], np.asarray(items))
    # recommend speaks external ids
    rec = pipe.recommend([data.catalog.ids[i] for i in h[0][h[0] > 0]], k=5)
    assert rec.items == data.catalog.external(np.asarray(items)[0, :5])


def test_pipeline_evaluates_under_the_full_ranking_protocol():
    data = load_dataset("synthetic:tiny")
    split = leave_one_out(data)
    retr, rank = _rec("sasrec/small", data, 0), _rec("target_attention/small", data, 1)
    res = evaluate(Pipeline(retr, rank, candidates=data.num_items, exclude_seen=False), split, "test",
                   exclude_seen=False)
    assert 0 <= res.metrics["NDCG@10"] <= 1
    # with every item a candidate, the pipeline's order is the ranker's order over the catalog
    h = np.zeros((1, 50), np.int32)
    h[0, -4:] = [1, 2, 3, 4]
    cands = np.arange(1, data.num_items + 1, dtype=np.int32)[None]
    ranker_top = cands[0][np.argsort(-np.asarray(rank.score(h, cands))[0], kind="stable")[:5]]
    pipe_top = Pipeline(retr, rank, candidates=data.num_items, exclude_seen=False).top_k(h, 5, False)[1]
    np.testing.assert_array_equal(np.asarray(pipe_top)[0], ranker_top)


def test_pipeline_rejects_wrong_kinds_and_k():
    data = load_dataset("synthetic:tiny")
    retr, rank = _rec("sasrec/small", data, 0), _rec("bst/small", data, 1)
    with pytest.raises(UserError, match="retrieval model"):
        Pipeline(rank, retr)
    with pytest.raises(UserError, match="candidates"):
        Pipeline(retr, rank, candidates=0)
    with pytest.raises(UserError, match="k must be"):
        Pipeline(retr, rank, candidates=5).top_k(np.ones((1, 50), np.int32), 6)
    with pytest.raises(UserError, match="ranking model scores"):
        rank.score_all(np.ones((1, 10), np.int32))


def test_ranker_run_warm_started_and_mined_from_one_retriever_run(tmp_path):
    """``init_from`` and ``retriever`` naming the same run: the ranker's item-id embeddings start
    as the retriever's, and its hard negatives come from the retriever's top ``hard_pool``."""
    from jaxrec.train import Config, Ranking, build_run, train

    retr_dir = tmp_path / "retriever"
    train(Config(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32, epochs=1),
          retr_dir, progress=False)
    cfg = Config(model="target_attention/small", data="synthetic:tiny", num_negatives=8, batch_size=16,
                 epochs=1, ranking=Ranking(retriever=str(retr_dir), init_from=str(retr_dir), hard_pool=10,
                                           hard_fraction=1.0))
    run = build_run(cfg)
    retr = Recommender.from_checkpoint(retr_dir)
    n = run.split.data.num_items + 1
    src = nnx.merge(retr.graphdef, retr.params).item_emb.embedding[...][:n]
    dst = nnx.merge(run.graphdef, run.state["params"]).item_emb.embedding[...][:n]
    np.testing.assert_array_equal(np.asarray(src), np.asarray(dst))
    b = next(iter(run.batches.epoch(0)))
    h, c = b["history"], b["candidates"]
    pool = np.asarray(masked_top_k(retr.score_all(h[:, -retr.max_len:]), h[:, -retr.max_len:], 10)[1])
    real = b["weights"] > 0
    in_pool = [np.isin(c[i, 1:], pool[i]).mean() for i in np.flatnonzero(real)]
    assert np.mean(in_pool) > 0.9
    with pytest.raises(UserError, match="dim 32, this model 48"):
        build_run(dataclasses.replace(cfg, model_args={"dim": 48},
                                      ranking=dataclasses.replace(cfg.ranking, retriever=None)))


def test_residual_ranker_trains_on_top_of_the_retriever_score(tmp_path):
    """``residual=w``: batches carry the retriever's score of each candidate, the loss sees
    ranker + w * retriever, and the pipeline blends with w unless told otherwise."""
    from jaxrec import losses
    from jaxrec.train import Config, Ranking, build_run, train
    from jaxrec.scoring import merge
    from jaxrec.train.step import make_loss_fn

    retr_dir, rank_dir = tmp_path / "retriever", tmp_path / "ranker"
    train(Config(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32, epochs=1),
          retr_dir, progress=False)
    cfg = Config(model="target_attention/small", data="synthetic:tiny", num_negatives=8, batch_size=16,
                 epochs=1, ranking=Ranking(retriever=str(retr_dir), hard_pool=10, residual=1.5,
                                           eval_negatives=20))
    run = build_run(cfg)
    retr = Recommender.from_checkpoint(retr_dir)
    b = next(iter(run.batches.epoch(0)))
    h, c = b["history"], b["candidates"]
    prior = np.take_along_axis(np.asarray(retr.score_all(h[:, -retr.max_len:])), c, axis=1)
    np.testing.assert_allclose(b["prior"], prior, rtol=1e-5, atol=1e-5)
    # the loss is the listwise loss of ranker + 1.5 * retriever, by hand
    model = merge(run.graphdef, run.state["params"])
    key = jax.random.key(0)
    got = make_loss_fn("listwise", cfg, run.split.data.num_items)(model, b, key)
    logits = model.score(h, c, key) + 1.5 * prior
    want = losses.sampled_softmax(logits[:, 0], logits[:, 1:], b["weights"], neg_ids=c[:, 1:], targets=c[:, 0])
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    # trained and read back: the pipeline blends with the trained weight by default
    train(cfg, rank_dir, progress=False)
    rank = Recommender.from_checkpoint(rank_dir)
    assert Pipeline(retr, rank, candidates=10).blend == 1.5
    assert Pipeline(retr, rank, candidates=10, blend=0).blend == 0.0
    with pytest.raises(UserError, match="ranking.residual applies to a ranker with a retriever"):
        build_run(dataclasses.replace(cfg, ranking=dataclasses.replace(cfg.ranking, retriever=None)))
