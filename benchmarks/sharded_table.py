"""What crosses devices with a sharded item table, side by side: a sampled-softmax train step
with negatives drawn from the whole catalog (gathered by GSPMD) or drawn and scored per shard
(``retrieval.shard_negatives``); and an evaluation batch's top-k and ranks left to GSPMD or
computed per shard and merged (``jaxrec.scoring``, the default for a sharded table).

    python benchmarks/sharded_table.py --devices 8 --model-parallel 4 --items 100000

Runs itself in a subprocess with ``--devices`` fake CPU devices (a data x model mesh), builds
each function of ``sasrec/plus`` both ways, compiles it and reads the optimised HLO: every
collective (all-gather, all-reduce, reduce-scatter, all-to-all, collective-permute) with the
bytes of its result, summed per kind. Bytes, not seconds: fake CPU devices share one memory,
so their timings say nothing about an interconnect, but the bytes a call moves are what the
interconnect of a real pod would carry. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1, "s64": 8, "u64": 8}
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def collective_bytes(hlo: str) -> dict:
    """{kind: [count, bytes of the results]} of an HLO module's collectives (``-start`` forms too)."""
    out = {k: [0, 0] for k in COLLECTIVES}
    pat = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
    for m in pat.finditer(hlo):
        shapes, kind = m.group(1), m.group(2)
        n = 0
        for dt, dims in re.findall(r"(\w+)\[([\d,]*)\]", shapes):
            size = 1
            for d in filter(None, dims.split(",")):
                size *= int(d)
            n += size * DTYPE_BYTES.get(dt, 4)
        out[kind][0] += 1
        out[kind][1] += n
    return out


def measure(args) -> list[dict]:
    import jax
    import numpy as np

    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.data.splits import pad_histories
    from jaxrec.scoring import Scorer, Stage
    from jaxrec.sharding import make_mesh, place, shard_batch, state_shardings
    from jaxrec.train import Config, build_run
    from jaxrec.train.config import Retrieval
    from jaxrec.train.step import make_loss_fn, make_train_step

    data = f"synthetic:users={args.users},items={args.items},mean_len=20,max_len=50"
    split = leave_one_out(load_dataset(data))
    mesh = make_mesh(args.devices, model_parallel=args.model_parallel)
    rows = []
    for per_shard in (False, True):
        cfg = Config(model="sasrec/plus", data=data, loss="sampled_softmax", num_negatives=args.negatives,
                     batch_size=args.batch_size, model_parallel=args.model_parallel, length_buckets=[],
                     model_args={"max_len": 50, "dim": args.dim},
                     retrieval=Retrieval(shard_negatives=per_shard, shared_negatives=args.shared))
        run = build_run(cfg, split)
        loss_fn = make_loss_fn(run.loss, cfg, split.data.num_items, run.batches.neg.prob,
                               mesh=mesh if per_shard else None)
        state = place(jax.tree.map(np.asarray, run.state), mesh)
        step = make_train_step(run.graphdef, loss_fn, run.tx, None, state_shardings(state, mesh))
        batch = shard_batch(next(iter(run.batches.epoch(0))), mesh)
        hlo = step.lower(state, batch, jax.random.PRNGKey(0)).compile().as_text()
        rows.append(row(f"train step, negatives {'per shard' if per_shard else 'global'}", hlo, args))
    # evaluation: one batch of test users, seen items excluded, top-10 lists and target ranks
    es = split.test
    hist = jax.numpy.asarray(pad_histories(split.data.items, es.start[:args.eval_batch], es.end[:args.eval_batch], 50))
    targets = jax.numpy.asarray(es.target[:args.eval_batch])
    for per_shard in (False, True):
        sc = Scorer(Stage(run.graphdef, state["params"], 50))
        p = sc._params()
        if not per_shard:  # what GSPMD alone does with the sharded table (the code before per-shard ranking)
            sc._mesh = None
        top = sc._top_k.lower(*p, hist, hist, None, None, None, k=10, explain=False).compile().as_text()
        rows.append(row(f"eval top-10, {'per shard + merge' if per_shard else 'GSPMD'}", top, args, args.eval_batch))
        ranks = sc._ranks.lower(*p, hist, targets, hist, None, k=10).compile().as_text()
        rows.append(row(f"eval ranks, {'per shard + merge' if per_shard else 'GSPMD'}", ranks, args, args.eval_batch))
    return rows


def row(what: str, hlo: str, args, batch: int | None = None) -> dict:
    c = collective_bytes(hlo)
    out = {"what": what, "items": args.items, "mesh": f"{args.devices // args.model_parallel}x{args.model_parallel}",
           "batch": batch or args.batch_size, "num_negatives": args.negatives, "shared": args.shared,
           "collective_mib": sum(b for _, b in c.values()) / 2 ** 20,
           **{f"{k}_n": v[0] for k, v in c.items()}, **{f"{k}_mib": v[1] / 2 ** 20 for k, v in c.items()}}
    print(json.dumps(out), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--model-parallel", type=int, default=4)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--negatives", type=int, default=256)
    ap.add_argument("--shared", action="store_true", help="one negative set per sequence (B, 1, K)")
    ap.add_argument("--eval-batch", type=int, default=256, help="users of the evaluation batch")
    ap.add_argument("--out", default="benchmarks/sharded_table.json")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.inner:  # the device count is fixed when JAX starts: run in a child with fake devices
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices}")
        r = subprocess.run([sys.executable, __file__, "--inner", *(argv if argv is not None else sys.argv[1:])],
                           env=env, capture_output=True, text=True)
        if r.returncode:
            print(r.stderr[-3000:], file=sys.stderr)
            return r.returncode
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        cols = ["what", "items", "mesh", "batch", "collective_mib"] + \
            [f"{k}_mib" for k in COLLECTIVES]
        print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        for row in rows:
            print("| " + " | ".join(f"{row[c]:,.2f}" if isinstance(row[c], float) else str(row[c]) for c in cols)
                  + " |")
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
        return 0
    measure(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
