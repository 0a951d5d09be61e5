"""Ranking metrics and the evaluation protocol.

The protocol (and why each rule):

* **Full ranking** (default): the target is ranked against every item 1..N. Sampled
  metrics (target vs 100 negatives) inflate numbers and can even reorder models
  (Krichene & Rendle 2020), so they exist only to compare with old papers.
* **Seen items excluded**: items in the user's *input* sequence are removed from the
  candidate list (the common protocol of SASRec/BERT4Rec re-evaluations). The target
  itself is never excluded, even if the user consumed it before.
* **Ties count against the target**: ``rank = 1 + #{j != target, not excluded,
  score_j >= score_target}``. A model that outputs a constant gets rank ~N, not 1; an
  optimistic tie rule would reward collapsed models.
* HR@K = [rank <= K] (= Recall@K with one target), NDCG@K = 1/log2(rank+1) if rank <= K,
  MRR = 1/rank (untruncated), coverage@K = distinct items over all top-K lists / N.

Scores are computed and ranked in JAX one batch at a time, by the scorer's ``rank_targets``
(``jaxrec.scoring``: catalog chunks, so a million-item catalog never holds a (B, N+1) matrix),
or, for a scorer that only has ``score_all``, from one (B, N+1) matrix per batch. Shapes are
bucketed so a whole evaluation compiles a handful of times.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol as TypingProtocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.data.splits import EvalSet, Split, pad_histories, pad_times
from jaxrec.errors import UserError
from jaxrec.data.codec import next_pow2
from jaxrec.scoring import ranks_from_scores

DEFAULT_KS = (1, 5, 10, 20, 50)


class Scorer(TypingProtocol):
    """Anything evaluation can rank with: scores for every item given a padded history."""

    max_len: int  # the model reads at most the last ``max_len`` items

    def score_all(self, history: np.ndarray) -> jax.Array:
        """(B, L) int32 left-padded item indices -> (B, N+1) scores (column 0 is ignored).

        A scorer with a true ``uses_time`` attribute is called as ``score_all(history, times)``
        with ``times`` from ``pad_times(.., query="last")``: (B, L + 1)."""


@dataclasses.dataclass
class EvalResult:
    protocol: str
    metrics: dict
    ranks: np.ndarray  # (M,) one rank per evaluated user, in EvalSet order

    def to_json(self) -> dict:
        return {"protocol": self.protocol, "metrics": self.metrics}


# ---------------------------------------------------------------- jitted kernels

@jax.jit
def full_ranks(scores: jax.Array, targets: jax.Array, exclude: jax.Array) -> jax.Array:
    """Rank of each target among non-excluded items; ties count against the target (the target
    is never excluded, and never beats itself).

    scores (B, N+1), targets (B,), exclude (B, H) item indices padded with 0 -> (B,) int32.
    """
    return ranks_from_scores(scores, targets, exclude)[0]


_ranks = jax.jit(ranks_from_scores, static_argnames="k")


@jax.jit
def sampled_ranks(scores: jax.Array, targets: jax.Array, negatives: jax.Array) -> jax.Array:
    """Rank of the target among (B, M) sampled negatives; ties count against it."""
    b = scores.shape[0]
    s_t = scores[jnp.arange(b), targets][:, None]
    s_n = jnp.take_along_axis(scores, negatives, axis=1)
    return 1 + (s_n >= s_t).sum(axis=1, dtype=jnp.int32)


# ---------------------------------------------------------------- summaries

def summarize(ranks: np.ndarray, ks=DEFAULT_KS) -> dict:
    """HR@K, NDCG@K and MRR averaged over users, from ranks (1-based)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if len(ranks) == 0:
        raise UserError("no users to evaluate")
    out = {}
    for k in ks:
        hit = ranks <= k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
    out["MRR"] = float((1.0 / ranks).mean())
    return out


# ---------------------------------------------------------------- the protocol

def describe_protocol(split: Split, which: str, n_users: int, *, sampled: int | None,
                      sampler: str, exclude_seen: bool) -> str:
    ranking = (f"sampled ranking vs {sampled} {sampler} negatives not in the user's sequence"
               if sampled else f"full ranking over all {split.data.num_items:,} items")
    excl = "items in the user's input sequence excluded" if exclude_seen and not sampled else (
        "no exclusion" if not sampled else "")
    parts = [f"{split.kind} split, {which}", ranking, excl, f"{n_users:,} users"]
    return "; ".join(p for p in parts if p)


def evaluate(scorer: Scorer, split: Split, which: str = "test", *, ks=DEFAULT_KS,
             batch_size: int = 256, exclude_seen: bool = True, sampled: int | None = None,
             sampler: str = "uniform", seed: int = 0, progress: bool = False,
             users: int | None = None) -> EvalResult:
    """Evaluate ``scorer`` on the valid or test examples of ``split`` under the protocol above;
    ``users``: on a fixed random sample (by ``seed``) of that many examples instead of all
    (validation of a large run, as gSASRec validates on 512 users)."""
    es = split.eval_set(which)
    total = len(es)
    if users is not None and users < total:
        keep = np.sort(np.random.default_rng([seed, 1]).choice(total, users, replace=False))
        es = EvalSet(es.user[keep], es.start[keep], es.end[keep], es.target[keep], es.name)
    data = split.data
    n = data.num_items
    kmax = min(max(ks), n)
    covered = {k: np.zeros(n + 1, bool) for k in ks}
    ranks = np.zeros(len(es), np.int64)
    rng = np.random.default_rng(seed)
    pop = None
    if sampled and sampler == "popularity":
        pop = split.train_item_counts().astype(np.float64)
        pop[0] = 0
    # users in order of history length, each batch padded only to its own longest history
    # (a power of two, at most max_len): on ml-1m that halves the positions the model reads
    order = np.argsort(es.end - es.start, kind="stable")
    batches = range(0, len(es), batch_size)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc=f"eval {which}", unit="batch", leave=False)
    for lo in batches:
        hi = min(lo + batch_size, len(es))
        b = hi - lo
        bpad = batch_size if len(es) >= batch_size else next_pow2(b)
        rows = order[lo:hi]
        start, end, tgt = es.start[rows], es.end[rows], es.target[rows]
        window = min(scorer.max_len, next_pow2(int((end - start).max()), 8))
        hist = pad_histories(data.items, start, end, window)
        hist = np.pad(hist, ((0, bpad - b), (0, 0)))
        targets = np.pad(tgt, (0, bpad - b)).astype(np.int32)
        times = None
        if getattr(scorer, "uses_time", False):
            times = np.pad(pad_times(data.times, start, end, window, query="last"), ((0, bpad - b), (0, 0)))
        args = (hist,) if times is None else (hist, times)
        if sampled:
            negs = _sample_negatives(data, es.user[rows], sampled, rng, pop)
            negs = np.pad(negs, ((0, bpad - b), (0, 0)), constant_values=1)
            r = sampled_ranks(scorer.score_all(*args), targets, negs)  # from (Bp, N+1) scores
        else:
            width = next_pow2(int((end - start).max()), 32) if exclude_seen else 1
            excl = np.zeros((bpad, width), np.int32)
            if exclude_seen:
                excl[:b] = pad_histories(data.items, start, end, width)
            if hasattr(scorer, "rank_targets"):  # in catalog chunks
                r, vals, idx = scorer.rank_targets(hist, targets, excl, kmax, times)
            else:
                r, vals, idx = _ranks(scorer.score_all(*args), targets, excl, kmax)
            vals, idx = np.asarray(vals)[:b], np.asarray(idx)[:b]
            for k in ks:
                kk = min(k, kmax)
                covered[k][idx[:, :kk][np.isfinite(vals[:, :kk])]] = True
        ranks[rows] = np.asarray(r)[:b]
    metrics = summarize(ranks, ks)
    if not sampled:
        for k in ks:
            metrics[f"Coverage@{k}"] = float(covered[k][1:].sum() / n)
    proto = describe_protocol(split, which, len(es), sampled=sampled, sampler=sampler,
                              exclude_seen=exclude_seen)
    if len(es) < total:
        proto += f" (a fixed random sample of the {total:,})"
    return EvalResult(proto, metrics, ranks)


def _sample_negatives(data, users, m, rng, pop) -> np.ndarray:
    """(b, m) negatives per user, distinct, not in the user's whole sequence."""
    n = data.num_items
    out = np.zeros((len(users), m), np.int32)
    for row, u in enumerate(users):
        seen = np.zeros(n + 1, bool)
        seen[data.sequence(u)] = True
        seen[0] = True
        pool = np.flatnonzero(~seen)
        if len(pool) < m:
            raise UserError(f"user {data.user_ids[u]} has only {len(pool)} unseen items, "
                            f"fewer than {m} sampled negatives")
        p = None
        if pop is not None:
            p = pop[pool] + 1e-12
            p = p / p.sum()
        out[row] = rng.choice(pool, size=m, replace=False, p=p)
    return out


# ---------------------------------------------------------------- candidate lists (rankers)

def list_metrics(scores: np.ndarray, valid: np.ndarray, ks=DEFAULT_KS) -> dict:
    """Metrics of lists whose column 0 is the positive: GAUC, AUC and the sampled HR/NDCG/MRR.

    scores, valid (M, C). GAUC = mean over users of the user's AUC (the share of its
    negatives scored below its positive, ties half); AUC pools every (positive, negative)
    pair of all users. The positive's rank counts ties against it, as everywhere here.
    """
    scores = np.asarray(scores, np.float64)
    pos, neg, ok = scores[:, :1], scores[:, 1:], np.asarray(valid, bool)[:, 1:]
    greater = ((neg > pos) & ok).sum(1)
    ties = ((neg == pos) & ok).sum(1)
    n_neg = ok.sum(1)
    if (n_neg == 0).any():
        raise UserError("a candidate list has no negatives")
    out = summarize(1 + greater + ties, ks)
    out["GAUC"] = float((1.0 - (greater + 0.5 * ties) / n_neg).mean())
    out["AUC"] = pooled_auc(scores[:, 0], neg[ok])
    return out


def pooled_auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties half (Mann-Whitney)."""
    from scipy.stats import rankdata

    allv = np.concatenate([pos_scores, neg_scores])
    r = rankdata(allv)[: len(pos_scores)]  # midranks handle ties
    p, n = len(pos_scores), len(neg_scores)
    return float((r.sum() - p * (p + 1) / 2) / (p * n))


def candidate_lists(split: Split, which: str, negatives: int = 100, sampler: str = "popularity",
                    seed: int = 0) -> np.ndarray:
    """(M, 1 + negatives) held-out lists: the target, then negatives not in the user's sequence."""
    es = split.eval_set(which)
    pop = None
    if sampler == "popularity":
        pop = split.train_item_counts().astype(np.float64)
        pop[0] = 0
    negs = _sample_negatives(split.data, es.user, negatives, np.random.default_rng(seed), pop)
    return np.concatenate([es.target[:, None].astype(np.int32), negs], axis=1)


def evaluate_lists(score_fn, split: Split, which: str, *, max_len: int, negatives: int = 100,
                   sampler: str = "popularity", seed: int = 0, batch_size: int = 256,
                   ks=DEFAULT_KS, lists: np.ndarray | None = None) -> EvalResult:
    """Score held-out candidate lists with ``score_fn(history (B, L), candidates (B, C)) -> (B, C)``."""
    es = split.eval_set(which)
    lists = candidate_lists(split, which, negatives, sampler, seed) if lists is None else lists
    scores = np.zeros(lists.shape, np.float32)
    # users in order of history length, each batch padded only to its own longest history (a
    # power of two, at most max_len), as in ``evaluate``: the models are padding-invariant
    order = np.argsort(es.end - es.start, kind="stable")
    for lo in range(0, len(es), batch_size):
        rows = order[lo:lo + batch_size]
        start, end = es.start[rows], es.end[rows]
        window = min(max_len, next_pow2(int((end - start).max()), 8))
        hist = pad_histories(split.data.items, start, end, window)
        pad = batch_size - len(rows)
        out = score_fn(np.pad(hist, ((0, pad), (0, 0))), np.pad(lists[rows], ((0, pad), (0, 0))))
        scores[rows] = np.asarray(out)[: len(rows)]
    metrics = list_metrics(scores, lists > 0, ks)
    proto = (f"{split.kind} split, {which}; lists of the target + {negatives} {sampler} negatives "
             f"not in the user's sequence; {len(es):,} users")
    return EvalResult(proto, metrics, 1 + (scores[:, 1:] >= scores[:, :1]).sum(1))


__all__ = ["DEFAULT_KS", "EvalResult", "Scorer", "evaluate", "full_ranks", "sampled_ranks", "summarize", "list_metrics", "pooled_auc", "candidate_lists",
           "evaluate_lists"]
