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
* Beyond accuracy, over each user's top-K list (``beyond_accuracy``): intra-list diversity
  ILD@K = mean over pairs of (1 - cosine similarity) of the items' output embeddings (and, per
  categorical feature, of their multi-hot rows: ``ILD@K/genres``); ``Coverage@K/genres`` = the
  share of the feature's values present in the list; Novelty@K = mean self-information
  -log2(p) of the listed items, p = the item's training interactions / users (Zhou et al. 2010).
* With ``diversity`` > 0 the lists are the served ones: the top ``pool`` re-ranked by maximal
  marginal relevance (``scoring.mmr``); the target's rank is its position in that list, or,
  outside it, max(its relevance rank, K + 1): HR/NDCG@K are exact for K up to the list length.

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
from jaxrec.scoring import DEFAULT_POOL, ranks_from_scores

DEFAULT_KS = (1, 5, 10, 20, 50)
MAX_FEATURE_CELLS = 1 << 26  # beyond-accuracy feature measures build (N+1, V) rows: at most this many


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
    beyond: str = ""  # how the beyond-accuracy measures were computed (empty: none)

    def to_json(self) -> dict:
        return {"protocol": self.protocol, "metrics": self.metrics} | (
            {"beyond_accuracy": self.beyond} if self.beyond else {})


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

def beyond_accuracy(items: np.ndarray, valid: np.ndarray, *, vectors: np.ndarray | None = None,
                    features: dict | None = None, self_info: np.ndarray | None = None) -> dict:
    """Sums over lists (divide by the number of lists) of the beyond-accuracy measures of
    (M, K) ``items`` lists (``valid``: which entries are real). ``vectors`` (N+1, D) item
    embeddings -> "ILD"; ``features`` {name: (N+1, V) unit multi-hot rows} -> "ILD/name" and
    "Coverage/name"; ``self_info`` (N+1,) -log2(p) -> "Novelty". A list of fewer than two items
    has ILD 0 (no pairs)."""
    items, valid = np.asarray(items), np.asarray(valid, bool)
    m_valid = valid.sum(1).astype(np.float64)  # (M,)
    pairs = m_valid * (m_valid - 1)
    out = {}

    def ild(rows):  # (M, K, E) unit rows -> (M,) mean pairwise 1 - cosine over valid pairs
        rows = np.where(valid[:, :, None], rows, 0.0)
        sim = np.einsum("mke,mje->mkj", rows, rows)
        off_diag = sim.sum((1, 2)) - np.einsum("mkk->m", sim)
        return np.where(pairs > 0, 1.0 - off_diag / np.maximum(pairs, 1), 0.0)

    if vectors is not None:
        v = np.asarray(vectors, np.float32)[items]
        v = v / np.maximum(np.linalg.norm(v, axis=2, keepdims=True), 1e-9)
        out["ILD"] = float(ild(v).sum())
    for name, rows in (features or {}).items():
        f = np.asarray(rows)[items]  # (M, K, V)
        out[f"ILD/{name}"] = float(ild(f).sum())
        present = ((f > 0) & valid[:, :, None]).any(axis=1)  # (M, V)
        out[f"Coverage/{name}"] = float((present.sum(1) / f.shape[2]).sum())
    if self_info is not None:
        si = np.where(valid, np.asarray(self_info)[items], 0.0).sum(1)
        out["Novelty"] = float(np.where(m_valid > 0, si / np.maximum(m_valid, 1), 0.0).sum())
    return out


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
             users: int | None = None, diversity: float = 0.0, diversity_by: str = "",
             pool: int = DEFAULT_POOL, beyond_k: int | None = 10) -> EvalResult:
    """Evaluate ``scorer`` on the valid or test examples of ``split`` under the protocol above;
    ``users``: on a fixed random sample (by ``seed``) of that many examples instead of all
    (validation of a large run, as gSASRec validates on 512 users). ``diversity`` (0..1,
    ``diversity_by`` "" embeddings or a catalog feature): rank with the served diversity
    re-ranking of the top ``pool``. ``beyond_k``: the list length of the beyond-accuracy
    measures (None: none)."""
    es = split.eval_set(which)
    total = len(es)
    if users is not None and users < total:
        keep = np.sort(np.random.default_rng([seed, 1]).choice(total, users, replace=False))
        es = EvalSet(es.user[keep], es.start[keep], es.end[keep], es.target[keep], es.name)
    data = split.data
    n = data.num_items
    kmax = min(max(ks), n)
    if not 0.0 <= diversity <= 1.0:
        raise UserError(f"diversity must be in 0..1, got {diversity}")
    core = getattr(scorer, "scorer", None)  # a Recommender's jaxrec.scoring.Scorer
    if (diversity or diversity_by) and (sampled or core is None or core.kind == "ranking"):
        raise UserError("diversity re-ranks a retrieval model's (or pipeline's) full-ranking lists: "
                        "give a retrieval checkpoint and no --sampled")
    beyond = None
    if beyond_k and not sampled:
        from jaxrec.data.features import feature_vectors
        counts = split.train_item_counts().astype(np.float64)
        p = np.clip(counts / max(1, data.num_users), 1.0 / max(1, data.num_users), 1.0)
        small = [f for f in sorted(data.catalog.features)  # dense (N+1, V) rows: small vocabularies only
                 if (n + 1) * len(data.catalog.features[f]["vocab"]) <= MAX_FEATURE_CELLS]
        beyond = dict(vectors=core.item_vectors() if core is not None and core.kind != "ranking" else None,
                      features={f: feature_vectors(data.catalog, f) for f in small}, self_info=-np.log2(p))
        beyond_k = min(beyond_k, kmax)
        beyond_sums: dict = {}
    feats = None
    if diversity_by:
        from jaxrec.data.features import feature_lists
        feats = feature_lists(data.catalog, diversity_by)
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
            if diversity > 0:  # the served lists: relevance ranks only for targets outside them
                r = np.asarray(scorer.rank_targets(hist, targets, excl, 0, times)[0])
                keep_target = np.where(excl == targets[:, None], 0, excl)  # the target is never excluded
                top = core.top_k(hist, max(pool, kmax), exclude=keep_target, times=times)
                top = core.diversify(top, kmax, np.full(bpad, diversity, np.float32), pool=max(pool, kmax),
                                     feats=feats)
                vals, idx = np.asarray(top.values), np.asarray(top.items)
                at = (idx == targets[:, None]) & np.isfinite(vals)
                r = np.where(at.any(1), at.argmax(1) + 1, np.maximum(r, kmax + 1))
            elif hasattr(scorer, "rank_targets"):  # in catalog chunks
                r, vals, idx = scorer.rank_targets(hist, targets, excl, kmax, times)
            else:
                r, vals, idx = _ranks(scorer.score_all(*args), targets, excl, kmax)
            vals, idx = np.asarray(vals)[:b], np.asarray(idx)[:b]
            for k in ks:
                kk = min(k, kmax)
                covered[k][idx[:, :kk][np.isfinite(vals[:, :kk])]] = True
            if beyond is not None:
                for key, v in beyond_accuracy(idx[:, :beyond_k], np.isfinite(vals[:, :beyond_k]), **beyond).items():
                    beyond_sums[key] = beyond_sums.get(key, 0.0) + v
        ranks[rows] = np.asarray(r)[:b]
    metrics = summarize(ranks, ks)
    if not sampled:
        for k in ks:
            metrics[f"Coverage@{k}"] = float(covered[k][1:].sum() / n)
        for key, v in (beyond_sums if beyond is not None else {}).items():
            name, _, feat = key.partition("/")
            metrics[f"{name}@{beyond_k}" + (f"/{feat}" if feat else "")] = v / len(es)
    proto = describe_protocol(split, which, len(es), sampled=sampled, sampler=sampler,
                              exclude_seen=exclude_seen)
    if len(es) < total:
        proto += f" (a fixed random sample of the {total:,})"
    if diversity > 0:
        proto += (f"; diversity {diversity:g} by {diversity_by or 'item embeddings'} (maximal marginal relevance "
                  f"over the top {max(pool, kmax)}; a target outside the top {kmax} keeps max(rank, {kmax + 1}))")
    notes = ""
    if beyond is not None:
        notes = (f"over each top-{beyond_k} list: ILD = mean pairwise 1 - cosine"
                 + (" of item embeddings" if beyond["vectors"] is not None else "")
                 + "".join(f", ILD/{f} of {f} sets, Coverage/{f} = share of {f} values in the list"
                           for f in beyond["features"])
                 + ", Novelty = mean -log2(training interactions / users)")
    return EvalResult(proto, metrics, ranks, notes)


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


__all__ = ["DEFAULT_KS", "EvalResult", "Scorer", "beyond_accuracy", "evaluate", "full_ranks", "sampled_ranks", "summarize", "list_metrics", "pooled_auc", "candidate_lists",
           "evaluate_lists"]
