"""Interactions -> SequenceData: filters, chronological sort, id remapping.

Each filter is a pure function ``Interactions -> (Interactions, FilterReport)`` so the
removed counts are always reported (``jaxrec data stats`` prints them). All work is
vectorised with ``np.unique`` / ``np.bincount``; a 10M-event file takes about a second.
"""

from __future__ import annotations

import numpy as np

from jaxrec.data.types import FilterReport, Interactions, SequenceData
from jaxrec.errors import DataError


def _n_unique(x: np.ndarray) -> int:
    return len(np.unique(x)) if len(x) else 0


def _report(name: str, before: Interactions, after: Interactions, detail: str = "") -> FilterReport:
    return FilterReport(name, len(before) - len(after),
                        _n_unique(before.user) - _n_unique(after.user),
                        _n_unique(before.item) - _n_unique(after.item), detail)


def implicit_threshold(inter: Interactions, min_rating: float) -> tuple[Interactions, FilterReport]:
    """Keep events with ``rating >= min_rating`` (explicit ratings -> implicit positives)."""
    if inter.rating is None:
        raise DataError(f"{inter.source}: --min-rating needs a rating column, and this data has none")
    out = inter.take(inter.rating >= min_rating)
    return out, _report("implicit_threshold", inter, out, f"rating >= {min_rating:g}")


def k_core(inter: Interactions, k: int) -> tuple[Interactions, FilterReport]:
    """Iteratively drop users and items with fewer than ``k`` events until both hold."""
    cur, rounds = inter, 0
    while True:
        _, uinv, ucnt = np.unique(cur.user, return_inverse=True, return_counts=True)
        _, iinv, icnt = np.unique(cur.item, return_inverse=True, return_counts=True)
        keep = (ucnt[uinv] >= k) & (icnt[iinv] >= k)
        if keep.all():
            break
        cur, rounds = cur.take(keep), rounds + 1
    return cur, _report("k_core", inter, cur, f"k={k}, {rounds} rounds")


def dedupe_consecutive(inter: Interactions) -> tuple[Interactions, FilterReport]:
    """Drop an event that repeats the same user's previous item (expects chronological order)."""
    if len(inter) < 2:
        return inter, _report("dedupe_consecutive", inter, inter)
    same = np.zeros(len(inter), bool)
    same[1:] = (inter.user[1:] == inter.user[:-1]) & (inter.item[1:] == inter.item[:-1])
    out = inter.take(~same)
    return out, _report("dedupe_consecutive", inter, out)


def chronological(inter: Interactions) -> Interactions:
    """Group by user and sort by time; ties (and files without times) keep file order."""
    if inter.time is None:
        order = np.argsort(_codes(inter.user), kind="stable")
    else:
        order = np.lexsort((inter.time, _codes(inter.user)))  # lexsort is stable
    return inter.take(order)


def _codes(x: np.ndarray) -> np.ndarray:
    return np.unique(x, return_inverse=True)[1].reshape(-1)


def build_sequences(inter: Interactions, *, min_rating: float | None = None, k: int | None = None,
                    dedupe: bool = False, name: str | None = None,
                    item_metadata=None) -> SequenceData:
    """Apply the filters in a fixed order, sort, remap ids to 1..N, and pack CSR sequences.

    ``item_metadata(ids: list[str]) -> (titles | None, genres | None)`` attaches titles and
    genres to the catalog when the caller knows where to find them.
    """
    from jaxrec.data.loaders import catalog_with_metadata

    reports = []
    if min_rating is not None:
        inter, r = implicit_threshold(inter, min_rating)
        reports.append(r)
    inter = chronological(inter)
    if dedupe:
        inter, r = dedupe_consecutive(inter)
        reports.append(r)
    if k is not None and k > 1:
        inter, r = k_core(inter, k)
        reports.append(r)
    if len(inter) == 0:
        raise DataError(f"{inter.source}: the filters removed every interaction ({'; '.join(map(str, reports))})")

    user_ids, ucode = np.unique(inter.user, return_inverse=True)
    # np.unique sorts integer ids numerically, so SASRec files' items 1..N keep their indices.
    item_ids, icode = np.unique(inter.item, return_inverse=True)
    # Events are grouped by user in user-code order already (chronological sorts by code).
    offsets = np.zeros(len(user_ids) + 1, np.int64)
    np.cumsum(np.bincount(ucode.reshape(-1), minlength=len(user_ids)), out=offsets[1:])
    ext = np.concatenate([[""], item_ids.astype(str)]).astype(object)
    titles = genres = None
    if item_metadata is not None:
        titles, genres = item_metadata(list(ext[1:]))
        if titles is not None:
            titles = [""] + list(titles)
        if genres is not None:
            genres = [[]] + list(genres)
    catalog = catalog_with_metadata(ext, titles, genres)
    return SequenceData(offsets, (icode.reshape(-1) + 1).astype(np.int32), catalog, user_ids,
                        times=inter.time, reports=reports, name=name or inter.source)
