"""The training loop: data -> jitted steps -> validation, early stopping, checkpoints -> test.

Selection uses the validation split only; the test split is evaluated once, with the best
checkpoint. A run is a pure function of (config, data, device count): batches come from
(seed, epoch), the step key from (seed, step), so ``--resume`` after a kill ends with the
same metrics as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.data import Split, leave_one_out, load_dataset
from jaxrec.data.batching import TrainBatches, prefetch
from jaxrec.errors import UserError
from jaxrec.metrics import evaluate
from jaxrec.models import build_model, resolve
from jaxrec.sharding import make_mesh, replicate, shard_batch
from jaxrec.train.checkpoint import RunCheckpoints
from jaxrec.train.config import TrainConfig
from jaxrec.train.step import ModelScorer, make_loss_fn, make_optimizer, make_train_step, needs_negatives

SELECT_METRIC = "NDCG@10"


class NonFiniteLoss(UserError):
    """Training diverged: the message names the step range where it happened."""


@dataclasses.dataclass
class Run:
    """Everything built from a config before the loop starts."""

    cfg: TrainConfig
    split: Split
    loss: str
    graphdef: object
    state: dict
    tx: object
    batches: TrainBatches
    model_config: dict


def build_run(cfg: TrainConfig, split: Split | None = None) -> Run:
    split = split or leave_one_out(load_dataset(cfg.data))
    entry, variant, _ = resolve(cfg.model)
    loss = cfg.loss or entry.loss
    model = build_model(cfg.model, split.data.num_items, cfg.seed, **cfg.model_args)
    graphdef, params = nnx.split(model)
    k = cfg.num_negatives if needs_negatives(loss) else 0
    batches = TrainBatches(split, model.config.max_len, cfg.batch_size, k, cfg.sampler, cfg.seed,
                           shared_negatives=cfg.shared_negatives, length_buckets=tuple(cfg.length_buckets))
    tx = make_optimizer(cfg, cfg.epochs * batches.batches_per_epoch)
    state = {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    mc = dataclasses.asdict(model.config) | {"name": cfg.model, "variant": variant,
                                             "class": type(model).__name__}
    return Run(cfg, split, loss, graphdef, state, tx, batches, mc)


def _log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
          split: Split | None = None) -> dict:
    """Train, select on validation NDCG@10, evaluate the best checkpoint on test. Returns results."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not resume and (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise UserError(f"{out} already holds checkpoints; pass --resume to continue, or another --out")
    run = build_run(cfg, split)
    split, batches = run.split, run.batches
    (out / "config.json").write_text(json.dumps({"train": cfg.to_dict(), "model": run.model_config,
                                                 "loss": run.loss}, indent=2))
    split.data.catalog.save(out / "catalog.json")
    np.save(out / "item_counts.npy", split.train_item_counts())  # the server's cold-start list
    mesh = make_mesh(cfg.num_devices)
    state = replicate(run.state, mesh)
    ckpt = RunCheckpoints(out, cfg.keep_last)
    # JSON-safe meta: "best" is None until the first validation
    meta = {"epoch": 0, "batch": 0, "best": None, "best_epoch": -1, "bad_evals": 0, "elapsed": 0.0}
    if resume:
        restored, m = RunCheckpoints.restore(ckpt.last, state)
        if restored is not None:
            state, meta = replicate(restored, mesh), m
    loss_fn = make_loss_fn(run.loss, cfg, split.data.num_items, batches.neg.prob)
    dtype = run.model_config["dtype"]
    train_step = make_train_step(run.graphdef, loss_fn, run.tx, dtype)
    base_key = jax.random.PRNGKey(cfg.seed)
    metrics_path = out / "metrics.jsonl"
    t_start = time.perf_counter() - meta["elapsed"]
    stop_reason = "epochs"
    print(f"training {cfg.model} ({run.loss}) on {split.data.name}: {split.data.num_users:,} users, "
          f"{split.data.num_items:,} items, {batches.batches_per_epoch} batches/epoch, "
          f"{jax.device_count()} {jax.default_backend()} device(s)")
    log_every = max(1, min(50, batches.batches_per_epoch))

    def valid_eval(params):
        scorer = ModelScorer(run.graphdef, params, run.model_config["max_len"], dtype)
        return evaluate(scorer, split, "valid", batch_size=cfg.eval_batch_size)

    epoch = meta["epoch"]
    while epoch < cfg.epochs:
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=batches.batches_per_epoch, initial=meta["batch"], desc=f"epoch {epoch + 1}",
                       unit="batch", leave=False, dynamic_ncols=True)
        t_epoch, seqs, pending = time.perf_counter(), 0, []
        step = int(state["step"])  # host copy: the step key depends on it, no device sync per step
        for bi, batch in enumerate(prefetch(batches.epoch(epoch, meta["batch"])), start=meta["batch"]):
            state, m = train_step(state, shard_batch(batch, mesh), jax.random.fold_in(base_key, step))
            step += 1
            pending.append(m["loss"])
            seqs += int((batch["weights"].sum(1) > 0).sum())
            if len(pending) >= log_every or bi == batches.batches_per_epoch - 1:
                losses = np.asarray(jax.device_get(pending))
                if not np.isfinite(losses).all():
                    bad = step - len(pending) + 1 + int(np.argmax(~np.isfinite(losses)))  # 1-based
                    raise NonFiniteLoss(f"loss became {losses[~np.isfinite(losses)][0]} at step {bad} "
                                        f"(epoch {epoch + 1}); lower the learning rate or check the data")
                rec = {"step": step, "epoch": epoch + 1, "loss": float(losses.mean()),
                       "grad_norm": float(m["grad_norm"]), "param_norm": float(m["param_norm"]),
                       "seq_per_s": seqs / (time.perf_counter() - t_epoch)}
                _log(metrics_path, rec)
                pending = []
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", seq_s=f"{rec['seq_per_s']:.0f}")
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        epoch += 1
        meta.update(epoch=epoch, batch=0, elapsed=time.perf_counter() - t_start)
        over_time = cfg.max_minutes is not None and meta["elapsed"] > 60 * cfg.max_minutes
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs or over_time:
            res = valid_eval(state["params"])
            val = res.metrics[SELECT_METRIC]
            improved = meta["best"] is None or val > meta["best"]
            if improved:
                meta.update(best=val, best_epoch=epoch, bad_evals=0)
                ckpt.save_best(int(state["step"]), state, meta)
            else:
                meta["bad_evals"] += 1
            meta["elapsed"] = time.perf_counter() - t_start
            _log(metrics_path, {"epoch": epoch, "step": int(state["step"]), "split": "valid",
                                "elapsed_s": meta["elapsed"], **res.metrics})
            print(f"epoch {epoch:>3}  loss {rec['loss']:.4f}  valid NDCG@10 {val:.4f}  HR@10 "
                  f"{res.metrics['HR@10']:.4f}{'  *' if improved else ''}  [{meta['elapsed']:.0f}s]")
            if meta["bad_evals"] >= cfg.patience:
                stop_reason = f"early stop: no improvement in {cfg.patience} validations"
        ckpt.save_last(int(state["step"]), state, meta)
        if over_time:
            stop_reason = f"time budget of {cfg.max_minutes} min"
        if stop_reason != "epochs":
            break
    train_seconds = time.perf_counter() - t_start
    best_state, best_meta = RunCheckpoints.restore(ckpt.best, state)
    ckpt.close()
    test = evaluate(ModelScorer(run.graphdef, best_state["params"], run.model_config["max_len"], dtype),
                    split, "test", batch_size=cfg.eval_batch_size)
    results = {"model": cfg.model, "loss": run.loss, "data": split.data.name,
               "protocol": test.protocol, "metrics": test.metrics,
               "best_valid": {"epoch": best_meta["best_epoch"], SELECT_METRIC: best_meta["best"]},
               "epochs": epoch, "stop_reason": stop_reason, "train_seconds": round(train_seconds, 1),
               "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}"}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _log(metrics_path, {"split": "test", "epoch": best_meta["best_epoch"], **test.metrics})
    print(f"test ({test.protocol}): NDCG@10 {test.metrics['NDCG@10']:.4f}  HR@10 "
          f"{test.metrics['HR@10']:.4f}  (best epoch {best_meta['best_epoch']}, {stop_reason})")
    return results
