"""Cross-attention rankers: each candidate looks at the user's history.

A retrieval model compresses the history into one vector before it sees any item, so one
dot product scores the whole catalog. A ranker lets the candidate choose what to read from
the history (a thriller candidate attends to the thrillers watched), which is more
expressive and costs work per candidate: it re-ranks the few hundred items a retrieval
model proposed (``jaxrec.pipeline``). All three share one interface:

    score(history (B, L), candidates (B, C), key=None) -> (B, C)

with left-padded histories (0 = padding) and candidate id 0 as padding (scored ``NEG_INF``).

* ``TargetAttention`` (DIN-style, Zhou et al. 2018): the candidate is the query of a
  multi-head attention over the history (keys/values carry recency positions); with
  ``attention="din"`` DIN's activation unit (an MLP over [c, h, c - h, c * h], weights not
  normalised) replaces dot-product attention. MLP head over [interest, c, interest * c].
* ``BST`` (Behavior Sequence Transformer, Chen et al. 2019): a bidirectional transformer over
  the most recent history items plus the candidate, one sequence per candidate; MLP head over
  the candidate's output and the mean of the history outputs.
* ``EncoderDecoder``: a bidirectional encoder over the history, once per user; the candidates
  are the decoder's tokens and cross-attend to the encoded history (and, with
  ``candidate_attention=True``, to each other: then a score depends on the list it is in).

Positions count back from the most recent item (0 = latest), so left padding never changes
a score and the candidate always sits "one step after" position 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.data.features import ItemFeatures
from jaxrec.models.base import ItemModel, ModelConfig, RankerConfig
from jaxrec.models.layers import (
    NEG_INF,
    FeedForward,
    MultiHeadAttention,
    TransformerBlock,
    attention_mask,
    dropout,
    item_embeddings,
    split_key,
)


def recency_positions(items: jax.Array) -> jax.Array:
    """(B, L) left-padded -> distance from the most recent slot (L-1 -> 0); padding-invariant."""
    l = items.shape[1]
    return jnp.broadcast_to(jnp.arange(l - 1, -1, -1), items.shape)


class MLP(nnx.Module):
    """Linear-ReLU stack ending in one unit: the score head of every ranker."""

    def __init__(self, sizes: list[int], rate: float, *, rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:] + [1])])
        self.rate = rate

    def __call__(self, x, key=None):
        keys = split_key(key, len(self.layers))
        for i, (layer, k) in enumerate(zip(self.layers, keys)):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = dropout(jax.nn.relu(x), self.rate, k)
        return x[..., 0]


class RankingModel(ItemModel):
    """Shared embedding of history and candidates; subclasses implement ``_score``."""

    kind = "ranking"
    config_cls = RankerConfig

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, item_features: ItemFeatures | None = None):
        self.config = config
        d = config.dim
        self.item_emb, self.item_feats = item_embeddings(config.num_items + 1, d, item_features, rngs,
                                                         config.table_rows_multiple, config.embed_init_std)
        self.pos_emb = nnx.Embed(config.max_len + 1, d, rngs=rngs,
                                 embedding_init=nnx.initializers.normal(stddev=0.02))

    def embed(self, history, candidates, key=None):
        """-> history (B, L, D) with recency positions (zero on padding), candidates (B, C, D)."""
        history = history[:, -self.config.max_len:]
        table = self.item_table()
        real = (history > 0)[..., None]
        h = jnp.take(table, history, axis=0) + self.pos_emb(recency_positions(history) + 1)
        h = dropout(h, self.config.dropout, key) * real
        c = jnp.take(table, candidates, axis=0) + self.pos_emb.embedding[0]  # "next" slot
        return history, h, c

    def score(self, history: jax.Array, candidates: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """(B, L) history, (B, C) candidates -> (B, C) float32 scores; padded candidates NEG_INF."""
        s = self._score(history, candidates, key).astype(jnp.float32)
        return jnp.where(candidates > 0, s, NEG_INF)

    def _score(self, history, candidates, key):
        raise NotImplementedError


def _head(d: int, rate: float, rngs: nnx.Rngs) -> MLP:
    return MLP([3 * d, 2 * d, d], rate, rngs=rngs)


def _head_input(interest, cand):
    return jnp.concatenate([interest, cand, interest * cand], axis=-1)  # (B, C, 3D)


class TargetAttention(RankingModel):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, item_features=None):
        super().__init__(config, rngs=rngs, item_features=item_features)
        d = config.dim
        if config.attention not in ("dot", "din"):
            raise ValueError(f"attention must be 'dot' or 'din', got {config.attention!r}")
        if config.attention == "dot":
            self.attn = MultiHeadAttention(d, config.heads, config.dropout, rngs=rngs)
        else:  # DIN activation unit: first layer on [c, h, c - h, c * h] written as three maps
            self.unit_c = nnx.Linear(d, 4 * d // 2, rngs=rngs)
            self.unit_h = nnx.Linear(d, 4 * d // 2, use_bias=False, rngs=rngs)
            self.unit_p = nnx.Linear(d, 4 * d // 2, use_bias=False, rngs=rngs)
            self.unit_out = nnx.Linear(4 * d // 2, 1, rngs=rngs)
        self.head = _head(d, config.dropout, rngs)

    def interest(self, history, candidates, key=None):
        """-> (B, C, D) per-candidate interest and (B, C, L) attention weights over the history."""
        k1, k2 = split_key(key, 2)
        history, h, c = self.embed(history, candidates, k1)
        real = history > 0  # (B, L)
        if self.config.attention == "dot":
            mask = jnp.broadcast_to(real[:, None, None, :], (h.shape[0], 1, c.shape[1], h.shape[1]))
            out, w = self.attn(c, h, mask, k2)  # (B, C, D), (B, H, C, L)
            return out, w.mean(1) * real[:, None, :], c
        # [c, h, c-h, c*h] @ W = c(Wc + Wd) + h(Wh - Wd) + (c*h) Wp: the c - h block folds away
        hid = (self.unit_c(c)[:, :, None, :] + self.unit_h(h)[:, None, :, :]
               + self.unit_p(c[:, :, None, :] * h[:, None, :, :]))  # (B, C, L, 2D)
        w = self.unit_out(jax.nn.sigmoid(hid))[..., 0] * real[:, None, :]  # (B, C, L), DIN: no softmax
        return jnp.einsum("bcl,bld->bcd", w, h), w, c

    def _score(self, history, candidates, key):
        k1, k2 = split_key(key, 2)
        u, _, c = self.interest(history, candidates, k1)
        return self.head(_head_input(u, c), k2)


class BST(RankingModel):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, item_features=None):
        super().__init__(config, rngs=rngs, item_features=item_features)
        d = config.dim
        self.blocks = nnx.List([TransformerBlock(d, config.heads, config.ffn_mult * d, config.dropout,
                                                 "pre", config.act, rngs=rngs)
                                for _ in range(config.blocks)])
        self.final_ln = nnx.LayerNorm(d, epsilon=1e-6, rngs=rngs)
        self.head = _head(d, config.dropout, rngs)

    def _score(self, history, candidates, key):
        keys = split_key(key, len(self.blocks) + 2)
        history, h, c = self.embed(history, candidates, keys[0])
        b, l, d = h.shape
        n = candidates.shape[1]
        # one sequence [history..., candidate] per candidate: (B*C, L+1, D)
        x = jnp.concatenate([jnp.repeat(h[:, None], n, axis=1), c[:, :, None, :]], axis=2)
        x = x.reshape(b * n, l + 1, d)
        tokens = jnp.concatenate([jnp.repeat(history, n, axis=0), candidates.reshape(-1, 1)], axis=1)
        real = (tokens > 0)[..., None]
        mask = attention_mask(tokens, causal=False)  # (B*C, 1, L+1, L+1)
        for blk, k in zip(self.blocks, keys[1:-1]):
            x, _ = blk(x, mask, k)
            x = x * real
        x = self.final_ln(x)
        target = x[:, -1, :]  # (B*C, D)
        hist_mean = (x[:, :-1] * real[:, :-1]).sum(1) / jnp.maximum(real[:, :-1].sum(1), 1)
        out = jnp.concatenate([hist_mean, target, hist_mean * target], axis=-1).reshape(b, n, 3 * d)
        return self.head(out, keys[-1])


class DecoderBlock(nnx.Module):
    """Pre-LN decoder block: optional candidate self-attention, cross-attention, FFN."""

    def __init__(self, d: int, heads: int, hidden: int, rate: float, act: str, self_attn: bool,
                 *, rngs: nnx.Rngs):
        self.rate = rate
        self.self_attn = MultiHeadAttention(d, heads, rate, rngs=rngs) if self_attn else None
        self.ln0 = nnx.LayerNorm(d, epsilon=1e-6, rngs=rngs) if self_attn else None
        self.ln1 = nnx.LayerNorm(d, epsilon=1e-6, rngs=rngs)
        self.ln2 = nnx.LayerNorm(d, epsilon=1e-6, rngs=rngs)
        self.cross = MultiHeadAttention(d, heads, rate, rngs=rngs)
        self.ffn = FeedForward(d, hidden, rate, act, rngs=rngs)

    def __call__(self, x, memory, self_mask, cross_mask, key=None):
        k0, k1, k2, k3, k4 = split_key(key, 5)
        if self.self_attn is not None:
            a, _ = self.self_attn(self.ln0(x), self.ln0(x), self_mask, k0)
            x = x + dropout(a, self.rate, k1)
        a, w = self.cross(self.ln1(x), memory, cross_mask, k2)
        x = x + dropout(a, self.rate, k3)
        return x + self.ffn(self.ln2(x), k4), w


class EncoderDecoder(RankingModel):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, item_features=None):
        super().__init__(config, rngs=rngs, item_features=item_features)
        d, hidden = config.dim, config.ffn_mult * config.dim
        self.encoder = nnx.List([TransformerBlock(d, config.heads, hidden, config.dropout, "pre",
                                                  config.act, rngs=rngs) for _ in range(config.blocks)])
        self.enc_ln = nnx.LayerNorm(d, epsilon=1e-6, rngs=rngs)
        self.decoder = nnx.List([DecoderBlock(d, config.heads, hidden, config.dropout, config.act,
                                              config.candidate_attention, rngs=rngs)
                                 for _ in range(config.blocks)])
        self.dec_ln = nnx.LayerNorm(d, epsilon=1e-6, rngs=rngs)
        self.head = _head(d, config.dropout, rngs)

    def _score(self, history, candidates, key):
        nb = len(self.encoder)
        keys = split_key(key, 2 * nb + 2)
        history, h, c = self.embed(history, candidates, keys[0])
        real = (history > 0)[..., None]
        enc_mask = attention_mask(history, causal=False)  # (B, 1, L, L)
        for blk, k in zip(self.encoder, keys[1:1 + nb]):
            h, _ = blk(h, enc_mask, k)
            h = h * real
        memory = self.enc_ln(h)  # (B, L, D), once per user whatever the number of candidates
        b, n = candidates.shape
        cross_mask = jnp.broadcast_to((history > 0)[:, None, None, :], (b, 1, n, history.shape[1]))
        self_mask = jnp.broadcast_to((candidates > 0)[:, None, None, :], (b, 1, n, n))
        x = c
        for blk, k in zip(self.decoder, keys[1 + nb:-1]):
            x, _ = blk(x, memory, self_mask, cross_mask, k)
        return self.head(_head_input(self.dec_ln(x), c), keys[-1])
