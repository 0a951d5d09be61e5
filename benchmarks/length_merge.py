"""One device call per history-length group, or the groups merged by measured cost.

    python benchmarks/length_merge.py --checkpoint RUN [--data SPEC] [--batch 32] [--batches 8]

The server's engine groups a batch's requests by history-length bucket (the encoder's cost
grows with the padded length) and, after warm-up, times one call per bucket to learn each
call's fixed part and its part per row (``Engine.call_costs``); ``Engine.run`` then merges
adjacent groups into one padded call where that is cheaper. On a large catalog every call
scans the whole item table, so three groups cost three scans. This runs ``Engine.run`` on
test histories (each its user's whole known history, all lengths mixed) in batches of
``--batch``, both ways, alternating, in one process: pin it to one core (``taskset -c 0``)
as a server would be. Prints the measured costs and the median time per batch; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default=None, help="data of the histories (default: the run's)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).resolve().with_name("length_merge.json")))
    args = ap.parse_args(argv)

    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.data.splits import pad_histories
    from jaxrec.inference import Recommender
    from jaxrec.train.rundir import RunDir
    from jaxrec_server.engine import Engine, Query

    rec = Recommender.from_checkpoint(args.checkpoint)
    data = load_dataset(args.data or RunDir.open(args.checkpoint).config().data)
    es = leave_one_out(data).test
    n = args.batch * args.batches
    hist = pad_histories(data.items, es.start[:n], es.end[:n], rec.scorer.max_len)
    engine = Engine(rec, max_batch_size=args.batch, k_buckets=[10], max_k=100)
    warm = engine.warm_up()
    print(f"warm-up {warm:.1f}s; one call costs {engine.describe_costs()}")
    queries = [Query(history=h[h > 0].astype(np.int32), k=10) for h in hist]
    costs, secs = engine.call_costs, {"per length group": [], "merged by cost": []}
    for _ in range(args.repeats):
        for name, c in (("per length group", {}), ("merged by cost", costs)):
            engine.call_costs = c
            for i in range(args.batches):
                t = time.perf_counter()
                engine.run(queries[i * args.batch:(i + 1) * args.batch])
                secs[name].append(time.perf_counter() - t)
    rows = {name: {"median_ms": 1000 * float(np.median(s)), "rec_per_s": args.batch / float(np.median(s))}
            for name, s in secs.items()}
    print(f"| calls | median ms per batch of {args.batch} | recommendations/s |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['median_ms']:.1f} | {r['rec_per_s']:.1f} |")
    Path(args.out).write_text(json.dumps({"args": vars(args), "costs": {str(k): v for k, v in costs.items()},
                                          "warmup_s": warm, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
