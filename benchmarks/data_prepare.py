"""``jaxrec data prepare`` at scale: time and peak memory to stream a large event file into
memory-mapped CSR arrays, and to open the result.

    python benchmarks/data_prepare.py                      # 100M events, 1M users, 1M items
    python benchmarks/data_prepare.py --events 10000000    # a quicker row

Writes a synthetic Parquet file (row groups of 4M events, written as generated, so this
script's own memory stays small; Zipf-skewed items, random users, increasing times), then
in fresh subprocesses: (1) ``jaxrec.data.prepare.prepare`` - wall time, peak RSS; (2)
``load_dataset(DIR)`` + ``leave_one_out`` - wall time, peak RSS, whether the item array is
memory-mapped. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PREPARE = r"""
import json, resource, sys, time
from jaxrec.data.prepare import prepare
t = time.perf_counter()
rec = prepare(sys.argv[1], sys.argv[2], progress=False)
print(json.dumps({"prepare_s": time.perf_counter() - t, "partitions": rec["partitions"],
                  "prepare_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

OPEN = r"""
import json, resource, sys, time
import numpy as np
from jaxrec.data import leave_one_out, load_dataset
t = time.perf_counter()
d = load_dataset(sys.argv[1])
t1 = time.perf_counter()
leave_one_out(d)
print(json.dumps({"open_s": t1 - t, "split_s": time.perf_counter() - t1, "mmap": isinstance(d.items, np.memmap),
                  "open_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_events(path: Path, events: int, users: int, items: int, seed: int = 0, group: int = 4_000_000) -> float:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.int64())])
    with pq.ParquetWriter(path, schema) as w:
        for lo in range(0, events, group):
            n = min(group, events - lo)
            item = np.minimum(rng.zipf(1.2, n), items).astype(np.int64)
            w.write_table(pa.table({"user_id": rng.integers(1, users + 1, n), "item_id": item,
                                    "timestamp": np.arange(lo, lo + n, dtype=np.int64)}, schema=schema))
    return time.perf_counter() - t0


def child(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default="benchmarks/data_prepare.json")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="jaxrec-prepare-"))
    work.mkdir(parents=True, exist_ok=True)
    src, dst = work / "events.parquet", work / "prepared"
    row = {"events": args.events, "users": args.users, "items": args.items}
    row["write_parquet_s"] = write_events(src, args.events, args.users, args.items)
    row["parquet_mib"] = src.stat().st_size / 2**20
    row |= child(PREPARE, src, dst)
    row["prepared_mib"] = sum(f.stat().st_size for f in dst.iterdir()) / 2**20
    row |= child(OPEN, dst)
    print(json.dumps(row))
    print("\n| events | prepare s | prepare peak RSS MiB | open + split s | open peak RSS MiB | mmap |\n|---|---|---|---|---|---|")
    print(f"| {args.events:,} | {row['prepare_s']:.0f} | {row['prepare_peak_rss_mib']:,.0f} | "
          f"{row['open_s'] + row['split_s']:.1f} | {row['open_peak_rss_mib']:,.0f} | {row['mmap']} |")
    Path(args.out).write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
