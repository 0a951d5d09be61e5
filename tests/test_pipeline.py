"""The two-stage pipeline (retrieve top-N, re-rank) and rankers trained on a retriever run."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from jaxrec.data import leave_one_out, load_dataset
from jaxrec.errors import UserError
from jaxrec.inference import Recommender
from jaxrec.metrics import evaluate
from jaxrec.models import build_model
from jaxrec.pipeline import Pipeline
from jaxrec.scoring import masked_top_k
from jaxrec.train import Config

from test_rankers import hist


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


    class RankerOverTheCatalog:  # what the pipeline must equal when every item is a candidate
        max_len = rank.max_len

        def score_all(self, h):
            every = np.arange(data.num_items + 1, dtype=np.int32)[None].repeat(len(h), 0)
            s = np.asarray(rank.score(h[:, -rank.max_len:], every))
            return np.where(every > 0, s, -np.inf)

    want = evaluate(RankerOverTheCatalog(), split, "test", exclude_seen=False)
    for k in ("HR@10", "NDCG@10", "MRR"):
        assert res.metrics[k] == pytest.approx(want.metrics[k], abs=1e-6), k
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


def test_ranker_run_warm_started_and_mined_from_one_retriever_run(tiny_run):
    """``init_from`` and ``retriever`` naming the same run: the ranker's item-id embeddings start
    as the retriever's, and its hard negatives come from the retriever's top ``hard_pool``."""
    from jaxrec.train import Config, Ranking, build_run

    retr_dir = tiny_run
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


def test_residual_ranker_trains_on_top_of_the_retriever_score(tmp_path, tiny_run):
    """``residual=w``: batches carry the retriever's score of each candidate, the loss sees
    ranker + w * retriever, and the pipeline blends with w unless told otherwise."""
    from jaxrec import losses
    from jaxrec.train import Config, Ranking, build_run, train
    from jaxrec.scoring import merge
    from jaxrec.train.step import make_loss_fn

    retr_dir, rank_dir = tiny_run, tmp_path / "ranker"
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
