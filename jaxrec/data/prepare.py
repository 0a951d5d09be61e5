"""Data beyond memory: stream an event file into memory-mapped CSR arrays.

``jaxrec data prepare EVENTS --out DIR`` reads a CSV/TSV or Parquet event file with pyarrow,
one block (CSV) or row group (Parquet) at a time, and writes the arrays ``SequenceData``
holds, as ``.npy`` files that training, evaluation and the server memory-map
(``load_prepared``; ``load_dataset(DIR)`` detects a prepared directory):

    DIR/prepared.json   counts, columns, source, what was removed (nothing is dropped silently)
    DIR/offsets.npy     (U+1,) int64: user u's events are items[offsets[u]:offsets[u+1]]
    DIR/items.npy       (E,) int32 item indices 1..N, each user's events in time order
    DIR/times.npy       (E,) int64, when the file has a time column
    DIR/users.parquet   the external user ids, in index order
    DIR/items.parquet   the external item ids (row i-1 = item index i), a columnar catalog

Peak memory does not grow with the file: pass 1 keeps only the distinct user and item ids;
pass 2 maps each block's ids to indices and appends them to one of P partition files by user
range; pass 3 sorts one partition at a time (stable: events at the same time keep file
order, as ``load_dataset`` does) and appends it to the output. Ids get indices in sorted
order (integer ids numerically), as in ``build_sequences``. Rows with a missing user or item
id are an error naming the row; prepared data is used as is (no k-core or rating filter).

Why not Grain: Grain's strength is a per-record pipeline (random access, per-process
sharding, checkpointable iterators) for data that is read record by record. Our training
batches are assembled with vectorised NumPy over CSR arrays (one fancy index per batch,
not one Python call per example), and memory-mapped arrays already give random access and
per-process slicing; the iterator state we checkpoint is (epoch, batch), two integers in the
checkpoint metadata. A Grain pipeline would add a per-record Python cost to the input path
that is today the cheapest part of a training step.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from jaxrec.data.loaders import ITEM_COLUMNS, TIME_COLUMNS, USER_COLUMNS
from jaxrec.data.types import ItemCatalog, SequenceData
from jaxrec.errors import DataError

PREPARED = "prepared.json"


def _open(path: Path, block_rows: int):
    """(column names, a function returning a fresh iterator of record batches, kind)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.suffix in (".parquet", ".pq"):
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        return names, lambda cols: pf.iter_batches(batch_size=block_rows, columns=cols), "parquet"
    delim = "\t" if path.suffix in (".tsv", ".tab") else ","
    read = pacsv.ReadOptions(block_size=64 << 20)
    parse = pacsv.ParseOptions(delimiter=delim)
    with pacsv.open_csv(path, read_options=read, parse_options=parse) as r:
        names = r.schema.names

    def batches(cols):
        conv = pacsv.ConvertOptions(include_columns=cols)
        return iter(pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=conv))
    return names, batches, "csv"


def _pick(names, wanted, candidates, role: str, path: Path, required: bool = True):
    if wanted is not None:
        if wanted not in names:
            raise DataError(f"{path}: no column {wanted!r} for the {role} (columns: {', '.join(names)})")
        return wanted
    for c in candidates:
        if c in names:
            return c
    if required:
        raise DataError(f"{path}: no {role} column among {', '.join(names)}; name it with --{role}-col")
    return None


def _column(batch, name: str, first_row: int, path: Path, kind: str):
    """One id column of a block as NumPy (int64 or str objects); a missing id is an error."""
    col = batch.column(name)
    if col.null_count:
        import pyarrow.compute as pc
        bad = int(pc.index(pc.is_null(col), True).as_py())
        line = first_row + bad + (2 if kind == "csv" else 1)  # CSV: 1-based, after the header
        where = f"line {line}" if kind == "csv" else f"row {line}"
        raise DataError(f"{path}: {where}: column {name!r} is empty")
    arr = col.to_numpy(zero_copy_only=False)
    return arr.astype(np.int64) if np.issubdtype(arr.dtype, np.integer) else arr.astype(str).astype(object)


def _merge_unique(parts: list) -> np.ndarray:
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def prepare(src: str | Path, out: str | Path, *, user_col=None, item_col=None, time_col=None,
            block_rows: int = 1 << 20, partition_events: int = 1 << 24, progress: bool = True) -> dict:
    """Stream ``src`` into a prepared directory ``out`` (see the module docstring); returns
    the ``prepared.json`` record."""
    path, out = Path(src), Path(out)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    names, batches, kind = _open(path, block_rows)
    ucol = _pick(names, user_col, USER_COLUMNS, "user", path)
    icol = _pick(names, item_col, ITEM_COLUMNS, "item", path)
    tcol = _pick(names, time_col, TIME_COLUMNS, "time", path, required=False)
    cols = [ucol, icol] + ([tcol] if tcol else [])
    bar = _bar(progress)

    # pass 1: distinct ids (compacted as they come, so memory is the distinct ids, not the events)
    users, items, pend_u, pend_i, events = [], [], [], [], 0
    for b in batches(cols):
        u = _column(b, ucol, events, path, kind)
        i = _column(b, icol, events, path, kind)
        pend_u.append(np.unique(u))
        pend_i.append(np.unique(i))
        events += len(u)
        if len(pend_u) >= 16:
            users, items = [_merge_unique(users + pend_u)], [_merge_unique(items + pend_i)]
            pend_u, pend_i = [], []
        bar("ids", events)
    user_ids, item_ids = _merge_unique(users + pend_u), _merge_unique(items + pend_i)
    if not events:
        raise DataError(f"{path}: no events")

    # pass 2: indices, appended to partition files by user range
    if out.exists():
        shutil.rmtree(out)
    (out / "parts").mkdir(parents=True)
    n_parts = max(1, -(-events // partition_events))
    bounds = np.linspace(0, len(user_ids), n_parts + 1).astype(np.int64)
    files = [{k: open(out / "parts" / f"{p}.{k}", "wb") for k in ("u", "i", "t")} for p in range(n_parts)]
    seen = 0
    try:
        for b in batches(cols):
            u = np.searchsorted(user_ids, _column(b, ucol, seen, path, kind)).astype(np.int32)
            i = (np.searchsorted(item_ids, _column(b, icol, seen, path, kind)) + 1).astype(np.int32)
            t = (b.column(tcol).to_numpy(zero_copy_only=False).astype(np.int64) if tcol
                 else np.zeros(len(u), np.int64))
            part = np.searchsorted(bounds, u, side="right") - 1
            for p in np.unique(part):
                m = part == p
                files[p]["u"].write(u[m].tobytes())
                files[p]["i"].write(i[m].tobytes())
                files[p]["t"].write(t[m].tobytes())
            seen += len(u)
            bar("partition", seen)
    finally:
        for f in files:
            for h in f.values():
                h.close()

    # pass 3: sort one partition at a time into the output arrays
    # plain appends after an .npy header (a writable memory map would keep every written page
    # resident in this process)
    items_out = _npy_writer(out / "items.npy", np.int32, events)
    times_out = _npy_writer(out / "times.npy", np.int64, events) if tcol else None
    counts = np.zeros(len(user_ids), np.int64)
    at = 0
    try:
        for p in range(n_parts):
            u = np.fromfile(out / "parts" / f"{p}.u", np.int32)
            i = np.fromfile(out / "parts" / f"{p}.i", np.int32)
            t = np.fromfile(out / "parts" / f"{p}.t", np.int64)
            order = np.lexsort((t, u))  # by user, then time; stable: ties keep file order
            items_out.write(i[order].tobytes())
            if times_out is not None:
                times_out.write(t[order].tobytes())
            counts += np.bincount(u, minlength=len(user_ids))
            at += len(u)
            del u, i, t, order
            bar("sort", at)
    finally:
        items_out.close()
        if times_out is not None:
            times_out.close()
    offsets = np.zeros(len(user_ids) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    np.save(out / "offsets.npy", offsets)
    shutil.rmtree(out / "parts")
    _write_ids(out / "users.parquet", user_ids)
    _write_ids(out / "items.parquet", item_ids)
    record = {"source": str(path), "columns": {"user": ucol, "item": icol, "time": tcol},
              "events": int(events), "users": int(len(user_ids)), "items": int(len(item_ids)),
              "has_time": tcol is not None, "partitions": n_parts,
              "removed": {"interactions": 0, "note": "prepare removes nothing; missing ids are errors"}}
    (out / PREPARED).write_text(json.dumps(record, indent=1))
    bar("done", events)
    return record


def _npy_writer(path: Path, dtype, n: int):
    """An open file positioned after the header of a (n,) ``dtype`` .npy array."""
    f = open(path, "wb")
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                             "fortran_order": False, "shape": (n,)})
    return f


def _write_ids(path: Path, ids: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"id": pa.array(ids.astype(str) if ids.dtype == object else ids.astype(str))}), path)


def _read_ids(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq
    return np.asarray(pq.read_table(path).column("id").to_pylist(), dtype=object)


def _bar(progress: bool):
    """A tqdm bar over events, relabelled per pass (a no-op without ``progress``)."""
    if not progress:
        return lambda stage, n: None
    from tqdm import tqdm
    state = {"bar": None, "stage": None}

    def update(stage, n):
        if stage != state["stage"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["bar"] = None if stage == "done" else tqdm(desc=stage, unit="event", unit_scale=True, leave=False)
            state["stage"] = stage
        if state["bar"] is not None:
            state["bar"].n = n
            state["bar"].refresh()
    return update


def is_prepared(path: str | Path) -> bool:
    return (Path(path) / PREPARED).is_file()


def load_prepared(path: str | Path) -> SequenceData:
    """A prepared directory as ``SequenceData`` whose arrays are memory-mapped (read-only)."""
    d = Path(path)
    meta = json.loads((d / PREPARED).read_text())
    items = np.load(d / "items.npy", mmap_mode="r")
    times = np.load(d / "times.npy", mmap_mode="r") if meta["has_time"] else None
    catalog = ItemCatalog(np.concatenate([np.array([""], dtype=object), _read_ids(d / "items.parquet")]))
    return SequenceData(np.load(d / "offsets.npy"), items, catalog, _read_ids(d / "users.parquet"),
                        times=times, name=str(d))
