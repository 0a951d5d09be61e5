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

    python benchmarks/negatives_step_ab.py --mol [RAW_DATA]   # default ../shared/data/ml-1m/user_movie_time_ordered_original_ids.txt

compares HSTU-large's cosine similarity with its mixture of logits (``hstu/large_mol``,
``jaxrec.models.mol``) on the raw protocol's CPU recipe batches (batch 16, 128 negatives shared
by a sequence, sampled softmax): what MoL's per-pair gate costs a step (10 batches to compile
and warm, 20 timed, 2 rounds); writes ``benchmarks/mol_step_ab.json``.
"""

import dataclasses
import json
import sys
import time
from pathlib import Path

import jax

from jaxrec.data import load_dataset, make_split
from jaxrec.train import Config, build_run
from jaxrec.train.config import Retrieval
from jaxrec.train.step import make_loss_fn, make_train_step

HERE = Path(__file__).resolve().parent


def _configs(data: str, dense: bool, mol: bool = False) -> dict:
    """name -> (Config, make_loss_fn keywords) of the two settings compared."""
    if mol:
        base = Config(model="hstu/large", data=data, split="last_out", loss="sampled_softmax", num_negatives=128,
                      batch_size=16, length_buckets=[32, 64, 100, 150], retrieval=Retrieval(shared_negatives=True))
        return {"cosine": (dataclasses.replace(base, model_args={"similarity": "cosine", "temperature": 0.05}), {}),
                "mol": (dataclasses.replace(base, model="hstu/large_mol"), {})}
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
    args = [a for a in sys.argv[1:] if a not in ("--dense", "--mol")]
    dense, mol = "--dense" in sys.argv[1:], "--mol" in sys.argv[1:]
    default = "user_movie_time_ordered_original_ids.txt" if mol else "ml-1m.txt"
    data = args[0] if args else str(HERE.parent.parent / "shared/data/ml-1m" / default)
    warm, timed, rounds = (10, 20, 2) if mol else (40, 80, 3)
    runs, split = {}, None
    for name, (cfg, kw) in _configs(data, dense, mol).items():
        split = split or make_split(load_dataset(data), cfg.split)
        run = build_run(cfg, split)
        loss_fn = make_loss_fn(cfg.loss, cfg, split.data.num_items, run.batches.neg.prob, **kw)
        runs[name] = (run, make_train_step(run.graphdef, loss_fn, run.tx),
                      [b for _, b in zip(range(warm + timed), run.batches.epoch(0))])
    key, res, first = jax.random.key(0), {}, {}
    for rnd in range(rounds):
        for name, (run, step, batches) in runs.items():
            state = jax.tree.map(lambda x: x.copy(), run.state)  # the step donates its state
            for i, b in enumerate(batches[:warm]):
                state, m = step(state, b, key, 1.0)
                if rnd == 0 and i == 0:
                    first[name] = float(m["loss"])
            jax.block_until_ready(state)
            t = time.perf_counter()
            for b in batches[warm:]:
                state, _ = step(state, b, key, 1.0)
            jax.block_until_ready(state)
            res.setdefault(name, []).append((time.perf_counter() - t) / timed * 1e3)
            print(f"round {rnd}  {name:12s} {res[name][-1]:7.2f} ms/step", flush=True)
    cfg = next(iter(runs.values()))[0].cfg
    what = (f"ms per train step, {cfg.model}, {cfg.loss} {cfg.num_negatives} negatives, batch {cfg.batch_size}, "
            f"buckets 32-150; {timed} timed steps after {warm}, rounds alternated")
    out = {"data": data, "what": what, "ms_per_step": res, "first_step_loss": first}
    print("first step's loss:", first)
    name = "mol_step_ab.json" if mol else "negatives_dense_ab.json" if dense else "negatives_step_ab.json"
    (HERE / name).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
