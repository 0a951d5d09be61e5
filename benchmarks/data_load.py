"""Data loading benchmark: wall time and peak memory to load + preprocess a dataset.

    python benchmarks/data_load.py                       # ml-1m (if present) + synthetic 10M
    python benchmarks/data_load.py --data path/to/file   # any file jaxrec reads

Each dataset is loaded in a fresh subprocess so peak RSS is that load's alone. Prints a
table and writes ``benchmarks/data_load.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_ML1M = HERE.parent.parent / "shared" / "data" / "ml-1m" / "ml-1m.txt"

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from jaxrec.data import load_dataset, leave_one_out
t1 = time.perf_counter()
d = load_dataset(sys.argv[1])
t2 = time.perf_counter()
leave_one_out(d)
t3 = time.perf_counter()
print(json.dumps({"data": sys.argv[1], "users": d.num_users, "items": d.num_items,
                  "interactions": d.num_interactions, "import_s": t1 - t0, "load_s": t2 - t1,
                  "split_s": t3 - t2, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(spec: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, spec], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", help="dataset spec (repeatable)")
    ap.add_argument("--out", default=str(HERE / "data_load.json"))
    args = ap.parse_args()
    specs = args.data or ([str(DEFAULT_ML1M)] if DEFAULT_ML1M.exists() else []) + ["synthetic:large"]
    rows = [run(s) for s in specs]
    print(f"{'data':<40} {'users':>9} {'items':>7} {'events':>11} {'load s':>7} {'split s':>7} {'peak MiB':>9}")
    for r in rows:
        print(f"{Path(r['data']).name[:40]:<40} {r['users']:>9,} {r['items']:>7,} {r['interactions']:>11,} "
              f"{r['load_s']:>7.2f} {r['split_s']:>7.2f} {r['peak_rss_mib']:>9.0f}")
    Path(args.out).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                          "python": platform.python_version(), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
