"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the item sequence.

Read top to bottom:

    e = E[items] * sqrt(D) + P[positions]      # (B, L, D) item + learned position
    for each block: causal self-attention, FFN  # position i sees items <= i only
    h = LN(x)                                   # (B, L, D)
    score(i, item j) = h_i . E[j]               # output layer shares the input table
                                                # (tied_output=False: its own table, gSASRec;
                                                # similarity="cosine": unit h, E over a temperature)

The same network is trained three ways, which is why the losses are separate
(``jaxrec.losses``): SASRec (BCE, 1 negative), SASRec+ (full softmax CE, Klenitskiy &
Vasilev 2023) and gSASRec (many negatives + gBCE, Petrov & Macdonald 2023).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jaxrec.data.features import ItemFeatures
from jaxrec.models.base import ModelConfig, RetrievalModel, SelfAttentionConfig
from jaxrec.models.layers import (TransformerBlock, attention_mask, dropout, item_embeddings,
                                  output_embeddings, positions_from_first_item, split_key)
from jaxrec.models.mol import mol_head


class SASRec(RetrievalModel):
    config_cls = SelfAttentionConfig
    causal = True

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, extra_tokens: int = 0,
                 item_features: ItemFeatures | None = None):
        self.config = config
        d = config.dim
        # rows: 0 = padding, 1..N items, then any extra tokens (BERT4Rec's [mask])
        self.item_emb, self.item_feats = item_embeddings(config.num_items + 1 + extra_tokens, d, item_features, rngs,
                                                         config.table_rows_multiple, config.embed_init_std)
        self.out_emb = output_embeddings(config, rngs)
        self.pos_emb = nnx.Embed(config.max_len, d, rngs=rngs,
                                 embedding_init=nnx.initializers.normal(stddev=0.02))
        self.blocks = nnx.List([TransformerBlock(d, config.heads, config.ffn_mult * d, config.dropout,
                                                 config.layout, config.act, rngs=rngs,
                                                 init_std=config.dense_init_std,
                                                 out_dropout=config.attn_out_dropout)
                                for _ in range(config.blocks)])
        self.final_ln = nnx.LayerNorm(d, epsilon=1e-8, rngs=rngs)
        # last, so the encoder's parameters are the same draws as without it
        self.mol = mol_head(config, rngs)  # similarity="mol": the mixture-of-logits head, else None

    def _forward(self, items, key, last_only: bool = False):
        cfg = self.config
        keys = split_key(key, len(self.blocks) + 1)
        real = (items > 0)[..., None]
        x = self.item_rows(items) * jnp.sqrt(float(cfg.dim))  # (B, L, D)
        x = x + self.pos_emb(positions_from_first_item(items))
        x = dropout(x, cfg.dropout, keys[0]) * real
        mask = attention_mask(items, self.causal)  # (B, 1, L, L)
        w = None
        for i, (blk, k) in enumerate(zip(self.blocks, keys[1:])):
            last = last_only and i == len(self.blocks) - 1
            x, w = blk(x, mask, k, last_only=last)
            x = x * (real[:, -1:] if last else real)  # padding stays zero (SASRec's timeline mask)
        return self.user_side(self.final_ln(x)), w  # (B, L, D), or (B, 1, D) with last_only

    def hidden(self, items, key=None, times=None):  # times: unused (no time bias)
        return self._forward(items, key)[0]

    def encode(self, history, times=None):
        return self._forward(history, None, last_only=True)[0][:, -1, :]  # (B, D)

    def encode_explained(self, history, times=None):
        h, w = self._forward(history, None, last_only=True)  # (B, 1, D), (B, H, 1, L)
        return h[:, -1, :], w[:, :, -1, :].mean(axis=1) * (history > 0)  # (B, D), (B, L)
