"""Item side features: the feature matrix, their effect on scores, cold items."""

import dataclasses

import numpy as np
import pytest

from jaxrec.data import leave_one_out, load_dataset
from jaxrec.data.features import item_features
from jaxrec.errors import UserError
from jaxrec.inference import Recommender
from jaxrec.metrics import pooled_auc
from jaxrec.models import build_model


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


@pytest.mark.slow  # overlapping coverage in the default run; kept for pytest -m slow
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




# ---------------------------------------------------------------- new and cold items at serve time

def _feature_model(untied=False, cosine=False):
    from jaxrec.train import Config
    data = load_dataset("synthetic:tiny")
    extra = ({"tied_output": False} if untied else {}) | ({"similarity": "cosine"} if cosine else {})
    m = build_model("sasrec/small", data.num_items, 0, catalog=data.catalog, features=["topic"], **extra)
    return data, Recommender.from_model(m, data.catalog, Config(model="sasrec/small")), m


@pytest.mark.parametrize("untied,cosine", [(False, False), (True, False), (False, True)])
def test_new_items_get_rows_from_their_features_and_spare_rows_are_never_returned(untied, cosine):
    """Cosine: the served output table holds unit rows (a table of its own though tied), the
    input table the raw ones, and a new item's output row is made unit length too."""
    from jaxrec.data.features import encode_values
    from jaxrec.scoring import Scorer

    data, rec, model = _feature_model(untied, cosine)
    n = data.num_items
    scorer = Scorer(rec.stage, new_item_slots=3)
    h = np.random.default_rng(1).integers(1, n + 1, (4, 20)).astype(np.int32)
    np.testing.assert_allclose(np.asarray(scorer.score_all(h))[:, : n + 1], np.asarray(rec.score_all(h)),
                               rtol=1e-5, atol=1e-5)  # the baked table (ids + features) scores as the model
    top = scorer.top_k(h, n, exclude=np.zeros((4, 1), np.int32))
    assert int(np.asarray(top.items).max()) <= n  # spare rows are never recommended
    topic = data.catalog.features["topic"]["vocab"]
    ids, codes, unknown = encode_values(data.catalog, ["topic"], {"topic": [topic[2], "nope"], "colour": ["red"]})
    assert unknown == ["colour=red", "topic=nope"] and codes == {"topic": [2]}
    start = scorer.add_items(ids[None, :])
    assert start == n + 1 and scorer.spare_rows == 2
    # the new row: the trained items' mean id row plus the feature part, in input and output tables
    emb = np.asarray(model.item_emb.embedding[...])[1: n + 1]
    out = emb if model.out_emb is None else np.asarray(model.out_emb.embedding[...])[1: n + 1]
    f = np.asarray(model.item_feats.rows(ids[None, :]))[0]
    new_out = out.mean(0) + f
    new_out = new_out / np.linalg.norm(new_out) if cosine else new_out
    np.testing.assert_allclose(np.asarray(scorer.tables[0].take(start)), emb.mean(0) + f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(scorer.tables[1].take(start)), new_out, rtol=1e-5, atol=1e-6)
    user = np.asarray(rec.scorer._user(rec.scorer._p(), h, None)[0])  # (4, D) as the model encodes
    np.testing.assert_allclose(np.asarray(scorer.score(h, np.full((4, 1), start)))[:, 0],
                               user @ new_out, rtol=1e-4, atol=1e-5)
    top = scorer.top_k(h, n + 1, exclude=np.zeros((4, 1), np.int32))
    items = np.asarray(top.items)
    assert (items == start).any(1).all() and items.max() == start  # recommendable, the next spare row is not
    hist = h.copy()
    hist[:, -1] = start  # a history holding the new item reads its input row
    assert np.isfinite(np.asarray(scorer.score_all(hist))).all()
    with pytest.raises(UserError, match="do not fit"):
        scorer.add_items(np.tile(ids[None, :], (3, 1)))


def test_cold_catalog_items_are_served_from_their_features():
    from jaxrec.scoring import Scorer

    data, rec, model = _feature_model()
    n = data.num_items
    cold = np.zeros(n + 1, bool)
    cold[[4, 9]] = True
    scorer = Scorer(rec.stage, cold_items=cold)
    emb = np.asarray(model.item_emb.embedding[...])
    feats = np.asarray(model.item_feats())
    warm = ~cold
    warm[0] = False
    want = emb[1: n + 1][warm[1:]].mean(0) + feats[4]
    np.testing.assert_allclose(np.asarray(scorer.tables[0].take(4)), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(scorer.tables[0].take(5)), emb[5] + feats[5], rtol=1e-5, atol=1e-6)
    plain = build_model("sasrec/small", n, 0)
    from jaxrec.train import Config
    with pytest.raises(UserError, match="without item features"):
        Scorer(Recommender.from_model(plain, data.catalog, Config(model="sasrec/small")).stage, new_item_slots=2)
