"""The run directory and its one owner: every file of a run is written and read here.

    DIR/config.json                 {"train": Config, "model": resolved model settings, "loss"}
    DIR/catalog.json                item catalog: external ids, titles, features
    DIR/item_counts.npy             training popularity (the server's cold-start list)
    DIR/checkpoints/last/<step>/    Orbax items: params, opt (optimizer state), meta (JSON)
    DIR/checkpoints/best/<step>/    the same, for the best validation result
    DIR/metrics.jsonl, DIR/results.json
    DIR/metrics.redone.jsonl        records a killed piece logged after its last checkpoint
                                    (set aside by --resume, which trains those steps again)

Parameters and optimizer state are separate Orbax items, so serving and evaluation restore the
parameters alone and never build an optimizer. Run directories written before that (one
``state`` item holding params, opt and step) still load: their parameters are read with a
partial restore of that item. ``meta`` holds everything else a resumed run needs (the loop
state, ``trainer.LoopState``); the RNG is derived from (seed, step), so restoring the step
restores the random stream too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxrec.data import ItemCatalog
from jaxrec.errors import UserError
from jaxrec.models import build_model
from jaxrec.train.config import Config

CHECKPOINT_KINDS = ("best", "last")


class CheckpointError(UserError):
    """A checkpoint could not be written (the message names the step, directory and cause)."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The resolved model of a run: what readers need without building it."""

    name: str  # registry name as given, e.g. "sasrec/plus"
    kind: str  # "retrieval" | "ranking"
    max_len: int
    dtype: str
    uses_time: bool
    settings: dict  # every setting of the family's config class, resolved

    @classmethod
    def from_json(cls, d: dict, name: str) -> "ModelInfo":
        kind = d.get("kind") or ("ranking" if d.get("class") in ("TargetAttention", "BST", "EncoderDecoder")
                                 else "retrieval")
        return cls(name, kind, int(d["max_len"]), d.get("dtype") or "float32",
                   int(d.get("time_buckets", 0) or 0) > 0, d)


class Loaded(NamedTuple):
    graphdef: object
    params: object
    step: int
    config: Config
    info: ModelInfo
    catalog: ItemCatalog


def _manager(path: Path, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(path.resolve(), options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only, enable_async_checkpointing=False))


def _writer() -> bool:
    """Only process 0 of a multi-process run writes the run directory's files (Orbax
    coordinates the checkpoints itself)."""
    return jax.process_index() == 0


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class RunDir:
    """A run directory: paths, the typed config, the catalog, checkpoints."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._config: dict | None = None

    # ------------------------------------------------------------ paths

    config_path = property(lambda self: self.path / "config.json")
    catalog_path = property(lambda self: self.path / "catalog.json")
    counts_path = property(lambda self: self.path / "item_counts.npy")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    results_path = property(lambda self: self.path / "results.json")

    def checkpoints_dir(self, which: str) -> Path:
        if which not in CHECKPOINT_KINDS:
            raise UserError(f"checkpoint {which!r}: use one of {', '.join(CHECKPOINT_KINDS)}")
        return self.path / "checkpoints" / which

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run directory (a clear error when it is not one)."""
        rd = cls(path)
        if not rd.config_path.exists():
            raise UserError(f"{rd.path}: not a jaxrec run directory (no config.json)")
        return rd

    def has_checkpoints(self) -> bool:
        root = self.path / "checkpoints"
        return root.exists() and any(p.iterdir() for p in root.iterdir() if p.is_dir())

    # ------------------------------------------------------------ config, catalog, logs

    def stored_config(self) -> dict:
        """config.json as written, read once per RunDir (``write_config`` replaces it)."""
        if self._config is None:
            self._config = json.loads(self.config_path.read_text())
        return self._config

    def config(self) -> Config:
        """The run's typed config (old, flat run directories are read into the sections)."""
        return Config.from_dict(self.stored_config()["train"])

    def model_info(self) -> ModelInfo:
        d = self.stored_config()
        return ModelInfo.from_json(d["model"], d["train"]["model"])

    def loss(self) -> str:
        return self.stored_config()["loss"]

    def write_config(self, cfg: Config, model: dict, loss: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._config = {"train": cfg.to_dict(), "model": model, "loss": loss}
        if _writer():
            self.config_path.write_text(json.dumps(self._config, indent=2))

    def catalog(self) -> ItemCatalog:
        return ItemCatalog.load(self.catalog_path)

    def write_catalog(self, catalog: ItemCatalog, item_counts: np.ndarray) -> None:
        if not _writer():
            return
        catalog.save(self.catalog_path)
        np.save(self.counts_path, item_counts)

    def item_counts(self, num_items: int) -> np.ndarray:
        """(N+1,) training popularity; zeros for a run directory without the file."""
        return np.load(self.counts_path) if self.counts_path.exists() else np.zeros(num_items + 1)

    def log(self, record: dict) -> None:
        if not _writer():
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    redone_path = property(lambda self: self.path / "metrics.redone.jsonl")

    def set_aside_log_after(self, step: int) -> tuple[int, int, int]:
        """Move metrics.jsonl's records of steps after ``step`` (training a resume from that
        checkpoint does again) to metrics.redone.jsonl, with the test record (written after
        training, so a kill between it and results.json would leave it twice), so the log reads
        as one run: no step twice, nothing lost. Returns (records moved, first and last step moved)."""
        if not _writer() or not self.metrics_path.exists():
            return 0, 0, 0
        keep, moved, steps = [], [], []
        for line in self.metrics_path.read_text().splitlines(keepends=True):
            try:
                rec = json.loads(line)
                s = int(rec.get("step", -1))
                final = rec.get("split") == "test"  # written after training: every resume writes it again
            except (ValueError, AttributeError, TypeError):
                s, final = -1, False  # a line cut by a kill, or not a record: kept where it was
            if s > step or final:
                moved.append(line)
                if s > step:
                    steps.append(s)
            else:
                keep.append(line)
        if not moved:
            return 0, 0, 0
        with open(self.redone_path, "a") as f:
            f.writelines(moved)
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(keep))
        tmp.replace(self.metrics_path)
        return len(moved), min(steps, default=step), max(steps, default=step)

    def write_results(self, results: dict) -> None:
        if _writer():
            self.results_path.write_text(json.dumps(results, indent=2))

    # ------------------------------------------------------------ checkpoints

    def latest_step(self, which: str = "best") -> int | None:
        d = self.checkpoints_dir(which)
        # committed checkpoints only: Orbax writes into "<step>.orbax-checkpoint-tmp-*" and renames
        steps = [int(p.name) for p in d.glob("[0-9]*")
                 if p.name.isdigit() and p.is_dir() and (p / "_CHECKPOINT_METADATA").exists()]
        return max(steps) if steps else None

    def restore_params(self, params_like, which: str = "best"):
        """(params, step) of the ``which`` checkpoint, the parameters alone: no optimizer is
        built. ``params_like`` gives structure, shapes and dtypes. (None, None) if none yet."""
        step = self.latest_step(which)
        if step is None:
            return None, None
        mgr = _manager(self.checkpoints_dir(which), 1, read_only=True)
        _drop_late_tensorstore_callbacks()
        try:
            abstract = _abstract(params_like)
            if (self.checkpoints_dir(which) / str(step) / "params").exists():
                out = mgr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))
                return out.params, step
            # the layout before parameters had their own item: a partial restore of "state"
            like = {"params": abstract}
            device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), like)
            _quiet_orbax()
            out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=like, restore_args=restore_args, partial_restore=True)))
            return out.state["params"], step
        finally:
            mgr.close()

    def load_model(self, which: str = "best") -> "Loaded":
        """The run's model as trained: config, model info, catalog, graph and the ``which``
        checkpoint's parameters (an error when there is none yet)."""
        config, info, catalog = self.config(), self.model_info(), self.catalog()
        model = build_model(config.model, catalog.num_items, config.seed, catalog=catalog, **config.model_args)
        graphdef, params = nnx.split(model)
        params, step = self.restore_params(params, which)
        if params is None:
            raise UserError(f"{self.path}: no {which!r} checkpoint yet")
        return Loaded(graphdef, params, step, config, info, catalog)

    def checkpoint_meta(self, which: str = "last") -> dict | None:
        """The loop state saved with the latest ``which`` checkpoint (``trainer.LoopState`` and
        the step), read from its JSON item without Orbax; None when there is none."""
        step = self.latest_step(which)
        f = None if step is None else self.checkpoints_dir(which) / str(step) / "meta" / "metadata"
        if f is None or not f.exists():
            return None
        try:
            return json.loads(f.read_text())
        except ValueError:
            return None

    def summary(self) -> dict:
        """Where the run stands, from its files: what it trains, how far it got (epochs, the
        training clock against its budget), its best and latest validation, its test result once
        it has ended. A run with checkpoints and no results.json is running, or was stopped and
        ``--resume`` continues it."""
        cfg = self.config()
        meta = self.checkpoint_meta("last")
        last_valid = None
        if self.metrics_path.exists():
            for line in self.metrics_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if isinstance(rec, dict) and rec.get("split") == "valid":
                    last_valid = rec
        res = json.loads(self.results_path.read_text()) if self.results_path.exists() else None
        out = {"path": str(self.path), "model": cfg.model, "loss": self.loss(), "data": cfg.data,
               "seed": cfg.seed, "max_minutes": cfg.max_minutes, "max_epochs": cfg.epochs,
               "epoch": None, "batch": 0, "trained_min": None, "best_valid": None, "best_epoch": None,
               "last_valid": None, "last_valid_epoch": None, "test": None, "stopped_by": None,
               "state": "no checkpoint yet"}
        if meta is not None:
            out |= {"epoch": meta["epoch"], "batch": meta.get("batch", 0), "trained_min": meta["elapsed"] / 60,
                    "best_valid": meta.get("best"), "best_epoch": meta.get("best_epoch"),
                    "state": "not finished: running, or stopped (--resume continues it)"}
        if last_valid is not None:
            name = next((k for k in ("NDCG@10", "GAUC") if k in last_valid), None)
            out |= {"last_valid": last_valid.get(name), "last_valid_epoch": last_valid["epoch"]}
        if res is not None:
            best = dict(res.get("best_valid") or {})
            best_epoch = best.pop("epoch", out["best_epoch"])
            out |= {"test": res["metrics"], "stopped_by": res.get("stop_reason"), "state": "finished", "batch": 0,
                    "epoch": res.get("epochs", out["epoch"]), "trained_min": res.get("train_seconds", 0) / 60,
                    "best_valid": next(iter(best.values()), out["best_valid"]), "best_epoch": best_epoch}
        return out

    def checkpoints(self, keep_last: int = 2) -> "Checkpoints":
        return Checkpoints(self, keep_last)


def _is_late_tensorstore_callback(u) -> bool:
    """An unraisable RuntimeError("Event loop is closed") raised in ``call_soon_threadsafe``
    called from outside Python (the TensorStore thread finishing a read)."""
    tb = u.exc_traceback
    return (isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed"
            and tb is not None and tb.tb_frame.f_code.co_name == "call_soon_threadsafe")


def _drop_late_tensorstore_callbacks() -> None:
    """A restore that fails (a partial or corrupt checkpoint) ends Orbax's event loop while
    TensorStore still has reads in flight; as each is finished or garbage-collected, TensorStore
    calls the closed loop and Python prints "Exception ignored ... Event loop is closed" for it:
    dozens of tracebacks after the one line a refused checkpoint promises in the server's log.
    Nothing waits for those reads: this drops exactly those reports and passes every other on
    to the hook it wraps (installed once)."""
    hook = sys.unraisablehook
    if getattr(hook, "jaxrec_wrapped", False):
        return

    def hook_without_late_callbacks(u):
        if not _is_late_tensorstore_callback(u):
            hook(u)

    hook_without_late_callbacks.jaxrec_wrapped = True
    sys.unraisablehook = hook_without_late_callbacks


def _quiet_orbax() -> None:
    """A partial restore makes Orbax warn about every item it was not asked for."""
    logging.getLogger("absl").setLevel(logging.ERROR)


class Checkpoints:
    """The training side: save and restore (params, opt, step) + meta, last N and best.

    With ``Config.ema_decay`` the state also holds ``"ema"``: a checkpoint's ``params`` item is
    then the average (what validation chose and every reader of the run loads), and the
    iterate the optimizer continues from is its ``train_params`` item (only ``--resume`` reads it)."""

    def __init__(self, rundir: RunDir, keep_last: int = 2):
        self.rundir = rundir
        for which in CHECKPOINT_KINDS:  # what a killed save left behind: never committed, never read
            if _writer():
                self._remove_partial(which)
        self.managers = {"last": _manager(rundir.checkpoints_dir("last"), keep_last),
                         "best": _manager(rundir.checkpoints_dir("best"), 1)}

    def _remove_partial(self, which: str) -> None:
        for tmp in self.rundir.checkpoints_dir(which).glob("*.orbax-checkpoint-tmp*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def save(self, which: str, state: dict, meta: dict) -> None:
        """Save atomically (Orbax writes a temporary directory and renames it when complete).
        A failed save (a full disk, a lost mount) is a ``CheckpointError`` naming the step and
        the directory; what was saved before stays intact."""
        step = int(state["step"])
        mgr = self.managers[which]
        if step in mgr.all_steps():
            # a resumed run re-trains from its last checkpoint and reaches a step whose best
            # checkpoint the killed run had already committed: training is deterministic, so
            # that checkpoint is this one; keep it (deleting it first would open a window
            # in which a second kill loses it)
            return
        try:
            items = {"params": ocp.args.StandardSave(state.get("ema", state["params"])),
                     "opt": ocp.args.StandardSave(state["opt"]), "meta": ocp.args.JsonSave(meta | {"step": step})}
            if "ema" in state:
                items["train_params"] = ocp.args.StandardSave(state["params"])
            mgr.save(step, args=ocp.args.Composite(**items), force=True)
            mgr.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - any failure to write is reported the same way
            d = self.rundir.checkpoints_dir(which)
            try:  # Orbax's writer threads may still be adding files to the attempt: let them end
                mgr.wait_until_finished()
            except Exception:  # noqa: BLE001 - the same failure, already being reported
                pass
            clean = 0  # the half-written attempt; Orbax's threads may recreate it for a while
            for _ in range(50):
                self._remove_partial(which)
                clean = clean + 1 if not any(d.glob("*.orbax-checkpoint-tmp*")) else 0
                if clean >= 5:  # gone, and stayed gone for half a second
                    break
                time.sleep(0.1)
            last = self.rundir.latest_step(which)
            raise CheckpointError(
                f"saving the {which!r} checkpoint of step {step} in {d} failed: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}; the last good one "
                f"({'step ' + str(last) if last is not None else 'none yet'}) is intact") from None

    def restore(self, which: str, like: dict):
        """(state, meta) of the latest ``which`` checkpoint with the structure, shapes and
        shardings of ``like`` = {"params", "opt", "step"[, "ema"]} (or {"params"} alone: parameters
        only, no optimizer state read: with ema_decay the average); (None, None) when there is none."""
        mgr = self.managers[which]
        step = mgr.latest_step()
        if step is None:
            return None, None
        _drop_late_tensorstore_callbacks()
        if "opt" not in like and (self.rundir.checkpoints_dir(which) / str(step) / "params").exists():
            out = mgr.restore(step, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(_abstract(like["params"])), meta=ocp.args.JsonRestore()))
            meta = dict(out.meta)
            return {"params": out.params, "step": jnp.asarray(meta.pop("step"), jnp.int32)}, meta
        if (self.rundir.checkpoints_dir(which) / str(step) / "state").exists():  # the older layout
            out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(like)),
                                                            meta=ocp.args.JsonRestore()))
            return out.state, out.meta
        items = {"params": ocp.args.StandardRestore(_abstract(like.get("ema", like["params"]))),
                 "opt": ocp.args.StandardRestore(_abstract(like["opt"])), "meta": ocp.args.JsonRestore()}
        if "ema" in like:
            items["train_params"] = ocp.args.StandardRestore(_abstract(like["params"]))
        out = mgr.restore(step, args=ocp.args.Composite(**items))
        meta = dict(out.meta)
        state = {"params": out.params, "opt": out.opt, "step": jnp.asarray(meta.pop("step"), jnp.int32)}
        if "ema" in like:
            state["ema"], state["params"] = out.params, out.train_params
        return state, meta

    def close(self) -> None:
        for m in self.managers.values():
            m.close()
