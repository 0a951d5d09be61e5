"""Mixture-of-logits similarity (MoL; Zhai et al., KDD'23; Ding & Zhai, "RAILS", WWW'25).

A dot product scores a (user, item) pair with one rank-D bilinear form. MoL scores it with
``P = P_Q x P_X`` of them and a gate that decides, per pair, how much each one counts:

    f_p(u): P_Q unit vectors of d' from the user state (an MLP)       # (..., P_Q, d')
    g_q(i): P_X unit vectors of d' from the item's embedding (linear) # (X, P_X, d')
    l_pq   = <f_p(u), g_q(i)> / temperature                           # (..., X, P) P logits
    gate   = softmax_P(SiLU(a(u) * b(i) + c(l)))                      # a, b, c: small MLPs
    score  = sum_pq gate_pq * l_pq

``a(u)`` reads only the user and ``b(i)`` only the item, so both sides still reduce to one
vector each, computed once: ``query`` packs ``[f(u) (P_Q * d'), a(u) (P)]`` and ``items``
``[g(i) (P_X * d'), b(i) (P)]``. That is what lets MoL sit behind the scoring core's
interface unchanged: a retrieval model's ``hidden`` ends with ``query`` (its ``user_side``),
its ``output_table`` rows are ``items`` (its ``item_side``), and every caller that scored
``user @ rows.T`` calls ``model.pair_scores(user, rows)`` instead (``scoring.dot_scores`` for
the others). Only ``c``, the gate's read of the pair's own logits, needs both sides.

Training adds the paper code's load-balancing term (``mi_loss``, weight ``mol_mi_weight``):
the entropy of each pair's gate minus the entropy of the gates' mean, so every component is
used and each pair leans on a few. Gate dropout (``mol_gate_dropout``) drops components of
the gate and renormalises, as the reference's softmax dropout does.

Shapes and defaults are those of the RAILS ML-1M configuration (``hstu-mol-sampled-softmax-
n128-8x4x64``): P_Q = 8, P_X = 4, d' = 64, a SwiGLU query MLP of 512, gate MLPs of 128,
temperature 0.05, gate dropout 0.2, item dropout 0.1, load-balancing weight 0.001. One
difference: the reference gives one of the 8 query groups to a hashed user-id embedding;
jaxrec's retrieval models read histories, not user ids, so all 8 come from the user state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.models.layers import dropout
from jaxrec.numerics import unit_rows

_XAVIER = nnx.initializers.xavier_uniform()


def _linear(i: int, o: int, rngs: nnx.Rngs, bias: bool = True) -> nnx.Linear:
    return nnx.Linear(i, o, use_bias=bias, kernel_init=_XAVIER, rngs=rngs)


class MoLHead(nnx.Module):
    """The learned parts of MoL for a model of width ``dim`` (see the module docstring)."""

    def __init__(self, config, *, rngs: nnx.Rngs):
        c = config
        self.pq, self.px, self.dp = c.mol_query_groups, c.mol_item_groups, c.mol_dim
        self.temperature, self.gate_rate, self.item_rate = c.temperature, c.mol_gate_dropout, c.mol_item_dropout
        p, d = self.pq * self.px, c.dim
        hidden = c.mol_query_hidden
        # query side: SwiGLU(d -> hidden) then linear to P_Q x d' (hidden 0: one linear layer)
        self.q_in = (nnx.Linear(d, 2 * hidden, kernel_init=nnx.initializers.normal(0.02), rngs=rngs)
                     if hidden else None)
        self.q_out = _linear(hidden or d, self.pq * self.dp, rngs)
        self.i_proj = _linear(d, self.px * self.dp, rngs)  # item side: one linear layer
        g = c.mol_gate_hidden
        self.gq = nnx.List([_linear(d, g, rngs), _linear(g, p, rngs, bias=False)])  # a(u)
        self.gi = nnx.List([_linear(d, g, rngs), _linear(g, p, rngs, bias=False)])  # b(i)
        self.gl = nnx.List([_linear(p, g, rngs), _linear(g, p, rngs)])  # c(l)

    @property
    def num_logits(self) -> int:
        return self.pq * self.px

    @staticmethod
    def _mlp(layers, x):
        return layers[1](jax.nn.silu(layers[0](x)))

    def query(self, h: jax.Array) -> jax.Array:
        """(..., D) user states -> (..., P_Q * d' + P): unit components, then the gate's a(u)."""
        x = h
        if self.q_in is not None:
            a, b = jnp.split(self.q_in(x), 2, axis=-1)
            x = jax.nn.silu(a) * b
        f = unit_rows(self.q_out(x).reshape(h.shape[:-1] + (self.pq, self.dp)))  # (..., P_Q, d')
        return jnp.concatenate([f.reshape(h.shape[:-1] + (-1,)), self._mlp(self.gq, h)], axis=-1)

    def items(self, t: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """(..., D) item embeddings -> (..., P_X * d' + P): unit components, then the gate's b(i)."""
        g = unit_rows(self.i_proj(dropout(t, self.item_rate, key)).reshape(t.shape[:-1] + (self.px, self.dp)))
        return jnp.concatenate([g.reshape(t.shape[:-1] + (-1,)), self._mlp(self.gi, t)], axis=-1)

    def scores(self, u: jax.Array, e: jax.Array, key: jax.Array | None = None, gates: bool = False):
        """MoL scores of ``query`` outputs against ``items`` outputs.

        ``u`` (..., U) and ``e`` (..., X, I) with leading dims that broadcast against each other
        (a (X, I) table scores every user against every row) -> (..., X) float32; with
        ``gates`` also the (..., X, P) gate probabilities (for the load-balancing term).
        """
        pq, px, dp, p = self.pq, self.px, self.dp, self.num_logits
        f = u[..., : pq * dp].reshape(u.shape[:-1] + (pq, dp))  # (..., P_Q, d')
        g = e[..., : px * dp].reshape(e.shape[:-1] + (px, dp))  # (..., X, P_X, d')
        if e.ndim == 2:  # one table for every user
            logits = jnp.einsum("...pd,xqd->...xpq", f, g)
        else:
            logits = jnp.einsum("...pd,...xqd->...xpq", f, g)
        logits = logits.reshape(logits.shape[:-2] + (p,)).astype(jnp.float32) / self.temperature  # (..., X, P)
        a = u[..., None, pq * dp:].astype(jnp.float32)  # (..., 1, P)
        b = e[..., px * dp:].astype(jnp.float32)  # (..., X, P)
        z = a * b + self._mlp(self.gl, logits)
        w = jax.nn.softmax(jax.nn.silu(z), axis=-1)  # (..., X, P)
        if key is not None and self.gate_rate:
            w = dropout(w, self.gate_rate, key)
            w = w / jnp.maximum(w.sum(-1, keepdims=True), 1e-6)
        s = (w * logits).sum(-1)
        return (s, w) if gates else s

    @staticmethod
    def load_balancing(gates: jax.Array, weights: jax.Array | None = None, eps: float = 1e-6) -> jax.Array:
        """The reference's ``mi_loss`` from (..., X, P) gate probabilities: the mean entropy of one
        pair's gate minus the entropy of the mean gate (lower: components used evenly overall, few
        per pair). ``weights`` (...,): 1 where a pair's position is real (padding counts nothing)."""
        w = jnp.ones(gates.shape[:-2]) if weights is None else weights.astype(jnp.float32)
        wx = jnp.broadcast_to(w[..., None], gates.shape[:-1])  # (..., X)
        n = jnp.maximum(wx.sum(), 1.0)
        util = (gates * wx[..., None]).reshape(-1, gates.shape[-1]).sum(0) / n  # (P,)
        util_entropy = -(util * jnp.log(util + eps)).sum()
        pair_entropy = -((gates * jnp.log(gates + eps)).sum(-1) * wx).sum() / n
        return pair_entropy - util_entropy


def mol_head(config, rngs: nnx.Rngs) -> MoLHead | None:
    """A retrieval model's MoL head when ``similarity="mol"`` (else None)."""
    return MoLHead(config, rngs=rngs) if getattr(config, "similarity", "dot") == "mol" else None

