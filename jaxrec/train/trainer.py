"""The training loop: data -> jitted steps -> validation, early stopping, checkpoints -> test.

    train(cfg, out)
      build_run(cfg)                     data, model, optimizer, batches, the evaluator
      loop: run_epoch -> validate_and_save   until epochs, patience or the time budget
      finish                             the best checkpoint on the test split, results.json

Selection uses the validation split only; the test split is evaluated once, with the best
checkpoint. A run is a pure function of (config, data, device count): batches come from
(seed, epoch), the step key from (seed, step), so ``--resume`` after a kill ends with the
same metrics as an uninterrupted run. ``LoopState`` is both the loop's state and the
checkpoint's metadata. Other runs a ranker reads (its retriever, its warm start) are opened
here from their run directories with ``jaxrec.scoring``: nothing above ``train/`` is imported.
"""

from __future__ import annotations

import dataclasses
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
from jaxrec.metrics import candidate_lists, evaluate, evaluate_lists
from jaxrec.models import build_model, resolve
from jaxrec.scoring import Scorer, Stage, masked_top_k, with_prior
from jaxrec.sharding import local_rows, make_mesh, place, shard_batch, state_shardings
from jaxrec.train.config import Config, nest_legacy
from jaxrec.train.rundir import Checkpoints, RunDir
from jaxrec.train.signals import StopRequest, TrainingStopped, stop_on_signals
from jaxrec.train.step import (check_loss, check_mol, check_shard_negatives, check_sparse_items, make_loss_fn,
                               make_optimizer, make_train_step, needs_negatives, time_decay_factor)
from jaxrec.train.teachers import TeacherCache, load_teachers

# validation metric that selects the best checkpoint, by model kind
SELECT_METRIC = {"retrieval": "NDCG@10", "ranking": "GAUC"}


class NonFiniteLoss(UserError):
    """Training diverged: the message names the step range where it happened."""


@dataclasses.dataclass
class LoopState:
    """Where the loop is; saved as every checkpoint's metadata, so ``--resume`` continues here."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches of the current epoch finished (non-zero only after a budget stop)
    best: float | None = None  # best validation value so far (None until the first validation)
    best_epoch: float = -1
    bad_evals: int = 0  # validations since the last improvement
    elapsed: float = 0.0  # training seconds so far, across resumes

    @classmethod
    def from_meta(cls, meta: dict) -> "LoopState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in meta.items() if k in names})


# ---------------------------------------------------------------- other runs

def open_scorer(run_dir: str, split: Split) -> tuple[Scorer, object, object]:
    """Another run's model (best checkpoint) as (Scorer, graphdef, params); its catalog must be ours."""
    m = RunDir.open(run_dir).load_model()
    if list(m.catalog.ids) != list(split.data.catalog.ids):
        raise UserError(f"{run_dir} was trained on another catalog than {split.data.name}")
    return Scorer(Stage(m.graphdef, m.params, m.info.max_len, m.info.dtype, m.info.uses_time)), m.graphdef, m.params


def warm_start_items(model, graphdef, params, run_dir: str, split: Split) -> None:
    """Start ``model``'s item-id embeddings from another run's (a ranker from its retriever)."""
    src = nnx.merge(graphdef, params).item_emb.embedding[...]
    dst = model.item_emb.embedding
    n = split.data.num_items + 1
    if src.shape[1] != dst.shape[1]:
        raise UserError(f"init_from {run_dir}: its item embeddings have dim {src.shape[1]}, "
                        f"this model {dst.shape[1]}")
    dst.value = dst.value.at[:n].set(src[:n])


def retriever_view(scorer: Scorer, run_dir: str, pool: int, times=None):
    """``(items, start, end) -> (top-pool unseen items (B, pool), scores (B, N+1))`` of a
    retrieval model: hard negatives for a ranker, and its prior when trained as a residual.

    ``times``: the data's event times, for a retriever that uses them."""
    if scorer.kind != "retrieval":
        raise UserError(f"retriever {run_dir} holds a {scorer.kind} model; hard negatives need a retrieval model")

    def view(items, start, end):
        hist = pad_histories(items, start, end, scorer.max_len)
        t = pad_times(times, start, end, scorer.max_len, query="last") if scorer.uses_time else None
        scores = scorer.score_all(hist, t)  # (B, N+1)
        return np.asarray(masked_top_k(scores, hist, pool)[1]), np.asarray(scores, np.float32)

    return view


# ---------------------------------------------------------------- building a run

@dataclasses.dataclass
class Run:
    """Everything built from a config before the loop starts."""

    cfg: Config
    split: Split
    loss: str
    graphdef: object
    state: dict
    tx: object
    batches: TrainBatches | RankBatches
    model_config: dict
    kind: str  # "retrieval" (full-ranking evaluation) or "ranking" (held-out candidate lists)
    prior: Scorer | None = None  # residual ranker: the retriever, whose scores join the ranker's

    @property
    def select(self) -> str:
        return SELECT_METRIC[self.kind]

    def __post_init__(self):
        mc = self.model_config
        # one jitted scorer per run: a new one would recompile at every validation
        self._scorer = Scorer(Stage(self.graphdef, self.state["params"], mc["max_len"], mc["dtype"],
                                    mc.get("time_buckets", 0) > 0))
        self._lists = {}

    def evaluate(self, params, which: str):
        """The kind's protocol on the valid or test split (an ``EvalResult``)."""
        cfg, mc = self.cfg, self.model_config
        self._scorer.first.params = params
        if self.kind == "retrieval":
            return evaluate(self._scorer, self.split, which, batch_size=cfg.eval_batch_size, seed=cfg.seed,
                            users=cfg.eval_users if which == "valid" else None, beyond_k=None)
        rk = cfg.ranking
        if which not in self._lists:  # the same lists at every validation
            self._lists[which] = candidate_lists(self.split, which, rk.eval_negatives, "popularity", cfg.seed)
        # a residual ranker is validated as what it was trained to be: ranker + w * retriever
        score, max_len = with_prior(self._scorer.score, mc["max_len"], self.prior, rk.residual)
        return evaluate_lists(score, self.split, which, max_len=max_len, negatives=rk.eval_negatives,
                              batch_size=cfg.eval_batch_size, lists=self._lists[which])


def default_eval_every(cfg: Config, split: Split, batches, kind: str) -> int:
    """1 for retrieval; for a ranker, the epochs whose training (forward + backward, ~3 passes)
    over ``batch_size x (1 + num_negatives)`` pairs a step at least match one validation's
    ``users x (1 + eval_negatives)`` scored pairs. Data sizes only: the same on any machine."""
    if kind != "ranking":
        return 1
    val = len(split.valid) * (1 + cfg.ranking.eval_negatives)
    train = 3 * batches.batches_per_epoch * cfg.batch_size * (1 + cfg.num_negatives)
    return max(1, -(-val // train))


def build_run(cfg: Config, split: Split | None = None) -> Run:
    split = split or make_split(load_dataset(cfg.data), cfg.split)
    cfg = cfg.resolved(len(split.data.items))
    entry, variant, _ = resolve(cfg.model)
    loss = cfg.loss or entry.loss
    model_args = dict(cfg.model_args)
    if cfg.model_parallel > 1:  # a sharded item table needs rows divisible by its shards
        model_args.setdefault("table_rows_multiple", cfg.model_parallel)
    model = build_model(cfg.model, split.data.num_items, cfg.seed, catalog=split.data.catalog, **model_args)
    check_loss(loss, model.kind)
    uses_time = getattr(model, "uses_time", False)
    if uses_time and loss == "cloze":
        raise UserError("relative time bias (time_buckets) does not combine with the cloze loss")
    rk, rt = cfg.ranking, cfg.retrieval
    opened: dict = {}  # run dir -> (Scorer, graphdef, params): init_from and retriever are often one run

    def other_run(run_dir: str):
        if run_dir not in opened:
            opened[run_dir] = open_scorer(run_dir, split)
        return opened[run_dir]

    if rk.init_from:
        warm_start_items(model, *other_run(rk.init_from)[1:], rk.init_from, split)
    graphdef, params = nnx.split(model)
    k = cfg.num_negatives if needs_negatives(loss) else 0
    prior = None
    if rk.residual:
        if not rk.retriever:
            raise UserError("ranking.residual applies to a ranker with a retriever (set ranking.retriever=RUN_DIR)")
        prior = other_run(rk.retriever)[0]
        if prior.uses_time:
            raise UserError("ranking.residual: the retriever reads event times; use one without time bias")
    if model.kind == "ranking":
        view = retriever_view(other_run(rk.retriever)[0], rk.retriever, rk.hard_pool,
                              split.data.times) if rk.retriever else None
        batches = RankBatches(split, model.config.max_len, cfg.batch_size, k, cfg.sampler, cfg.seed,
                              rk.cuts_per_user, view, rk.hard_fraction, prior=rk.residual > 0,
                              length_buckets=cfg.length_buckets)
    else:
        if rt.shard_negatives:
            check_shard_negatives(cfg, loss, model)
        if rt.future_targets and loss != "ce":
            raise UserError(f"retrieval.future_targets applies to loss ce, not {loss!r}")
        if rt.exclude_history and not (loss == "ce" and rt.negatives_outside_sequence):
            raise UserError("retrieval.exclude_history widens the excluded window of loss ce with "
                            "negatives_outside_sequence: set both")
        if rt.negatives_outside_sequence and loss not in ("sampled_softmax", "ce", "bce", "gbce"):
            raise UserError("retrieval.negatives_outside_sequence applies to loss sampled_softmax, ce, bce "
                            f"or gbce, not {loss!r}")
        batches = TrainBatches(split, model.config.max_len, cfg.batch_size, k, cfg.sampler, cfg.seed,
                               shared_negatives=rt.shared_negatives, length_buckets=cfg.length_buckets,
                               negatives_outside=rt.negatives_outside_sequence,
                               with_times=uses_time, all_windows=rt.all_windows,
                               with_history=rt.exclude_history,
                               negative_shards=(cfg.model_parallel, model.item_emb.embedding.shape[0])
                               if rt.shard_negatives else None)
    if cfg.eval_every is None:
        cfg = dataclasses.replace(cfg, eval_every=default_eval_every(cfg, split, batches, model.kind))
    if rt.sparse_items:
        check_sparse_items(cfg, loss, model)
    check_mol(cfg, loss, model)
    tx = make_optimizer(cfg, cfg.epochs * batches.batches_per_epoch)
    state = {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    if cfg.ema_decay:
        if rt.sparse_items:  # the average moves every row every step: the dense cost sparse_items avoids
            raise UserError("ema_decay averages every parameter at every step, the item table's untouched "
                            "rows too; it does not combine with retrieval.sparse_items")
        state["ema"] = jax.tree.map(jnp.copy, params)  # its own buffers: the step donates the state
    mc = dataclasses.asdict(model.config) | {"name": cfg.model, "variant": variant, "kind": model.kind,
                                             "class": type(model).__name__}
    return Run(cfg, split, loss, graphdef, state, tx, batches, mc, model.kind, prior)


# ---------------------------------------------------------------- the loop

@dataclasses.dataclass
class Loop:
    """What the phases share: the run, its directory, the compiled step and the clock."""

    run: Run
    rundir: RunDir
    ckpt: Checkpoints
    mesh: object
    train_step: object
    progress: bool
    t_start: float
    deadline: float | None
    budget_s: float | None
    last: dict = dataclasses.field(default_factory=dict)  # the latest logged training record
    stop_request: StopRequest = dataclasses.field(default_factory=StopRequest)  # SIGTERM / SIGINT

    def now_over(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def lr_scale(self) -> np.float32:
        """``schedule=linear_time``: the share of the time budget left over ``decay_fraction``,
        at most 1 (1 for the other schedules)."""
        if self.run.cfg.schedule != "linear_time":
            return np.float32(1.0)
        left = (self.deadline - time.perf_counter()) / self.budget_s
        return np.float32(time_decay_factor(left, self.run.cfg.decay_fraction))


def run_epoch(lp: Loop, state, ls: LoopState):
    """Train from ``ls``'s position to the end of the epoch, or until the time budget runs out
    (checked after every step: a hard limit). Returns (state, over_time); ``ls`` is advanced."""
    run, batches = lp.run, lp.run.batches
    bpe = batches.batches_per_epoch
    base_key = jax.random.PRNGKey(run.cfg.seed)
    log_every = max(1, min(50, bpe))
    bar = None
    if lp.progress:
        from tqdm import tqdm
        bar = tqdm(total=bpe, initial=ls.batch, desc=f"epoch {ls.epoch + 1}", unit="batch", leave=False,
                   dynamic_ncols=True)
    t_epoch, seqs, pending = time.perf_counter(), 0, []
    step = int(state["step"])  # host copy: the step key depends on it, no device sync per step
    done, over_time = ls.batch, False
    part = local_rows(lp.mesh) if jax.process_count() > 1 else (0, 1, 1)  # this process's rows of a batch
    share = part[2] // (part[1] - part[0])  # processes' shares: sequences counted here x this = all
    for bi, batch in enumerate(prefetch(batches.epoch(ls.epoch, ls.batch, part)), start=ls.batch):
        state, m = lp.train_step(state, shard_batch(batch, lp.mesh), jax.random.fold_in(base_key, step),
                                 lp.lr_scale())
        step, done = step + 1, bi + 1
        pending.append(m["loss"])
        seqs += share * int((batch["weights"].reshape(len(batch["weights"]), -1).sum(1) > 0).sum())
        over_time = lp.now_over()
        if len(pending) >= log_every or done == bpe or over_time or lp.stop_request:
            losses = np.asarray(jax.device_get(pending))
            if not np.isfinite(losses).all():
                bad = step - len(pending) + 1 + int(np.argmax(~np.isfinite(losses)))  # 1-based
                raise NonFiniteLoss(f"loss became {losses[~np.isfinite(losses)][0]} at step {bad} "
                                    f"(epoch {ls.epoch + 1}); lower the learning rate or check the data")
            lp.last = {"step": step, "epoch": ls.epoch + 1, "loss": float(losses.mean()),
                       "grad_norm": float(m["grad_norm"]), "param_norm": float(m["param_norm"]),
                       "seq_per_s": seqs / (time.perf_counter() - t_epoch),
                       "epoch_s": time.perf_counter() - t_epoch}
            lp.rundir.log(lp.last)
            pending = []
            if bar is not None:
                budget = {} if lp.deadline is None else {  # a long budget: how much of it is left
                    "left": f"{max(0.0, lp.deadline - time.perf_counter()) / 60:.1f}/{lp.budget_s / 60:g}min"}
                bar.set_postfix(loss=f"{lp.last['loss']:.4f}", seq_s=f"{lp.last['seq_per_s']:.0f}", **budget)
        if bar is not None:
            bar.update(1)
        if over_time or lp.stop_request:
            break
    if bar is not None:
        bar.close()
    if done == bpe:
        ls.epoch, done = ls.epoch + 1, 0
    # a budget stop mid-epoch keeps the batch position, so --resume continues from there
    ls.batch, ls.elapsed = done, time.perf_counter() - lp.t_start
    return state, over_time


def validate_and_save(lp: Loop, state, ls: LoopState, over_time: bool) -> str | None:
    """Validate when due (every ``eval_every`` epochs, at the last one, at a budget stop), keep
    the best checkpoint, save the last. Returns why training stops now, or None."""
    run, cfg = lp.run, lp.run.cfg
    epoch_done = ls.epoch + ls.batch / run.batches.batches_per_epoch  # fractional after a budget stop
    evaluated = (not ls.batch and ls.epoch % cfg.eval_every == 0) or ls.epoch == cfg.epochs or over_time
    stop = None
    if evaluated:
        res = run.evaluate(state.get("ema", state["params"]), "valid")  # the average, with ema_decay
        val = res.metrics[run.select]
        improved = ls.best is None or val > ls.best
        if improved:
            ls.best, ls.best_epoch, ls.bad_evals = val, round(epoch_done, 2), 0
            lp.ckpt.save("best", state, dataclasses.asdict(ls))
        else:
            ls.bad_evals += 1
        ls.elapsed = time.perf_counter() - lp.t_start
        lp.rundir.log({"epoch": round(epoch_done, 2), "step": int(state["step"]), "split": "valid",
                       "elapsed_s": ls.elapsed, **res.metrics})
        print(f"epoch {epoch_done:>6g}  loss {lp.last.get('loss', float('nan')):.4f}  valid {run.select} "
              f"{val:.4f}  NDCG@10 {res.metrics['NDCG@10']:.4f}{'  *' if improved else ''}  [{ls.elapsed:.0f}s]")
        if ls.bad_evals >= cfg.patience:
            stop = f"early stop: no improvement in {cfg.patience} validations"
    lp.ckpt.save("last", state, dataclasses.asdict(ls))
    # a validation that ran past the deadline ends the run here, not one step into the next
    # epoch (which would only buy a second validation of nearly the same parameters)
    if over_time or (evaluated and lp.now_over()):
        stop = f"time budget of {cfg.max_minutes} min"
    if stop is None and ls.epoch >= cfg.epochs:
        stop = "epochs"
    return stop


def stop_now(lp: Loop, state, ls: LoopState) -> None:
    """A signal asked training to stop (``jaxrec.train.signals``): save ``last`` where the loop
    is (mid-epoch too), without validating, and raise ``TrainingStopped``."""
    lp.ckpt.save("last", state, dataclasses.asdict(ls))
    lp.ckpt.close()
    raise TrainingStopped(f"stopped by {lp.stop_request.name} at {position(ls, lp.run.cfg)} (step "
                          f"{int(state['step'])}): {lp.rundir.path / 'checkpoints'}/last saved; the same command "
                          f"with --resume continues", lp.stop_request.signum)


def finish(lp: Loop, params_like, ls: LoopState, stop_reason: str) -> dict:
    """The best checkpoint on the test split, once; results.json. ``params_like``: the
    parameters' shapes and shardings (the caller has let go of the training state, so a 10M-item
    run never holds two sets of parameters and Adam moments at once)."""
    run, split = lp.run, lp.run.split
    train_seconds = time.perf_counter() - lp.t_start
    best_state, best_meta = lp.ckpt.restore("best", {"params": params_like})
    lp.ckpt.close()
    best = LoopState.from_meta(best_meta)
    test = run.evaluate(best_state["params"], "test")
    results = {"model": run.cfg.model, "loss": run.loss, "data": split.data.name,
               "protocol": test.protocol, "metrics": test.metrics,
               "best_valid": {"epoch": best.best_epoch, run.select: best.best},
               "epochs": round(ls.epoch + ls.batch / run.batches.batches_per_epoch, 2),
               "stop_reason": stop_reason, "train_seconds": round(train_seconds, 1),
               "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}"}
    lp.rundir.write_results(results)
    lp.rundir.log({"split": "test", "epoch": best.best_epoch, **test.metrics})
    extra = f"  GAUC {test.metrics['GAUC']:.4f}" if run.kind == "ranking" else ""
    print(f"test ({test.protocol}): NDCG@10 {test.metrics['NDCG@10']:.4f}  HR@10 "
          f"{test.metrics['HR@10']:.4f}{extra}  (best epoch {best.best_epoch}, {stop_reason})")
    return results


# settings a resumed run may change: how long it trains, how it validates and keeps checkpoints,
# where its data file lives (the catalog is compared instead), on how many devices it runs.
# Anything else would continue a run under settings its checkpoint was not trained with.
RESUMABLE = ("epochs", "max_minutes", "patience", "eval_every", "eval_batch_size", "keep_last",
             "num_devices", "data", "expected")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("model_args", "expected"):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[prefix + k] = v
    return out


def check_resume(rundir: RunDir, cfg: Config, catalog) -> None:
    """``--resume`` continues the run in ``rundir`` only under its own settings: a change to
    anything outside ``RESUMABLE`` (or another catalog) is refused, naming each difference; the
    changes it allows are printed."""
    old = _flat(nest_legacy(dict(rundir.stored_config()["train"])))  # as written: not validated again
    # a setting added after the run was written: it trained with that setting's default
    old = _flat(Config().to_dict()) | old
    new = _flat(cfg.to_dict())
    diff = [(k, old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    refused = [d for d in diff if d[0] not in RESUMABLE]
    if refused:
        raise UserError(f"--resume {rundir.path}: the run was trained with other settings: "
                        + "; ".join(f"{k} {a!r} -> {b!r}" for k, a, b in refused)
                        + f" (its config.json). Only {', '.join(RESUMABLE)} may change on resume; "
                          "start a new run with another --out")
    if rundir.catalog_path.exists() and list(rundir.catalog().ids) != list(catalog.ids):
        raise UserError(f"--resume {rundir.path}: the data's catalog differs from the run's "
                        f"({rundir.catalog_path}); resume on the data it was trained on")
    for k, a, b in diff:
        print(f"resume: {k} {a!r} -> {b!r}")


def distillation(cfg: Config, loss: str, batches, catalog, progress: bool):
    """``retrieval.teachers``: their outputs for every training window, computed once and handed
    to each batch (``teacher_h``); -> their item tables side by side for the loss (None: no
    distillation)."""
    if not cfg.retrieval.teachers:
        return None
    teachers = load_teachers(cfg.retrieval.teachers, loss, catalog)
    t0 = time.perf_counter()
    cache = TeacherCache(teachers, batches, progress=progress)
    batches.row_extra = cache.rows
    print(f"distilling from {len(teachers)} teacher(s): {', '.join(str(t) for t in cfg.retrieval.teachers)} "
          f"(weight {cfg.retrieval.distill:g}, temperature {cfg.retrieval.distill_temperature:g}; their outputs "
          f"for {len(batches.rows):,} windows: {cache.nbytes / 2 ** 20:,.0f} MiB in "
          f"{time.perf_counter() - t0:.0f} s, before the training budget starts)")
    return cache.table


def resume_line(rundir: RunDir, ls: LoopState, cfg: Config, restored: bool) -> str:
    """What ``--resume`` continues from, in one line."""
    if not restored:
        return f"resume: no checkpoint in {rundir.path} yet; training from the start"
    best = "" if ls.best is None else f", best validation {ls.best:.4f} at epoch {ls.best_epoch:g}"
    return f"resume: from {position(ls, cfg)}{best}"


def position(ls: LoopState, cfg: Config) -> str:
    """Where a run stands, as --resume and a signal's stop say it: "epoch 7 + 312 batches,
    52.3 of 240 min trained"."""
    where = f"epoch {ls.epoch}" + (f" + {ls.batch} batches" if ls.batch else "")
    budget = f" of {cfg.max_minutes:g}" if cfg.max_minutes else ""
    return f"{where}, {ls.elapsed / 60:.1f}{budget} min trained"


def train(cfg: Config, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
          split: Split | None = None) -> dict:
    """Train, select on validation, evaluate the best checkpoint on test. Returns the results."""
    rundir = RunDir(out_dir)
    if not resume and rundir.has_checkpoints():
        raise UserError(f"{rundir.path} already holds checkpoints; pass --resume to continue, or another --out")
    run = build_run(cfg, split)
    cfg, split, batches = run.cfg, run.split, run.batches
    if resume and rundir.has_checkpoints():  # (config and catalog were written before any checkpoint)
        check_resume(rundir, cfg, split.data.catalog)
    rundir.write_config(cfg, run.model_config, run.loss)
    rundir.write_catalog(split.data.catalog, split.train_item_counts())
    mesh = make_mesh(cfg.num_devices, cfg.model_parallel)
    state = place(run.state, mesh)
    run.state = None  # the placed copy is the state now (on several devices place() copies)
    run._scorer.first.params = None  # validation sets the current parameters; keep no initial copy
    ckpt = rundir.checkpoints(cfg.keep_last)
    ls = LoopState()
    if resume:
        restored, meta = ckpt.restore("last", state)
        if restored is not None:
            moved, first, last = rundir.set_aside_log_after(int(restored["step"]))
            state, ls = place(restored, mesh), LoopState.from_meta(meta)
        print(resume_line(rundir, ls, cfg, restored is not None))
        if restored is not None and moved:
            print(f"resume: {moved} records of steps {first}-{last} in metrics.jsonl, training after that "
                  f"checkpoint which is done again now, moved to {rundir.redone_path.name}")
    loss_fn = make_loss_fn(run.loss, cfg, split.data.num_items, batches.neg.prob,
                           mesh=mesh if cfg.retrieval.shard_negatives else None,
                           teacher_table=distillation(cfg, run.loss, batches, split.data.catalog, progress))
    train_step = make_train_step(run.graphdef, loss_fn, run.tx, run.model_config["dtype"],
                                 state_shardings(state, mesh), cfg.ema_decay)
    t_start = time.perf_counter() - ls.elapsed
    budget_s = None if cfg.max_minutes is None else 60 * cfg.max_minutes
    lp = Loop(run, rundir, ckpt, mesh, train_step, progress, t_start,
              None if budget_s is None else t_start + budget_s, budget_s)
    print(f"training {cfg.model} ({run.loss}) on {split.data.name}: {split.data.num_users:,} users, "
          f"{split.data.num_items:,} items, {batches.batches_per_epoch} batches/epoch, "
          f"{jax.device_count()} {jax.default_backend()} device(s)")
    stop = "epochs" if ls.epoch >= cfg.epochs else None
    with stop_on_signals() as lp.stop_request:
        while stop is None:
            state, over_time = run_epoch(lp, state, ls)
            if lp.stop_request:
                stop_now(lp, state, ls)
            stop = validate_and_save(lp, state, ls, over_time)
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state["params"])
    del state  # restoring the best checkpoint next: never two training states at once
    return finish(lp, like, ls, stop)
