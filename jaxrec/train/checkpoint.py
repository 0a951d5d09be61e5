"""Orbax checkpoints of a training run: the last N and the best by validation NDCG@10.

Layout of a run directory::

    DIR/config.json            TrainConfig (+ resolved model config)
    DIR/catalog.json           item catalog: external ids, titles, features
    DIR/checkpoints/last/<step>/   params, optimizer state, step + trainer meta (JSON)
    DIR/checkpoints/best/<step>/   the same, for the best validation result
    DIR/metrics.jsonl, DIR/results.json

The trainer meta holds everything else a resumed run needs (epoch, position in the epoch,
early-stopping counters, elapsed time); the RNG is derived from (seed, step), so restoring
``step`` restores the random stream too.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


def _manager(path: Path, keep: int) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(path.resolve(), options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=False))


class RunCheckpoints:
    def __init__(self, run_dir: str | Path, keep_last: int = 2):
        root = Path(run_dir) / "checkpoints"
        self.last = _manager(root / "last", keep_last)
        self.best = _manager(root / "best", 1)

    @staticmethod
    def _save(mgr, step: int, state, meta: dict) -> None:
        mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)), force=True)
        mgr.wait_until_finished()

    def save_last(self, step: int, state, meta: dict) -> None:
        self._save(self.last, step, state, meta)

    def save_best(self, step: int, state, meta: dict) -> None:
        self._save(self.best, step, state, meta)

    @staticmethod
    def restore(mgr: ocp.CheckpointManager, like, step: int | None = None):
        """Restore (state, meta) with the structure, shapes and shardings of ``like``."""
        step = mgr.latest_step() if step is None else step
        if step is None:
            return None, None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                        meta=ocp.args.JsonRestore()))
        return out.state, out.meta

    def close(self) -> None:
        self.last.close()
        self.best.close()


def restore_run(run_dir: str | Path, state_like, which: str = "best"):
    """(state, meta) of a finished run's ``best`` or ``last`` checkpoint (None, None if none)."""
    mgr = _manager(Path(run_dir) / "checkpoints" / which, 1)
    try:
        return RunCheckpoints.restore(mgr, state_like)
    finally:
        mgr.close()
