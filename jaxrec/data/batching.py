"""Fixed-shape training batches and a background prefetcher.

Every batch has the same shapes (the last one is padded with empty rows of weight 0), so
the jitted train step compiles once. Each training sequence s contributes input
``s[:-1]`` and targets ``s[1:]`` (next-item at every position), truncated to the most
recent L and left-padded with 0; ``weights`` is 1 exactly where a target is real, so losses
never count padding. Order is a pure function of (seed, epoch): a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Iterator

import numpy as np

from jaxrec.data.splits import Split, pad_histories, pad_times
from jaxrec.errors import UserError


class NegativeSampler:
    """Draw item indices uniformly or by training popularity, never equal to the positive.

    With ``shards`` > 1 (an item table of ``rows`` rows split into that many equal row blocks,
    ``retrieval.shard_negatives``) each block of k / shards columns of a draw comes from one
    shard's rows, in shard order, so each shard scores its own negatives where they live;
    ``prob`` is then each item's probability under that stratified draw (its shard's 1/shards
    times its share within the shard), which is what logQ correction must subtract."""

    def __init__(self, num_items: int, kind: str = "uniform", counts: np.ndarray | None = None, *,
                 shards: int = 1, rows: int | None = None):
        if kind not in ("uniform", "popularity"):
            raise UserError(f"unknown negative sampler {kind!r}; use 'uniform' or 'popularity'")
        self.num_items, self.kind, self.shards = num_items, kind, int(shards)
        if kind == "popularity":
            if counts is None:
                raise ValueError("popularity sampling needs item counts")
            p = np.asarray(counts, np.float64)[: num_items + 1].copy()
        else:
            p = np.ones(num_items + 1)
        p[0] = 0.0
        rows = num_items + 1 if rows is None else int(rows)
        per = rows // self.shards  # rows a shard holds (the table's rows are a multiple of shards)
        self.bounds = [(m * per, min((m + 1) * per, num_items + 1)) for m in range(self.shards)]  # [lo, hi)
        self.cdfs, self.prob = [], np.zeros(num_items + 1)  # (N+1,) q(i), used for logQ correction
        for m, (lo, hi) in enumerate(self.bounds):
            mass = p[lo:hi].sum() if hi > lo else 0.0
            if mass <= 0:
                raise UserError(f"shard {m} of the item table (rows {lo}..{hi - 1}) holds no item to sample "
                                f"negatives from: use fewer shards")
            self.cdfs.append(np.cumsum(p[lo:hi]) / mass)
            self.prob[lo:hi] = p[lo:hi] / mass / self.shards

    def _draw(self, rng: np.random.Generator, shape, shard: int = 0) -> np.ndarray:
        lo, hi = self.bounds[shard]
        if self.kind == "uniform" and self.shards == 1:
            return rng.integers(1, self.num_items + 1, size=shape, dtype=np.int64)
        j = np.searchsorted(self.cdfs[shard], rng.random(shape), side="right")
        return (lo + j).clip(max(lo, 1), hi - 1)

    def sample(self, rng: np.random.Generator, positives: np.ndarray, k: int, *, row_seed=None,
               rows: slice | None = None, batch_rows: int | None = None) -> np.ndarray:
        """(b, ..., k) negatives for positives (b, ...); a draw equal to its positive is redrawn
        (from the same shard).

        ``rows``: ``positives`` are these rows of a batch of ``batch_rows``: the draw is the
        whole batch's, sliced, and a row's redraws come from a generator of its own, seeded by
        ``row_seed`` and the row's index in the batch, so any split of a batch over processes
        gets the negatives of the whole (multi-host training: each process builds its rows)."""
        if k % self.shards:
            raise UserError(f"num_negatives={k} must be a multiple of the {self.shards} item-table shards")
        per = k // self.shards
        rows = slice(0, len(positives)) if rows is None else rows
        shape = (batch_rows or len(positives),) + positives.shape[1:] + (per,)
        out = np.concatenate([self._draw(rng, shape, m) for m in range(self.shards)], axis=-1)[rows]
        clash_rows = np.flatnonzero((out == positives[..., None]).reshape(len(out), -1).any(axis=1))
        for r in clash_rows:  # rare (about k / N of the positions): each row redraws on its own stream
            r_rng = np.random.default_rng([*np.atleast_1d(row_seed if row_seed is not None else 0), rows.start + r])
            for _ in range(100):
                clash = out[r] == positives[r][..., None]
                if not clash.any():
                    break
                cols = np.nonzero(clash)[-1] // per  # each clash's shard
                for m in np.unique(cols):
                    sel = tuple(ix[cols == m] for ix in np.nonzero(clash))
                    out[r][sel] = self._draw(r_rng, len(sel[0]), int(m))
        return out.astype(np.int32)


def outside_negatives(seq: np.ndarray, num_items: int, k: int, row_seed, first_row: int = 0) -> np.ndarray:
    """(b, k) int32: for each row of ``seq`` (b, L+1) (a training window, 0 = padding), k distinct
    items drawn uniformly, without replacement, from the items not in that row; 0 pads a row
    when fewer than k items are left (losses never count a padding negative).

    Why: SASRec+ 3000 (Klenitskiy & Vasilev 2023) draws its shared negatives this way; with
    K close to N that is nearly a full softmax over the items the user has not seen in the
    window, where K independent draws repeat items (3,000 draws from ML-1M's 3,416 cover ~2,000)
    and include the sequence's own later targets. Each row has its own generator, seeded by
    ``row_seed`` and the row's index in the whole batch (``first_row`` + r), so any split of a
    batch over processes draws the same negatives."""
    out = np.zeros((len(seq), k), np.int32)
    for r, row in enumerate(seq):
        rng = np.random.default_rng([*np.atleast_1d(row_seed), first_row + r])
        seen = np.unique(row[row > 0])
        draw = rng.choice(num_items, min(num_items, k + len(seen)), replace=False) + 1  # distinct
        keep = draw[~np.isin(draw, seen)][:k]  # a uniform k-subset of the unseen items
        out[r, :len(keep)] = keep
    return out


def outside_draws(seq: np.ndarray, num_items: int, k: int, row_seed, first_row: int = 0) -> np.ndarray:
    """(b, L, k) int32 for ``seq`` (b, L+1) (training windows, 0 = padding): for every input
    position, k independent uniform draws (with replacement) from the items not in that row's
    window; 0 everywhere in a row whose window holds every item (losses never count a padding
    negative).

    Why: the per-position negatives of SASRec's BCE as its published figures were measured
    (Kang & McAuley's code draws outside the user's items; Klenitskiy & Vasilev 2023's, whose
    0.1341 we compare against, outside the window): a uniform draw over the whole catalog hits
    an item of the window, often a later target of the same sequence, about |window| / N of the
    time, and BCE then pushes down an item the user chose. Rows are seeded as in
    ``outside_negatives``, so any split of a batch over processes draws the same negatives."""
    b, L = len(seq), seq.shape[1] - 1
    out = np.zeros((b, L, k), np.int32)
    for r, row in enumerate(seq):
        rng = np.random.default_rng([*np.atleast_1d(row_seed), first_row + r])
        seen = np.unique(row[row > 0])
        if len(seen) >= num_items:
            continue  # nothing outside the window: padding
        if 2 * len(seen) > num_items:  # mostly seen: draw from the complement itself
            rest = np.setdiff1d(np.arange(1, num_items + 1), seen)
            out[r] = rest[rng.integers(0, len(rest), (L, k))]
            continue
        draw = rng.integers(1, num_items + 1, (L, k))
        clash = np.isin(draw, seen)  # each redraw clashes with probability < 1/2
        while clash.any():
            draw[clash] = rng.integers(1, num_items + 1, int(clash.sum()))
            clash = np.isin(draw, seen)
        out[r] = draw
    return out


def data_windows(positions: np.ndarray, max_len: int, buckets: int = 4, minimum: int = 8) -> list[int]:
    """The default length buckets, from the data: at most ``buckets`` windows (max_len among
    them) that minimise the positions computed per epoch, sum over sequences of the shortest
    window holding each one's ``positions`` (capped at max_len). Windows are divisors of max_len
    (>= ``minimum``), so a window's batch, batch_size x max_len / window sequences, is a whole
    multiple of batch_size (any device count dividing batch_size divides it).

    Why: the former default, the halvings of max_len (max_len/2, /4, ... down to 16), suits no
    dataset in particular: with a mean of 20 items and max_len 50 it padded to 25 or 50 and
    computed 1.87 positions per real one; the data's windows (10, 25, 50) compute 1.45."""
    pos = np.minimum(np.asarray(positions, np.int64), max_len)
    cand = [w for w in range(minimum, max_len) if max_len % w == 0 and (pos <= w).any()] + [max_len]
    below = [int((pos <= w).sum()) for w in cand]  # sequences a window could hold
    inf = float("inf")
    # best[j][t]: least cost of the sequences with positions <= cand[j], t windows, the largest cand[j]
    best = [[inf] * (buckets + 1) for _ in cand]
    back = [[None] * (buckets + 1) for _ in cand]
    for j, w in enumerate(cand):
        best[j][1] = w * below[j]
        for t in range(2, buckets + 1):
            for i in range(j):
                c = best[i][t - 1] + w * (below[j] - below[i])
                if c < best[j][t]:
                    best[j][t], back[j][t] = c, i
    j = len(cand) - 1
    t = min(range(1, buckets + 1), key=lambda t: (best[j][t], t))  # fewest windows at the least cost
    out = []
    while j is not None:
        out.append(cand[j])
        j, t = back[j][t], t - 1
    return sorted(out)


@dataclasses.dataclass
class TrainBatches:
    """Iterates fixed-shape next-item training batches over a split's training sequences."""

    split: Split
    max_len: int
    batch_size: int
    num_negatives: int = 0
    sampler: str = "uniform"
    seed: int = 0
    shared_negatives: bool = False  # (B, 1, K): one negative set per sequence, cheaper for large K
    # e.g. (50, 100): shorter windows for short sequences, same positions per batch; None: from
    # the data's lengths (``data_windows``); (): every sequence in one window of max_len
    length_buckets: tuple | list | None = ()
    with_times: bool = False  # add "times" (B, L + 1): event times of inputs + last target
    # negatives drawn per item-table shard (NegativeSampler): (shards, table rows); None: global
    negative_shards: tuple | None = None
    # negatives from outside the window: shared, distinct (outside_negatives); per position,
    # independent (outside_draws)
    negatives_outside: bool = False
    # (units, window, batch size) -> more arrays for the batch, per unit (a window of a sequence:
    # an index into rows / ends; the first len(units) rows of the batch, the rest padding): a
    # distillation's teacher outputs (train.teachers)
    row_extra: object = None
    # every target of a long training sequence, not only its last max_len: the sequence is cut
    # into windows of max_len targets ending at its end, max_len before it, ... (each target in
    # exactly one window; the first window may be short), each window a unit of the epoch
    all_windows: bool = False
    # add "history" (B, M): each row's whole training sequence (M its longest; 0 = padding), for
    # losses that must know the user's items beyond the window (retrieval.exclude_history)
    with_history: bool = False

    def __post_init__(self):
        s = self.split
        if self.with_times and s.data.times is None:
            raise UserError(f"{s.data.name}: the model uses event times (relative time bias), "
                            "and this data has no timestamps")
        lens = s.train_end - s.train_start
        self.rows = np.flatnonzero(lens >= 2)  # a sequence needs one input and one target
        if len(self.rows) == 0:
            raise UserError("no training sequence has 2 or more items")
        self.skipped = int((lens < 2).sum())
        # the epoch's units: (row, end of its window); one per row unless all_windows
        self.ends = s.train_end[self.rows]
        if self.all_windows:
            n_win = -(-(lens[self.rows] - 1) // self.max_len)  # windows of max_len targets each
            self.rows = np.repeat(self.rows, n_win)
            first = np.cumsum(n_win) - n_win  # each row's first unit
            back = np.arange(len(self.rows)) - np.repeat(first, n_win)  # 0 = the latest window
            self.ends = s.train_end[self.rows] - back * self.max_len  # (U,)
        self.history_len = int(lens.max()) if self.with_history else 0
        shards, rows = self.negative_shards or (1, None)
        if self.negatives_outside and self.num_negatives and (self.sampler != "uniform" or shards != 1):
            raise UserError("retrieval.negatives_outside_sequence draws uniformly from the items outside "
                            "the window: it needs sampler=uniform and no shard_negatives")
        self.neg = NegativeSampler(s.data.num_items, self.sampler,
                                   s.train_item_counts() if self.sampler == "popularity" else None,
                                   shards=shards, rows=rows)
        # Length buckets: a sequence goes to the shortest window that holds it; a bucket of
        # window Lb uses batch size B * L / Lb, so every step sees about the same number of
        # positions and the jitted step compiles once per bucket, not per batch.
        n_pos = np.minimum(self.ends - s.train_start[self.rows] - 1, self.max_len)
        buckets = data_windows(n_pos, self.max_len) if self.length_buckets is None else self.length_buckets
        self.windows = sorted({int(w) for w in buckets if 0 < w < self.max_len} | {self.max_len})
        self.bucket_of = np.searchsorted(self.windows, n_pos)  # (R,) index into windows
        self.bucket_batch = [max(1, self.batch_size * self.max_len // w) for w in self.windows]

    @property
    def batches_per_epoch(self) -> int:
        return sum(-(-int((self.bucket_of == b).sum()) // bs) for b, bs in enumerate(self.bucket_batch))

    @property
    def targets_per_epoch(self) -> int:
        lens = self.ends - self.split.train_start[self.rows] - 1
        return int(np.minimum(lens, self.max_len).sum())

    def _plan(self, epoch: int) -> list:
        """[(window, batch size, units)] for one epoch: shuffled within buckets, then across
        batches (a unit: an index into ``rows`` / ``ends``)."""
        rng = np.random.default_rng([self.seed, epoch])
        plan = []
        for b, (w, bs) in enumerate(zip(self.windows, self.bucket_batch)):
            units = rng.permutation(np.flatnonzero(self.bucket_of == b))
            plan += [(w, bs, units[i:i + bs]) for i in range(0, len(units), bs)]
        return [plan[i] for i in rng.permutation(len(plan))]


    def epoch(self, epoch: int, start_batch: int = 0, part: tuple[int, int, int] = (0, 1, 1)) -> Iterator[dict]:
        """Batches of one epoch, from ``start_batch`` on (for resuming mid-epoch). ``part`` =
        (lo, hi, n): only rows lo/n .. hi/n of every batch, exactly as they are in the whole
        batch (multi-host training: each process reads and builds the rows of its own devices)."""
        s = self.split
        plan = self._plan(epoch)
        lo, hi, n = part
        for bi in range(start_batch, len(plan)):
            L, B_all, units_all = plan[bi]
            if B_all % n:
                raise UserError(f"a batch of {B_all} sequences does not split over {n} data-parallel devices")
            block = slice(lo * B_all // n, hi * B_all // n)
            B = block.stop - block.start
            units = units_all[block]  # the plan's units in this block (fewer, or none, in a last batch)
            rows = self.rows[units]
            start, end = s.train_start[rows], self.ends[units]
            seq = pad_histories(s.data.items, start, end, L + 1)  # (b, L+1)
            pad = B - len(rows)
            seq = np.pad(seq, ((0, pad), (0, 0)))
            inputs = seq[:, :-1]  # (B, L)
            targets = np.where(inputs > 0, seq[:, 1:], 0)  # (B, L); no target without an input
            batch = {"inputs": inputs, "targets": targets,
                     "weights": (targets > 0).astype(np.float32)}
            if self.with_history:
                hist = pad_histories(s.data.items, start, s.train_end[rows], self.history_len)
                batch["history"] = np.pad(hist, ((0, pad), (0, 0)))  # (B, M)
            if self.with_times:  # position i's query time is its target's time
                batch["times"] = np.pad(pad_times(s.data.times, start, end, L + 1), ((0, pad), (0, 0)))
            if self.num_negatives:
                rng = np.random.default_rng([self.seed, epoch, bi])
                kw = dict(row_seed=[self.seed, epoch, bi], rows=block, batch_rows=B_all)
                if self.negatives_outside and self.shared_negatives:  # (uniform: checked above)
                    negs = outside_negatives(seq, s.data.num_items, self.num_negatives,
                                             [self.seed, epoch, bi], block.start)[:, None, :]
                elif self.negatives_outside:
                    negs = outside_draws(seq, s.data.num_items, self.num_negatives,
                                         [self.seed, epoch, bi], block.start)
                elif self.shared_negatives:  # avoid each row's own targets at any position
                    negs = self.neg.sample(rng, np.zeros(B, np.int64), self.num_negatives, **kw)[:, None, :]
                else:
                    negs = self.neg.sample(rng, batch["targets"], self.num_negatives, **kw)
                batch["negatives"] = negs
            if self.row_extra is not None:
                batch |= self.row_extra(units, L, B)
            yield batch


def prefetch(it: Iterator, size: int = 2) -> Iterator:
    """Run ``it`` in a background thread, ``size`` items ahead, so the device never waits on NumPy.

    Exceptions in the producer are re-raised in the consumer.
    """
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for x in it:
                if stop.is_set():
                    return
                q.put(x)
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            x = q.get()
            if x is done:
                return
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()


@dataclasses.dataclass
class RankBatches:
    """Fixed-shape candidate-list batches for training rankers.

    An example is a cut of a training sequence: history ``s[:t]`` (the last L items), and the
    candidate list ``[s[t], K negatives]`` with the positive in column 0 (losses know this).
    Each epoch draws ``cuts_per_user`` cuts per sequence, uniformly over its positions, so a
    ranker sees every part of every history over a few epochs at a cost per epoch that does
    not grow with sequence length. Negatives come from ``sampler`` (uniform / popularity),
    and with ``retriever`` a fraction ``hard_fraction`` of them from a retrieval model's
    top-N for the same history (``retriever(items, start, end) -> (top-N unseen items (B, N),
    scores of every item (B, N+1))``): the negatives a re-ranker must learn to push down. A
    sampled negative equal to the positive is redrawn; a hard one equal to it is replaced by
    a sampled one. With ``prior`` each batch also carries the retriever's scores of its
    candidates (``"prior"`` (B, 1+K)), for a ranker trained as a residual on the retriever.

    Length buckets (``length_buckets``, as in ``TrainBatches``; None: ``data_windows``): an
    example goes to the shortest window that holds its history; full batches are formed within
    a window, the remainders of all windows are batched together (at the window of each such
    batch's longest history), and the batch order is shuffled. So an epoch is still exactly
    ceil(examples / batch_size) batches, and short histories are not padded to max_len. With
    one window (``length_buckets=[]``) batches are consecutive slices of the shuffled examples.
    """

    split: Split
    max_len: int
    batch_size: int
    num_negatives: int
    sampler: str = "popularity"
    seed: int = 0
    cuts_per_user: int = 4
    retriever: object = None
    hard_fraction: float = 0.5
    prior: bool = False
    length_buckets: tuple | list | None = ()

    def __post_init__(self):
        s = self.split
        lens = s.train_end - s.train_start
        self.rows = np.flatnonzero(lens >= 2)
        if len(self.rows) == 0:
            raise UserError("no training sequence has 2 or more items")
        if self.prior and self.retriever is None:
            raise UserError("a residual ranker (residual > 0) needs a retriever: set retriever=RUN_DIR")
        if self.num_negatives < 1:
            raise UserError(f"rankers train on candidate lists: num_negatives must be >= 1, got "
                            f"{self.num_negatives}")
        self.neg = NegativeSampler(s.data.num_items, self.sampler,
                                   s.train_item_counts() if self.sampler == "popularity" else None)
        # histories are cut at random points: their lengths spread below the sequences' own
        buckets = data_windows(lens[self.rows] - 1, self.max_len) if self.length_buckets is None \
            else self.length_buckets
        self.windows = sorted({int(w) for w in buckets if 0 < w < self.max_len} | {self.max_len})

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.rows) * self.cuts_per_user // self.batch_size)

    def _plan(self, hist_len: np.ndarray, rng) -> list:
        """[(window, example indices)] for one epoch (see the class docstring)."""
        B, n = self.batch_size, len(hist_len)
        if len(self.windows) == 1:
            return [(self.max_len, np.arange(lo, min(lo + B, n))) for lo in range(0, n, B)]
        w_of = np.asarray(self.windows)[np.searchsorted(self.windows, np.minimum(hist_len, self.max_len))]
        plan, rest = [], []
        for w in self.windows:
            idx = np.flatnonzero(w_of == w)
            full = len(idx) // B * B
            plan += [(w, idx[lo:lo + B]) for lo in range(0, full, B)]
            rest.append(idx[full:])
        rest = np.concatenate(rest)  # in window order, so each remainder batch is as short as it can be
        plan += [(int(w_of[rest[lo:lo + B]].max()), rest[lo:lo + B]) for lo in range(0, len(rest), B)]
        return [plan[i] for i in rng.permutation(len(plan))]

    def epoch(self, epoch: int, start_batch: int = 0, part: tuple[int, int, int] = (0, 1, 1)) -> Iterator[dict]:
        """Batches of one epoch from ``start_batch`` on; ``part`` as in ``TrainBatches.epoch``
        (here each batch is built whole and sliced: candidate lists are cheap to build)."""
        lo, hi, n = part
        for batch in self._epoch(epoch, start_batch):
            b = len(batch["weights"])
            yield batch if n == 1 else {k: v[lo * b // n: hi * b // n] for k, v in batch.items()}

    def _epoch(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        s, B, K = self.split, self.batch_size, self.num_negatives
        rng = np.random.default_rng([self.seed, epoch])
        rows = np.repeat(self.rows, self.cuts_per_user)
        lens = s.train_end[rows] - s.train_start[rows]
        cut = 1 + (rng.random(len(rows)) * (lens - 1)).astype(np.int64)  # t in 1..n-1
        order = rng.permutation(len(rows))
        start, end = s.train_start[rows][order], (s.train_start[rows] + cut)[order]
        plan = self._plan(end - start, rng)
        for bi in range(start_batch, len(plan)):
            window, sl = plan[bi]
            st, en = start[sl], end[sl]
            pad = B - len(st)
            brng = np.random.default_rng([self.seed, epoch, bi])
            pos = s.data.items[en].astype(np.int64)
            negs = self.neg.sample(brng, pos, K)  # (b, K)
            if self.retriever is not None:
                k_hard = int(round(K * self.hard_fraction))
                pool, scores = self.retriever(s.data.items, st, en)  # (b, N), (b, N_items+1)
                pick = np.argsort(brng.random(pool.shape), axis=1)[:, :k_hard]
                hard = np.take_along_axis(pool, pick, axis=1)
                negs[:, :k_hard] = np.where(hard == pos[:, None], negs[:, :k_hard], hard)
            cands = np.concatenate([pos[:, None], negs], axis=1).astype(np.int32)  # (b, 1+K)
            hist = pad_histories(s.data.items, st, en, window)
            batch = {"history": np.pad(hist, ((0, pad), (0, 0))),
                     "candidates": np.pad(cands, ((0, pad), (0, 0))),
                     "weights": np.pad(np.ones(len(st), np.float32), (0, pad))}
            if self.prior:
                prior = np.take_along_axis(scores, cands, axis=1).astype(np.float32)  # (b, 1+K)
                batch["prior"] = np.pad(prior, ((0, pad), (0, 0)))
            yield batch
