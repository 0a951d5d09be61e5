"""Numeric helpers the models and the scoring core share.

It sits below both layers (it imports only JAX) so that the serving path, which loads exported
functions and must not import ``jaxrec.models`` (``tests/test_server.py``), can use it too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def unit_rows(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Rows scaled to unit length (computed in float32, returned in ``x``'s dtype; a row shorter
    than ``eps`` is divided by ``eps``, so zero rows stay zero): dot products of unit rows are
    cosine similarities. The clamp is on the squared norm, so a zero row (a padding position's
    state) has a zero gradient, not ``linalg.norm``'s NaN at 0."""
    x32 = x.astype(jnp.float32)
    sq = jnp.sum(x32 * x32, axis=-1, keepdims=True)
    return (x32 * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))).astype(x.dtype)
