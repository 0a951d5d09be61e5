"""An approximate item index (faiss) for catalogs where brute-force scoring is too slow.

Exact serving reads the whole (N+1, D) item table for every request: at 10M items and D=64
that is 1.3 GFLOP a request, a few dozen requests/s on a CPU core. An inverted-file index
(``IVF<nlist>,Flat``: k-means cells over the items; a query reads only the ``nprobe`` cells
whose centroids score highest) reads ``nprobe / nlist`` of the table, so its cost falls by
about that ratio, at a recall below 1 that ``recall_at_k`` measures against the exact top-k
(``benchmarks/scale.py --index``). faiss does the work; this module only maps jaxrec's
conventions onto it:

* row 0 is padding and never indexed; items are indexed by their catalog index (faiss ids);
* the score is the inner product of the user and item vectors, as in exact serving (a faiss
  ``METRIC_INNER_PRODUCT`` index; the vectors are the served table's, so a compact table's
  dequantized rows);
* exclusions (seen items, deny lists) are applied after the search, which asks for ``k`` plus
  the longest exclusion list of the batch: the answer holds ``k`` items unless the probed cells
  hold fewer (a short answer is padded with ``MASKED`` scores and index 0, as exact serving
  pads past the allowed items).

Allow lists are not served from the index (the engine scores them exactly).
"""

from __future__ import annotations

import os

import numpy as np

from jaxrec.errors import UserError
from jaxrec.scoring import MASKED

DEFAULT_NPROBE = 32


def default_spec(n_items: int) -> str:
    """``IVF<nlist>,Flat`` with nlist ~ 4 sqrt(N) rounded to a power of two (faiss's guideline is
    4-16 sqrt(N)); at least 1 (a flat scan for tiny catalogs)."""
    nlist = max(1, 1 << int(round(np.log2(max(1.0, 4 * np.sqrt(n_items))))))
    return f"IVF{min(nlist, max(1, n_items // 39))},Flat"  # faiss warns below 39 training points a cell


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise UserError("the approximate index needs faiss (pip install faiss-cpu)") from e
    return faiss


class ItemIndex:
    """A faiss index over item rows 1..n-1 of ``table`` (n, D), searched by inner product.

    ``spec``: a faiss index factory string ("auto": ``default_spec``); ``nprobe``: cells read per
    query (IVF indexes); ``threads``: faiss's OpenMP threads (default: the cores this process
    may use); ``train_size``: rows the coarse quantizer is trained on (a fixed random sample)."""

    def __init__(self, table: np.ndarray, spec: str = "auto", nprobe: int = DEFAULT_NPROBE, *,
                 threads: int | None = None, train_size: int = 262_144, seed: int = 0):
        faiss = _faiss()
        table = np.ascontiguousarray(table, np.float32)
        if table.ndim != 2 or len(table) < 2:
            raise UserError(f"index: an (items + 1, dim) table is needed, got shape {table.shape}")
        n, d = table.shape[0] - 1, table.shape[1]
        self.spec = default_spec(n) if spec in ("", "auto") else spec
        faiss.omp_set_num_threads(threads or max(1, len(os.sched_getaffinity(0))))
        try:
            index = faiss.index_factory(d, self.spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise UserError(f"index {self.spec!r}: not a faiss index factory string "
                            f"({str(e).strip().splitlines()[-1]})") from None
        rows = table[1:]
        if not index.is_trained:
            rng = np.random.default_rng(seed)
            sample = rows if n <= train_size else rows[np.sort(rng.choice(n, train_size, replace=False))]
            index.train(sample)
        self.index = faiss.IndexIDMap2(index) if not _takes_ids(index) else index
        self.index.add_with_ids(rows, np.arange(1, n + 1, dtype=np.int64))
        self.dim, self.size = d, n
        self.nprobe = None
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            if nprobe < 1:
                raise UserError(f"index nprobe must be at least 1, got {nprobe}")
            ivf.nprobe = self.nprobe = min(int(nprobe), ivf.nlist)
            self.nlist = ivf.nlist
        else:
            self.nlist = None

    def describe(self) -> str:
        """What ``GetModelInfo.index`` and the server's log say: the spec and its search width."""
        return self.spec + (f" nprobe={self.nprobe}" if self.nprobe is not None else "")

    def add(self, start: int, rows: np.ndarray) -> None:
        """Index rows for items ``start .. start + len(rows) - 1`` (items added at serve time);
        an IVF index assigns them to the trained cells."""
        rows = np.ascontiguousarray(rows, np.float32)
        self.index.add_with_ids(rows, np.arange(start, start + len(rows), dtype=np.int64))
        self.size += len(rows)

    def search(self, users: np.ndarray, k: int, removed: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(B, D) user vectors -> (B, k) scores (float32, best first) and item indices (int32),
        the items of ``removed[i]`` (index arrays) left out of row i; padded with ``MASKED`` / 0
        where fewer than k items were found."""
        users = np.ascontiguousarray(users, np.float32)  # (B, D)
        b = len(users)
        extra = max((len(r) for r in removed), default=0) if removed else 0
        want = min(k + extra, self.size)
        vals, ids = self.index.search(users, want)  # (B, want); -1 past what the probed cells hold
        out_v = np.full((b, k), MASKED, np.float32)
        out_i = np.zeros((b, k), np.int32)
        for i in range(b):
            keep = ids[i] > 0
            if removed and len(removed[i]):
                keep &= ~np.isin(ids[i], removed[i])
            v, j = vals[i][keep][:k], ids[i][keep][:k]
            out_v[i, : len(v)], out_i[i, : len(j)] = v, j
        return out_v, out_i


def _takes_ids(index) -> bool:
    """IVF indexes store ids themselves; others (flat, HNSW) need an id map."""
    return _faiss().try_extract_index_ivf(index) is not None


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact top-k items that the approximate top-k holds (padding,
    index 0, never counts)."""
    hits = [len((set(a.tolist()) & set(e.tolist())) - {0}) / max(1, int((e > 0).sum()))
            for a, e in zip(approx, exact)]
    return float(np.mean(hits)) if hits else float("nan")
