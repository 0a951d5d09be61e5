"""Item side features as one dense id matrix that every model can embed.

The catalog stores each multi-valued categorical feature CSR-style (``ItemCatalog.features``:
vocab, offsets, values). Models want fixed shapes, so the chosen features are packed into
one (N+1, F) int32 matrix: row i lists item i's feature values as ids into one shared
vocabulary (feature ``genres`` value ``Comedy`` and feature ``topic`` value ``3`` get
different ids), padded with 0. Row 0 (padding) and items without values are all zeros.

Why a shared id space: an item's feature vector is then one gather and one masked mean,
whatever the number of features, and a new item with no interactions still has a
representation learned from the items that share its values (the cold-start case).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from jaxrec.data.types import ItemCatalog
from jaxrec.errors import UserError


@dataclasses.dataclass(frozen=True, eq=False)
class ItemFeatures:
    """(N+1+extra, F) feature ids (0 = none) and the vocabulary size (ids are 1..vocab_size).

    Hashable by content so a model can hold it as a static (non-trainable) attribute: the
    matrix is data, not a parameter, and must never reach the optimizer.
    """

    ids: np.ndarray  # (rows, F) int32
    vocab_size: int
    names: tuple = ()

    def __hash__(self) -> int:
        return int(hashlib.sha1(self.ids.tobytes() + repr(self.ids.shape).encode()).hexdigest()[:15], 16)

    def __eq__(self, other) -> bool:
        return (isinstance(other, ItemFeatures) and self.vocab_size == other.vocab_size
                and self.ids.shape == other.ids.shape and bool((self.ids == other.ids).all()))

    def with_rows(self, rows: int) -> ItemFeatures:
        """Pad (or keep) to ``rows`` rows; extra rows (e.g. BERT4Rec's [mask]) have no features."""
        if rows < len(self.ids):
            raise ValueError(f"cannot shrink feature rows from {len(self.ids)} to {rows}")
        ids = np.pad(self.ids, ((0, rows - len(self.ids)), (0, 0)))
        return ItemFeatures(ids, self.vocab_size, self.names)


def item_features(catalog: ItemCatalog, names) -> ItemFeatures:
    """Pack the catalog's features ``names`` (e.g. ``["genres"]``) into one id matrix."""
    names = list(names)
    missing = [n for n in names if n not in catalog.features]
    if missing:
        have = ", ".join(catalog.features) or "none"
        raise UserError(f"item feature(s) {missing} not in the catalog (it has: {have}); "
                        "ml-1m gets 'genres' from movies.dat, synthetic data has 'topic'")
    n1 = catalog.num_items + 1
    cols, base = [], 0
    for name in names:
        f = catalog.features[name]
        offsets, values = np.asarray(f["offsets"], np.int64), np.asarray(f["values"], np.int64)
        if len(offsets) != n1 + 1:
            raise UserError(f"feature {name!r} has {len(offsets) - 1} rows, the catalog {n1}")
        counts = np.diff(offsets)  # (N+1,)
        width = max(1, int(counts.max()))
        mat = np.zeros((n1, width), np.int64)
        row = np.repeat(np.arange(n1), counts)
        col = np.arange(len(values)) - np.repeat(offsets[:-1], counts)
        mat[row, col] = values + base + 1
        cols.append(mat)
        base += len(f["vocab"])
    ids = np.concatenate(cols, axis=1).astype(np.int32)
    ids[0] = 0
    return ItemFeatures(ids, base, tuple(names))


def encode_values(catalog: ItemCatalog, names, values: dict) -> tuple[np.ndarray, dict, list]:
    """A new item's feature values (``{name: [value, ...]}``, strings as in the catalog's
    vocabularies) -> (its feature ids for a model trained on features ``names``, as
    ``item_features`` numbers them; {name: value codes} for ``ItemCatalog.add``; the values no
    vocabulary has, as "name=value": they cannot be represented and are reported, not kept)."""
    unknown, codes, ids, base = [], {}, [], 0
    for name in set(values) - set(catalog.features):
        unknown += [f"{name}={v}" for v in values[name]]
    for name in catalog.features:
        vocab = {v: i for i, v in enumerate(catalog.features[name]["vocab"])}
        got = [vocab.get(str(v)) for v in values.get(name, ())]
        unknown += [f"{name}={v}" for v, c in zip(values.get(name, ()), got) if c is None]
        codes[name] = list(dict.fromkeys(c for c in got if c is not None))
    for name in names:
        ids += [c + base + 1 for c in codes.get(name, [])]
        base += len(catalog.features[name]["vocab"])
    return np.asarray(ids, np.int32), codes, unknown


def categorical_feature(values_per_item: list, vocab: list | None = None) -> dict:
    """A catalog feature column from per-item value lists (index 0 = padding, usually [])."""
    vocab = sorted({v for vs in values_per_item for v in vs}, key=str) if vocab is None else list(vocab)
    code = {v: i for i, v in enumerate(vocab)}
    lens = np.array([len(vs) for vs in values_per_item], np.int64)
    return {"vocab": [str(v) for v in vocab], "offsets": np.r_[0, np.cumsum(lens)].astype(np.int64),
            "values": np.array([code[v] for vs in values_per_item for v in vs], np.int32)}


def _unit_rows(offsets: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """(rows, size) float32 multi-hot rows of CSR value codes (row i: values[offsets[i]:offsets[i+1]]),
    scaled to unit length; rows without values stay zero."""
    counts = np.diff(offsets)
    out = np.zeros((len(counts), max(1, size)), np.float32)
    out[np.repeat(np.arange(len(counts)), counts), values[: counts.sum()]] = 1.0
    norm = np.sqrt(out.sum(axis=1, keepdims=True))
    return np.divide(out, norm, out=out, where=norm > 0)


def unit_multi_hot(codes_per_item: list, size: int) -> np.ndarray:
    """(m, size): ``_unit_rows`` of per-item lists of value codes (items added at serve time)."""
    counts = [len(c) for c in codes_per_item]
    return _unit_rows(np.r_[0, np.cumsum(counts)].astype(np.int64),
                      np.asarray([v for c in codes_per_item for v in c], np.int64), size)


def code_lists(codes_per_item: list, width: int | None = None) -> np.ndarray:
    """(m, width) int32 value codes of each item, padded with -1 (``width``: the longest list,
    at least 1)."""
    width = max([1] + [len(c) for c in codes_per_item]) if width is None else width
    out = np.full((len(codes_per_item), width), -1, np.int32)
    for i, c in enumerate(codes_per_item):
        out[i, : len(c)] = c
    return out


def feature_lists(catalog: ItemCatalog, name: str) -> np.ndarray:
    """(N+1, F) int32: each item's value codes of feature ``name``, padded with -1 (F: the most
    values an item has). The compact form of ``feature_vectors``: a cosine of two items' value
    sets is computed from it (``jaxrec.scoring.set_cosine``) without the (N+1, V) rows, which
    for 10M items and a 5,000-value feature would be 186 GiB."""
    if name not in catalog.features:
        have = ", ".join(catalog.features) or "none"
        raise UserError(f"item feature {name!r} is not in the catalog (it has: {have})")
    f = catalog.features[name]
    n1 = catalog.num_items + 1
    offsets = np.asarray(f["offsets"], np.int64)[: n1 + 1]
    counts = np.diff(offsets)
    width = max(1, int(counts.max(initial=0)))
    out = np.full((n1, width), -1, np.int32)
    rows = np.repeat(np.arange(len(counts)), counts)
    cols = np.arange(int(counts.sum())) - np.repeat(offsets[:-1] - offsets[0], counts)
    out[rows, cols] = np.asarray(f["values"], np.int32)[offsets[0]: offsets[0] + int(counts.sum())]
    out[0] = -1
    return out


def feature_vectors(catalog: ItemCatalog, name: str) -> np.ndarray:
    """(N+1, V) float32: each item's multi-hot row over feature ``name``'s V values, scaled to
    unit length, so a dot product is the cosine |A & B| / sqrt(|A| |B|) of two items' value sets
    (diversity by genre: two comedies are alike, a comedy and a war film are not). Items without
    values (and padding) get zero rows: alike nothing."""
    if name not in catalog.features:
        have = ", ".join(catalog.features) or "none"
        raise UserError(f"item feature {name!r} is not in the catalog (it has: {have})")
    f = catalog.features[name]
    n1 = catalog.num_items + 1
    out = _unit_rows(np.asarray(f["offsets"], np.int64)[: n1 + 1], np.asarray(f["values"], np.int64),
                     len(f["vocab"]))
    out[0] = 0.0
    return out
