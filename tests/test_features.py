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


