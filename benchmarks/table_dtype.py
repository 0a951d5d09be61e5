"""Compact item tables (``jaxrec serve --table-dtype``): memory and quality against float32.

    python benchmarks/table_dtype.py --checkpoint runs/ml1m_sasrec_ce --checkpoint runs/beauty_sasrec_ce

For each run and each table dtype (float32, bfloat16, int8 with per-row scales) it evaluates
the run's test split under its own protocol (full ranking, seen items excluded, every user)
with the item table kept as the server keeps it, and prints the table's bytes, NDCG@10 and
HR@100 (recall@100: one held-out item per user) and their change against float32; writes
benchmarks/table_dtype.json. Also times the engine alone (batch 64) per dtype: what the
dequantizing reads cost on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DTYPES = ("float32", "bfloat16", "int8")


def engine_rate(run: str, dtype: str, seconds: float, data) -> float:
    """Recommendations/s of the server's model path (Engine.run, batch 64, top-10)."""
    from jaxrec.data import leave_one_out
    from jaxrec_server.engine import Query
    from jaxrec_server.main import ServeConfig, load_engine
    engine = load_engine(ServeConfig(run, max_batch_size=64, k_buckets=[10], table_dtype=dtype))
    engine.warm_up()
    es = leave_one_out(data).test
    queries = [Query(data.items[max(es.start[i], es.end[i] - engine.max_len): es.end[i]].astype("int32"), 10)
               for i in range(min(2048, len(es)))]
    n, lo, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        engine.run(queries[lo: lo + 64])
        n, lo = n + 64, (lo + 64) % (len(queries) - 64)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    from jaxrec.data import load_dataset, make_split
    from jaxrec.inference import Recommender
    from jaxrec.metrics import evaluate
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", required=True, help="a retrieval run (repeatable)")
    ap.add_argument("--seconds", type=float, default=4.0, help="engine timing per dtype (0: skip)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().with_name("table_dtype.json")))
    args = ap.parse_args(argv)
    rows = []
    for run in args.checkpoint:
        base = None
        for dtype in DTYPES:
            rec = Recommender.from_checkpoint(run)
            data = load_dataset(rec.config.data)
            split = make_split(data, rec.config.split)
            if dtype != "float32":
                rec.with_table_dtype(dtype)
            res = evaluate(rec, split, "test", ks=(10, 100), progress=False)
            row = {"run": run, "data": data.name, "items": data.num_items, "dtype": dtype,
                   "table_bytes": rec.scorer.table_bytes(), "NDCG@10": res.metrics["NDCG@10"],
                   "HR@100": res.metrics["HR@100"], "protocol": res.protocol,
                   "engine_recs_per_s": engine_rate(run, dtype, args.seconds, data) if args.seconds else None}
            base = base or row
            row["NDCG@10_change"] = row["NDCG@10"] / base["NDCG@10"] - 1
            row["HR@100_change"] = row["HR@100"] / base["HR@100"] - 1
            rows.append(row)
    print(f"{'run':<34} {'dtype':<9} {'table':>10} {'NDCG@10':>8} {'change':>8} {'HR@100':>7} {'change':>8} "
          f"{'engine rec/s':>12}")
    for r in rows:
        rate = "" if r["engine_recs_per_s"] is None else f"{r['engine_recs_per_s']:.0f}"
        print(f"{Path(r['run']).name:<34} {r['dtype']:<9} {r['table_bytes'] / 2**20:>8.2f}Mi {r['NDCG@10']:>8.4f} "
              f"{r['NDCG@10_change']:>+8.2%} {r['HR@100']:>7.4f} {r['HR@100_change']:>+8.2%} {rate:>12}")
    print(f"protocol: {rows[0]['protocol']}")
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
