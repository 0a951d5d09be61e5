"""The compiled model behind the server: shape buckets, padding and answers.

Scoring is ``jaxrec.scoring``'s (the same function as evaluation and ``jaxrec recommend``):
one jitted call per batch encodes the users, ranks the catalog in chunks with the
exclude-seen, deny and allow lists applied on device (index lists: no (batch, N+1) mask is
built on the host, and no (batch, N+1) score matrix comes back), takes the top-k (or,
two-stage, re-ranks the retriever's top-N with the ranker) and the last layer's attention for
explanations. Score requests read only their candidates' rows of the item table. What the
engine adds is only serving's part:

* shapes are padded up to buckets (batch size, history length, k up to ``max_k``), and every
  bucket is compiled in ``warm_up`` before health reports SERVING, so no request waits for
  XLA; ``compile_count`` reads the jitted function's cache size (tests assert it does not
  grow). The exclude lists of a warmed bucket hold twice the history bucket (a full history
  plus as many deny ids; with ``max_history``, the largest bucket twice the model's window,
  since exclude-seen removes what was sent, not only what was read); a batch with longer lists, with allow lists or with Score
  candidates compiles its shape once, on first use;
* queries are grouped by history-length bucket, and adjacent groups merge into one padded
  call where the call costs timed after warm-up (``call_costs``) say that is cheaper (on a
  large catalog every call scans the item table; on a small one the encoder dominates);
* cold-start queries (no known history) get popular items on the host;
* diversity (``Query.diversity`` > 0): the top-k call of the smallest k bucket holding
  ``diversity_pool`` items feeds ``Scorer.diversify`` (maximal marginal relevance, by item
  embeddings or a catalog feature's rows, built once per feature) on device; no model bucket is
  added, and the re-ranking's own small compiles (batch x similarity) are warmed up.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import os
import time

import jax
import numpy as np

from jaxrec.ann import ItemIndex
from jaxrec.artifact import exclude_width
from jaxrec.data.codec import left_pad, next_pow2, pick, pow2_buckets
from jaxrec.errors import UserError
from jaxrec.data.features import encode_values as feature_ids_of
from jaxrec.data.features import code_lists, feature_lists
from jaxrec.scoring import DEFAULT_CHUNK, DEFAULT_POOL, MASKED, Scorer, TopK, host_allowed


def _lists(rows: list, b: int, width: int) -> np.ndarray:
    """(b, width) int32 index lists, 0-padded (column 0 is padding, never recommended)."""
    out = np.zeros((b, width), np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


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
    diversity: float = 0.0  # 0..1: maximal marginal relevance over the top diversity_pool
    diversity_by: str = ""  # "": item-embedding similarity; else a catalog feature's name

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


def batch_sizes(max_batch_size: int, buckets: list | None = None) -> list[int]:
    """The batch sizes compiled: powers of two up to ``max_batch_size``, or ``buckets`` (with
    ``max_batch_size`` added). A batch runs padded to the next size, and on a large catalog every
    padded row costs what a real one does (1M items: 1.3 ms a row on one core), so sizes closer
    together than powers of two waste less, at one compile each."""
    if max_batch_size < 1:
        raise UserError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if buckets is None:
        return pow2_buckets(max_batch_size)
    bad = [b for b in buckets if not 1 <= int(b) <= max_batch_size]
    if bad:
        raise UserError(f"batch buckets {bad}: each must be from 1 to max_batch_size ({max_batch_size})")
    return sorted({int(b) for b in buckets} | {max_batch_size})


class Engine:
    def __init__(self, rec, *, max_batch_size: int = 64, length_buckets=None,
                 k_buckets=None, checkpoint: str = "", ranker=None,
                 candidates: int = 200, blend: float | None = None, max_history: int | None = None,
                 max_k: int = 1000, chunk: int | None = DEFAULT_CHUNK, recall: float | None = None,
                 table_dtype: str | None = None, diversity_pool: int = DEFAULT_POOL, new_item_slots: int = 0,
                 cold_items: str = "features", index: str | None = None, index_params: str | None = None,
                 index_cache: str | None = None, batch_buckets: list | None = None):
        from jaxrec.pipeline import Pipeline  # here: an engine on an artifact never imports model code
        if index and (ranker is not None or rec.kind != "retrieval"):
            raise UserError("--index: an approximate item index serves a retrieval model alone "
                            f"(this is {'a two-stage server' if ranker is not None else 'a ' + rec.kind + ' model'})")
        if index and not rec.scorer.inner_product:
            raise UserError(f"--index {index}: an approximate index searches inner products; this model scores "
                            "by a mixture of logits (similarity='mol'): serve it exactly (no --index)")
        # two-stage: Pipeline checks kinds, catalogs and the candidate count
        model = Pipeline(rec, ranker, candidates, blend=blend) if ranker is not None else rec
        s = model.scorer  # the serving scorer: the same stages, chunked as asked
        n = rec.catalog.num_items
        pop = rec.run.item_counts(n) if rec.run is not None else np.zeros(n + 1)
        if cold_items not in ("features", "trained"):
            raise UserError(f"cold_items={cold_items!r}: use features or trained")
        if new_item_slots and ranker is not None:
            raise UserError("--new-item-slots: a two-stage server's ranker has no rows for new items")
        # items never trained on (zero count) are represented by their features, when the model has them
        has_features = rec.kind == "retrieval" and getattr(rec.stage.model(), "item_feats", None) is not None
        cold = None
        if cold_items == "features" and has_features and ranker is None and rec.run is not None:
            cold = np.asarray(pop) == 0
            cold[0] = False
            cold = cold if cold.any() else None
        self.cold_items = 0 if cold is None else int(cold.sum())
        scorer = Scorer(s.first, s.ranker, s.n, s.blend, chunk=chunk, recall=recall, table_dtype=table_dtype,
                        new_item_slots=new_item_slots, cold_items=cold,
                        item_counts=pop if rec.run is not None else None)
        if scorer.tables is not None:  # only the served tables are kept: drop the float32 copies
            rec.params = rec.stage.params = rec.scorer = model = None
        self.rec, self.model, self.artifact = rec, model, None
        kmax = min(candidates, max_k) if ranker is not None else min(n, max_k)
        self._setup(scorer, rec.catalog, name=rec.name + (f"+{ranker.name}" if ranker else ""), step=rec.step,
                    popularity=pop, checkpoint=checkpoint, max_len=scorer.max_len,
                    # what Score requests read: two-stage, the final score Recommend orders its top-N by
                    score_stage="pipeline" if ranker is not None else "retriever",
                    max_batch_size=max_batch_size, length_buckets=length_buckets, k_buckets=k_buckets,
                    batch_buckets=batch_buckets, max_history=max_history, max_k=max_k, kmax=kmax,
                    diversity_pool=min(diversity_pool, candidates) if ranker is not None else diversity_pool)
        if index:  # built from the served rows (a compact table's dequantized ones), row 0 left out
            t = time.perf_counter()
            self.index = ItemIndex(scorer.item_vectors()[: self.num_items + 1], index, index_params,
                                   cache=index_cache)
            self.index_build_s = time.perf_counter() - t

    @classmethod
    def from_artifact(cls, path, *, max_batch_size: int = 64, batch_buckets: list | None = None) -> "Engine":
        """An engine on an exported artifact (``jaxrec.artifact``): its length and k buckets are
        the exported ones (the batch dimension is symbolic: any batch sizes); what was not
        exported (allow lists, longer exclude lists, wider Score lists) is refused per request
        (``refusal``)."""
        from jaxrec.artifact import Artifact
        art = Artifact(path)
        e = cls.__new__(cls)
        e.rec = e.model = None
        e.artifact, e.cold_items = art, 0
        m = art.manifest
        e._setup(art, art.catalog, name=m["name"], step=m["step"], popularity=art.popularity, checkpoint=str(path),
                 max_len=art.max_len, score_stage="pipeline" if art.kind == "pipeline" else "retriever",
                 max_batch_size=max_batch_size, batch_buckets=batch_buckets,
                 length_buckets=art.length_buckets, k_buckets=art.k_buckets, max_history=None,
                 max_k=max(art.k_buckets), kmax=max(art.k_buckets), diversity_pool=0,
                 exclude_widths=art.exclude_widths)
        return e

    def _setup(self, scorer, catalog, *, name, step, popularity, checkpoint, max_len, score_stage, max_batch_size,
               batch_buckets, length_buckets, k_buckets, max_history, max_k, kmax, diversity_pool,
               exclude_widths: dict | None = None) -> None:
        self.scorer, self.catalog, self.checkpoint = scorer, catalog, checkpoint
        self.num_items = catalog.num_items
        # plain lists: building responses on the event loop indexes them per item
        self.id_list = catalog.ids.tolist()
        self.title_list = [catalog.title(i) or "" for i in range(self.num_items + 1)]
        self.table_dtype = scorer.table_dtype or "float32"
        self.max_len = max_len
        self.uses_time = scorer.uses_time  # queries carry times
        if max_history is not None:  # read fewer items than the model can: cheaper on CPU
            if max_history < 1:
                raise UserError(f"max_history must be at least 1, got {max_history}")
            self.max_len = min(self.max_len, int(max_history))
        self.name, self.step, self.score_stage = name, step, score_stage
        self.batch_buckets = batch_sizes(max_batch_size, batch_buckets)
        # every history fits a bucket (the largest is the model's max_len); k is capped by the
        # largest k bucket: max_k (at most the catalog; two-stage, the candidate count)
        lb = length_buckets or pow2_buckets(self.max_len, 16)
        self.length_buckets = sorted({min(int(b), self.max_len) for b in lb} | {self.max_len})
        # the exclude-list width compiled per history bucket: a full history plus as many deny ids.
        # With max_history under the model's window, the largest bucket also takes every request
        # whose history is longer than what is read, and exclude-seen removes all of it: that
        # bucket is compiled for the model's whole window, so a client sending its window (the
        # usual case) never compiles a wider list while serving
        self.exclude_widths = dict(exclude_widths) if exclude_widths else {
            l: exclude_width(max_len if l == self.max_len else l) for l in self.length_buckets}
        if max_k < 1:
            raise UserError(f"max_k must be at least 1, got {max_k}")
        kb = k_buckets or [100, kmax]
        self.k_buckets = sorted({min(int(k), kmax) for k in kb})
        self.popularity = np.asarray(popularity).astype(np.float32)
        self.popularity[0] = MASKED
        if diversity_pool < 0:
            raise UserError(f"diversity_pool must be 0 (off) or a number of candidates, got {diversity_pool}")
        # diversity re-ranks the first `pool` items of the smallest k bucket that holds them (no
        # new model bucket): it serves the k buckets within that pool
        if diversity_pool and self.k_buckets:
            self.diversity_base = next((k for k in self.k_buckets if k >= diversity_pool), self.k_buckets[-1])
            self.diversity_pool = min(int(diversity_pool), self.diversity_base)
        else:
            self.diversity_base = self.diversity_pool = 0
        self.diversity_k_buckets = [k for k in self.k_buckets if k <= self.diversity_pool]
        self.item_features = sorted(catalog.features)  # what diversity_by may name
        self.added = 0  # items added with add_items
        self.index, self.index_build_s = None, 0.0  # an approximate item index (jaxrec.ann), when served
        self._feats: dict = {}  # feature name -> (N+1, V) unit rows on device
        self.call_costs: dict[int, tuple[float, float]] = {}  # length bucket -> (fixed s, s per row), warm_up

    def diversity_refusal(self, k: int, by: str) -> str | None:
        """Why a diversity request for ``k`` items by ``by`` cannot be answered (None: it can)."""
        if not self.diversity_k_buckets:
            return ("diversity: not served here" + (" (an exported artifact has no diversity functions)"
                                                    if self.artifact is not None else " (--diversity-pool 0)"))
        if k > self.diversity_k_buckets[-1]:
            return (f"diversity: k must be at most {self.diversity_k_buckets[-1]} (the largest k bucket within "
                    f"the diversity pool of {self.diversity_pool}), got {k}")
        if by and by not in self.item_features:
            return (f"diversity_by: {by!r} is not a feature of the catalog (it has: "
                    f"{', '.join(self.item_features) or 'none'}; \"\" = item embeddings)")
        return None

    def _diversify(self, top, diversity, by: str):
        """The re-ranked list at the largest diversity k bucket: greedy MMR's first k picks are the
        same whatever the list's length, so one compile per batch size and similarity serves every
        k (each answer takes its first k)."""
        return self.scorer.diversify(top, self.diversity_k_buckets[-1], diversity, pool=self.diversity_pool,
                                     feats=self._feature_rows(by) if by else None)

    def _feature_rows(self, by: str):
        """(N+1 + spare rows, F) value codes of feature ``by`` on device, -1 padded (spare rows:
        none until added): ``set_cosine`` compares candidates' codes, so no (N+1, V) rows exist."""
        if by not in self._feats:
            rows = feature_lists(self.catalog, by)
            spare = self.scorer.spare_rows if self.artifact is None else 0
            self._feats[by] = jax.device_put(np.pad(rows, ((0, spare), (0, 0)), constant_values=-1))
        return self._feats[by]

    @property
    def new_item_slots(self) -> int:
        """Rows left for ``add_items``."""
        return 0 if self.artifact is not None else self.scorer.spare_rows

    def add_items(self, items: list) -> tuple[int, list]:
        """Add new items at serve time: ``items`` = [(external id, title or "", {feature: [values]})].
        Each gets a row from its feature values (``Scorer.add_items``) and can be recommended from
        the next batch on; the catalog, titles, popularity (0) and diversity rows grow with it.
        Run on the device thread (between batches). Returns (items added, unknown feature values
        as "feature=value", reported and not kept). Raises UserError naming the bad item."""
        if not items:
            raise UserError("items: empty")
        if len(items) > self.new_item_slots:
            raise UserError(f"items: {len(items)} new item(s), but {self.new_item_slots} spare row(s) left "
                            "(serve with more --new-item-slots)")
        names = list(self.scorer.first.model(self.scorer._first_params).item_feats.features.names)
        seen, rows, codes, unknown = set(), [], [], []
        for i, (x, _, values) in enumerate(items):
            if x in seen or self.catalog.index_of([x])[0] != 0:
                raise UserError(f"items[{i}]: item id {x!r} is already in the catalog" + (
                    " (twice in this call)" if x in seen else ""))
            seen.add(x)
            ids, c, bad = feature_ids_of(self.catalog, names, values)
            if not len(ids):
                raise UserError(f"items[{i}] ({x!r}): none of its feature values is one the model knows "
                                f"({', '.join(names)}): nothing to represent it by")
            rows.append(ids)
            codes.append(c)
            unknown += [f"{x}: {u}" for u in bad]
        width = max(len(r) for r in rows)
        start = self.scorer.add_items(np.stack([np.pad(r, (0, width - len(r))) for r in rows]))
        m = len(items)
        if self.index is not None:
            self.index.add(start, self.scorer.item_vectors(np.arange(start, start + m)))
        self.id_list += [x for x, _, _ in items]  # before the ids can be looked up (catalog.add, last)
        self.title_list += [t or "" for _, t, _ in items]
        self.popularity = np.concatenate([self.popularity, np.zeros(m, np.float32)])
        for by, rows_dev in self._feats.items():
            new = code_lists([c[by] for c in codes], rows_dev.shape[1])
            if any(len(c[by]) > rows_dev.shape[1] for c in codes):  # more values than any item had: wider
                new = code_lists([c[by] for c in codes])
                rows_dev = jax.numpy.pad(rows_dev, ((0, 0), (0, new.shape[1] - rows_dev.shape[1])),
                                         constant_values=-1)
            self._feats[by] = rows_dev.at[start: start + m].set(new)
        self.catalog.add([x for x, _, _ in items], [t or None for _, t, _ in items],
                         {name: [c[name] for c in codes] for name in self.catalog.features})
        self.num_items = self.catalog.num_items
        self.added += m
        return m, unknown

    def refusal(self, q: Query) -> str | None:
        """Why ``q`` cannot be answered by this engine (None: it can). Only an artifact refuses:
        it answers the shapes it was exported with."""
        if self.artifact is None or not len(q.history):
            return None
        l = pick(self.length_buckets, len(q.history))
        if q.candidates is not None:
            return self.artifact.refusal(l, candidates=len(q.candidates))
        removed = (len(q.excluded) if q.exclude_seen else 0) + (0 if q.deny is None else len(q.deny))
        return self.artifact.refusal(l, exclude=removed, allow=None if q.allow is None else len(q.allow))

    def warm_up(self, threads: int | None = None) -> float:
        """Compile every (batch, length, k) bucket, several at once (XLA compiles outside the
        GIL; ``threads`` defaults to the cores this process may use); returns seconds spent."""
        def diverse(shape):  # the re-ranking's compiles: per batch and similarity (not per length or k)
            b, by = shape
            if self.index is not None:  # re-ranks host arrays from the index
                top = self._host_top(np.zeros((b, self.diversity_base), np.float32),
                                     np.zeros((b, self.diversity_base), np.int32), None)
            else:
                top = self.scorer.top_k(np.zeros((b, self.length_buckets[0]), np.int32), self.diversity_base,
                                        times=np.zeros((b, self.length_buckets[0] + 1), np.int32)
                                        if self.uses_time else None,
                                        exclude=np.zeros((b, self.exclude_widths[self.length_buckets[0]]),
                                                         np.int32), explain=True)
            jax.block_until_ready(self._diversify(top, np.zeros(b, np.float32), by))

        t = time.perf_counter()
        for by in self.item_features:
            self._feature_rows(by)  # built before the threads, once
        shapes = list(itertools.product(self.batch_buckets, self.length_buckets,
                                        self.k_buckets if self.index is None else self.k_buckets[:1]))
        n = threads or max(1, len(os.sched_getaffinity(0)))
        with concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="jaxrec-warmup") as pool:
            list(pool.map(self._bucket_call, shapes))  # list(): re-raises the first failure
            if self.diversity_k_buckets:
                list(pool.map(diverse, itertools.product(self.batch_buckets, [""] + self.item_features)))
        self.call_costs = self._measure_calls()
        return time.perf_counter() - t

    def _bucket_call(self, shape) -> float:
        """Run the device call of one (batch, length, k) bucket on zeros (the first run compiles
        it); returns its seconds."""
        b, l, k = shape
        hist = np.zeros((b, l), np.int32)
        exclude = np.zeros((b, self.exclude_widths[l]), np.int32)
        times = np.zeros((b, l + 1), np.int32) if self.uses_time else None
        t = time.perf_counter()
        if self.index is not None:  # the device computes user vectors only (one compile per k fewer)
            jax.block_until_ready(self.scorer.user_vectors(hist, times, explain=True))
        else:
            jax.block_until_ready(self.scorer.top_k(hist, k, exclude=exclude, times=times, explain=True))
        return time.perf_counter() - t

    def _measure_calls(self) -> dict[int, tuple[float, float]]:
        """Per history-length bucket: (fixed seconds, seconds per batch row) of one compiled
        device call at the smallest k, from the smallest and the largest batch bucket (the
        faster of two runs each, one call at a time, after warm-up: nothing compiles). A call
        for a longer bucket computes at least what a shorter one does, so both parts are made
        non-decreasing in the length (single timings on a busy host are noisy). ``run`` reads
        them to decide which length groups to merge into one call."""
        lo, hi, k = self.batch_buckets[0], self.batch_buckets[-1], self.k_buckets[0]
        costs, floor = {}, (0.0, 0.0)
        for l in self.length_buckets:
            t_lo = min(self._bucket_call((lo, l, k)) for _ in range(2))
            t_hi = min(self._bucket_call((hi, l, k)) for _ in range(2)) if hi > lo else t_lo
            per = max(0.0, (t_hi - t_lo) / (hi - lo)) if hi > lo else 0.0
            fixed = max(0.0, t_lo - per * lo)
            floor = costs[l] = (max(fixed, floor[0]), max(per, floor[1]))
        return costs

    def batch_within(self, seconds: float) -> int:
        """The largest batch bucket whose device call at the longest history bucket took at
        most ``seconds`` when measured after warm-up (at least the smallest bucket)."""
        fixed, per = self.call_costs[self.length_buckets[-1]]
        return max((b for b in self.batch_buckets if fixed + per * b <= seconds), default=self.batch_buckets[0])

    def light_call_s(self) -> float:
        """Seconds of the device call for one request at the longest history bucket (the
        smallest batch bucket), as measured after warm-up: what a request costs on an idle
        server, and the unit ``--latency-target-ms auto`` counts in."""
        fixed, per = self.call_costs[self.length_buckets[-1]]
        return fixed + per * self.batch_buckets[0]

    def describe_costs(self) -> str:
        """The measured call costs, for the start-up log."""
        return ", ".join(f"l={l}: {1000 * f:.1f} ms + {1000 * p:.2f} ms/row" for l, (f, p) in self.call_costs.items())

    def compile_count(self) -> int:
        return self.scorer.compile_count()

    # ------------------------------------------------------------ the batch path

    def run(self, queries: list[Query]) -> list[Answer]:
        """Answer a batch of queries (cold-start ones on the host).

        Queries are grouped by history-length bucket first, so short histories are not padded
        to the longest one in the batch (the forward pass costs about batch x length); groups
        merge into one call where the measured costs say the shared part (a large catalog's
        scan) outweighs the padding (``_merge``).
        """
        out: list[Answer | None] = [None] * len(queries)
        # (is a Score request, diversity similarity or None) -> length bucket -> queries
        groups: dict[tuple, dict[int, list[int]]] = {}
        for i, q in enumerate(queries):
            if len(q.history):
                key = (q.candidates is not None, q.diversity_by if q.diversity > 0 else None)
                groups.setdefault(key, {}).setdefault(pick(self.length_buckets, len(q.history)), []).append(i)
            else:
                out[i] = self._cold_start(q)
        cap = self.batch_buckets[-1]
        for (is_score, _), by_length in groups.items():
            # Score requests read only their candidates: no fixed cost to share, grouped by length
            calls = [by_length[l] for l in sorted(by_length)] if is_score else self._merge(by_length)
            for idx in calls:
                for lo in range(0, len(idx), cap):
                    chunk = idx[lo: lo + cap]
                    for i, a in zip(chunk, self._run_device([queries[i] for i in chunk])):
                        out[i] = a
        return out

    def _call_cost(self, l: int, n: int) -> float:
        """Expected seconds of the device calls for ``n`` queries at history bucket ``l``."""
        fixed, per = self.call_costs[l]
        full, rest = divmod(n, self.batch_buckets[-1])
        return full * (fixed + per * self.batch_buckets[-1]) + (fixed + per * pick(self.batch_buckets, rest)
                                                                if rest else 0.0)

    def _merge(self, by_length: dict[int, list[int]]) -> list[list[int]]:
        """The length groups to run as one device call each (as query indices): adjacent groups
        merge, padded to the longer, where the measured costs (``call_costs``) say fewer calls
        cost less. Each call pays a fixed part (on a large catalog, the scan of every item row)
        and a part per row that grows with the history bucket: on a 1M-item catalog one call
        for three length groups replaces three scans of the table; on ml-1m (3k items) the
        encoder dominates and the groups stay apart. The cheapest split of the sorted groups
        into runs, by dynamic programming (at most a handful of buckets). Without measured
        costs (no warm-up): one call per group."""
        ls = sorted(by_length)
        if len(ls) == 1 or not self.call_costs:
            return [by_length[l] for l in ls]
        best: list[tuple[float, list]] = [(0.0, [])]  # best[j]: the cheapest calls for the first j groups
        for j in range(1, len(ls) + 1):
            best.append(min(((best[i][0] + self._call_cost(ls[j - 1], sum(len(by_length[l]) for l in ls[i:j])),
                              best[i][1] + [[x for l in ls[i:j] for x in by_length[l]]]) for i in range(j)),
                            key=lambda c: c[0]))
        return best[-1][1]

    @staticmethod
    def _mask_lists(q: Query):
        return q.allow, q.deny, q.excluded if q.exclude_seen else None

    def _run_device(self, queries: list[Query]) -> list[Answer]:
        n = len(queries)
        b = pick(self.batch_buckets, n)
        l = pick(self.length_buckets, max(len(q.history) for q in queries))
        hist = left_pad([q.history for q in queries], l, b)  # (b, l)
        times = left_pad([q.times for q in queries], l + 1, b) if self.uses_time else None
        if queries[0].candidates is not None:  # a group of Score requests
            cands = [q.candidates for q in queries]
            width = next_pow2(max(len(c) for c in cands), 16)
            scores = np.asarray(self.scorer.score(hist, _lists(cands, b, width), times))  # (b, C)
            return [Answer(q.candidates, scores[i, : len(q.candidates)]) for i, q in enumerate(queries)]
        k = pick(self.k_buckets, max(q.k for q in queries))
        removed = [np.concatenate([q.excluded if q.exclude_seen else [], [] if q.deny is None else q.deny])
                   .astype(np.int32) for q in queries]
        exclude = _lists(removed, b, max(next_pow2(max(len(r) for r in removed), 16), self.exclude_widths[l]))
        allow = restricted = None
        if any(q.allow is not None for q in queries):
            lists = [q.allow if q.allow is not None else [] for q in queries]
            allow = _lists(lists, b, next_pow2(max(len(a) for a in lists), 16))  # (b, A)
            restricted = np.zeros(b, bool)
            restricted[:n] = [q.allow is not None for q in queries]
        diverse = queries[0].diversity > 0  # a group of diversity requests, one similarity
        if self.index is not None and allow is None:  # the device encodes, the index searches
            users, att = self.scorer.user_vectors(hist, times, explain=True)  # (b, D), (b, l)
            vals, idx = self.index.search(np.asarray(users)[:n], self.diversity_base if diverse else k, removed)
            top = self._host_top(np.pad(vals, ((0, b - n), (0, 0)), constant_values=MASKED),
                                 np.pad(idx, ((0, b - n), (0, 0))), att)
        else:  # exact (allow lists too: they restrict scoring to their items)
            top = self.scorer.top_k(hist, self.diversity_base if diverse else k, exclude=exclude, allow=allow,
                                    restricted=restricted, times=times, explain=True)
        if diverse:
            d = np.zeros(b, np.float32)
            d[:n] = [q.diversity for q in queries]
            top = self._diversify(top, d, queries[0].diversity_by)
        out = jax.device_get(top)
        vals, idx, att = out.values, out.items, out.attention  # (b, k), (b, k), (b, l)
        answers = []
        for i, q in enumerate(queries):
            keep = np.isfinite(vals[i, : q.k])
            items, sc = idx[i, : q.k][keep], vals[i, : q.k][keep]
            because = self._explain(hist[i], att[i], items) if q.explain else None
            answers.append(Answer(items, sc, because))
        return answers

    @staticmethod
    def _host_top(vals: np.ndarray, idx: np.ndarray, att) -> TopK:
        """An index's host answer as the scorer's ``TopK`` (diversity re-ranks it on device)."""
        return TopK(jax.device_put(vals), jax.device_put(idx), att)

    def _unit(self, idx) -> np.ndarray:
        """Unit-length item vectors of ``idx`` (normalised per call: no second (N+1, D) table)."""
        v = self.scorer.item_vectors(idx)  # (K, D) from the host copy, as served
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)

    def _explain(self, hist_row, att_row, items, top: int = 3) -> list:
        """For each recommended item: the history items whose attention weight times their
        similarity to the item is largest, normalised to shares that sum to 1."""
        real = hist_row > 0
        h_idx, a = hist_row[real], att_row[real]  # (H,)
        sim = np.maximum(self._unit(items) @ self._unit(h_idx).T, 0.0)  # (K, H)
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
        ok = host_allowed(self.num_items + 1, 1, [self._mask_lists(q)])[0]
        scores = np.where(ok, self.popularity, MASKED)
        top = np.argsort(-scores, kind="stable")[: q.k]
        top = top[np.isfinite(scores[top])]
        return Answer(top, scores[top], None, cold_start=True)
