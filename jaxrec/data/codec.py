"""The id codec: external item ids <-> catalog indices, and histories -> padded rows.

One place for what ``Recommender``, the server and evaluation all do with a history: look the
ids up (unknown ids become 0 and are counted, never silently dropped), keep the latest
``max_len`` known items, left-pad rows to a shape bucket (0 = padding, the models' timeline
mask), and align event times with the kept items (relative to the last one, plus the
prediction time, as ``splits.pad_times(.., query="last")`` does for evaluation). The shape
buckets (powers of two) that keep the number of compilations small are here too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from jaxrec.data.splits import query_times
from jaxrec.data.types import ItemCatalog


@dataclasses.dataclass
class History:
    """One request's history in catalog indices."""

    items: np.ndarray  # (H,) int32 every known item, oldest first
    known: np.ndarray  # (len(ids),) bool: which of the given ids the catalog has
    unknown: int  # how many ids were not in the catalog (skipped, reported)

    def latest(self, max_len: int) -> np.ndarray:
        """The latest ``max_len`` known items: what the model reads."""
        return self.items[-max_len:]


def encode_history(catalog: ItemCatalog, ids: Sequence[str]) -> History:
    return history_of_indices(catalog.index_of(ids))


def history_of_indices(idx: np.ndarray) -> History:
    """A history from ``catalog.index_of`` output (0 = unknown id)."""
    known = idx > 0
    unknown = len(idx) - int(np.count_nonzero(known))
    return History((idx[known] if unknown else idx).astype(np.int32, copy=False), known, unknown)


def history_times(history: History, times, max_len: int, now=None) -> np.ndarray:
    """(min(H, max_len) + 1,) int32 times of the items ``history.latest(max_len)`` keeps, relative
    to the last one, then the prediction time ``now`` (default: the last event's). ``times``
    has one entry per given id. Raises ValueError (the caller names the field)."""
    t = np.asarray(times, np.int64)
    if t.shape != history.known.shape:
        raise ValueError(f"need one per history item ({len(history.known)}), got {t.size}")
    return query_times(t[history.known][-max_len:], now)


def left_pad(rows: Sequence[np.ndarray], length: int, batch: int | None = None) -> np.ndarray:
    """Rows (each at most ``length`` long, else its last ``length`` entries) left-padded with 0
    into a (batch, length) int32 matrix; ``batch`` >= len(rows) pads with empty rows."""
    out = np.zeros((len(rows) if batch is None else batch, length), np.int32)
    for i, r in enumerate(rows):
        r = r[-length:] if length else r[:0]
        if len(r):
            out[i, length - len(r):] = r
    return out


def next_pow2(n: int, minimum: int = 1) -> int:
    """The next power of two >= n (at least ``minimum``): few distinct shapes, few compilations."""
    return max(minimum, 1 << max(0, math.ceil(math.log2(max(1, n)))))


def pow2_buckets(limit: int, start: int = 1) -> list[int]:
    """Powers of two from ``start`` up to ``limit`` (always including ``limit``)."""
    out, b = [], start
    while b < limit:
        out.append(b)
        b *= 2
    return out + [limit]


def pick(buckets: list[int], n: int) -> int:
    """The smallest bucket that holds ``n`` (the largest when none does)."""
    for b in buckets:
        if n <= b:
            return b
    return buckets[-1]
