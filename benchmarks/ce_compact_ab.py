"""Train-step time when the catalog cross-entropy scores every position vs only the weighted ones.

    python benchmarks/ce_compact_ab.py [DATA]       # default ../shared/data/ml-1m/ml-1m.txt

``losses.catalog_ce`` sorts the positions that carry a weight to the front and skips the chunks
past them: left padding and, in a cloze step, the unmasked positions cost no catalog matmul. The
baseline is the same step with every zero weight raised to 1e-30, so every chunk is scored as
before the change (the loss moves by < 1e-25). Two workloads on ML-1M: SASRec+ CE with the
published settings (``configs/ml1m_sasrec_ce_vanilla.py``: one 200-item window per user, no
length buckets, so ~54% of the positions are weighted) and BERT4Rec's cloze step
(``configs/ml1m_bert4rec.py``: length buckets, only the masked positions weighted). The first batches of
epoch 0, ``warm`` to compile and warm, ``timed`` timed, the two settings alternated over rounds.
Prints ms per step and writes ``benchmarks/ce_compact_ab.json``.
"""

import importlib
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxrec import losses
from jaxrec.data import load_dataset, make_split
from jaxrec.train import build_run
from jaxrec.train.step import make_loss_fn, make_train_step

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "configs"))
WORKLOADS = {"sasrec ce (published)": "ml1m_sasrec_ce_vanilla", "bert4rec cloze": "ml1m_bert4rec"}
COMPACT = losses.catalog_ce


def every_position(h, table, targets, weights, *args, **kw):
    """``catalog_ce`` with no zero weight left, so no chunk is skipped: the cost before the change."""
    w = jnp.asarray(weights, jnp.float32)
    return COMPACT(h, table, targets, jnp.where(w == 0, 1e-30, w), *args, **kw)


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else str(HERE.parent.parent / "shared/data/ml-1m/ml-1m.txt")
    warm, timed, rounds = 4, 12, 2
    split, res, first, steps = None, {}, {}, {}
    for label, module in WORKLOADS.items():
        cfg = importlib.import_module(module).get_config()
        split = split or make_split(load_dataset(data), cfg.split)
        run = build_run(cfg, split)
        batches = [b for _, b in zip(range(warm + timed), run.batches.epoch(0))]
        for name, fn in (("every position", every_position), ("weighted only", COMPACT)):
            losses.catalog_ce = fn  # read when the step is traced (its first call, below)
            loss_fn = make_loss_fn(cfg.loss, cfg, split.data.num_items, run.batches.neg.prob)
            step = make_train_step(run.graphdef, loss_fn, run.tx)
            state, m = step(jax.tree.map(lambda x: x.copy(), run.state), batches[0], jax.random.key(0), 1.0)
            first[f"{label} / {name}"] = float(m["loss"])
            steps[(label, name)] = (run, step, batches)
        losses.catalog_ce = COMPACT
    key = jax.random.key(0)
    for rnd in range(rounds):
        for (label, name), (run, step, batches) in steps.items():
            state = jax.tree.map(lambda x: x.copy(), run.state)  # the step donates its state
            for b in batches[:warm]:
                state, _ = step(state, b, key, 1.0)
            jax.block_until_ready(state)
            t = time.perf_counter()
            for b in batches[warm:]:
                state, _ = step(state, b, key, 1.0)
            jax.block_until_ready(state)
            res.setdefault(label, {}).setdefault(name, []).append((time.perf_counter() - t) / timed * 1e3)
            print(f"round {rnd}  {label:22s} {name:15s} {res[label][name][-1]:8.1f} ms/step", flush=True)
    print(f"\n{'workload':22s} {'every position':>15s} {'weighted only':>14s} {'speed-up':>9s}")
    for label, r in res.items():
        a, b = min(r["every position"]), min(r["weighted only"])
        print(f"{label:22s} {a:12.1f} ms {b:11.1f} ms {a / b:8.2f}x")
    print("first step's loss:", first)
    out = {"data": data, "device": jax.devices()[0].device_kind, "cpu_count": jax.device_count(),
           "what": f"ms per train step (best of {rounds} rounds of {timed} steps after {warm}), rounds alternated",
           "ms_per_step": res, "first_step_loss": first}
    (HERE / "ce_compact_ab.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
