"""The compiled model behind the server: fixed shape buckets, all compiled before serving.

One jitted function does the whole request path on device:

    scores = user(history) @ items.T          # (B, N+1)
    scores = where(allowed, scores, -inf)     # exclude-seen, allow and deny lists
    top-k (lax.top_k) + last-layer attention  # (B, K), (B, L)

With a ranker (two-stage), the top-k step is ``jaxrec.pipeline.rerank``: the retriever's
top-N allowed items are re-scored by the ranker and the best k of those returned, inside
the same jitted call. Score requests still read the retrieval scores.

Shapes are padded up to buckets (batch size, history length, k), and every bucket is
compiled in ``warm_up`` before health reports SERVING, so no request ever waits for XLA.
``compile_count`` reads the jitted function's cache size: tests assert it does not grow
after warm-up.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.errors import UserError
from jaxrec.inference import Recommender
from jaxrec.pipeline import check_stages, default_blend, rerank
from jaxrec.train.step import merge


def default_buckets(limit: int, start: int = 1) -> list[int]:
    """Powers of two from ``start`` up to ``limit`` (always including ``limit``)."""
    out, b = [], start
    while b < limit:
        out.append(b)
        b *= 2
    return out + [limit]


def pick(buckets: list[int], n: int) -> int:
    for b in buckets:
        if n <= b:
            return b
    return buckets[-1]


@dataclasses.dataclass
class Query:
    """One validated request, in catalog indices."""

    history: np.ndarray  # (<= max_len,) int32 known item indices, oldest first: what the model reads
    k: int
    exclude_seen: bool = True
    allow: np.ndarray | None = None  # int32 indices, or None for "all"
    deny: np.ndarray | None = None
    explain: bool = False
    candidates: np.ndarray | None = None  # Score requests: return these items' scores
    seen: np.ndarray | None = None  # every known history item, for exclude_seen (None: ``history``)
    times: np.ndarray | None = None  # (len(history) + 1,) int32 relative times (time-aware models)

    @property
    def excluded(self) -> np.ndarray:
        """The items exclude_seen removes: every known history item, not only those read."""
        return self.history if self.seen is None else self.seen


@dataclasses.dataclass
class Answer:
    items: np.ndarray  # (k',) indices, best first
    scores: np.ndarray  # (k',)
    because: list | None = None  # per item: [(history index, weight)]
    cold_start: bool = False


class Engine:
    def __init__(self, rec: Recommender, *, max_batch_size: int = 64, length_buckets=None,
                 k_buckets=None, checkpoint: str = "", ranker: Recommender | None = None,
                 candidates: int = 200, blend: float | None = None, max_history: int | None = None):
        self.rec, self.catalog, self.checkpoint = rec, rec.catalog, checkpoint
        self.num_items = rec.catalog.num_items
        # plain lists: building responses on the event loop indexes them per item
        self.id_list = rec.catalog.ids.tolist()
        self.title_list = [rec.catalog.title(i) or "" for i in range(self.num_items + 1)]
        if ranker is not None:  # two-stage: kinds, catalogs and the candidate count fit
            check_stages(rec, ranker, candidates)
            blend = default_blend(ranker, blend)
        self.max_len = max(rec.max_len, ranker.max_len if ranker else 0)
        self.uses_time = bool(getattr(rec, "uses_time", False))  # queries carry times
        if max_history is not None:  # read fewer items than the model can: cheaper on CPU
            if max_history < 1:
                raise UserError(f"max_history must be at least 1, got {max_history}")
            self.max_len = min(self.max_len, int(max_history))
        self.name = rec.config["train"]["model"] + (f"+{ranker.config['train']['model']}" if ranker else "")
        self.step = rec.step
        self.batch_buckets = default_buckets(max_batch_size)
        # every history fits a bucket (the largest is the model's max_len); k is capped by the
        # largest k bucket, which by default is the catalog size (the candidate count, two-stage)
        lb = length_buckets or default_buckets(self.max_len, 16)
        self.length_buckets = sorted({min(int(b), self.max_len) for b in lb} | {self.max_len})
        kmax = candidates if ranker is not None else self.num_items
        kb = k_buckets or [100, kmax]
        self.k_buckets = sorted({min(int(k), kmax) for k in kb})
        counts = Path(checkpoint) / "item_counts.npy" if checkpoint else None
        pop = np.load(counts) if counts is not None and counts.exists() else np.zeros(self.num_items + 1)
        self.popularity = pop.astype(np.float32)
        self.popularity[0] = -np.inf
        graphdef, dtype = rec.graphdef, rec.config["model"].get("dtype")
        lr = rec.max_len

        def serve(params, history, allowed, k, times=None):
            model = merge(graphdef, params["retriever"], dtype)
            t = None if times is None else times[:, -(lr + 1):]  # (B, <=Lr + 1)
            user, att = model.encode_explained(history[:, -lr:], t)  # (B, D), (B, <=Lr)
            att = jnp.pad(att, ((0, 0), (history.shape[1] - att.shape[1], 0)))  # (B, L)
            items = model.output_table()  # (N+1, D)
            scores = (user @ items.T.astype(user.dtype)).astype(jnp.float32)  # (B, N+1)
            masked = jnp.where(allowed, scores, -jnp.inf)
            if ranker is None:
                vals, idx = jax.lax.top_k(masked, k)
            else:  # the same two-stage function as evaluation and `jaxrec recommend`
                rmodel = merge(ranker.graphdef, params["ranker"], ranker.config["model"].get("dtype"))
                vals, idx, _ = rerank(rmodel, history, masked, candidates, k, blend)
            return vals, idx, att, scores

        self._serve = jax.jit(serve, static_argnums=3)
        self._params = {"retriever": rec.params, "ranker": ranker.params if ranker else None}
        self._items = np.asarray(merge(graphdef, rec.params).output_table())
        norms = np.linalg.norm(self._items, axis=1, keepdims=True)
        self._unit = self._items / np.maximum(norms, 1e-9)

    # ------------------------------------------------------------ compilation

    def warm_up(self) -> float:
        """Compile every (batch, length, k) bucket; returns seconds spent."""
        t = time.perf_counter()
        for b, l, k in itertools.product(self.batch_buckets, self.length_buckets, self.k_buckets):
            hist = np.zeros((b, l), np.int32)
            allowed = np.ones((b, self.num_items + 1), bool)
            times = np.zeros((b, l + 1), np.int32) if self.uses_time else None
            jax.block_until_ready(self._serve(self._params, hist, allowed, k, times))
        return time.perf_counter() - t

    def compile_count(self) -> int:
        return self._serve._cache_size()

    # ------------------------------------------------------------ the batch path

    def run(self, queries: list[Query]) -> list[Answer]:
        """Answer a batch of queries (cold-start ones on the host).

        Queries are grouped by history-length bucket first: one device call per group, so
        short histories are not padded to the longest one in the batch (the forward pass
        costs about batch x length, and on CPU it dominates the request).
        """
        out: list[Answer | None] = [None] * len(queries)
        groups: dict[int, list[int]] = {}
        for i, q in enumerate(queries):
            if len(q.history):
                groups.setdefault(pick(self.length_buckets, len(q.history)), []).append(i)
            else:
                out[i] = self._cold_start(q)
        cap = self.batch_buckets[-1]
        for idx in groups.values():
            for lo in range(0, len(idx), cap):
                chunk = idx[lo: lo + cap]
                for i, a in zip(chunk, self._run_device([queries[i] for i in chunk])):
                    out[i] = a
        return out

    def _allowed_row(self, q: Query) -> np.ndarray:
        row = np.ones(self.num_items + 1, bool)
        if q.allow is not None:
            row[:] = False
            row[q.allow] = True
        if q.deny is not None:
            row[q.deny] = False
        if q.exclude_seen:
            row[q.excluded] = False
        row[0] = False
        return row

    def _run_device(self, queries: list[Query]) -> list[Answer]:
        n = len(queries)
        b = pick(self.batch_buckets, n)
        l = pick(self.length_buckets, max(len(q.history) for q in queries))
        k = pick(self.k_buckets, max(q.k for q in queries))
        hist = np.zeros((b, l), np.int32)
        allowed = np.ones((b, self.num_items + 1), bool)  # padding rows too: results discarded
        allowed[:, 0] = False
        seen_rows, seen_cols = [], []  # exclude-seen of all plain queries in one scatter
        times = np.zeros((b, l + 1), np.int32) if self.uses_time else None
        for i, q in enumerate(queries):
            h = q.history[-l:]
            hist[i, l - len(h):] = h
            if q.allow is not None or q.deny is not None:
                allowed[i] = self._allowed_row(q)
            elif q.exclude_seen:
                seen_rows.append(np.full(len(q.excluded), i))
                seen_cols.append(q.excluded)
            if times is not None:
                times[i, l - len(h):] = q.times[-(len(h) + 1):]
        if seen_rows:
            allowed[np.concatenate(seen_rows), np.concatenate(seen_cols)] = False
        vals, idx, att, scores = jax.device_get(self._serve(self._params, hist, allowed, k, times))
        answers = []
        for i, q in enumerate(queries):
            if q.candidates is not None:
                answers.append(Answer(q.candidates, scores[i, q.candidates]))
                continue
            keep = np.isfinite(vals[i, : q.k])
            items, sc = idx[i, : q.k][keep], vals[i, : q.k][keep]
            because = self._explain(hist[i], att[i], items) if q.explain else None
            answers.append(Answer(items, sc, because))
        return answers

    def _explain(self, hist_row, att_row, items, top: int = 3) -> list:
        """For each recommended item: the history items whose attention weight times their
        similarity to the item is largest, normalised to shares that sum to 1."""
        real = hist_row > 0
        h_idx, a = hist_row[real], att_row[real]  # (H,)
        sim = np.maximum(self._unit[items] @ self._unit[h_idx].T, 0.0)  # (K, H)
        contrib = sim * a[None, :]
        out = []
        for row in contrib:
            total = row.sum()
            order = np.argsort(-row)[:top]
            out.append([(int(h_idx[j]), float(row[j] / total) if total > 0 else 0.0)
                        for j in order if row[j] > 0])
        return out

    def _cold_start(self, q: Query) -> Answer:
        if q.candidates is not None:
            return Answer(q.candidates, self.popularity[q.candidates], cold_start=True)
        scores = np.where(self._allowed_row(q), self.popularity, -np.inf)
        top = np.argsort(-scores, kind="stable")[: q.k]
        top = top[np.isfinite(scores[top])]
        return Answer(top, scores[top], None, cold_start=True)
