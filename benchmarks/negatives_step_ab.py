"""Train-step time with independent vs outside-the-window shared negatives, side by side.

    python benchmarks/negatives_step_ab.py [DATA]       # default ../shared/data/ml-1m/ml-1m.txt

``retrieval.negatives_outside_sequence`` changes which 3,000 ids a sequence's shared negatives
are, not the shapes the step computes, so the device step should cost the same; this measures
it on the 40-minute CPU recipe's batches (SASRec+, batch 8, length buckets 32-150): the first
120 batches of epoch 0, 40 to compile and warm, 80 timed, the two settings alternated over 3
rounds (round 0 may still compile a window). Prints ms per step and writes
``benchmarks/negatives_step_ab.json``. The host's draw is measured apart (``TrainBatches.epoch``).

    python benchmarks/negatives_step_ab.py --dense [DATA]

compares the two ways of scoring per-position negatives (``train/step.py``, ``dense``) on the
gSASRec CPU recipe's batches (``configs/ml1m_gsasrec_cpu40.py``: 256 negatives per position,
gBCE, batch 16): gathering the B x L x K item rows, or one (B, L, N+1) catalog matmul and a
gather of scalars; writes ``benchmarks/negatives_dense_ab.json``.
"""

import json
import sys
import time
from pathlib import Path

import jax

from jaxrec.data import leave_one_out, load_dataset
from jaxrec.train import Config, build_run
from jaxrec.train.config import Retrieval
from jaxrec.train.step import make_loss_fn, make_train_step

HERE = Path(__file__).resolve().parent


def _configs(data: str, dense: bool) -> dict:
    """name -> (Config, make_loss_fn keywords) of the two settings compared."""
    if dense:
        base = Config(model="gsasrec/base", data=data, loss="gbce", num_negatives=256, batch_size=16,
                      model_args={"dropout": 0.3}, length_buckets=[32, 64, 100, 150])
        return {"gather rows": (base, {"dense": False}), "dense logits": (base, {"dense": True})}
    return {("outside" if outside else "independent"): (
        Config(model="sasrec/plus", data=data, loss="sampled_softmax", num_negatives=3000, batch_size=8,
               length_buckets=[32, 64, 100, 150],
               retrieval=Retrieval(shared_negatives=True, negatives_outside_sequence=outside)), {})
        for outside in (False, True)}


def main():
    args = [a for a in sys.argv[1:] if a != "--dense"]
    dense = "--dense" in sys.argv[1:]
    data = args[0] if args else str(HERE.parent.parent / "shared/data/ml-1m/ml-1m.txt")
    split = leave_one_out(load_dataset(data))
    runs = {}
    for name, (cfg, kw) in _configs(data, dense).items():
        run = build_run(cfg, split)
        loss_fn = make_loss_fn(cfg.loss, cfg, split.data.num_items, run.batches.neg.prob, **kw)
        runs[name] = (run, make_train_step(run.graphdef, loss_fn, run.tx),
                      [b for _, b in zip(range(120), run.batches.epoch(0))])
    key, res, first = jax.random.key(0), {}, {}
    for rnd in range(3):
        for name, (run, step, batches) in runs.items():
            state = jax.tree.map(lambda x: x.copy(), run.state)  # the step donates its state
            for i, b in enumerate(batches[:40]):
                state, m = step(state, b, key, 1.0)
                if rnd == 0 and i == 0:
                    first[name] = float(m["loss"])  # the same loss either way
            jax.block_until_ready(state)
            t = time.perf_counter()
            for b in batches[40:]:
                state, _ = step(state, b, key, 1.0)
            jax.block_until_ready(state)
            res.setdefault(name, []).append((time.perf_counter() - t) / 80 * 1e3)
            print(f"round {rnd}  {name:12s} {res[name][-1]:7.2f} ms/step", flush=True)
    cfg = next(iter(runs.values()))[0].cfg
    what = (f"ms per train step, {cfg.model}, {cfg.loss} {cfg.num_negatives} negatives, batch {cfg.batch_size}, "
            "buckets 32-150; 80 timed steps after 40, rounds alternated")
    out = {"data": data, "what": what, "ms_per_step": res, "first_step_loss": first}
    print("first step's loss:", first)
    (HERE / ("negatives_dense_ab.json" if dense else "negatives_step_ab.json")).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
