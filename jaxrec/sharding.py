"""Device mesh and placement: data parallel by default, the same code on 1 or N devices.

The mesh has axes ``("data", "model")``. Batches are split along ``data``; parameters and
optimizer state are replicated (item-table sharding along ``model`` for huge catalogs is
the planned extension). Test on CPU with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxrec.errors import UserError


def make_mesh(num_devices: int | None = None) -> Mesh:
    devs = jax.devices()
    n = num_devices or len(devs)
    if n > len(devs):
        raise UserError(f"asked for {n} devices, only {len(devs)} available")
    return Mesh(np.array(devs[:n]).reshape(n, 1), ("data", "model"))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Split every array's leading (batch) axis over ``data``."""
    n = mesh.shape["data"]
    for k, v in batch.items():
        if v.shape[0] % n:
            raise UserError(f"batch size {v.shape[0]} ({k}) is not divisible by {n} devices")
    return jax.device_put(batch, NamedSharding(mesh, P("data")))
