"""Train-step time with independent vs outside-the-window shared negatives, side by side.

    python benchmarks/negatives_step_ab.py [DATA]       # default ../shared/data/ml-1m/ml-1m.txt

``retrieval.negatives_outside_sequence`` changes which 3,000 ids a sequence's shared negatives
are, not the shapes the step computes, so the device step should cost the same; this measures
it on the 40-minute CPU recipe's batches (SASRec+, batch 8, length buckets 32-150): the first
120 batches of epoch 0, 40 to compile and warm, 80 timed, the two settings alternated over 3
rounds (round 0 may still compile a window). Prints ms per step and writes
``benchmarks/negatives_step_ab.json``. The host's draw is measured apart (``TrainBatches.epoch``).
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


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else str(HERE.parent.parent / "shared/data/ml-1m/ml-1m.txt")
    split = leave_one_out(load_dataset(data))
    runs = {}
    for outside in (False, True):
        cfg = Config(model="sasrec/plus", data=data, loss="sampled_softmax", num_negatives=3000, batch_size=8,
                     length_buckets=[32, 64, 100, 150],
                     retrieval=Retrieval(shared_negatives=True, negatives_outside_sequence=outside))
        run = build_run(cfg, split)
        step = make_train_step(run.graphdef, make_loss_fn("sampled_softmax", cfg, split.data.num_items), run.tx)
        runs["outside" if outside else "independent"] = (run, step, [b for _, b in zip(range(120), run.batches.epoch(0))])
    key, res = jax.random.key(0), {}
    for rnd in range(3):
        for name, (run, step, batches) in runs.items():
            state = jax.tree.map(lambda x: x.copy(), run.state)  # the step donates its state
            for b in batches[:40]:
                state, _ = step(state, b, key, 1.0)
            jax.block_until_ready(state)
            t = time.perf_counter()
            for b in batches[40:]:
                state, _ = step(state, b, key, 1.0)
            jax.block_until_ready(state)
            res.setdefault(name, []).append((time.perf_counter() - t) / 80 * 1e3)
            print(f"round {rnd}  {name:12s} {res[name][-1]:7.2f} ms/step", flush=True)
    out = {"data": data, "what": "ms per train step, sasrec/plus, sampled_softmax 3000 shared negatives, batch 8, "
                                 "buckets 32-150; 80 timed steps after 40, rounds alternated", "ms_per_step": res}
    (HERE / "negatives_step_ab.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
