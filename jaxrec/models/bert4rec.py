"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional encoder trained by cloze masking.

Training replaces a random fraction (``mask_prob``) of the sequence's items with a [mask]
token (index N+1) and predicts the originals (softmax CE over the catalog). At inference the
history is shifted left by one and [mask] is appended; its output is the user vector.
The network is SASRec's with the causal mask removed (so the same blocks are reused).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.models.base import BERT4RecConfig, ModelConfig
from jaxrec.models.sasrec import SASRec


class BERT4Rec(SASRec):
    config_cls = BERT4RecConfig
    causal = False

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, item_features=None):
        super().__init__(config, rngs=rngs, extra_tokens=1, item_features=item_features)

    @property
    def mask_token(self) -> int:
        return self.config.num_items + 1

    def with_mask_slot(self, history: jax.Array) -> jax.Array:
        """(B, L) history -> (B, L): drop the oldest slot, append [mask] at the end."""
        m = jnp.full((history.shape[0], 1), self.mask_token, history.dtype)
        return jnp.concatenate([history[:, 1:], m], axis=1)

    def encode(self, history, times=None):
        return super().encode(self.with_mask_slot(history))

    def encode_explained(self, history, times=None):
        u, att = super().encode_explained(self.with_mask_slot(history))
        # slot j of the shifted input holds history[j + 1]; the last slot is [mask] itself
        att = jnp.concatenate([jnp.zeros_like(att[:, :1]), att[:, :-1]], axis=1)
        return u, att * (history > 0)

    def cloze(self, seq: jax.Array, key: jax.Array):
        """Mask real items with prob ``mask_prob`` (and always the last one with prob 1/2 of rows).

        Returns (inputs, targets, weights), each (B, L). Masking the last item in half the
        rows trains the exact inference task (predict after the whole history) as well.
        """
        k1, k2 = jax.random.split(key)
        real = seq > 0
        masked = jax.random.bernoulli(k1, self.config.mask_prob, seq.shape) & real
        last = jax.random.bernoulli(k2, 0.5, (seq.shape[0], 1))
        masked = masked.at[:, -1:].set(masked[:, -1:] | (last & real[:, -1:]))
        inputs = jnp.where(masked, self.mask_token, seq)
        return inputs, jnp.where(masked, seq, 0), masked.astype(jnp.float32)
