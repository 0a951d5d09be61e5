"""The retrieval-model interface and its configuration.

Every retrieval model maps a left-padded history (B, L) to hidden states (B, L, D); the
user vector is the state at the last position, and an item's score is its dot product
with the output table: the input item table itself (tied, the default and SASRec's
choice) or a separate one (``tied_output=False``: gSASRec's default, which its authors
found to converge better). So training (all positions), evaluation and serving (last
position, all items) use the same two methods:

    hidden(items, key, times) -> (B, L, D)  # key=None: deterministic (eval/serving)
    output_table()     -> (N+1, D)          # row 0 is padding and is never recommended

With ``similarity="mol"`` (mixture of logits, ``jaxrec.models.mol``) the score is no dot product:
``hidden`` returns the user side's packed MoL representation, ``output_table`` the items', and
``pair_scores(user, rows)`` scores them; every caller scores through ``pair_scores`` (a dot
product for the other two), so nothing else needs to know.

With ``similarity="cosine"`` (generative-recommenders' HSTU and SASRec settings: user and
item embeddings L2-normalised, logits divided by a temperature) both sides are unit vectors
and the user side is also divided by ``temperature``: ``hidden`` returns states already so
scaled and ``output_table`` unit rows, so every caller (the losses, evaluation, serving, ANN)
still scores by one dot product. The input lookups (``item_rows``) read the raw table.

``times`` (B, L + 1) are event times: the history's plus the prediction time (see
``jaxrec.models.hstu``). Only models with ``uses_time`` read them (HSTU with
``time_buckets``); the others accept and ignore them, so callers treat all models alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.numerics import unit_rows
from jaxrec.settings import at_least, between, one_of


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Settings every model has. Each family adds its own (below): a setting a family does
    not read is an error when given (``registry.build_model``), never silently ignored."""

    num_items: int
    max_len: int = field(default=200, metadata=at_least(1))
    dim: int = field(default=64, metadata=at_least(1))
    # the item tables' initial standard deviation; None: dim ** -0.5. The PyTorch SASRec code
    # behind the published BCE and CE figures starts them at 0.02: with Adam's fixed step size,
    # a smaller start moves each embedding by a larger share of its size per update
    embed_init_std: float | None = field(default=None, metadata=at_least(0.0, exclusive=True))
    dropout: float = field(default=0.2, metadata=between(0.0, 1.0, hi_exclusive=True))
    dtype: str = field(default="float32", metadata=one_of("float32", "bfloat16", "float16"))  # compute dtype
    features: tuple = ()  # catalog item features embedded into the item table (e.g. ("genres",))
    # item tables get a multiple of this many rows (the extra rows are never read or scored):
    # a table sharded over M devices needs rows divisible by M (jaxrec.sharding)
    table_rows_multiple: int = field(default=1, metadata=at_least(1))


@dataclasses.dataclass(frozen=True)
class RetrievalConfig(ModelConfig):
    """Settings of the models that score by a dot product with an output table."""

    tied_output: bool = True  # score against the input item table (False: a separate table)
    similarity: str = field(default="dot", metadata=one_of("dot", "cosine", "mol"))  # see the module docstring
    # cosine and mol: logits = cos(user, item) / temperature (generative-recommenders: 0.05)
    temperature: float = field(default=0.05, metadata=at_least(0.0, exclusive=True))
    # mol only (jaxrec.models.mol; defaults: RAILS' ML-1M configuration): P_Q x P_X components of
    # mol_dim, the query MLP's SwiGLU width (0: one linear layer), the gate MLPs' width, dropout
    # on the gate and on the item embeddings, the weight of the load-balancing term
    mol_query_groups: int = field(default=8, metadata=at_least(1))
    mol_item_groups: int = field(default=4, metadata=at_least(1))
    mol_dim: int = field(default=64, metadata=at_least(1))
    mol_query_hidden: int = field(default=512, metadata=at_least(0))
    mol_gate_hidden: int = field(default=128, metadata=at_least(1))
    mol_gate_dropout: float = field(default=0.2, metadata=between(0.0, 1.0, hi_exclusive=True))
    mol_item_dropout: float = field(default=0.1, metadata=between(0.0, 1.0, hi_exclusive=True))
    mol_mi_weight: float = field(default=0.001, metadata=at_least(0.0))


@dataclasses.dataclass(frozen=True)
class SelfAttentionConfig(RetrievalConfig):
    """SASRec, gSASRec (and BERT4Rec below): a stack of transformer blocks."""

    heads: int = field(default=1, metadata=at_least(1))
    blocks: int = field(default=2, metadata=at_least(1))
    ffn_mult: int = field(default=1, metadata=at_least(1))  # FFN hidden = ffn_mult * dim (SASRec: 1, BERT4Rec: 4)
    layout: str = field(default="pre", metadata=one_of("pre", "sasrec", "ligr"))  # see layers.TransformerBlock
    act: str = field(default="relu", metadata=one_of("relu", "gelu", "swiglu"))  # layers.FeedForward
    # initial std of the layers that write into the residual stream (attention output, the
    # feed-forward's two layers); None: LeCun normal, 1/sqrt(fan-in). The PyTorch SASRec code
    # behind the published figures starts them at N(0, 0.02) (GPT-2's init): each block then
    # starts close to the identity
    dense_init_std: float | None = field(default=None, metadata=at_least(0.0, exclusive=True))
    # dropout on the attention's output before the residual add (on top of the dropout on the
    # attention weights). False: weights only, as both SASRec codes behind the published
    # figures do (Kang's TensorFlow code, Klenitskiy & Vasilev's PyTorch port)
    attn_out_dropout: bool = True


@dataclasses.dataclass(frozen=True)
class BERT4RecConfig(SelfAttentionConfig):
    mask_prob: float = field(default=0.2, metadata=between(0.0, 1.0, hi_exclusive=True))  # cloze masking


@dataclasses.dataclass(frozen=True)
class HSTUConfig(RetrievalConfig):
    heads: int = field(default=1, metadata=at_least(1))
    blocks: int = field(default=2, metadata=at_least(1))
    time_buckets: int = field(default=0, metadata=at_least(0))  # relative time bias buckets (0: off; paper: 128)


@dataclasses.dataclass(frozen=True)
class RankerConfig(ModelConfig):
    """The cross-attention rankers (target attention, BST, encoder-decoder)."""

    heads: int = field(default=1, metadata=at_least(1))
    blocks: int = field(default=2, metadata=at_least(1))
    ffn_mult: int = field(default=1, metadata=at_least(1))
    act: str = field(default="relu", metadata=one_of("relu", "gelu"))
    attention: str = field(default="dot", metadata=one_of("dot", "din"))  # target attention's scorer
    candidate_attention: bool = False  # encoder-decoder: candidates also attend to each other


class ItemModel(nnx.Module):
    """Any model with an item table: id embeddings (``item_emb``) plus optional side features."""

    config: ModelConfig
    compact = None  # a serving scorer's CompactTable (jaxrec.scoring): history lookups read it

    def item_rows(self, items: jax.Array) -> jax.Array:
        """(..., D) item-table rows of ``items`` (the input lookup of every model): from the
        float parameters, or dequantized from the compact table a serving scorer set."""
        if self.compact is None:
            return jnp.take(self.item_table(), items, axis=0)
        return self.compact.take(items, self.item_emb.embedding.dtype)

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
        return getattr(self.config, "time_buckets", 0) > 0

    mol = None  # the MoL head (jaxrec.models.mol) when similarity="mol"; each model's __init__ sets it

    @property
    def cosine(self) -> bool:
        """Whether scores are cosine similarities over a temperature (``similarity="cosine"``)."""
        return getattr(self.config, "similarity", "dot") == "cosine"

    @property
    def raw_rows(self) -> bool:
        """Whether the rows scored are the item table's own (``similarity="dot"``), not a
        transform of them (unit rows, MoL's item side)."""
        return getattr(self.config, "similarity", "dot") == "dot"

    def pair_scores(self, user: jax.Array, rows: jax.Array, key: jax.Array | None = None,
                    gates: bool = False):
        """Scores of (..., U) user vectors against (X, U) rows (every user, every row) or against
        (..., X, U) rows (leading dims broadcast) -> (..., X) float32. A dot product, or MoL's
        gated sum (``key``: the gate's dropout in training; ``gates``: also return them)."""
        if self.mol is not None:
            return self.mol.scores(user, rows.astype(user.dtype), key, gates)
        rows = rows.astype(user.dtype)
        s = (user @ rows.T if rows.ndim == 2 else jnp.einsum("...d,...xd->...x", user, rows)).astype(jnp.float32)
        return (s, None) if gates else s

    def hidden(self, items: jax.Array, key: jax.Array | None = None, times=None) -> jax.Array:
        raise NotImplementedError

    def user_side(self, h: jax.Array) -> jax.Array:
        """(..., D) final states -> the user vectors ``pair_scores`` reads: unchanged, unit
        length over the temperature (cosine), or MoL's query side. Each model's ``hidden`` ends
        with it."""
        if self.mol is not None:
            return self.mol.query(h)
        return unit_rows(h) / jnp.asarray(self.config.temperature, h.dtype) if self.cosine else h

    def item_side(self, t: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """(R, D) item representations -> the rows ``pair_scores`` reads (``key``: MoL's item
        dropout in training)."""
        if self.mol is not None:
            return self.mol.items(t, key)
        return unit_rows(t) if self.cosine else t

    def output_table(self, key: jax.Array | None = None) -> jax.Array:
        """(N+1, U): the item vectors scores are read against (see the module docstring)."""
        return self.output_rows(key)[: self.config.num_items + 1]

    def output_rows(self, key: jax.Array | None = None) -> jax.Array:
        """(R, U): ``output_table`` with the padding rows a shardable table may have past the
        catalog (``table_rows_multiple``): unsliced, so a sharded table keeps its shards."""
        if self.out_emb is None:
            return self.item_side(self.item_table(), key)
        t = self.out_emb.embedding[...]
        return self.item_side(t if self.item_feats is None else t + self.item_feats().astype(t.dtype), key)

    def encode(self, history: jax.Array, times=None) -> jax.Array:
        """(B, L) left-padded history -> (B, D) user vector (deterministic)."""
        return self.hidden(history, None, times)[:, -1, :]

    def score_all(self, history: jax.Array, times=None) -> jax.Array:
        """(B, L) -> (B, N+1) scores over the catalog (column 0 is padding)."""
        return self.pair_scores(self.encode(history, times), self.output_table())

    def encode_explained(self, history: jax.Array, times=None) -> tuple[jax.Array, jax.Array]:
        """(B, L) -> user vector (B, D) and (B, L) the last layer's attention of the user position
        over the history (averaged over heads, 0 on padding): what "because you watched" reads."""
        raise NotImplementedError
