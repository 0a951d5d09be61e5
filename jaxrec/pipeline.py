"""Two-stage recommendation: retrieve top-N with a retrieval model, re-rank with a ranker.

    scores = retriever.score_all(history)            # (B, N_items+1), one dot product per item
    cand   = top_N(where(allowed, scores, -inf))     # (B, N) the retriever's best unseen items
    rs     = ranker.score(history, cand)             # (B, N) cross-attention, per candidate
    top-k of rs -> items                             # (B, k)

Both stages run inside one jitted function (no host round trip between them); evaluation,
``jaxrec recommend`` and the server all call ``rerank`` below, so the three cannot drift.

For the full-ranking evaluation protocol the pipeline exposes ``score_all``: the N
candidates get scores above every other item, ordered by the ranker; the rest keep the
retriever's order. The final list's metrics are then exactly those of the pipeline's
output, and items outside the candidate set rank as the retriever would rank them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.errors import UserError
from jaxrec.inference import Recommends
from jaxrec.metrics import _exclusion_mask
from jaxrec.train.step import merge


def rerank(ranker, history: jax.Array, masked: jax.Array, n: int, k: int, blend: float = 0.0):
    """Re-rank the top ``n`` of ``masked`` (B, N+1) retrieval scores (-inf = not allowed).

    The final score is ``ranker + blend * retriever``: with ``blend = 0`` the ranker alone
    orders the candidates; a positive blend (chosen on the validation split) fuses the two
    stages' evidence, the usual practice when the retriever is itself a strong model.

    Returns (values (B, k) ranker scores, -inf where fewer than k items were allowed;
    indices (B, k) items; candidates (B, n), 0 where the retriever had fewer than n).
    """
    vals, cand = jax.lax.top_k(masked, n)  # (B, n)
    cand = jnp.where(jnp.isfinite(vals), cand, 0)
    rs = ranker.score(history[:, -ranker.config.max_len:], cand)  # (B, n)
    rs = jnp.where(cand > 0, rs + blend * jnp.where(cand > 0, vals, 0.0), -jnp.inf)
    top, j = jax.lax.top_k(rs, k)
    return top, jnp.take_along_axis(cand, j, axis=1), cand


def default_blend(ranker, blend: float | None) -> float:
    """``blend``, or when None the weight the ranker was trained with as a residual on its
    retriever (``residual`` in its training config; 0 for a ranker trained alone)."""
    if blend is not None:
        return float(blend)
    return float(ranker.config.get("train", {}).get("residual", 0.0) or 0.0)


def with_prior(score, max_len: int, retriever, w: float):
    """A ranker's list scorer ``score(history, candidates)`` plus ``w`` x the retriever's score
    of each candidate: what a residual ranker is trained and validated as. Returns the scorer
    and the history length it reads (the longer of the two models')."""
    if not w:
        return score, max_len

    def combined(h, c):
        prior = np.take_along_axis(np.asarray(retriever.score_all(h[:, -retriever.max_len:])), c, axis=1)
        return np.asarray(score(h[:, -max_len:], c)) + w * prior

    return combined, max(max_len, retriever.max_len)


def check_stages(retriever, ranker, candidates: int) -> None:
    """The two checkpoints fit together: model kinds, one catalog, 1 <= N <= catalog size."""
    if retriever.kind != "retrieval":
        raise UserError("the first stage must be a retrieval model (sasrec, bert4rec, gsasrec, hstu)")
    if ranker.kind != "ranking":
        raise UserError("the second stage must be a ranking model (target_attention, bst, encdec)")
    if list(retriever.catalog.ids) != list(ranker.catalog.ids):
        raise UserError("retriever and ranker were trained on different catalogs")
    if getattr(retriever, "uses_time", False):
        raise UserError("the two-stage pipeline does not pass event times yet: use a retriever "
                        "without relative time bias (time_buckets=0)")
    n_items = retriever.catalog.num_items
    if not 0 < candidates <= n_items:
        raise UserError(f"candidates must be in 1..{n_items}, got {candidates}")


class Pipeline(Recommends):
    """A retrieval ``Recommender`` and a ranking ``Recommender`` as one compiled scorer."""

    def __init__(self, retriever, ranker, candidates: int = 200, exclude_seen: bool = True,
                 blend: float | None = None):
        check_stages(retriever, ranker, candidates)
        self.retriever, self.ranker, self.n = retriever, ranker, candidates
        self.blend = default_blend(ranker, blend)
        self.catalog, self.exclude_seen = retriever.catalog, exclude_seen
        self.max_len = max(retriever.max_len, ranker.max_len)
        self.kind = "pipeline"
        rg, kg = retriever.graphdef, ranker.graphdef
        rd, kd = retriever.config["model"].get("dtype"), ranker.config["model"].get("dtype")
        lr = retriever.max_len

        def stages(rp, kp, history, exclude, k):
            r, m = merge(rg, rp, rd), merge(kg, kp, kd)
            scores = r.score_all(history[:, -lr:])  # (B, N+1)
            masked = jnp.where(_exclusion_mask(scores[0], exclude), -jnp.inf, scores)
            top, idx, cand = rerank(m, history, masked, self.n, k, self.blend)
            return scores, top, idx, cand

        def score_all(rp, kp, history, exclude):
            scores, top, idx, _ = stages(rp, kp, history, exclude, self.n)
            # candidates above everything else, in the ranker's order; the rest by retrieval score
            lift = jnp.max(jnp.where(jnp.isfinite(scores), scores, -jnp.inf), axis=1, keepdims=True)
            order = (self.n - jnp.arange(self.n, dtype=jnp.float32))[None, :]  # n .. 1
            lifted = jnp.where(jnp.isfinite(top), lift + order, -jnp.inf)
            b = jnp.arange(history.shape[0])[:, None]
            return scores.at[b, jnp.where(idx > 0, idx, 0)].max(jnp.where(idx > 0, lifted, -jnp.inf))

        self._stages = jax.jit(stages, static_argnums=4)
        self._score_all = jax.jit(score_all)

    @staticmethod
    def _exclude(history: np.ndarray, exclude_seen: bool) -> np.ndarray:
        return history if exclude_seen else np.zeros((len(history), 1), np.int32)

    def score_all(self, history: np.ndarray) -> jax.Array:
        """The evaluation ``Scorer`` interface over the pipeline's final order (see module doc)."""
        history = np.asarray(history, np.int32)
        return self._score_all(self.retriever.params, self.ranker.params, history,
                               self._exclude(history, self.exclude_seen))

    def stages(self, history: np.ndarray, k: int, exclude_seen: bool = True):
        """(B, L) -> (retrieval scores (B, N+1), ranker values (B, k), items (B, k), candidates (B, n))."""
        if not 0 < k <= self.n:
            raise UserError(f"k must be in 1..{self.n} (the number of candidates), got {k}")
        history = np.asarray(history, np.int32)
        return self._stages(self.retriever.params, self.ranker.params, history,
                            self._exclude(history, exclude_seen), k)

    def top_k(self, history: np.ndarray, k: int, exclude_seen: bool = True, times=None):
        return self.stages(history, k, exclude_seen)[1:3]  # times: the stages read none
