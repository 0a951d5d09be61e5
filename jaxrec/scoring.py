"""Scoring: the one place scores become rankings.

Evaluation (``metrics.evaluate``), ``Recommender``, ``Pipeline`` and the server's engine all
rank through this module, so a change here (a catalog-chunked top-k, a sharded table, a new
mask) reaches every caller at once. What it owns:

* ``merge``: a (graphdef, params) pair -> the model in its compute dtype.
* masks: which items may be recommended, from index lists (exclude-seen, allow, deny) on
  device, or from a host-built boolean matrix (the server's batch of mixed requests);
  ``MASKED`` (-inf) is the score of an item that may not be recommended, everywhere.
* ``masked_top_k`` and ``rerank`` (the two-stage step: the retriever's top-N re-scored by a
  ranker, optionally blended with the retriever's score), all inside one jitted call.
* ``Scorer``: one compiled scorer over a retrieval model, a ranking model, or a retriever
  followed by a ranker. ``score_all``, ``score`` (given candidates), ``top_k`` (with the
  last layer's attention for explanations) and ``final_scores`` (a pipeline's final order
  as full-catalog scores, for the full-ranking protocol).

Shapes: B users, L history positions, N items (scores have N+1 columns; column 0 is the
padding item and is never recommended), k results, n two-stage candidates.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.errors import UserError

MASKED = -jnp.inf  # the score of an item that may not be recommended


# ---------------------------------------------------------------- models and masks

def merge(graphdef, params, compute_dtype=None):
    """The model with its float parameters cast to ``compute_dtype`` (e.g. bfloat16).

    Parameters (and optimizer state) stay float32; in training the cast sits inside the
    differentiated function, so gradients arrive in float32. Losses upcast logits themselves.
    """
    if compute_dtype is not None and jnp.dtype(compute_dtype) != jnp.float32:
        params = jax.tree.map(lambda p: p.astype(compute_dtype)
                              if jnp.issubdtype(p.dtype, jnp.floating) else p, params)
    return nnx.merge(graphdef, params)


def exclusion_mask(num_cols: int, exclude: jax.Array) -> jax.Array:
    """(B, N+1) bool: True for padding column 0 and every item listed in ``exclude`` (B, H).

    ``exclude`` is padded with 0, which lands on column 0, excluded anyway."""
    b = exclude.shape[0]
    mask = jnp.zeros((b, num_cols), bool)
    mask = mask.at[jnp.arange(b)[:, None], exclude].set(True)
    return mask.at[:, 0].set(True)


def allowed_mask(num_cols: int, b: int, exclude: jax.Array | None = None,
                 allowed: jax.Array | None = None) -> jax.Array:
    """(B, N+1) bool, True where an item may be recommended: not padding, not in ``exclude``
    (B, H) index lists, and True in ``allowed`` (B, N+1) when given."""
    if exclude is None:
        exclude = jnp.zeros((b, 1), jnp.int32)
    ok = ~exclusion_mask(num_cols, exclude)
    return ok if allowed is None else ok & allowed


def host_allowed(num_cols: int, b: int, rows) -> np.ndarray:
    """The server's (b, N+1) allowed matrix, built on the host from index lists.

    ``rows``: per request row i, ``(allow, deny, exclude)`` index arrays or None (None allow:
    every item). Rows past ``len(rows)`` (batch padding) allow everything but padding. The
    plain rows' exclude-seen lists go in one scatter: this runs per batch on the server."""
    allowed = np.ones((b, num_cols), bool)
    scatter_r, scatter_c = [], []
    for i, (allow, deny, exclude) in enumerate(rows):
        if allow is not None:
            allowed[i] = False
            allowed[i, allow] = True
        if deny is not None:
            allowed[i, deny] = False
        if exclude is not None and len(exclude):
            scatter_r.append(np.full(len(exclude), i))
            scatter_c.append(exclude)
    if scatter_r:
        allowed[np.concatenate(scatter_r), np.concatenate(scatter_c)] = False
    allowed[:, 0] = False
    return allowed


@functools.partial(jax.jit, static_argnames="k")
def masked_top_k(scores: jax.Array, exclude: jax.Array, k: int):
    """Top-k items of (B, N+1) ``scores`` after removing padding and the (B, H) ``exclude``
    lists -> (values, indices) (B, k); values are ``MASKED`` where fewer than k were allowed."""
    ok = allowed_mask(scores.shape[1], scores.shape[0], exclude)
    return jax.lax.top_k(jnp.where(ok, scores.astype(jnp.float32), MASKED), k)


def rerank(ranker, history: jax.Array, masked: jax.Array, n: int, k: int, blend: float = 0.0):
    """Re-rank the top ``n`` of ``masked`` (B, N+1) retrieval scores (``MASKED`` = not allowed).

    The final score is ``ranker + blend * retriever``: with ``blend = 0`` the ranker alone
    orders the candidates; a positive blend (chosen on the validation split, or the weight a
    residual ranker was trained with) fuses the two stages' evidence.

    Returns (values (B, k), ``MASKED`` where fewer than k items were allowed; indices (B, k);
    candidates (B, n), 0 where the retriever had fewer than n).
    """
    vals, cand = jax.lax.top_k(masked, n)  # (B, n)
    cand = jnp.where(jnp.isfinite(vals), cand, 0)
    rs = ranker.score(history[:, -ranker.config.max_len:], cand)  # (B, n)
    rs = jnp.where(cand > 0, rs + blend * jnp.where(cand > 0, vals, 0.0), MASKED)
    top, j = jax.lax.top_k(rs, k)
    return top, jnp.take_along_axis(cand, j, axis=1), cand


def with_prior(score, max_len: int, prior, w: float):
    """A ranker's list scorer ``score(history, candidates)`` plus ``w`` x ``prior``'s score (a
    retrieval ``Scorer``) of each candidate: what a residual ranker is trained and validated
    as. Returns the scorer and the history length it reads (the longer of the two models')."""
    if not w:
        return score, max_len

    def combined(h, c):
        return np.asarray(score(h[:, -max_len:], c)) + w * np.asarray(prior.score(h[:, -prior.max_len:], c))

    return combined, max(max_len, prior.max_len)


# ---------------------------------------------------------------- the compiled scorer

@dataclasses.dataclass
class Stage:
    """One model of a scorer: its graph, parameters, compute dtype and the history it reads."""

    graphdef: object
    params: object
    max_len: int
    dtype: str | None = None
    uses_time: bool = False  # reads (B, L + 1) event times (HSTU relative time bias)

    @property
    def kind(self) -> str:
        return self.model().kind

    def model(self, params=None):
        return merge(self.graphdef, self.params if params is None else params, self.dtype)


class TopK(NamedTuple):
    values: jax.Array  # (B, k) float32, MASKED past the allowed items
    items: jax.Array  # (B, k) int32 item indices
    attention: jax.Array | None  # (B, L) last-layer attention of the user position (explain=True)
    scores: jax.Array  # (B, N+1) the retrieval scores the ranking started from


class Scorer:
    """A retrieval model, a ranking model, or retriever -> top ``candidates`` -> ranker, compiled.

    Parameters are arguments of the jitted functions (``stage.params`` may be replaced, e.g.
    at every validation), so a new set of parameters never recompiles.
    """

    def __init__(self, first: Stage, ranker: Stage | None = None, candidates: int = 200,
                 blend: float = 0.0):
        self.first, self.ranker, self.n, self.blend = first, ranker, int(candidates), float(blend)
        self.kind = first.kind if ranker is None else "pipeline"
        if ranker is not None and (first.kind != "retrieval" or ranker.kind != "ranking"):
            raise UserError("a two-stage scorer is a retrieval model followed by a ranking model")
        self.max_len = first.max_len if ranker is None else max(first.max_len, ranker.max_len)
        self.uses_time = first.uses_time
        self._score_all = jax.jit(self._score_all_fn)
        self._score = jax.jit(self._score_fn)
        self._top_k = jax.jit(self._top_k_fn, static_argnames=("k", "explain"))
        self._final = jax.jit(self._final_fn)

    # ------------------------------------------------------------ traced functions

    def _params(self):
        return self.first.params, None if self.ranker is None else self.ranker.params

    def _retrieve(self, p, history, times, explain: bool):
        """(B, N+1) retrieval scores (+ (B, L) attention when ``explain``)."""
        model, lr = self.first.model(p), self.first.max_len
        t = None if times is None else times[:, -(lr + 1):]  # (B, <=Lr + 1)
        if not explain:
            return model.score_all(history[:, -lr:], t), None
        user, att = model.encode_explained(history[:, -lr:], t)  # (B, D), (B, <=Lr)
        att = jnp.pad(att, ((0, 0), (history.shape[1] - att.shape[1], 0)))  # (B, L)
        scores = (user @ model.output_table().T.astype(user.dtype)).astype(jnp.float32)
        return scores, att

    def _score_all_fn(self, p, history, times):
        return self._retrieve(p, history, times, False)[0]

    def _score_fn(self, p, kp, history, candidates, times):
        if self.kind == "ranking":
            return self.first.model(p).score(history[:, -self.first.max_len:], candidates)
        scores = jnp.take_along_axis(self._retrieve(p, history, times, False)[0], candidates, axis=1)
        if self.ranker is None:
            return scores
        rs = self.ranker.model(kp).score(history[:, -self.ranker.max_len:], candidates)
        return jnp.where(candidates > 0, rs + self.blend * scores, MASKED)

    def _top_k_fn(self, p, kp, history, exclude, allowed, times, k: int, explain: bool):
        scores, att = self._retrieve(p, history, times, explain)  # (B, N+1)
        ok = allowed_mask(scores.shape[1], scores.shape[0], exclude, allowed)
        masked = jnp.where(ok, scores, MASKED)
        if self.ranker is None:
            vals, idx = jax.lax.top_k(masked, k)
        else:
            vals, idx, _ = rerank(self.ranker.model(kp), history, masked, self.n, k, self.blend)
        return TopK(vals, idx, att, scores)

    def _final_fn(self, p, kp, history, exclude):
        """A pipeline's final list as full-catalog scores: the n candidates above every other
        item in the ranker's order, the rest by retrieval score (the full-ranking protocol then
        measures exactly the pipeline's output)."""
        out = self._top_k_fn(p, kp, history, exclude, None, None, self.n, False)
        top, idx, scores = out.values, out.items, out.scores
        lift = jnp.max(jnp.where(jnp.isfinite(scores), scores, MASKED), axis=1, keepdims=True)
        order = (self.n - jnp.arange(self.n, dtype=jnp.float32))[None, :]  # n .. 1
        lifted = jnp.where(jnp.isfinite(top), lift + order, MASKED)
        b = jnp.arange(history.shape[0])[:, None]
        return scores.at[b, jnp.where(idx > 0, idx, 0)].max(jnp.where(idx > 0, lifted, MASKED))

    # ------------------------------------------------------------ host API

    def _times(self, times):
        if self.uses_time and times is None:
            raise UserError("this model uses event times (relative time bias): pass times (B, L + 1)")
        return None if times is None or not self.uses_time else jnp.asarray(times, jnp.int32)

    def score_all(self, history, times=None) -> jax.Array:
        """(B, L) left-padded item indices -> (B, N+1) scores; a pipeline's are its final order
        with the history's items excluded (``final_scores``)."""
        if self.kind == "ranking":
            raise UserError("a ranking model scores given candidates (score), not the whole catalog; "
                            "pair it with a retrieval model (jaxrec.pipeline.Pipeline)")
        history = jnp.asarray(history, jnp.int32)
        if self.kind == "pipeline":
            return self.final_scores(history, history)
        return self._score_all(self.first.params, history, self._times(times))

    def final_scores(self, history, exclude) -> jax.Array:
        """A two-stage scorer's final list as (B, N+1) scores (see ``_final_fn``); ``exclude``
        (B, H) index lists are kept out of the candidates."""
        return self._final(*self._params(), jnp.asarray(history, jnp.int32), jnp.asarray(exclude, jnp.int32))

    def score(self, history, candidates, times=None) -> jax.Array:
        """(B, L) history, (B, C) candidate indices -> (B, C) scores. A pipeline scores with its
        final function, ranker + blend x retriever (``MASKED`` on padding candidates)."""
        return self._score(*self._params(), jnp.asarray(history, jnp.int32),
                           jnp.asarray(candidates, jnp.int32),
                           None if self.kind == "ranking" else self._times(times))

    def top_k(self, history, k: int, *, exclude=None, allowed=None, times=None,
              explain: bool = False) -> TopK:
        """Top-k of the catalog for (B, L) histories. ``exclude`` (B, H) index lists (0-padded)
        and ``allowed`` (B, N+1) bool restrict the items; padding is never returned."""
        if self.kind == "ranking":
            raise UserError("a ranker alone cannot recommend from the whole catalog; pair it with a "
                            "retrieval model (jaxrec.pipeline.Pipeline)")
        limit = self.n if self.ranker is not None else None
        if limit is not None and not 0 < k <= limit:
            raise UserError(f"k must be in 1..{limit} (the number of candidates), got {k}")
        ex = None if exclude is None else jnp.asarray(exclude, jnp.int32)
        return self._top_k(*self._params(), jnp.asarray(history, jnp.int32), ex, allowed,
                           self._times(times), k=int(k), explain=bool(explain))

    def item_vectors(self) -> np.ndarray:
        """(N+1, D) the retrieval model's output item table (similar items, explanations)."""
        return np.asarray(self.first.model().output_table())

    def compile_count(self) -> int:
        return self._top_k._cache_size()
