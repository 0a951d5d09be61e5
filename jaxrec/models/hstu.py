"""HSTU (Zhai et al., ICML 2024, "Actions Speak Louder than Words").

A Hierarchical Sequential Transduction Unit replaces softmax attention with pointwise
aggregated attention and adds a gating branch:

    U, V, Q, K = split(SiLU(W1 LN(x)))                      # (B, L, 4 * ...)
    A = SiLU(Q K^T + rab(i - j)) / n   (causal, real keys)   # (B, H, L, L) no softmax
    x = x + dropout(W2 (LN(A V) * U))                        # gate by U

``rab`` is a learned relative position bias per head and clipped distance; SiLU weights do
not sum to one, so the magnitude of A V carries how much relevant history there is
(the paper's argument for dropping softmax). n = max_len, as in the reference code.

With ``time_buckets`` > 0 (the paper: 128) ``rab`` also has a relative *time* term: a learned
weight per head and bucket of ``t_query(i) - t_j``, bucketed logarithmically
(``floor(ln max(|dt|, 1) / 0.301)``, as in generative-recommenders). Position i predicts the
next event, so its query time is that event's time ``t_{i+1}``: ``times`` is (B, L + 1), the
history's times plus the time of the prediction (in evaluation the last history time, as the
reference does; in serving the request's time). Only differences matter, so any epoch works.
The ML-1M and Beauty benchmark files carry no timestamps; data that has them (``ml-dat``,
``ml-csv``, generic files with a time column, the synthetic data) can use it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.errors import UserError
from jaxrec.models.base import HSTUConfig, ModelConfig, RetrievalModel
from jaxrec.models.layers import (attention_mask, dropout, item_embeddings, output_embeddings,
                                  positions_from_first_item, split_key)
from jaxrec.models.mol import mol_head


TIME_BUCKET_SCALE = 0.301  # bucket width in ln(seconds): each bucket spans 1.35x the previous


def time_buckets(times: jax.Array, num_buckets: int) -> jax.Array:
    """(B, L + 1) event times -> (B, L, L) bucket of ``times[i + 1] - times[j]``."""
    dt = (times[:, 1:, None] - times[:, None, :-1]).astype(jnp.float32)  # (B, L, L)
    b = jnp.floor(jnp.log(jnp.maximum(jnp.abs(dt), 1.0)) / TIME_BUCKET_SCALE)
    return jnp.clip(b, 0, num_buckets).astype(jnp.int32)


class HSTULayer(nnx.Module):
    def __init__(self, dim: int, heads: int, max_len: int, rate: float, *, rngs: nnx.Rngs,
                 num_time_buckets: int = 0):
        self.heads, self.rate, self.max_len = heads, rate, max_len
        self.ln_in = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
        self.uvqk = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.ln_av = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
        self.out = nnx.Linear(dim, dim, rngs=rngs)
        self.rab = nnx.Param(jnp.zeros((heads, 2 * max_len - 1)))  # bias per head, per i - j
        # bias per head, per time bucket (bucket num_time_buckets holds everything beyond)
        self.rab_time = (nnx.Param(0.02 * jax.random.normal(rngs.params(), (heads, num_time_buckets + 1)))
                         if num_time_buckets else None)  # N(0, 0.02) as in the reference

    def __call__(self, x, mask, key=None, buckets=None):
        b, l, d = x.shape
        h = self.heads
        k1, k2 = split_key(key, 2)
        u, v, q, k = jnp.split(jax.nn.silu(self.uvqk(self.ln_in(x))), 4, axis=-1)
        q, k, v = (t.reshape(b, l, h, d // h).transpose(0, 2, 1, 3) for t in (q, k, v))  # (B, H, L, Dh)
        rel = jnp.arange(l)[:, None] - jnp.arange(l)[None, :] + self.max_len - 1  # (L, L)
        bias = self.rab[...][:, jnp.clip(rel, 0, 2 * self.max_len - 2)][None]  # (1, H, L, L)
        if self.rab_time is not None:
            bias = bias + jnp.moveaxis(self.rab_time[...][:, buckets], 0, 1)  # (B, H, L, L)
        a = jax.nn.silu(jnp.einsum("bhqd,bhkd->bhqk", q, k) + bias) / self.max_len
        a = jnp.where(mask, a, 0.0)  # (B, H, L, L)
        av = jnp.einsum("bhqk,bhkd->bhqd", dropout(a, self.rate, k1), v)  # (B, H, L, Dh)
        av = av.transpose(0, 2, 1, 3).reshape(b, l, d)
        y = self.out(self.ln_av(av) * u)
        return x + dropout(y, self.rate, k2), a


class HSTU(RetrievalModel):
    config_cls = HSTUConfig

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, item_features=None):
        self.config = config
        d = config.dim
        self.item_emb, self.item_feats = item_embeddings(config.num_items + 1, d, item_features, rngs,
                                                         config.table_rows_multiple, config.embed_init_std)
        self.out_emb = output_embeddings(config, rngs)
        self.pos_emb = nnx.Embed(config.max_len, d, rngs=rngs,
                                 embedding_init=nnx.initializers.normal(stddev=0.02))
        self.layers = nnx.List([HSTULayer(d, config.heads, config.max_len, config.dropout, rngs=rngs,
                                          num_time_buckets=config.time_buckets)
                                for _ in range(config.blocks)])
        self.final_ln = nnx.LayerNorm(d, epsilon=1e-6, rngs=rngs)
        # last, so the encoder's parameters are the same draws as without it
        self.mol = mol_head(config, rngs)  # similarity="mol": the mixture-of-logits head, else None

    def _forward(self, items, key, times=None):
        cfg = self.config
        buckets = None
        if cfg.time_buckets:
            if times is None:
                raise UserError("this HSTU uses relative time bias (time_buckets="
                                f"{cfg.time_buckets}): pass the history's event times")
            if times.shape != (items.shape[0], items.shape[1] + 1):
                raise ValueError(f"times must be (B, L + 1) = {(items.shape[0], items.shape[1] + 1)}, "
                                 f"got {times.shape}")
            buckets = time_buckets(times, cfg.time_buckets)  # (B, L, L)
        keys = split_key(key, len(self.layers) + 1)
        real = (items > 0)[..., None]
        x = self.item_rows(items) * jnp.sqrt(float(cfg.dim))
        x = x + self.pos_emb(positions_from_first_item(items))
        x = dropout(x, cfg.dropout, keys[0]) * real
        mask = attention_mask(items, causal=True)
        a = None
        for layer, k in zip(self.layers, keys[1:]):
            x, a = layer(x, mask, k, buckets)
            x = x * real
        return self.user_side(self.final_ln(x)), a  # (B, L, D)

    def hidden(self, items, key=None, times=None):
        return self._forward(items, key, times)[0]

    def encode_explained(self, history, times=None):
        h, a = self._forward(history, None, times)
        a = jnp.abs(a[:, :, -1, :]).mean(axis=1) * (history > 0)  # (B, L) SiLU weights, unnormalised
        return h[:, -1, :], a / jnp.maximum(a.sum(-1, keepdims=True), 1e-9)
