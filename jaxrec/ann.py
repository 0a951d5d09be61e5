"""An approximate item index (faiss) for catalogs where brute-force scoring is too slow.

Exact serving reads the whole (N+1, D) item table for every request: at 10M items and D=64
that is 1.3 GFLOP a request, a few dozen requests/s on a CPU core. An inverted-file index
(``IVF<nlist>,Flat``: k-means cells over the items; a query reads only the ``nprobe`` cells
whose centroids score highest) or a graph (``HNSW32``: a query walks a neighbour graph from an
entry point, keeping ``efSearch`` candidates) reads a small part of the table, at a recall
below 1 that ``recall_at_k`` measures against the exact top-k (``benchmarks/scale.py --index``). faiss does the work; this module only maps jaxrec's
conventions onto it:

* row 0 is padding and never indexed; items are indexed by their catalog index (faiss ids);
* the score is the inner product of the user and item vectors, as in exact serving (a faiss
  ``METRIC_INNER_PRODUCT`` index; the vectors are the served table's, so a compact table's
  dequantized rows);
* the default index is a graph (``HNSW32``), built and searched in L2 over rows augmented to
  one norm, which makes the nearest rows the largest inner products (``ItemIndex._augment``);
  inverted files (``"ivf"`` or ``IVF<n>,Flat``) search by inner product directly and build
  faster; recall of both on trained models and synthetic catalogs: benchmarks/RESULTS.md;
* exclusions (seen items, deny lists) are applied after the search, which asks for ``k`` plus
  the longest exclusion list of the batch: the answer holds ``k`` items unless the probed cells
  hold fewer (a short answer is padded with ``MASKED`` scores and index 0, as exact serving
  pads past the allowed items).

Allow lists are not served from the index (the engine scores them exactly).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np

from jaxrec.errors import UserError
from jaxrec.scoring import MASKED

log = logging.getLogger("jaxrec.ann")

DEFAULT_SPEC = "HNSW32"
GRAPHS = ("HNSW", "NSG")  # faiss's graph indexes: searched in L2 over augmented rows (ItemIndex._augment)
# how wide a search reads, by index family (faiss ParameterSpace names): IVF cells probed, HNSW
# candidate-list length
DEFAULT_PARAMS = {"IVF": "nprobe=32", "HNSW": "efSearch=128"}


def ivf_spec(n_items: int) -> str:
    """``IVF<nlist>,Flat`` with nlist ~ 4 sqrt(N) rounded to a power of two (faiss's guideline is
    4-16 sqrt(N)), with at least 39 training points a cell (faiss warns below)."""
    nlist = max(1, 1 << int(round(np.log2(max(1.0, 4 * np.sqrt(n_items))))))
    return f"IVF{min(nlist, max(1, n_items // 39))},Flat"


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise UserError("the approximate index needs faiss (pip install faiss-cpu)") from e
    return faiss


class ItemIndex:
    """A faiss index over item rows 1..n-1 of ``table`` (n, D), searched by inner product.

    ``spec``: a faiss index factory string ("auto": ``DEFAULT_SPEC``, a graph; "ivf": ``ivf_spec``);
    ``params``: faiss search parameters such as "nprobe=64" or "efSearch=256" (default: by family,
    ``DEFAULT_PARAMS``); ``threads``: faiss's OpenMP threads (default: the cores this process may
    use); ``train_size``: rows a trained index (IVF) learns its cells from (a fixed random sample);
    ``cache``: a directory where the built index is kept, keyed by a hash of the rows, the spec
    and the training settings (a restart on the same model reads it instead of building; a
    graph over 1M items takes minutes to build on two cores)."""

    def __init__(self, table: np.ndarray, spec: str = "auto", params: str | None = None, *,
                 threads: int | None = None, train_size: int = 262_144, seed: int = 0, cache=None):
        faiss = _faiss()
        table = np.ascontiguousarray(table, np.float32)
        if table.ndim != 2 or len(table) < 2:
            raise UserError(f"index: an (items + 1, dim) table is needed, got shape {table.shape}")
        n, d = table.shape[0] - 1, table.shape[1]
        self.spec = {"": DEFAULT_SPEC, "auto": DEFAULT_SPEC, "ivf": ivf_spec(n)}.get(spec, spec)
        faiss.omp_set_num_threads(threads or max(1, len(os.sched_getaffinity(0))))
        self.dim, self.size, self.loaded_from = d, n, None
        # graphs search by L2 over rows augmented to one norm (``_augment``), the rest by inner product
        self.euclidean = any(g in self.spec for g in GRAPHS)
        self.norm2 = float((table[1:] ** 2).sum(1).max()) if self.euclidean else 0.0  # M^2
        path = None
        if cache is not None:  # keyed by what the index is built from: the rows and how
            h = hashlib.blake2b(f"{self.spec}|{train_size}|{seed}|{table.shape}|{self.euclidean}".encode(),
                                digest_size=8)
            h.update(memoryview(table))
            path = Path(cache) / f"{re.sub(r'[^A-Za-z0-9]+', '_', self.spec)}-{n}x{d}-{h.hexdigest()}.faiss"
        if path is not None and path.exists():
            try:
                self.index, self.loaded_from = faiss.read_index(str(path)), path
            except RuntimeError as e:  # unreadable: built again and written over
                log.warning("item index cache %s unreadable (%s): building it again", path,
                            str(e).strip().splitlines()[-1])
        if self.loaded_from is None:
            self.index = self._build(faiss, self._augment(table[1:]), train_size, seed)
            if path is not None:  # written whole, then renamed: a crash leaves no half file under the name
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                faiss.write_index(self.index, str(tmp))
                os.replace(tmp, path)
        family = next((f for f in DEFAULT_PARAMS if self.spec.startswith(f)), None)
        self.params = ""
        self.set_params(params if params is not None else DEFAULT_PARAMS.get(family, ""))

    def _build(self, faiss, rows: np.ndarray, train_size: int, seed: int):
        log.info("building the item index %s over %d items", self.spec, len(rows))
        try:
            index = faiss.index_factory(rows.shape[1], self.spec,
                                        faiss.METRIC_L2 if self.euclidean else faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise UserError(f"index {self.spec!r}: not a faiss index factory string "
                            f"({str(e).strip().splitlines()[-1]})") from None
        if not index.is_trained:
            rng = np.random.default_rng(seed)
            n = len(rows)
            sample = rows if n <= train_size else rows[np.sort(rng.choice(n, train_size, replace=False))]
            index.train(sample)
        ivf = faiss.try_extract_index_ivf(index) is not None
        index = index if ivf else faiss.IndexIDMap2(index)  # IVF lists store ids; others need a map
        index.add_with_ids(rows, np.arange(1, len(rows) + 1, dtype=np.int64))
        return index

    def _augment(self, rows: np.ndarray) -> np.ndarray:
        """Rows x -> [x, sqrt(M^2 - |x|^2)] for a graph index (Bachrach et al. 2014): every row then
        has norm M, so |q' - x'|^2 = |q|^2 + M^2 - 2 q.x for queries q' = [q, 0], and the nearest
        rows in L2 are exactly the largest inner products. Why: a neighbour graph built on inner
        products (not a metric) routes badly; on ml-1m SASRec+ HNSW32 found 27% of the exact
        top-10 by inner product, 99.8% this way (benchmarks/RESULTS.md). A row added later with a
        larger norm than M gets 0 (it ranks a little too high: its norm exceeds the others')."""
        if not self.euclidean:
            return np.ascontiguousarray(rows, np.float32)
        extra = np.sqrt(np.maximum(self.norm2 - (rows.astype(np.float64) ** 2).sum(1), 0.0))
        return np.ascontiguousarray(np.hstack([rows, extra[:, None]]), np.float32)

    def set_params(self, params: str) -> None:
        """Search parameters, faiss ``ParameterSpace`` syntax: "nprobe=32", "efSearch=128", comma-separated."""
        try:
            if params:
                _faiss().ParameterSpace().set_index_parameters(self.index, params)
        except RuntimeError:
            raise UserError(f"index {self.spec!r}: cannot set {params!r} (IVF indexes take nprobe=N, HNSW "
                            "efSearch=N)") from None
        self.params = params

    def describe(self) -> str:
        """What ``GetModelInfo.index`` and the server's log say: the spec and its search width."""
        return self.spec + (f" {self.params}" if self.params else "")

    def add(self, start: int, rows: np.ndarray) -> None:
        """Index rows for items ``start .. start + len(rows) - 1`` (items added at serve time);
        an IVF index assigns them to the trained cells."""
        rows = self._augment(np.asarray(rows, np.float32))
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
        if self.euclidean:  # [q, 0] against the augmented rows; squared distances back to q.x
            q = np.ascontiguousarray(np.hstack([users, np.zeros((b, 1), np.float32)]))
            dist, ids = self.index.search(q, want)  # (B, want), nearest first
            vals = (0.5 * ((users.astype(np.float64) ** 2).sum(1, keepdims=True) + self.norm2 - dist)).astype(np.float32)
        else:
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


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact top-k items that the approximate top-k holds (padding,
    index 0, never counts)."""
    hits = [len((set(a.tolist()) & set(e.tolist())) - {0}) / max(1, int((e > 0).sum()))
            for a, e in zip(approx, exact)]
    return float(np.mean(hits)) if hits else float("nan")
