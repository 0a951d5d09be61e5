"""The retrieval-model interface and its configuration.

Every retrieval model maps a left-padded history (B, L) to hidden states (B, L, D); the
user vector is the state at the last position, and an item's score is its dot product
with the output table: the input item table itself (tied, the default and SASRec's
choice) or a separate one (``tied_output=False``: gSASRec's default, which its authors
found to converge better). So training (all positions), evaluation and serving (last
position, all items) use the same two methods:

    hidden(items, key, times) -> (B, L, D)  # key=None: deterministic (eval/serving)
    output_table()     -> (N+1, D)          # row 0 is padding and is never recommended

``times`` (B, L + 1) are event times: the history's plus the prediction time (see
``jaxrec.models.hstu``). Only models with ``uses_time`` read them (HSTU with
``time_buckets``); the others accept and ignore them, so callers treat all models alike.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture settings shared by the self-attention family (unused fields are ignored)."""

    num_items: int
    max_len: int = 200
    dim: int = 64
    heads: int = 1
    blocks: int = 2
    dropout: float = 0.2
    ffn_mult: int = 1  # FFN hidden = ffn_mult * dim (SASRec: 1, BERT4Rec: 4)
    layout: str = "pre"  # "pre" or "sasrec" (see layers.TransformerBlock)
    act: str = "relu"
    mask_prob: float = 0.2  # BERT4Rec cloze masking
    dtype: str = "float32"  # compute dtype (train.step.merge casts); parameters stay float32
    features: tuple = ()  # catalog item features embedded into the item table (e.g. ("genres",))
    attention: str = "dot"  # target attention: "dot" (multi-head) or "din" (DIN's activation unit)
    candidate_attention: bool = False  # encoder-decoder: candidates also attend to each other
    time_buckets: int = 0  # HSTU relative time bias: number of log-time buckets (0: off; paper: 128)
    tied_output: bool = True  # retrieval: score against the input item table (False: a separate table)


class ItemModel(nnx.Module):
    """Any model with an item table: id embeddings (``item_emb``) plus optional side features."""

    config: ModelConfig

    def item_table(self) -> jax.Array:
        """(rows, D): id embeddings, plus side-feature embeddings when configured."""
        t = self.item_emb.embedding[...]
        return t if self.item_feats is None else t + self.item_feats().astype(t.dtype)


class RetrievalModel(ItemModel):
    """Base class: scoring from hidden states against the item table."""

    kind = "retrieval"

    @property
    def uses_time(self) -> bool:
        """Whether ``times`` must be given (HSTU with relative time bias)."""
        return self.config.time_buckets > 0

    def hidden(self, items: jax.Array, key: jax.Array | None = None, times=None) -> jax.Array:
        raise NotImplementedError

    def output_table(self) -> jax.Array:
        """(N+1, D): the item vectors scores are dot products with (see the module docstring)."""
        rows = self.config.num_items + 1
        if self.out_emb is None:
            return self.item_table()[:rows]
        t = self.out_emb.embedding[...]
        return t if self.item_feats is None else t + self.item_feats()[:rows].astype(t.dtype)

    def encode(self, history: jax.Array, times=None) -> jax.Array:
        """(B, L) left-padded history -> (B, D) user vector (deterministic)."""
        return self.hidden(history, None, times)[:, -1, :]

    def score_all(self, history: jax.Array, times=None) -> jax.Array:
        """(B, L) -> (B, N+1) scores over the catalog (column 0 is padding)."""
        u = self.encode(history, times)
        return (u @ self.output_table().T.astype(u.dtype)).astype(jnp.float32)

    def encode_explained(self, history: jax.Array, times=None) -> tuple[jax.Array, jax.Array]:
        """(B, L) -> user vector (B, D) and (B, L) the last layer's attention of the user position
        over the history (averaged over heads, 0 on padding): what "because you watched" reads."""
        raise NotImplementedError

    def attention_weights(self, history: jax.Array, times=None) -> jax.Array:
        return self.encode_explained(history, times)[1]
