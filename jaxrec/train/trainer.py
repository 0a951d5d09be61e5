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

from jaxrec.data import Split, load_dataset, make_split
from jaxrec.data.batching import RankBatches, TrainBatches, prefetch
from jaxrec.data.splits import pad_histories, pad_times
from jaxrec.errors import UserError
from jaxrec.metrics import candidate_lists, evaluate, evaluate_lists, masked_top_k
from jaxrec.models import build_model, resolve
from jaxrec.sharding import make_mesh, replicate, shard_batch
from jaxrec.train.checkpoint import RunCheckpoints
from jaxrec.train.config import TrainConfig
from jaxrec.train.step import (ModelScorer, RankScorer, check_loss, make_loss_fn, make_optimizer,
                               make_train_step, needs_negatives)

# validation metric that selects the best checkpoint, by model kind
SELECT_METRIC = {"retrieval": "NDCG@10", "ranking": "GAUC"}


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
    batches: TrainBatches | RankBatches
    model_config: dict
    kind: str  # "retrieval" (full-ranking evaluation) or "ranking" (held-out candidate lists)
    prior: object = None  # residual ranker: the retriever's Recommender, whose scores join the ranker's

    @property
    def select(self) -> str:
        return SELECT_METRIC[self.kind]

    def evaluate(self, params, which: str):
        """The kind's protocol on the valid or test split (an ``EvalResult``)."""
        cfg, mc = self.cfg, self.model_config
        if self.kind == "retrieval":
            if self._scorer is None:  # one jitted scorer per run: a new one would recompile per validation
                self._scorer = ModelScorer(self.graphdef, params, mc["max_len"], mc["dtype"],
                                           uses_time=mc.get("time_buckets", 0) > 0)
            self._scorer.params = params
            return evaluate(self._scorer, self.split, which, batch_size=cfg.eval_batch_size)
        if which not in self._lists:  # the same lists at every validation
            self._lists[which] = candidate_lists(self.split, which, cfg.eval_negatives, "popularity", cfg.seed)
        if self._scorer is None:
            self._scorer = RankScorer(self.graphdef, params, mc["max_len"], mc["dtype"])
        self._scorer.params = params
        from jaxrec.pipeline import with_prior  # the pipeline imports the train step: import here

        # a residual ranker is validated as what it was trained to be: ranker + w * retriever
        score, max_len = with_prior(self._scorer.score, mc["max_len"], self.prior, cfg.residual)
        return evaluate_lists(score, self.split, which, max_len=max_len,
                              negatives=cfg.eval_negatives, batch_size=cfg.eval_batch_size,
                              lists=self._lists[which])

    def __post_init__(self):
        self._lists, self._scorer = {}, None


def _open_same_catalog(run_dir: str, split: Split):
    from jaxrec.inference import Recommender

    rec = Recommender.from_checkpoint(run_dir)
    if list(rec.catalog.ids) != list(split.data.catalog.ids):
        raise UserError(f"{run_dir} was trained on another catalog than {split.data.name}")
    return rec


def warm_start_items(model, rec, run_dir: str, split: Split) -> None:
    """Start ``model``'s item-id embeddings from another run's (a ranker from its retriever)."""
    src = nnx.merge(rec.graphdef, rec.params).item_emb.embedding[...]
    dst = model.item_emb.embedding
    n = split.data.num_items + 1
    if src.shape[1] != dst.shape[1]:
        raise UserError(f"init_from {run_dir}: its item embeddings have dim {src.shape[1]}, "
                        f"this model {dst.shape[1]}")
    dst.value = dst.value.at[:n].set(src[:n])


def retriever_view(rec, run_dir: str, pool: int, times=None):
    """``(items, start, end) -> (top-pool unseen items (B, pool), scores (B, N+1))`` of a
    retrieval checkpoint: hard negatives for a ranker, and its prior when trained as a residual.

    ``times``: the data's event times, for a retriever that uses them."""
    if rec.kind != "retrieval":
        raise UserError(f"retriever {run_dir} holds a {rec.kind} model; hard negatives need a retrieval model")

    def view(items, start, end):
        hist = pad_histories(items, start, end, rec.max_len)
        t = pad_times(times, start, end, rec.max_len, query="last") if rec.uses_time else None
        scores = rec.score_all(hist, t)  # (B, N+1)
        return np.asarray(masked_top_k(scores, hist, pool)[1]), np.asarray(scores, np.float32)

    return view


def build_run(cfg: TrainConfig, split: Split | None = None) -> Run:
    split = split or make_split(load_dataset(cfg.data), cfg.split)
    entry, variant, _ = resolve(cfg.model)
    loss = cfg.loss or entry.loss
    model = build_model(cfg.model, split.data.num_items, cfg.seed, catalog=split.data.catalog,
                        **cfg.model_args)
    check_loss(loss, model.kind)
    uses_time = getattr(model, "uses_time", False)
    if uses_time and loss == "cloze":
        raise UserError("relative time bias (time_buckets) does not combine with the cloze loss")
    opened: dict = {}  # run dir -> Recommender: init_from and retriever are often the same run

    def other_run(run_dir: str):
        if run_dir not in opened:
            opened[run_dir] = _open_same_catalog(run_dir, split)
        return opened[run_dir]

    if cfg.init_from:
        warm_start_items(model, other_run(cfg.init_from), cfg.init_from, split)
    graphdef, params = nnx.split(model)
    k = cfg.num_negatives if needs_negatives(loss) else 0
    prior = None
    if cfg.residual:
        if model.kind != "ranking" or not cfg.retriever:
            raise UserError("residual applies to a ranker with a retriever (set retriever=RUN_DIR)")
        prior = other_run(cfg.retriever)
        if prior.uses_time:
            raise UserError("residual: the retriever reads event times; use one without time bias")
    if model.kind == "ranking":
        view = retriever_view(other_run(cfg.retriever), cfg.retriever, cfg.hard_pool,
                              split.data.times) if cfg.retriever else None
        batches = RankBatches(split, model.config.max_len, cfg.batch_size, k, cfg.sampler, cfg.seed,
                              cfg.cuts_per_user, view, cfg.hard_fraction, prior=cfg.residual > 0)
    else:
        batches = TrainBatches(split, model.config.max_len, cfg.batch_size, k, cfg.sampler, cfg.seed,
                               shared_negatives=cfg.shared_negatives,
                               length_buckets=tuple(cfg.length_buckets), with_times=uses_time)
    tx = make_optimizer(cfg, cfg.epochs * batches.batches_per_epoch)
    state = {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    mc = dataclasses.asdict(model.config) | {"name": cfg.model, "variant": variant,
                                             "class": type(model).__name__}
    return Run(cfg, split, loss, graphdef, state, tx, batches, mc, model.kind, prior)


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
    budget_s = None if cfg.max_minutes is None else 60 * cfg.max_minutes
    deadline = None if budget_s is None else t_start + budget_s
    time_decay = cfg.schedule == "linear_time"  # lr factor: the share of the budget left
    stop_reason = "epochs"
    print(f"training {cfg.model} ({run.loss}) on {split.data.name}: {split.data.num_users:,} users, "
          f"{split.data.num_items:,} items, {batches.batches_per_epoch} batches/epoch, "
          f"{jax.device_count()} {jax.default_backend()} device(s)")
    log_every = max(1, min(50, batches.batches_per_epoch))

    epoch = meta["epoch"]
    while epoch < cfg.epochs:
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=batches.batches_per_epoch, initial=meta["batch"], desc=f"epoch {epoch + 1}",
                       unit="batch", leave=False, dynamic_ncols=True)
        t_epoch, seqs, pending = time.perf_counter(), 0, []
        step = int(state["step"])  # host copy: the step key depends on it, no device sync per step
        done = meta["batch"]  # batches of this epoch finished
        over_time = False
        for bi, batch in enumerate(prefetch(batches.epoch(epoch, meta["batch"])), start=meta["batch"]):
            state, m = train_step(state, shard_batch(batch, mesh), jax.random.fold_in(base_key, step),
                                  np.float32(1.0 if not time_decay else
                                             max(0.0, (deadline - time.perf_counter()) / budget_s)))
            step, done = step + 1, bi + 1
            pending.append(m["loss"])
            seqs += int((batch["weights"].reshape(len(batch["weights"]), -1).sum(1) > 0).sum())
            # the budget is a hard limit on training: checked after every step, not at epoch ends
            over_time = deadline is not None and time.perf_counter() > deadline
            if len(pending) >= log_every or done == batches.batches_per_epoch or over_time:
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
            if over_time:
                break
        if bar is not None:
            bar.close()
        if done == batches.batches_per_epoch:
            epoch, done = epoch + 1, 0
        # a budget stop mid-epoch keeps the batch position, so --resume continues from there
        meta.update(epoch=epoch, batch=done, elapsed=time.perf_counter() - t_start)
        epoch_done = epoch + done / batches.batches_per_epoch  # fractional after a budget stop
        evaluated = (not done and epoch % cfg.eval_every == 0) or epoch == cfg.epochs or over_time
        if evaluated:
            res = run.evaluate(state["params"], "valid")
            val = res.metrics[run.select]
            improved = meta["best"] is None or val > meta["best"]
            if improved:
                meta.update(best=val, best_epoch=round(epoch_done, 2), bad_evals=0)
                ckpt.save_best(int(state["step"]), state, meta)
            else:
                meta["bad_evals"] += 1
            meta["elapsed"] = time.perf_counter() - t_start
            _log(metrics_path, {"epoch": round(epoch_done, 2), "step": int(state["step"]), "split": "valid",
                                "elapsed_s": meta["elapsed"], **res.metrics})
            print(f"epoch {epoch_done:>6g}  loss {rec['loss']:.4f}  valid {run.select} {val:.4f}  NDCG@10 "
                  f"{res.metrics['NDCG@10']:.4f}{'  *' if improved else ''}  [{meta['elapsed']:.0f}s]")
            if meta["bad_evals"] >= cfg.patience:
                stop_reason = f"early stop: no improvement in {cfg.patience} validations"
        ckpt.save_last(int(state["step"]), state, meta)
        # a validation that ran past the deadline ends the run here, not one step into the next
        # epoch (which would only buy a second validation of nearly the same parameters)
        over_time = over_time or (evaluated and deadline is not None and time.perf_counter() > deadline)
        if over_time:
            stop_reason = f"time budget of {cfg.max_minutes} min"
        if stop_reason != "epochs":
            break
    train_seconds = time.perf_counter() - t_start
    best_state, best_meta = RunCheckpoints.restore(ckpt.best, state)
    ckpt.close()
    test = run.evaluate(best_state["params"], "test")
    results = {"model": cfg.model, "loss": run.loss, "data": split.data.name,
               "protocol": test.protocol, "metrics": test.metrics,
               "best_valid": {"epoch": best_meta["best_epoch"], run.select: best_meta["best"]},
               "epochs": round(epoch_done, 2), "stop_reason": stop_reason, "train_seconds": round(train_seconds, 1),
               "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}"}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _log(metrics_path, {"split": "test", "epoch": best_meta["best_epoch"], **test.metrics})
    extra = f"  GAUC {test.metrics['GAUC']:.4f}" if run.kind == "ranking" else ""
    print(f"test ({test.protocol}): NDCG@10 {test.metrics['NDCG@10']:.4f}  HR@10 "
          f"{test.metrics['HR@10']:.4f}{extra}  (best epoch {best_meta['best_epoch']}, {stop_reason})")
    return results
