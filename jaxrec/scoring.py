"""Scoring: the one place scores become rankings.

Evaluation (``metrics.evaluate``), ``Recommender``, ``Pipeline`` and the server's engine all
rank through this module, so a change here (a catalog-chunked top-k, a sharded table, a new
mask) reaches every caller at once. What it owns:

* ``merge``: a (graphdef, params) pair -> the model in its compute dtype.
* masks: which items may be recommended, from index lists (exclude-seen, allow, deny) on
  device, or from a host-built boolean matrix (the server's batch of mixed requests);
  ``MASKED`` (-inf) is the score of an item that may not be recommended, everywhere.
* catalog-chunked ranking, ``catalog_top_k`` and ``catalog_ranks``: user vectors against the
  item table one chunk of columns at a time, with a running top-k (and, for evaluation, a
  running count of the items scored at least as high as the target), so memory is
  O(B x chunk), not O(B x N); the answers are exactly the full matrix's, ties included (ties
  go to the lower index, as ``lax.top_k``'s do). Exclude, deny and allow lists enter as index
  lists and become masks one chunk at a time, on device. A catalog that fits one chunk takes
  the plain full-matrix path.
* ``masked_top_k`` and ``rerank`` (the two-stage step: the retriever's top-N re-scored by a
  ranker, optionally blended with the retriever's score), all inside one jitted call.
* ``mmr``: diversity re-ranking of the top candidates (maximal marginal relevance), by
  item-embedding or item-feature similarity, inside the same jitted call.
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
from jaxrec.numerics import unit_rows
from jaxrec.sharding import table_mesh

MASKED = -jnp.inf  # the score of an item that may not be recommended
TABLE_DTYPES = ("float32", "bfloat16", "int8")


@jax.tree_util.register_pytree_node_class
class CompactTable:
    """An item table as serving keeps it: float32 as trained (with side-feature embeddings already
    summed in), bfloat16 (half), or int8 with one float32 scale per row (a quarter, plus 4 bytes a
    row; symmetric: row / (max |row| / 127), rounded).

    Every read dequantizes only what it reads: the rows a history looks up, one catalog chunk
    at a time when scoring, the candidates' rows for Score. ``n``: the rows scoring reads (the
    N+1 output rows, plus any spare rows for items added at serve time; an input table may hold
    extra tokens after them, e.g. BERT4Rec's mask). ``valid``: rows from it on are spare (never
    recommended) until ``with_rows`` fills them; a dynamic value, so filling never recompiles.
    """

    def __init__(self, values, scales=None, n: int | None = None, valid=None):
        self.values, self.scales = values, scales  # (R, D) float32|bfloat16|int8, (R, 1) float32 or None
        self.n = int(values.shape[0] if n is None else n)
        self.valid = jnp.asarray(self.n if valid is None else valid, jnp.int32)  # () rows in use

    def tree_flatten(self):
        return (self.values, self.scales, self.valid), self.n

    @classmethod
    def tree_unflatten(cls, n, children):
        values, scales, valid = children
        return cls(values, scales, n, valid)

    @staticmethod
    def _encode(t: np.ndarray, dtype: str):
        """(values, scales or None) of float rows ``t`` in ``dtype``."""
        if dtype == "float32":
            return jnp.asarray(t, jnp.float32), None
        if dtype == "bfloat16":
            return jnp.asarray(t, jnp.bfloat16), None
        if dtype == "int8":
            scale = np.abs(t).max(axis=1, keepdims=True) / 127.0  # (R, 1)
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            q = np.clip(np.rint(t / scale), -127, 127).astype(np.int8)
            return jnp.asarray(q), jnp.asarray(scale)
        raise UserError(f"table dtype {dtype!r}: use one of {', '.join(TABLE_DTYPES)}")

    @classmethod
    def build(cls, table, dtype: str, n: int | None = None, spare: int = 0) -> "CompactTable":
        """From a float (R, D) table on the host; ``spare`` zero rows appended after the first
        ``n`` (the table must then hold no extra tokens after them)."""
        t = np.asarray(table, np.float32)
        valid = None
        if spare:
            n = t.shape[0] if n is None else n
            t = np.concatenate([t[:n], np.zeros((spare, t.shape[1]), np.float32)])
            valid, n = n, n + spare
        values, scales = cls._encode(t, dtype)
        return cls(values, scales, n, valid)

    @property
    def dtype_name(self) -> str:
        return "int8" if self.scales is not None else jnp.dtype(self.values.dtype).name

    def with_rows(self, start: int, rows) -> "CompactTable":
        """A copy with rows ``start``.. set from float ``rows`` (m, D), in this table's dtype, and
        the rows in use extended past them (items added at serve time)."""
        rows = np.asarray(rows, np.float32)
        m = len(rows)
        if start + m > self.n:
            raise UserError(f"{m} new item(s) do not fit: {self.n - start} spare row(s) left")
        v, sc = self._encode(rows, self.dtype_name)
        values = self.values.at[start: start + m].set(v)
        scales = None if self.scales is None else self.scales.at[start: start + m].set(sc)
        return CompactTable(values, scales, self.n, max(int(self.valid), start + m))

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.values.shape[1]

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + (0 if self.scales is None else self.scales.nbytes))

    def take(self, idx, dtype=jnp.float32) -> jax.Array:
        """(..., D) rows ``idx``, dequantized."""
        rows = self.values[idx].astype(dtype)
        return rows if self.scales is None else rows * self.scales[idx].astype(dtype)

    def read(self, start, size: int, dtype=jnp.float32) -> jax.Array:
        """(size, D) rows start .. start+size-1, dequantized."""
        rows = jax.lax.dynamic_slice_in_dim(self.values, start, size).astype(dtype)
        if self.scales is None:
            return rows
        return rows * jax.lax.dynamic_slice_in_dim(self.scales, start, size).astype(dtype)

    def dense(self, dtype=jnp.float32) -> jax.Array:
        """(n, D) the scoring rows, dequantized (the one-chunk path)."""
        return self.read(0, self.n, dtype)


def _as_dtype(table, dtype):
    """A float table cast to the compute dtype; a compact table stays compact (read per chunk)."""
    return table if isinstance(table, CompactTable) else table.astype(dtype)


def _dense(table, dtype):
    return table.dense(dtype) if isinstance(table, CompactTable) else table


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


# ---------------------------------------------------------------- catalog-chunked ranking

DEFAULT_CHUNK = 32_768  # catalog columns scored at once: (B, chunk) float32 per step


def _listed(lists: jax.Array, c0, width: int) -> jax.Array:
    """(B, width) bool: column ``c0 + j`` appears in row b of the (B, H) index ``lists``."""
    local = lists - c0
    local = jnp.where((local >= 0) & (local < width), local, width)  # outside this chunk: dropped
    b = lists.shape[0]
    return jnp.zeros((b, width), bool).at[jnp.arange(b)[:, None], local].set(True, mode="drop")


def _chunk_allowed(c0, width: int, n_cols: int, exclude=None, allow=None, restricted=None,
                   lo=0) -> jax.Array:
    """(B or 1, width) bool for columns c0 .. c0+width-1: a real item (not padding column 0,
    not at or past ``n_cols``, the rows in use, not before ``lo``), not in ``exclude`` (B, H)
    and, in ``restricted`` (B,) rows, in ``allow`` (B, A)."""
    cols = c0 + jnp.arange(width)[None, :]  # (1, width)
    ok = (cols > 0) & (cols < n_cols) & (cols >= lo)
    if exclude is not None:
        ok = ok & ~_listed(exclude, c0, width)
    if allow is not None:
        ok = ok & (~restricted[:, None] | _listed(allow, c0, width))
    return ok


def _blocked_top_k(scores: jax.Array, k: int, block: int):
    """Exact top-k of (B, C) ``scores`` (C a multiple of ``block``) from the k blocks with the
    largest maxima: every item of the top-k lies in one of them (a block outside them has k
    blocks ahead whose maxima are at least its own). On CPU, a max over blocks and two small
    top-ks cost a fraction of one top-k over C. Blocks are taken in index order, so equal
    scores go to the lower index, as ``lax.top_k``'s do."""
    b, c = scores.shape
    blocks = scores.reshape(b, c // block, block)
    _, bi = jax.lax.top_k(blocks.max(axis=2), k)  # (B, k) the best blocks
    bi = jnp.sort(bi, axis=1)
    cand = jnp.take_along_axis(blocks, bi[:, :, None], axis=1).reshape(b, k * block)  # (B, k x block)
    vals, j = jax.lax.top_k(cand, k)
    cols = (bi[:, :, None] * block + jnp.arange(block)).reshape(b, k * block)
    return vals, jnp.take_along_axis(cols, j, axis=1)


def _select(scores, k: int, recall: float | None):
    """Top-k of each row; approximate (``lax.approx_max_k``) when a recall target is given;
    blocked (``_blocked_top_k``, blocks of 32-128 columns) where k blocks are at most a
    quarter of the row."""
    if recall is not None:
        return jax.lax.approx_max_k(scores, k, recall_target=recall)
    c = scores.shape[1]
    block = 128
    while block > 32 and 4 * k * block > c:
        block //= 2
    if c % block == 0 and 4 * k * block <= c:
        return _blocked_top_k(scores, k, block)
    return jax.lax.top_k(scores, k)


def _chunk_starts(n_cols: int, chunk: int) -> jax.Array:
    """The first column of each chunk: 0, chunk, 2 chunk, ..."""
    return jnp.arange(-(-n_cols // chunk), dtype=jnp.int32) * chunk


def _read_chunk(table, c0, chunk: int, dtype=None):
    """Rows c0 .. c0+chunk-1 of ``table`` without copying (or padding) the whole table: the
    last chunk is read from ``n_cols - chunk`` instead, and its columns before ``c0`` (read
    by the chunk before) are masked by the caller. Returns (rows (chunk, D), start)."""
    start = jnp.minimum(c0, table.shape[0] - chunk)
    if isinstance(table, CompactTable):
        return table.read(start, chunk, dtype or jnp.float32), start
    return jax.lax.dynamic_slice_in_dim(table, start, chunk), start


def dot_scores(user: jax.Array, rows: jax.Array) -> jax.Array:
    """(B, U) users against (X, U) rows -> (B, X) float32 dot products: the score of every model
    but MoL's (whose ``RetrievalModel.pair_scores`` the callers pass as ``score`` instead)."""
    return (user @ rows.T).astype(jnp.float32)


def catalog_top_k(user: jax.Array, table: jax.Array, k: int, *, exclude=None, allow=None,
                  restricted=None, chunk: int | None = None, recall: float | None = None,
                  offset=0, n_valid=None, score=dot_scores):
    """Top-k items of (B, D) ``user`` vectors against the (N+1, D) item ``table``.

    ``exclude`` (B, H) and ``allow`` (B, A) are index lists padded with 0 (column 0 is never
    returned anyway); ``allow`` restricts only the rows where ``restricted`` (B,) is True.
    ``recall``: use ``lax.approx_max_k`` with this recall target inside each chunk.
    ``offset``: the item index of ``table``'s first row (one shard of a sharded table) and
    ``n_valid`` the rows in use of the whole table (items at or past it are never returned).
    ``score(user, rows)`` -> (B, rows) scores: ``dot_scores``, or a model's ``pair_scores``.
    Returns (values (B, k) float32, ``MASKED`` past the allowed items; items (B, k), 0 there).
    """
    n_cols = table.shape[0]
    bound = table.valid if isinstance(table, CompactTable) else n_cols  # spare rows are never returned
    bound = bound if n_valid is None else n_valid
    table = _as_dtype(table, user.dtype)
    chunk = n_cols if chunk is None else min(int(chunk), n_cols)
    if chunk >= n_cols:  # one chunk: the full matrix
        scores = score(user, _dense(table, user.dtype))  # (B, N+1)
        ok = _chunk_allowed(offset, n_cols, bound, exclude, allow, restricted)
        vals, idx = _select(jnp.where(ok, scores, MASKED), k, recall)
        return vals, jnp.where(jnp.isfinite(vals), idx + offset, 0)
    kc = min(k, chunk)
    b = user.shape[0]

    def step(carry, c0):
        best, best_idx = carry  # (B, k): the top-k of the chunks before this one
        t, start = _read_chunk(table, c0, chunk, user.dtype)  # (chunk, D)
        s = score(user, t)  # (B, chunk)
        s = jnp.where(_chunk_allowed(start + offset, chunk, bound, exclude, allow, restricted, lo=c0 + offset),
                      s, MASKED)
        v, j = _select(s, kc, recall)  # (B, kc)
        # earlier chunks first: among equal scores the lower index wins, as in one top_k
        vals, pos = jax.lax.top_k(jnp.concatenate([best, v], axis=1), k)
        idx = jnp.take_along_axis(jnp.concatenate([best_idx, j + start + offset], axis=1), pos, axis=1)
        return (vals, idx), None

    init = (jnp.full((b, k), MASKED, jnp.float32), jnp.zeros((b, k), jnp.int32))
    (vals, idx), _ = jax.lax.scan(step, init, _chunk_starts(n_cols, chunk))
    return vals, jnp.where(jnp.isfinite(vals), idx, 0)


def catalog_ranks(user: jax.Array, table: jax.Array, targets: jax.Array, exclude=None, *,
                  k: int = 0, chunk: int | None = None, axis: str | None = None, n_valid=None,
                  score=dot_scores):
    """Rank of each target among the allowed items, ties counted against it (``1 + #{j !=
    target, allowed, score_j >= score_target}``), and the top-``k`` lists (``k = 0``: none).

    (B, D) users, (N+1, D) table, (B,) targets, (B, H) exclude lists -> (ranks (B,) int32,
    values (B, k), items (B, k)). In chunks, the target's score is read in a first pass from the
    same chunk product the counting pass compares it with, so chunked ranks equal the full
    matrix's exactly. Inside ``shard_map`` over a table sharded by rows on mesh ``axis``
    (``n_valid``: the whole table's rows in use), each shard counts its own rows: the target's
    score and the counts are summed over the shards, the top-k lists merged. ``score``: as in
    ``catalog_top_k``.
    """
    n_cols = table.shape[0]
    table = _as_dtype(table, user.dtype)
    chunk = n_cols if chunk is None else min(int(chunk), n_cols)
    b = user.shape[0]
    rows = jnp.arange(b)
    if chunk >= n_cols and axis is None:
        return ranks_from_scores(score(user, _dense(table, user.dtype)), targets, exclude, k)
    offset = 0 if axis is None else jax.lax.axis_index(axis) * n_cols
    bound = n_cols if n_valid is None else n_valid
    starts = _chunk_starts(n_cols, chunk)

    def target_score(s_t, c0):
        t, start = _read_chunk(table, c0, chunk, user.dtype)
        s = score(user, t)  # (B, chunk)
        here = (targets >= c0 + offset) & (targets < c0 + offset + chunk)
        return jnp.where(here, s[rows, jnp.clip(targets - start - offset, 0, chunk - 1)], s_t), None

    s_t, _ = jax.lax.scan(target_score, jnp.zeros((b,), jnp.float32), starts)
    if axis is not None:  # the target's shard has its score, the others 0
        s_t = jax.lax.psum(s_t, axis)
    kc = min(k, chunk)

    def count(carry, c0):
        n_above, best, best_idx = carry
        t, start = _read_chunk(table, c0, chunk, user.dtype)
        s = score(user, t)  # (B, chunk)
        ok = _chunk_allowed(start + offset, chunk, bound, exclude, lo=c0 + offset)
        not_target = (start + offset + jnp.arange(chunk))[None, :] != targets[:, None]
        n_above = n_above + ((s >= s_t[:, None]) & ok & not_target).sum(axis=1, dtype=jnp.int32)
        if k:
            v, j = jax.lax.top_k(jnp.where(ok, s, MASKED), kc)
            best, pos = jax.lax.top_k(jnp.concatenate([best, v], axis=1), k)
            best_idx = jnp.take_along_axis(jnp.concatenate([best_idx, j + start + offset], axis=1), pos, axis=1)
        return (n_above, best, best_idx), None

    init = (jnp.zeros((b,), jnp.int32), jnp.full((b, max(k, 1)), MASKED, jnp.float32),
            jnp.zeros((b, max(k, 1)), jnp.int32))
    (n_above, vals, idx), _ = jax.lax.scan(count, init, starts)
    if axis is not None:
        n_above = jax.lax.psum(n_above, axis)
        if k:
            vals, idx = merge_top_k(vals, idx, k, axis)
    if not k:
        return 1 + n_above, None, None
    return 1 + n_above, vals, jnp.where(jnp.isfinite(vals), idx, 0)


def merge_top_k(vals: jax.Array, idx: jax.Array, k: int, axis: str):
    """Each shard's (B, k) top-k (inside ``shard_map``) -> the top-k of their union, the same on
    every shard: only (B, shards x k) values and indices cross devices. Shards are concatenated
    in order, so among equal scores the lower index wins, as in one ``top_k``."""
    v = jax.lax.all_gather(vals, axis, axis=1, tiled=True)  # (B, shards x k)
    i = jax.lax.all_gather(idx, axis, axis=1, tiled=True)
    top, pos = jax.lax.top_k(v, k)
    return top, jnp.take_along_axis(i, pos, axis=1)


def sharded_catalog(fn, mesh, n_args: int):
    """``fn(user, table, *lists)`` as a ``shard_map`` over ``mesh``: the table split by rows on
    ``model``, everything else (users, index lists, outputs) replicated. The table never moves;
    ``fn`` merges what its shards found (``merge_top_k``, ``psum``), so its outputs are the same
    on every device (the replication check is off: an all-gathered value is not typed invariant)."""
    from jax.sharding import PartitionSpec as P
    return jax.shard_map(fn, mesh=mesh, in_specs=(P(), P("model", None)) + (P(),) * n_args, out_specs=P(),
                         check_vma=False)


def ranks_from_scores(scores: jax.Array, targets: jax.Array, exclude=None, k: int = 0):
    """``catalog_ranks`` from a (B, N+1) score matrix: (ranks (B,), values (B, k), items (B, k))."""
    scores = scores.astype(jnp.float32)
    b, n_cols = scores.shape
    ok = _chunk_allowed(0, n_cols, n_cols, exclude)
    s_t = scores[jnp.arange(b), targets][:, None]  # (B, 1)
    not_target = jnp.arange(n_cols)[None, :] != targets[:, None]
    ranks = 1 + ((scores >= s_t) & ok & not_target).sum(axis=1, dtype=jnp.int32)
    if not k:
        return ranks, None, None
    vals, idx = jax.lax.top_k(jnp.where(ok, scores, MASKED), k)
    return ranks, vals, jnp.where(jnp.isfinite(vals), idx, 0)


@functools.partial(jax.jit, static_argnames="k")
def masked_top_k(scores: jax.Array, exclude: jax.Array, k: int):
    """Top-k items of (B, N+1) ``scores`` after removing padding and the (B, H) ``exclude``
    lists -> (values, indices) (B, k); values are ``MASKED`` where fewer than k were allowed."""
    ok = allowed_mask(scores.shape[1], scores.shape[0], exclude)
    return jax.lax.top_k(jnp.where(ok, scores.astype(jnp.float32), MASKED), k)


def rerank(ranker, history: jax.Array, vals: jax.Array, cand: jax.Array, k: int, blend: float = 0.0):
    """Re-rank the retriever's top-n (``vals``, ``cand`` (B, n); ``MASKED`` / 0 where it had
    fewer allowed items) with ``ranker``.

    The final score is ``ranker + blend * retriever``: with ``blend = 0`` the ranker alone
    orders the candidates; a positive blend (chosen on the validation split, or the weight a
    residual ranker was trained with) fuses the two stages' evidence.

    Returns (values (B, k), ``MASKED`` where fewer than k items were allowed; indices (B, k)).
    """
    cand = jnp.where(jnp.isfinite(vals), cand, 0)
    rs = ranker.score(history[:, -ranker.config.max_len:], cand)  # (B, n)
    rs = jnp.where(cand > 0, rs + blend * jnp.where(cand > 0, vals, 0.0), MASKED)
    top, j = jax.lax.top_k(rs, k)
    return top, jnp.where(jnp.isfinite(top), jnp.take_along_axis(cand, j, axis=1), 0)


DEFAULT_POOL = 200  # candidates the diversity re-ranking chooses among


def cosine(vecs: jax.Array) -> jax.Array:
    """(B, n, E) unit vectors -> (B, n, n) their dot products."""
    v = vecs.astype(jnp.float32)
    return jnp.einsum("bne,bme->bnm", v, v)


def set_cosine(lists: jax.Array) -> jax.Array:
    """(B, n, F) value codes per candidate (-1: none) -> (B, n, n) cosine of the value sets,
    |A & B| / sqrt(|A| |B|) (0 for an item without values): the dot product of unit multi-hot
    rows, from the codes alone (``jaxrec.data.features.feature_lists``)."""
    real = lists >= 0  # (B, n, F)
    inter = jnp.zeros(lists.shape[:2] + lists.shape[1:2], jnp.float32)  # (B, n, n)
    for f in range(lists.shape[2]):  # F is small (a movie's genres): one (B, n, n, F) compare each
        a = lists[:, :, f]  # (B, n)
        same = (a[:, :, None, None] == lists[:, None, :, :]) & real[:, None, :, :]  # (B, n, n, F)
        inter = inter + jnp.where(real[:, :, f][:, :, None], same.sum(-1), 0).astype(jnp.float32)
    cnt = real.sum(-1).astype(jnp.float32)  # (B, n)
    denom = jnp.sqrt(cnt[:, :, None] * cnt[:, None, :])
    return jnp.where(denom > 0, inter / jnp.maximum(denom, 1.0), 0.0)


def mmr(vals: jax.Array, items: jax.Array, sim: jax.Array, k: int, diversity: jax.Array):
    """Greedy maximal marginal relevance (Carbonell & Goldstein, 1998) over each row's candidates.

    ``vals`` (B, n): relevance, best first, ``MASKED`` past the allowed candidates; ``items``
    (B, n); ``sim`` (B, n, n): the candidates' similarities (``cosine`` of item embeddings, or
    ``set_cosine`` of feature values); ``diversity`` (B,) in [0, 1].

    The first pick is the most relevant candidate; each next one maximises
    ``(1 - d) * rel - d * max_sim``, where ``rel`` is the score min-max scaled over the row's
    allowed candidates (relevance and similarity then share a [0, 1] scale whatever the model's
    score range) and ``max_sim`` the candidate's largest similarity to the items picked so far.
    ``d = 0`` returns the top k unchanged; ``d = 1`` picks by dissimilarity alone after the first.
    Returns (values (B, k): the picked items' own scores, in picked order, ``MASKED`` where fewer
    than k were allowed; items (B, k), 0 there). Cost: (B, n, n) similarities and k steps over (B, n).
    """
    b, n = vals.shape
    if not 0 < k <= n:
        raise ValueError(f"mmr: k={k} must be in 1..{n} (the candidates)")
    ok = jnp.isfinite(vals)
    hi = jnp.max(jnp.where(ok, vals, -jnp.inf), axis=1, keepdims=True)
    lo = jnp.min(jnp.where(ok, vals, jnp.inf), axis=1, keepdims=True)
    rel = jnp.where(ok, (vals - lo) / jnp.maximum(hi - lo, 1e-9), 0.0)  # (B, n)
    sim = sim.astype(jnp.float32)  # (B, n, n)
    d = jnp.asarray(diversity, jnp.float32)[:, None]  # (B, 1)
    rows = jnp.arange(b)

    def step(carry, _):
        max_sim, free = carry  # (B, n): similarity to the picked set, not yet picked and allowed
        gain = jnp.where(free, (1.0 - d) * rel - d * max_sim, -jnp.inf)
        j = jnp.argmax(gain, axis=1)  # (B,) ties: the more relevant (lower position)
        valid = jnp.isfinite(gain[rows, j])
        return (jnp.maximum(max_sim, sim[rows, j]), free.at[rows, j].set(False)), (j, valid)

    first = jnp.zeros(b, jnp.int32)  # candidates are sorted: position 0 is the most relevant
    init = (sim[rows, first], ok.at[rows, first].set(False))
    _, (rest, valid) = jax.lax.scan(step, init, None, length=k - 1)  # (k-1, B)
    pos = jnp.concatenate([first[:, None], rest.T.astype(jnp.int32)], axis=1)  # (B, k)
    valid = jnp.concatenate([ok[:, :1], valid.T], axis=1)
    out_vals = jnp.where(valid, jnp.take_along_axis(vals, pos, axis=1), MASKED)
    return out_vals, jnp.where(valid, jnp.take_along_axis(items, pos, axis=1), 0)


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
    items: jax.Array  # (B, k) int32 item indices, 0 past the allowed items
    attention: jax.Array | None  # (B, L) last-layer attention of the user position (explain=True)


class Scorer:
    """A retrieval model, a ranking model, or retriever -> top ``candidates`` -> ranker, compiled.

    Parameters are arguments of the jitted functions (``stage.params`` may be replaced, e.g.
    at every validation), so a new set of parameters never recompiles. ``chunk``: catalog
    columns scored at once by ``top_k`` and ``rank_targets`` (None: the whole catalog);
    ``recall``: an approximate top-k (``lax.approx_max_k``) with this recall target;
    ``table_dtype``: keep the retrieval model's item tables as a ``CompactTable`` (bfloat16, or
    int8 with per-row scales) and drop their float32 copies from the parameters: serving's
    memory, for a fixed set of parameters (not for a scorer whose parameters are replaced).
    """

    def __init__(self, first: Stage, ranker: Stage | None = None, candidates: int = 200,
                 blend: float = 0.0, *, chunk: int | None = DEFAULT_CHUNK, recall: float | None = None,
                 table_dtype: str | None = None, new_item_slots: int = 0, cold_items=None, item_counts=None):
        self.first, self.ranker, self.n, self.blend = first, ranker, int(candidates), float(blend)
        self.kind = first.kind if ranker is None else "pipeline"
        if ranker is not None and (first.kind != "retrieval" or ranker.kind != "ranking"):
            raise UserError("a two-stage scorer is a retrieval model followed by a ranking model")
        if chunk is not None and chunk < 1:
            raise UserError(f"chunk must be a positive number of catalog columns, got {chunk}")
        if recall is not None and not 0 < recall <= 1:
            raise UserError(f"recall must be in (0, 1], got {recall}")
        self.chunk, self.recall = chunk, recall
        self.max_len = first.max_len if ranker is None else max(first.max_len, ranker.max_len)
        self.uses_time = first.uses_time
        # whether the first stage scores by a dot product of user and item vectors (what an
        # approximate inner-product index searches); MoL's gated mixture does not
        self.inner_product = first.kind != "retrieval" or getattr(first.model(), "mol", None) is None
        self.table_dtype = None if table_dtype in (None, "float32") else table_dtype
        self._first_params, self.tables = None, None  # compact: stripped parameters, (input, output) tables
        self._mean_rows = None  # (input, output) mean id rows of the trained items: new items' id part
        if self.table_dtype is not None or new_item_slots or cold_items is not None:
            self._compact(first, int(new_item_slots), cold_items, item_counts)
        self._host_rows = None  # item vectors on the host (explanations), built on first use
        self._mesh, self._mesh_of = None, None  # the mesh splitting the item table (``_sharded``), by params
        self._score_all = jax.jit(self._score_all_fn)
        self._score = jax.jit(self._score_fn)
        self._top_k = jax.jit(self._top_k_fn, static_argnames=("k", "explain"))
        self._diversify = jax.jit(self._diversify_fn, static_argnames=("k", "pool"))
        self._ranks = jax.jit(self._ranks_fn, static_argnames="k")
        self._final = jax.jit(self._final_fn)
        self._encode = jax.jit(self._encode_fn, static_argnames="explain")

    RARE_QUANTILE = 0.1  # a new item's id row: the mean over the trained items this rarely trained

    def _compact(self, first: Stage, spare: int = 0, cold_items=None, item_counts=None) -> None:
        """Build the served tables from the float32 parameters (side-feature embeddings summed in:
        the rows are the model's item representations), then drop the float tables from the
        parameters. ``spare`` rows for items added at serve time (``add_items``); ``cold_items``
        (N+1,) bool: items that were never a training target, whose id rows are replaced by a
        base row, so their features decide where they rank among themselves.

        The base row is the mean id row of the rarest trained items (the ``RARE_QUANTILE`` of
        ``item_counts``, training occurrences; all trained items without counts): a new item is
        an item nobody has interacted with yet, and its closest trained kin are the items few
        have. Measured on ml-1m with 5% of the items held out and added back (benchmarks/
        RESULTS.md, "New items"): the mean of all trained items gave new items 24.5% of the top-10
        slots, no id part 68.7%, the rarest 10% 8.5% (their share of interactions: 4.8%)."""
        model = first.model()
        dtype = self.table_dtype or "float32"
        if first.kind != "retrieval":
            raise UserError(f"table_dtype={dtype}: served item tables are for retrieval models, "
                            f"not a {first.kind} model")
        n = model.config.num_items + 1
        feats = getattr(model, "item_feats", None)
        if (spare or cold_items is not None) and feats is None:
            raise UserError("new or cold items are represented by their side features: this model was trained "
                            "without item features (model_args.features)")
        if spare and np.asarray(model.item_emb.embedding[...]).shape[0] > n and getattr(model, "mask_token", None):
            raise UserError(f"{type(model).__name__} keeps extra input tokens after the items: it cannot take "
                            "items added at serve time")
        ids_in = np.asarray(model.item_emb.embedding[...], np.float32)
        ids_out = ids_in[:n] if model.out_emb is None else np.asarray(model.out_emb.embedding[...][:n], np.float32)
        f = None if feats is None else np.asarray(feats(), np.float32)  # (R, D) feature part
        if cold_items is not None or spare:
            warm = np.ones(n, bool) if cold_items is None else ~np.asarray(cold_items, bool)[:n]
            warm[0] = False
            base = warm
            if item_counts is not None:
                c = np.asarray(item_counts, np.float64)[:n]
                trained = warm & (c > 0)
                if trained.any():
                    base = trained & (c <= np.quantile(c[trained], self.RARE_QUANTILE))
            self._mean_rows = (ids_in[:n][base].mean(0), ids_out[base].mean(0))
            if cold_items is not None:
                cold = ~warm
                cold[0] = False
                ids_in = ids_in.copy()
                ids_in[:n][cold] = self._mean_rows[0]
                ids_out = ids_out.copy() if model.out_emb is not None else ids_in[:n]
                ids_out[cold] = self._mean_rows[1]
        rows_in = ids_in if f is None else ids_in + f[: len(ids_in)]
        inp = CompactTable.build(rows_in, dtype, n, spare)
        if model.out_emb is None and model.raw_rows:
            out = inp
        else:  # its own rows, or the input rows transformed (cosine, MoL): model.item_side
            out = CompactTable.build(np.asarray(model.item_side(jnp.asarray(ids_out + (0 if f is None else f[:n])))),
                                     dtype, n, spare)
        self.tables = (inp, out)

        def strip(path, x):  # a (0, D) placeholder: a read that bypassed the served table fails loudly
            key = jax.tree_util.keystr(path)
            if ("['item_emb']" in key or "['out_emb']" in key) and "['embedding']" in key:
                return jnp.zeros((0,) + tuple(x.shape[1:]), x.dtype)
            return x
        self._first_params = jax.tree_util.tree_map_with_path(strip, first.params)

    @property
    def spare_rows(self) -> int:
        """Rows left for items added at serve time."""
        return 0 if self.tables is None else self.tables[0].n - int(self.tables[0].valid)

    def add_items(self, feature_ids) -> int:
        """Give new items rows of their own, from (m, F) feature ids (``features.encode_values``):
        the base id row (``_compact``: the rarest trained items' mean) plus the mean of the item's
        feature-value embeddings, as a cold item's. Returns the first new index (the items take
        the next m rows). The tables
        are replaced, not written in place: a batch already running keeps the old ones."""
        ids = jnp.asarray(np.asarray(feature_ids, np.int32))
        if self.tables is None or self._mean_rows is None or not self.spare_rows:
            raise UserError("no spare rows for new items (serve with --new-item-slots N)")
        model = self.first.model(self._first_params)
        f = np.asarray(model.item_feats.rows(ids), np.float32)  # (m, D)
        inp, out = self.tables
        start = int(inp.valid)
        new_in = inp.with_rows(start, self._mean_rows[0] + f)
        new_out = new_in if out is inp else out.with_rows(start, np.asarray(model.item_side(
            jnp.asarray(self._mean_rows[1] + f))))
        self.tables, self._host_rows = (new_in, new_out), None  # explanations re-read the host copy
        return start

    def table_bytes(self) -> int:
        """Bytes of the retrieval model's item tables as served (input and output, once if tied)."""
        if self.tables is not None:
            inp, out = self.tables
            return inp.nbytes + (0 if out is inp else out.nbytes)
        model = self.first.model()
        tabs = [model.item_emb.embedding[...]] + ([] if getattr(model, "out_emb", None) is None
                                                 else [model.out_emb.embedding[...]])
        return int(sum(t.nbytes for t in tabs))

    # ------------------------------------------------------------ traced functions

    def _p(self):
        """The first stage's argument of the jitted functions: (parameters, compact tables or None)."""
        if self.tables is None:
            return self.first.params, None
        return self._first_params, self.tables

    def _params(self):
        if self.first.params is not self._mesh_of:  # new parameters (validation) may live elsewhere
            self._mesh_of = self.first.params
            self._mesh = None if self.tables is not None else table_mesh(self.first.params)
        return self._p(), None if self.ranker is None else self.ranker.params

    def _user(self, p, history, times, explain: bool = False):
        """(B, U) user vectors, the (N+1, U) output table, with ``explain`` (B, L) attention, and
        the score function (the model's ``pair_scores``: a dot product, or MoL's)."""
        params, tables = p
        model, lr = self.first.model(params), self.first.max_len
        table = model.output_table() if tables is None else tables[1]
        if tables is not None:
            model.compact = tables[0]  # the model's history lookups read it (ItemModel.item_rows)
        t = None if times is None else times[:, -(lr + 1):]  # (B, <=Lr + 1)
        score = model.pair_scores  # a dot product, or MoL's gated mixture
        if not explain:
            return model.encode(history[:, -lr:], t), table, None, score
        user, att = model.encode_explained(history[:, -lr:], t)  # (B, U), (B, <=Lr)
        att = jnp.pad(att, ((0, 0), (history.shape[1] - att.shape[1], 0)))  # (B, L)
        return user, table, att, score

    def _score_all_fn(self, p, history, times):
        user, table, _, score = self._user(p, history, times)
        return score(user, _dense(_as_dtype(table, user.dtype), user.dtype))  # (B, N+1)

    def _encode_fn(self, p, history, times, explain: bool):
        user, _, att, _ = self._user(p, history, times, explain)
        return user.astype(jnp.float32), att  # (B, D), (B, L) or None

    def _score_fn(self, p, kp, history, candidates, times):
        if self.kind == "ranking":
            return self.first.model(p[0]).score(history[:, -self.first.max_len:], candidates)
        user, table, _, score = self._user(p, history, times)  # only the candidates' rows are read
        rows = (table.take(candidates, user.dtype) if isinstance(table, CompactTable)
                else table[candidates].astype(user.dtype))  # (B, C, U)
        scores = score(user, rows)  # (B, C)
        if self.ranker is None:
            return scores
        rs = self.ranker.model(kp).score(history[:, -self.ranker.max_len:], candidates)
        return jnp.where(candidates > 0, rs + self.blend * scores, MASKED)

    def _sharded(self, p):
        """(mesh, the (R, D) output rows as sharded, the rows in use) when the first stage's item
        table is split by rows over a mesh's ``model`` axis, else None: each shard then ranks its
        own rows and only (B, k) lists and counts cross devices (GSPMD alone would gather the
        whole table to every device for every batch)."""
        params, tables = p
        if self._mesh is None or tables is not None:
            return None
        model = self.first.model(params)
        return self._mesh, model.output_rows(), model.config.num_items + 1

    def _top_k_fn(self, p, kp, history, exclude, allow, restricted, times, k: int, explain: bool):
        user, table, att, score = self._user(p, history, times, explain)
        n = k if self.ranker is None else self.n
        sharded = self._sharded(p)
        if sharded is not None:
            mesh, rows, n_valid = sharded
            present = {a: x for a, x in (("exclude", exclude), ("allow", allow), ("restricted", restricted))
                       if x is not None}

            def local(u, t, *lists):
                v, i = catalog_top_k(u, t, n, chunk=self.chunk, recall=self.recall, n_valid=n_valid,
                                     offset=jax.lax.axis_index("model") * t.shape[0], **dict(zip(present, lists)))
                return merge_top_k(v, i, n, "model")
            vals, idx = sharded_catalog(local, mesh, len(present))(user, rows.astype(user.dtype), *present.values())
        else:
            vals, idx = catalog_top_k(user, table, n, exclude=exclude, allow=allow, restricted=restricted,
                                      chunk=self.chunk, recall=self.recall, score=score)  # (B, n)
        if self.ranker is not None:
            vals, idx = rerank(self.ranker.model(kp), history, vals, idx, k, self.blend)
        return TopK(vals, idx, att)

    def _diversify_fn(self, p, vals, idx, diversity, feats, k: int, pool: int):
        vals, idx = vals[:, :pool], idx[:, :pool]  # (B, pool) the most relevant, best first
        if feats is not None:
            sim = set_cosine(feats[idx])  # (B, pool, F) value codes -> (B, pool, pool)
        else:  # (B, pool, D) the candidates' output embeddings, as scored
            params, tables = p
            table = self.first.model(params).output_table() if tables is None else tables[1]
            sim = cosine(unit_rows(table.take(idx) if isinstance(table, CompactTable)
                                   else table[idx].astype(jnp.float32)))
        return mmr(vals, idx, sim, k, diversity)

    def _ranks_fn(self, p, kp, history, targets, exclude, times, k: int):
        if self.ranker is None:
            user, table, _, score = self._user(p, history, times)
            sharded = self._sharded(p)
            if sharded is not None:
                mesh, rows, n_valid = sharded

                def local(u, t, tg, ex):
                    return catalog_ranks(u, t, tg, ex, k=k, chunk=self.chunk, axis="model", n_valid=n_valid)
                return sharded_catalog(local, mesh, 2)(user, rows.astype(user.dtype), targets, exclude)
            return catalog_ranks(user, table, targets, exclude, k=k, chunk=self.chunk, score=score)
        return ranks_from_scores(self._final_fn(p, kp, history, exclude), targets, exclude, k)

    def _final_fn(self, p, kp, history, exclude):
        """A pipeline's final list as full-catalog scores: the n candidates above every other
        item in the ranker's order, the rest by retrieval score (the full-ranking protocol then
        measures exactly the pipeline's output). Full matrix: pipelines are evaluated on
        catalogs whose (B, N+1) scores fit."""
        scores = self._score_all_fn(p, history, None)  # (B, N+1)
        ok = allowed_mask(scores.shape[1], scores.shape[0], exclude)
        vals, cand = jax.lax.top_k(jnp.where(ok, scores, MASKED), self.n)
        top, idx = rerank(self.ranker.model(kp), history, vals, cand, self.n, self.blend)
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

    def _catalog_only(self, what: str):
        if self.kind == "ranking":
            raise UserError(f"a ranking model scores given candidates (score); a ranker alone cannot "
                            f"{what} the whole catalog: pair it with a retrieval model (jaxrec.pipeline.Pipeline)")

    def score_all(self, history, times=None) -> jax.Array:
        """(B, L) left-padded item indices -> (B, N+1) scores; a pipeline's are its final order
        with the history's items excluded (``final_scores``)."""
        self._catalog_only("score")
        history = jnp.asarray(history, jnp.int32)
        if self.kind == "pipeline":
            return self.final_scores(history, history)
        return self._score_all(self._p(), history, self._times(times))

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

    def top_k(self, history, k: int, *, exclude=None, allow=None, restricted=None, times=None,
              explain: bool = False) -> TopK:
        """Top-k of the catalog for (B, L) histories. ``exclude`` (B, H) index lists (0-padded)
        remove items; ``allow`` (B, A) index lists restrict the rows where ``restricted`` (B,)
        is True (all rows when it is None). Padding is never returned."""
        self._catalog_only("recommend from")
        limit = self.n if self.ranker is not None else None
        if limit is not None and not 0 < k <= limit:
            raise UserError(f"k must be in 1..{limit} (the number of candidates), got {k}")
        ex = None if exclude is None else jnp.asarray(exclude, jnp.int32)
        al = rs = None
        if allow is not None:
            al = jnp.asarray(allow, jnp.int32)
            rs = jnp.ones(al.shape[0], bool) if restricted is None else jnp.asarray(restricted, bool)
        return self._top_k(*self._params(), jnp.asarray(history, jnp.int32), ex, al, rs,
                           self._times(times), k=int(k), explain=bool(explain))

    def user_vectors(self, history, times=None, explain: bool = False):
        """(B, D) float32 user vectors of a retrieval model (the query side of its inner-product
        scores: what an approximate item index, ``jaxrec.ann``, searches with) and, with
        ``explain``, the (B, L) last-layer attention (else None)."""
        if self.kind != "retrieval":
            raise UserError(f"user vectors are a retrieval model's; this scorer is a {self.kind} one")
        return self._encode(self._p(), jnp.asarray(history, jnp.int32), self._times(times), explain=bool(explain))

    def diversify(self, top: TopK, k: int, diversity, *, pool: int | None = None, feats=None) -> TopK:
        """Re-rank a ``top_k`` answer for diversity: maximal marginal relevance (``mmr``) over its
        first ``pool`` items (default: all of them) down to ``k``, by the similarity of the items'
        output embeddings, or of their values of a categorical feature, ``feats`` (N+1, F) value
        codes padded with -1 (``jaxrec.data.features.feature_lists``). ``diversity`` (B,) in [0, 1].

        A second jitted call on the first one's device arrays (nothing comes back to the host in
        between): it compiles per (batch, k, pool, similarity), not per model shape, so serving's
        diversity adds small compiles, not a second set of model buckets."""
        pool = top.items.shape[1] if pool is None else min(int(pool), top.items.shape[1])
        if not 0 < k <= pool:
            raise UserError(f"diversity: k={k} must be in 1..{pool} (the candidates re-ranked)")
        vals, idx = self._diversify(self._p(), top.values, top.items, jnp.asarray(diversity, jnp.float32),
                                    None if feats is None else jnp.asarray(feats, jnp.int32), k=int(k),
                                    pool=int(pool))
        return TopK(vals, idx, top.attention)

    def rank_targets(self, history, targets, exclude, k: int = 0, times=None):
        """Full-ranking evaluation of one batch: (B,) ranks of ``targets`` among the items not in
        ``exclude`` (B, H) (ties count against the target) and the top-``k`` lists (values,
        items) (B, k) (None with ``k = 0``). Retrieval models rank in catalog chunks."""
        self._catalog_only("rank")
        return self._ranks(*self._params(), jnp.asarray(history, jnp.int32), jnp.asarray(targets, jnp.int32),
                           jnp.asarray(exclude, jnp.int32), self._times(times), k=int(k))

    def item_vectors(self, idx=None) -> np.ndarray:
        """(N+1, D) the retrieval model's output item vectors (similar items, explanations), or
        the rows ``idx``; kept on the host as served (a compact table stays compact there too)."""
        if self._host_rows is None:
            if self.tables is None:
                self._host_rows = (np.asarray(self.first.model().output_table()), None)
            else:
                out = self.tables[1]
                self._host_rows = (np.asarray(out.values[: out.n]),
                                   None if out.scales is None else np.asarray(out.scales[: out.n]))
        values, scales = self._host_rows
        rows = values if idx is None else values[idx]
        rows = rows.astype(np.float32)
        return rows if scales is None else rows * (scales if idx is None else scales[idx])

    def compile_count(self) -> int:
        return self._top_k._cache_size() + self._diversify._cache_size() + self._encode._cache_size()
