"""Device mesh and placement: the same code on 1 device, N devices, or a 2-D mesh.

The mesh has axes ``("data", "model")``. Placement follows rules, never call sites:

* ``RULES`` maps *logical* axes to mesh axes: ``batch`` -> ``data`` (every batch array is
  split along its leading axis) and ``item_vocab`` -> ``model`` (the item tables are split by
  rows, so a 10M-item table costs each device 1/M of it);
* ``PARAM_AXES`` names the logical axes of a parameter by where it sits in the model
  (``item_emb`` / ``out_emb`` embedding tables: ``("item_vocab", None)``); optimizer moments
  sit at the same paths under ``opt`` and follow the same rule; anything else is replicated.

With the item table sharded, XLA's partitioner (GSPMD) does the rest: catalog scores
``h @ table.T`` are computed per shard and the softmax's log-sum-exp becomes a cross-shard
reduction; gathers of sampled negatives' rows become collectives; an optimizer step updates
each shard where it lives. ``tests/test_sharding.py`` checks a (data 2 x model 4) mesh of
fake CPU devices against one device. A sharded table needs rows divisible by the model axis:
``train_mesh`` asks the model for ``table_rows_multiple`` rows (``ModelConfig``).
Test on CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``.

Several processes (hosts) run one program on JAX's own runtime (``initialize_distributed`` =
``jax.distributed.initialize``; no home-made orchestration): the mesh spans every process's
devices, every process plans the same global batches (the order is a function of the seed)
and reads and builds only the rows of its own devices (``TrainBatches.epoch(part=...)``,
``jax.make_array_from_process_local_data``), Orbax
saves and restores the global arrays, and only process 0 writes the run directory's files.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxrec.errors import UserError

RULES = {"batch": "data", "item_vocab": "model"}  # logical axis -> mesh axis
PARAM_AXES = {("item_emb", "embedding"): ("item_vocab", None),  # path tail -> logical axes
              ("out_emb", "embedding"): ("item_vocab", None)}


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Join a multi-process run. Without arguments JAX detects the cluster (TPU pods, SLURM,
    Open MPI); on other machines give the coordinator's host:port, the process count and this
    process's id. CPU devices exchange collectives through gloo. Call before any other JAX use."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"joining the multi-process run failed: {e}") from None


def is_writer() -> bool:
    """Whether this process writes shared files (logs, results): process 0 of a multi-process run."""
    return jax.process_index() == 0


def _global(value, sharding):
    """A global array from a host value every process holds in full: each process supplies the
    shards of its own devices (``device_put`` would need them all addressable)."""
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def make_mesh(num_devices: int | None = None, model_parallel: int = 1) -> Mesh:
    """A (data, model) mesh over the first ``num_devices`` devices (all by default); the
    ``model`` axis (item-table shards) has ``model_parallel`` devices."""
    devs = jax.devices()
    n = num_devices or len(devs)
    if n > len(devs):
        raise UserError(f"asked for {n} devices, only {len(devs)} available")
    if model_parallel < 1 or n % model_parallel:
        raise UserError(f"model_parallel={model_parallel} must divide the {n} devices")
    return Mesh(np.array(devs[:n]).reshape(n // model_parallel, model_parallel), ("data", "model"))


def logical_spec(axes) -> P:
    """Logical axes -> a PartitionSpec over mesh axes, by ``RULES``."""
    return P(*(None if a is None else RULES[a] for a in axes))


def _keys(path) -> tuple:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def param_spec(path, leaf) -> P:
    """The PartitionSpec of one state leaf from its path (``PARAM_AXES``), else replicated."""
    keys = [k for k in _keys(path) if k != "value"]
    for tail, axes in PARAM_AXES.items():
        if tuple(keys[-len(tail):]) == tail and getattr(leaf, "ndim", 0) == len(axes):
            return logical_spec(axes)
    return P()


def table_mesh(params) -> Mesh | None:
    """The mesh whose ``model`` axis (of 2 or more devices) splits the item tables of
    ``params`` by rows, or None (a table on one device, or replicated)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        sh = getattr(leaf, "sharding", None)
        if (param_spec(path, leaf) != P() and isinstance(sh, NamedSharding) and "model" in sh.mesh.axis_names
                and sh.mesh.shape["model"] > 1 and len(sh.spec) and sh.spec[0] == "model"):
            return sh.mesh
    return None


def state_shardings(tree, mesh: Mesh):
    """The NamedSharding of every leaf of a parameter / train-state tree on ``mesh``."""
    def one(path, leaf):
        spec = param_spec(path, leaf)
        for dim, ax in zip(getattr(leaf, "shape", ()), spec):
            if ax is not None and dim % mesh.shape[ax]:
                raise UserError(f"{jax.tree_util.keystr(path)}: {dim} rows do not split over {mesh.shape[ax]} "
                                f"'{ax}' devices; build the model with table_rows_multiple={mesh.shape[ax]}")
        return NamedSharding(mesh, spec)
    return jax.tree_util.tree_map_with_path(one, tree)


def place(tree, mesh: Mesh):
    """Put a parameter / train-state tree on ``mesh`` by the rules (replicated where none applies)."""
    shardings = state_shardings(tree, mesh)
    if jax.process_count() > 1:
        return jax.tree.map(_global, tree, shardings)
    return jax.device_put(tree, shardings)


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def local_rows(mesh: Mesh) -> tuple[int, int, int]:
    """(lo, hi, n): this process's devices hold rows lo/n .. hi/n of every batch (``shard_batch``
    splits the batch axis over the ``data`` axis's n positions); the whole batch on one process."""
    n = mesh.shape["data"]
    mine = [d for d in range(n) if any(dev.process_index == jax.process_index() for dev in mesh.devices[d])]
    if not mine or mine != list(range(mine[0], mine[-1] + 1)) or any(
            dev.process_index != jax.process_index() for d in mine for dev in mesh.devices[d]):
        raise UserError("each process must own whole, consecutive rows of the (data, model) mesh: use a "
                        "model_parallel that divides the devices of one process")
    return mine[0], mine[-1] + 1, n


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Split every array's leading (batch) axis over ``data`` (replicated over ``model``). With
    several processes each gives only its own rows (``local_rows``), built from its own data."""
    n = mesh.shape["data"]
    lo, hi, n = local_rows(mesh) if jax.process_count() > 1 else (0, n, n)
    for k, v in batch.items():
        if v.shape[0] % (hi - lo):
            raise UserError(f"batch size {v.shape[0]} ({k}) is not divisible by {hi - lo} data-parallel devices")
    sharding = NamedSharding(mesh, logical_spec(("batch",)))
    if jax.process_count() > 1:
        return {k: jax.make_array_from_process_local_data(sharding, v, (v.shape[0] * n // (hi - lo),) + v.shape[1:])
                for k, v in batch.items()}
    return jax.device_put(batch, sharding)
