"""The three data containers of the pipeline.

``Interactions`` is what a loader returns: flat columns straight from the file, in file
order, with the file's own ids. ``SequenceData`` is what everything downstream uses:
contiguous item indices 1..N (0 is padding), each user's chronological sequence stored
CSR-style (``offsets`` + ``items``) so that one million events cost 4 MB, not one Python
list per user. ``ItemCatalog`` maps between the two id spaces and carries optional item
metadata (titles, categorical features); it is saved beside every checkpoint so a served
model speaks the same external ids as the file it was trained on.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np

from jaxrec.errors import DataError

PAD = 0  # item index reserved for padding in every sequence and batch


@dataclasses.dataclass
class Interactions:
    """Flat event columns in file order. ``user``/``item`` keep the file's ids (int64 or str)."""

    user: np.ndarray  # (E,)
    item: np.ndarray  # (E,)
    time: np.ndarray | None = None  # (E,) int64 or float64; None when the format has no times
    rating: np.ndarray | None = None  # (E,) float32
    source: str = "<memory>"

    def __post_init__(self):
        n = len(self.user)
        for name in ("item", "time", "rating"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} rows, user has {n}")

    def __len__(self) -> int:
        return len(self.user)

    def take(self, mask_or_index: np.ndarray) -> "Interactions":
        """Rows selected by a boolean mask or an index array (columns stay aligned)."""
        pick = lambda c: None if c is None else c[mask_or_index]  # noqa: E731
        return Interactions(self.user[mask_or_index], self.item[mask_or_index],
                            pick(self.time), pick(self.rating), self.source)


def _canonical_int(s: str) -> bool:
    """``s`` is how Python writes some int64 (``"7"``, ``"-3"``; not ``"07"``, ``"+7"``, ``" 7"``)."""
    try:
        v = int(s)
    except ValueError:
        return False
    return str(v) == s and -(2 ** 63) <= v < 2 ** 63


def _int_index(ids: list, first: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted int64 keys, int32 indices) of the ids in canonical integer form; ``ids[j]`` has
    index ``first + j``."""
    pairs = [(int(s), first + j) for j, s in enumerate(ids) if _canonical_int(s)]
    return _by_key(np.array([k for k, _ in pairs], np.int64), np.array([i for _, i in pairs], np.int32))


def _by_key(keys: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")
    return keys[order], vals[order]


@dataclasses.dataclass
class ItemCatalog:
    """External item id <-> contiguous index. Index 0 is padding and has id ``""``.

    ``features`` maps a feature name (e.g. ``"genres"``) to a multi-valued categorical
    column stored CSR-style: ``{"vocab": [str], "offsets": (N+2,), "values": (nnz,)}``, where
    item index i owns ``values[offsets[i]:offsets[i+1]]`` (codes into ``vocab``).
    """

    ids: np.ndarray  # (N+1,) str; ids[0] == ""
    titles: np.ndarray | None = None  # (N+1,) str or None
    features: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=object)
        self._index = None  # external id -> index, built on first use (training never needs it)
        self._int_index = None  # (sorted int ids, their indices): the ids that are decimal integers

    @property
    def _lookup(self) -> dict:
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.ids.tolist()) if i > 0}
        return self._index

    @property
    def num_items(self) -> int:
        """N, the number of real items (indices 1..N)."""
        return len(self.ids) - 1

    def index_of(self, external_ids) -> np.ndarray:
        """Indices of external ids; unknown ids map to 0 (padding), so callers can count them.
        Ids are strings; other values are looked up as ``str(x)``. (The server calls this for
        every request's history: one C-level dict lookup per id, no Python loop.)"""
        lookup = self._lookup
        ids = external_ids if hasattr(external_ids, "__len__") else list(external_ids)
        try:
            idx = np.fromiter(map(lookup.get, ids, itertools.repeat(PAD)), np.int32, count=len(ids))
        except TypeError:  # an unhashable value: only its string form can be an id
            return np.array([lookup.get(str(x), PAD) for x in ids], dtype=np.int32)
        if idx.all():  # every id known: the usual case, one C-level pass
            return idx
        for i in np.flatnonzero(idx == PAD).tolist():
            if not isinstance(ids[i], str):
                idx[i] = lookup.get(str(ids[i]), PAD)
        return idx

    def index_of_ints(self, ids) -> np.ndarray:
        """Indices of ids given as integers (``7`` is the id ``"7"``); 0 for an integer that is
        no catalog id. Exact for any catalog: its ids that are decimal integers in canonical
        form (``"7"``, not ``"07"``) are the only ones an integer can name. Vectorized (one
        binary search per id, no Python string per id): the server's fast path for histories
        sent as ``history_int_ids``."""
        if self._int_index is None:
            self._int_index = _int_index(self.ids.tolist()[1:], 1)
        keys, vals = self._int_index
        x = np.asarray(ids, np.int64)  # (H,)
        if not len(keys):
            return np.zeros(x.shape, np.int32)
        pos = np.minimum(np.searchsorted(keys, x), len(keys) - 1)
        return np.where(keys[pos] == x, vals[pos], PAD).astype(np.int32, copy=False)

    def external(self, indices) -> list[str]:
        return [self.ids[int(i)] for i in np.asarray(indices).ravel()]

    def title(self, index: int) -> str | None:
        return None if self.titles is None else self.titles[int(index)]

    def feature_values(self, name: str, index: int) -> list[str]:
        f = self.features[name]
        lo, hi = f["offsets"][index], f["offsets"][index + 1]
        return [f["vocab"][v] for v in f["values"][lo:hi]]

    def add(self, ids: list, titles: list, features: dict) -> int:
        """Append new items (a server's ``AddItems``): ``ids`` not yet in the catalog, ``titles``
        (str or None each) and ``features`` {name: per-item lists of value codes} for every
        feature of the catalog. Returns the first new index. The id lookup is extended last, so
        a reader on another thread never finds an id whose rows are not there yet."""
        start = len(self.ids)
        m = len(ids)
        if self.titles is not None or any(titles):
            old = self.titles if self.titles is not None else np.full(start, None, dtype=object)
            self.titles = np.concatenate([old, np.asarray(list(titles), dtype=object)])
        for name, f in self.features.items():
            per_item = features.get(name) or [[] for _ in range(m)]
            counts = np.array([len(v) for v in per_item], np.int64)
            f["offsets"] = np.concatenate([f["offsets"], f["offsets"][-1] + np.cumsum(counts)])
            f["values"] = np.concatenate([np.asarray(f["values"], np.int32),
                                          np.asarray([c for v in per_item for c in v], np.int32)])
        self.ids = np.concatenate([self.ids, np.asarray(list(ids), dtype=object)])
        if self._index is not None:
            self._index.update({x: start + i for i, x in enumerate(ids)})
        if self._int_index is not None:  # merged, then swapped in whole (a reader sees old or new)
            self._int_index = _by_key(*(np.concatenate(a) for a in zip(self._int_index, _int_index(list(ids), start))))
        return start

    def save(self, path: str | Path) -> None:
        obj = {"ids": self.ids.tolist(),
               "titles": None if self.titles is None else list(self.titles),
               "features": {k: {"vocab": list(v["vocab"]),
                                "offsets": np.asarray(v["offsets"]).tolist(),
                                "values": np.asarray(v["values"]).tolist()}
                            for k, v in self.features.items()}}
        Path(path).write_text(json.dumps(obj))

    @classmethod
    def load(cls, path: str | Path) -> "ItemCatalog":
        obj = json.loads(Path(path).read_text())
        feats = {k: {"vocab": v["vocab"], "offsets": np.asarray(v["offsets"], np.int64),
                     "values": np.asarray(v["values"], np.int32)}
                 for k, v in obj.get("features", {}).items()}
        titles = obj.get("titles")
        return cls(np.asarray(obj["ids"], dtype=object),
                   None if titles is None else np.asarray(titles, dtype=object), feats)


@dataclasses.dataclass
class FilterReport:
    """What one preprocessing step removed. Every filter returns one; nothing is dropped silently."""

    name: str
    interactions_removed: int
    users_removed: int = 0
    items_removed: int = 0
    detail: str = ""

    def __str__(self) -> str:
        s = (f"{self.name}: removed {self.interactions_removed:,} interactions, "
             f"{self.users_removed:,} users, {self.items_removed:,} items")
        return s + (f" ({self.detail})" if self.detail else "")


@dataclasses.dataclass
class SequenceData:
    """Per-user chronological item sequences, CSR-style.

    User u's sequence is ``items[offsets[u]:offsets[u+1]]`` (item indices 1..N), with
    ``times`` aligned when the source had timestamps.
    """

    offsets: np.ndarray  # (U+1,) int64
    items: np.ndarray  # (E,) int32, values in 1..N
    catalog: ItemCatalog
    user_ids: np.ndarray  # (U,) external user ids
    times: np.ndarray | None = None  # (E,)
    reports: list = dataclasses.field(default_factory=list)  # [FilterReport]
    name: str = "<memory>"

    def __post_init__(self):
        if len(self.offsets) != len(self.user_ids) + 1:
            raise ValueError("offsets must have one more entry than user_ids")
        if len(self.items) and (self.items.min() < 1 or self.items.max() > self.catalog.num_items):
            raise ValueError("item indices must lie in 1..N")

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return self.catalog.num_items

    @property
    def num_interactions(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # (U,)

    def sequence(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u]:self.offsets[u + 1]]

    def stats(self) -> dict:
        """Counts and length distribution, plus what the filters removed (JSON-ready)."""
        lens = self.lengths
        if len(lens) == 0:
            raise DataError(f"{self.name}: no users left")
        return {
            "name": self.name,
            "users": int(self.num_users),
            "items": int(self.num_items),
            "interactions": int(self.num_interactions),
            "density": float(self.num_interactions / max(1, self.num_users * self.num_items)),
            "seq_len": {"min": int(lens.min()), "mean": round(float(lens.mean()), 2),
                        "median": float(np.median(lens)), "max": int(lens.max())},
            "has_time": self.times is not None,
            "filters": [dataclasses.asdict(r) for r in self.reports],
        }
