"""Train/validation/test splits as views over one SequenceData.

An evaluation example is (user, input = ``items[start:end]``, target = ``items[end]``): the
input is always a contiguous slice of the user's own sequence, so a split is three int
arrays, never a copy of the data.

Leave-one-out (the protocol of SASRec, BERT4Rec and most papers since): for a sequence s
of length n >= 3, test = (s[:n-1] -> s[n-1]), valid = (s[:n-2] -> s[n-2]), train = s[:n-2].
Users with n < 3 cannot give both held-out targets; they are reported and kept for training.

Last-out (the "raw" protocol of generative-recommenders, which reports HSTU on ML-1M this
way): test = (s[:n-1] -> s[n-1]), train = s[:n-1], and no validation split. That code base
evaluates the same held-out targets while training, so here ``valid`` IS the test set and
the protocol string says so: numbers from it are comparable with theirs, not with
leave-one-out ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.data.types import SequenceData
from jaxrec.errors import DataError


def range_indices(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(start[i], end[i])`` over i, without a Python loop."""
    lens = end - start
    return np.repeat(start - np.cumsum(np.r_[0, lens[:-1]]), lens) + np.arange(lens.sum())


def pad_histories(items: np.ndarray, start: np.ndarray, end: np.ndarray, length: int) -> np.ndarray:
    """The last ``length`` items of each slice ``items[start:end]``, left-padded with 0 -> (B, L)."""
    pos = end[:, None] - length + np.arange(length)[None, :]  # (B, L)
    ok = pos >= start[:, None]
    return np.where(ok, items[np.clip(pos, 0, len(items) - 1)], 0).astype(np.int32)


def pad_times(times: np.ndarray, start: np.ndarray, end: np.ndarray, length: int,
              query: str = "window") -> np.ndarray:
    """Event times for time-aware models, aligned with ``pad_histories(.., length)``.

    int32 seconds relative to the last event of each slice (0 on padding), so int32 holds
    any span of 68 years and the epoch does not matter. ``query="window"``: (B, length), the
    times of the window itself (training: the window is inputs + the last target, so the
    query time of position i is the time of its target). ``query="last"``: (B, length + 1),
    the window's times plus the time of the prediction taken as the last event's time
    (evaluation: the held-out event's own time is never read).
    """
    if times is None:
        raise DataError("this model uses event times (relative time bias), and the data has none")
    pos = end[:, None] - length + np.arange(length)[None, :]  # (B, L)
    ok = pos >= start[:, None]
    t = np.asarray(times)
    last = t[np.clip(end - 1, 0, len(t) - 1)].astype(np.int64)[:, None]
    rel = np.where(ok, t[np.clip(pos, 0, len(t) - 1)].astype(np.int64) - last, 0)
    rel = np.clip(rel, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    if query == "last":
        return np.concatenate([rel, np.zeros((len(rel), 1), np.int32)], axis=1)
    if query != "window":
        raise ValueError(f"query must be 'window' or 'last', got {query!r}")
    return rel


def query_times(times, now=None) -> np.ndarray:
    """One history's event times (oldest first) and the prediction time ``now`` (default: the
    last event's) -> (n + 1,) int32 relative to the last event: a row of ``pad_times(..,
    query="last")`` for a request. Raises ValueError on decreasing times or a ``now`` before
    the last event."""
    t = np.asarray(times, np.int64)
    if not len(t):
        return np.zeros(1, np.int32)
    if np.any(np.diff(t) < 0):
        raise ValueError("must not decrease (the history is oldest first)")
    now = t[-1] if now is None else int(now)
    if now < t[-1]:
        raise ValueError(f"the prediction time {now} is before the last event ({t[-1]})")
    rel = np.r_[t, now] - t[-1]
    return np.clip(rel, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)


@dataclasses.dataclass
class EvalSet:
    """Held-out next-item examples: input ``items[start:end]``, target ``items[end]``."""

    user: np.ndarray  # (M,) user row in SequenceData
    start: np.ndarray  # (M,) int64
    end: np.ndarray  # (M,) int64
    target: np.ndarray  # (M,) int32 item index
    name: str

    def __len__(self) -> int:
        return len(self.user)


@dataclasses.dataclass
class Split:
    """Training sequences (CSR slices into ``data.items``) plus the two held-out sets."""

    data: SequenceData
    train_start: np.ndarray  # (U,) user u trains on items[train_start[u]:train_end[u]]
    train_end: np.ndarray  # (U,)
    valid: EvalSet
    test: EvalSet
    kind: str  # human description, printed with every metric
    notes: list = dataclasses.field(default_factory=list)

    def eval_set(self, name: str) -> EvalSet:
        if name not in ("valid", "test"):
            raise DataError(f"unknown split {name!r}; use 'valid' or 'test'")
        return self.valid if name == "valid" else self.test

    def train_item_counts(self) -> np.ndarray:
        """(N+1,) how often each item occurs in the training sequences (index 0 is 0)."""
        idx = range_indices(self.train_start, self.train_end)
        return np.bincount(self.data.items[idx], minlength=self.data.num_items + 1)


def leave_one_out(data: SequenceData) -> Split:
    lo, hi = data.offsets[:-1], data.offsets[1:]
    n = hi - lo
    ok = n >= 3
    users = np.flatnonzero(ok)
    short = int((~ok).sum())
    notes = []
    if short:
        notes.append(f"{short:,} users with fewer than 3 interactions are used for training only")
    train_end = np.where(ok, hi - 2, hi)
    valid = EvalSet(users, lo[ok], hi[ok] - 2, data.items[hi[ok] - 2], "valid")
    test = EvalSet(users, lo[ok], hi[ok] - 1, data.items[hi[ok] - 1], "test")
    return Split(data, lo.copy(), train_end, valid, test, "leave-one-out", notes)


def last_out(data: SequenceData) -> Split:
    lo, hi = data.offsets[:-1], data.offsets[1:]
    ok = hi - lo >= 2
    short = int((~ok).sum())
    notes = ["no validation split: selection reads the test targets (generative-recommenders' protocol)"]
    if short:
        notes.append(f"{short:,} users with fewer than 2 interactions are used for training only")
    test = EvalSet(np.flatnonzero(ok), lo[ok], hi[ok] - 1, data.items[hi[ok] - 1], "test")
    return Split(data, lo.copy(), np.where(ok, hi - 1, hi), test, test,
                 "last-out (no validation; selection on test)", notes)


SPLITS = {"leave_one_out": leave_one_out, "last_out": last_out}


def make_split(data: SequenceData, name: str = "leave_one_out") -> Split:
    """The named held-out protocol (``Config.split``): leave_one_out, last_out, or
    ``temporal:TEST_TIME[,VALID_TIME]`` (a global time split at those event times)."""
    if name.startswith("temporal:"):
        try:
            cuts = [int(t) for t in name.partition(":")[2].split(",")]
        except ValueError:
            cuts = []
        if len(cuts) not in (1, 2):
            raise DataError(f"split {name!r}: use temporal:TEST_TIME or temporal:TEST_TIME,VALID_TIME (integers)")
        return temporal_split(data, cuts[0], cuts[1] if len(cuts) == 2 else None)
    if name not in SPLITS:
        raise DataError(f"unknown split {name!r}; use one of {', '.join(SPLITS)} or temporal:TEST_TIME[,VALID_TIME]")
    return SPLITS[name](data)


def temporal_split(data: SequenceData, test_time, valid_time=None) -> Split:
    """Global time split: train on events before ``valid_time`` (or ``test_time``).

    A user with events on both sides of a cut gives one example at that cut: the input is
    everything before the cut, the target is the first event at or after it.
    """
    if data.times is None:
        raise DataError(f"{data.name}: a temporal split needs timestamps, and this data has none")
    valid_time = test_time if valid_time is None else valid_time
    if valid_time > test_time:
        raise DataError(f"valid_time {valid_time} is after test_time {test_time}")
    lo, hi = data.offsets[:-1], data.offsets[1:]
    seg = np.repeat(np.arange(data.num_users), hi - lo)

    def first_at_or_after(t):
        # per user: index of the first event with time >= t (hi if none); times sorted per user
        after = data.times >= t
        idx = np.where(after, np.arange(len(data.items)), np.iinfo(np.int64).max)
        first = np.full(data.num_users, np.iinfo(np.int64).max)
        np.minimum.at(first, seg, idx)
        return np.minimum(first, hi)

    def at(t, name):
        cut = first_at_or_after(t)
        ok = (cut > lo) & (cut < hi)
        return EvalSet(np.flatnonzero(ok), lo[ok], cut[ok], data.items[cut[ok]], name), cut

    valid, vcut = at(valid_time, "valid")
    test, _ = at(test_time, "test")
    notes = [f"valid cut at t={valid_time}, test cut at t={test_time}; "
             f"{len(valid):,} valid and {len(test):,} test users"]
    return Split(data, lo.copy(), vcut, valid, test, "temporal", notes)
