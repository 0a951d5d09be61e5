"""Metrics against hand-computed cases and a slow NumPy reference of the protocol."""

import math

import numpy as np
import pytest

from jaxrec.data import Interactions, build_sequences, leave_one_out, load_dataset
from jaxrec.errors import UserError
from jaxrec.metrics import evaluate, full_ranks, list_metrics, pooled_auc, sampled_ranks, summarize


def ref_rank(scores, target, excluded):
    """Slow reference: 1 + #{j != target, j not excluded, j != 0, s_j >= s_target}."""
    return 1 + sum(1 for j in range(1, len(scores))
                   if j != target and j not in excluded and scores[j] >= scores[target])


def test_hand_cases_ties_and_exclusion():
    s = np.array([[9.0, 1.0, 3.0, 3.0, 2.0, 5.0]])  # column 0 is padding, never ranked
    excl = np.zeros((1, 4), np.int32)
    assert full_ranks(s, np.array([2]), excl).tolist() == [3]  # 5 and the tied 3 beat it
    assert full_ranks(s, np.array([5]), excl).tolist() == [1]
    excl[0, :2] = [5, 3]  # exclude the two items that beat item 2
    assert full_ranks(s, np.array([2]), excl).tolist() == [1]
    excl[0, :3] = [5, 3, 2]  # the target itself is never excluded
    assert full_ranks(s, np.array([2]), excl).tolist() == [1]


def test_constant_model_scores_near_zero():
    s = np.zeros((1, 101))
    r = full_ranks(s, np.array([7]), np.zeros((1, 1), np.int32))
    assert r.tolist() == [100]


def test_summarize_closed_forms_and_k_beyond_n():
    m = summarize(np.array([1, 3, 11]), ks=(1, 10, 1000))
    assert m["HR@1"] == pytest.approx(1 / 3)
    assert m["HR@10"] == pytest.approx(2 / 3)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert m["HR@1000"] == 1.0
    assert m["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 3)


def test_against_numpy_reference_random():
    rng = np.random.default_rng(0)
    b, n = 64, 40
    scores = rng.integers(0, 6, (b, n + 1)).astype(np.float32)  # many ties
    targets = rng.integers(1, n + 1, b)
    excl = rng.integers(0, n + 1, (b, 7)).astype(np.int32)
    got = np.asarray(full_ranks(scores, targets, excl))
    want = [ref_rank(scores[i], targets[i], set(excl[i].tolist()) - {0}) for i in range(b)]
    assert got.tolist() == want
    negs = rng.integers(1, n + 1, (b, 10))
    got_s = np.asarray(sampled_ranks(scores, targets, negs))
    want_s = [1 + int((scores[i, negs[i]] >= scores[i, targets[i]]).sum()) for i in range(b)]
    assert got_s.tolist() == want_s


class TableScorer:
    """Scores from a fixed (N+1,) vector plus the last history item's row of a transition table."""

    max_len = 3

    def __init__(self, table):
        self.table = table

    def score_all(self, history):
        return self.table[history[:, -1]]


def test_evaluate_end_to_end_matches_reference():
    rng = np.random.default_rng(1)
    u = np.repeat(np.arange(30), rng.integers(3, 12, 30))
    d = build_sequences(Interactions(u, rng.integers(1, 25, len(u))))
    split = leave_one_out(d)
    table = rng.integers(0, 4, (d.num_items + 1, d.num_items + 1)).astype(np.float32)
    res = evaluate(TableScorer(table), split, "test", ks=(1, 5, 10, 100), batch_size=8)
    ranks = []
    for k in range(len(split.test)):
        hist = d.items[split.test.start[k]:split.test.end[k]]
        ranks.append(ref_rank(table[hist[-1]], split.test.target[k], set(hist.tolist())))
    assert res.ranks.tolist() == ranks
    assert res.metrics["HR@10"] == pytest.approx(np.mean(np.array(ranks) <= 10))
    assert res.metrics["HR@100"] == 1.0  # K > N
    assert 0 < res.metrics["Coverage@1"] <= res.metrics["Coverage@10"] <= 1
    assert "full ranking" in res.protocol and "excluded" in res.protocol
    # validation on a fixed sample of users (eval_users): the same ranks for those users
    part = evaluate(TableScorer(table), split, "test", ks=(1, 5, 10, 100), batch_size=8, users=12, seed=3)
    again = evaluate(TableScorer(table), split, "test", ks=(1, 5, 10, 100), batch_size=8, users=12, seed=3)
    keep = np.sort(np.random.default_rng([3, 1]).choice(len(split.test), 12, replace=False))
    assert part.ranks.tolist() == np.array(ranks)[keep].tolist() == again.ranks.tolist()
    assert "12 users" in part.protocol and "sample of the 30" in part.protocol


def test_sampled_protocol_negatives_not_in_sequence():
    rng = np.random.default_rng(2)
    u = np.repeat(np.arange(20), 6)
    d = build_sequences(Interactions(u, rng.integers(1, 200, len(u))))
    split = leave_one_out(d)
    table = np.tile(np.arange(d.num_items + 1, dtype=np.float32), (d.num_items + 1, 1))
    res = evaluate(TableScorer(table), split, "test", sampled=20, sampler="popularity")
    assert "sampled" in res.protocol
    assert res.ranks.min() >= 1 and res.ranks.max() <= 21


# ---------------------------------------------------------------- candidate lists (rankers)
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


# ---------------------------------------------------------------- beyond accuracy

def test_beyond_accuracy_on_a_hand_computed_case():
    from jaxrec.metrics import beyond_accuracy

    vectors = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [-1, 0]], np.float32)  # items 1..4
    genres = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], np.float32)
    genres = genres / np.maximum(np.linalg.norm(genres, axis=1, keepdims=True), 1e-9)
    self_info = np.array([0, 1.0, 2.0, 3.0, 4.0])
    items = np.array([[1, 2, 3], [1, 4, 0]])
    valid = items > 0
    got = beyond_accuracy(items, valid, vectors=vectors, features={"g": genres}, self_info=self_info)
    c = 1 / np.sqrt(2)
    ild0 = np.mean([1 - 0, 1 - c, 1 - c])  # pairs (1,2), (1,3), (2,3)
    ild1 = 1 - (-1)  # (1,4): opposite vectors
    assert got["ILD"] == pytest.approx(ild0 + ild1)
    assert got["ILD/g"] == pytest.approx(np.mean([1, 1 - c, 1 - c]) + 1.0)  # item 4 has no genre: alike nothing
    assert got["Coverage/g"] == pytest.approx(2 / 3 + 1 / 3)
    assert got["Novelty"] == pytest.approx((1 + 2 + 3) / 3 + (1 + 4) / 2)
    one = beyond_accuracy(np.array([[2, 0]]), np.array([[True, False]]), vectors=vectors)
    assert one["ILD"] == 0.0  # a one-item list has no pairs


def test_evaluate_with_diversity_reports_the_trade_off():
    from jaxrec.inference import Recommender
    from jaxrec.models import build_model
    from jaxrec.train import Config

    data = load_dataset("synthetic:tiny")
    split = leave_one_out(data)
    rec = Recommender.from_model(build_model("sasrec/small", data.num_items, 0), data.catalog,
                                 Config(model="sasrec/small"))
    plain = evaluate(rec, split, "test", ks=(10,))
    m = plain.metrics
    assert {"ILD@10", "ILD@10/topic", "Coverage@10/topic", "Novelty@10"} <= set(m)
    assert 0 <= m["ILD@10/topic"] <= 1 and 0 < m["Coverage@10/topic"] <= 1 and m["Novelty@10"] > 0
    assert plain.beyond.startswith("over each top-10 list") and "beyond" not in plain.protocol
    zero = evaluate(rec, split, "test", ks=(10,), diversity=1e-9, pool=50)  # the diversity path, ~no diversity
    assert zero.metrics["NDCG@10"] == pytest.approx(m["NDCG@10"], abs=1e-9)
    div = evaluate(rec, split, "test", ks=(10,), diversity=0.9, diversity_by="topic", pool=50)
    assert div.metrics["ILD@10/topic"] > m["ILD@10/topic"] and div.metrics["Coverage@10/topic"] > m["Coverage@10/topic"]
    assert "diversity 0.9 by topic" in div.protocol
    emb = evaluate(rec, split, "test", ks=(10,), diversity=0.9, pool=50)
    assert emb.metrics["ILD@10"] > m["ILD@10"]
    with pytest.raises(UserError, match="diversity"):
        evaluate(rec, split, "test", diversity=0.5, sampled=20)
