"""Model registry: name -> class, default training loss, and named size variants.

Each variant records the paper its numbers come from, so ``sasrec/base`` means the same
architecture everywhere (configs, checkpoints, the server's model info).
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from jaxrec.data.features import item_features
from jaxrec.data.types import ItemCatalog
from jaxrec.errors import UserError
from jaxrec.settings import check_field, hints
from jaxrec.models.bert4rec import BERT4Rec
from jaxrec.models.hstu import HSTU
from jaxrec.models.rankers import BST, EncoderDecoder, TargetAttention
from jaxrec.models.sasrec import SASRec


@dataclasses.dataclass(frozen=True)
class Entry:
    cls: type
    loss: str  # default training loss
    variants: dict  # variant name -> (ModelConfig overrides, source)


REGISTRY: dict[str, Entry] = {
    "sasrec": Entry(SASRec, "bce", {
        "base": (dict(dim=50, heads=1, blocks=2, dropout=0.2, max_len=200, layout="sasrec"),
                 "Kang & McAuley 2018, ML-1M settings"),
        "vanilla": (dict(dim=64, heads=1, blocks=2, dropout=0.1, max_len=200, layout="sasrec"),
                    "Klenitskiy & Vasilev 2023 (SASRec vanilla: the original layout at their code's "
                    "d=64, dropout 0.1; BCE, one negative per position from outside the window)"),
        "plus": (dict(dim=64, heads=1, blocks=2, dropout=0.1, max_len=200, layout="pre"),
                 "Klenitskiy & Vasilev 2023 (SASRec+, CE loss)"),
        "ligr": (dict(dim=64, heads=1, blocks=2, dropout=0.1, max_len=200, layout="ligr", act="swiglu"),
                 "Tikhonovich et al. 2025 (eSASRec: SASRec+ with LiGR layers, Gao et al. 2025)"),
        "small": (dict(dim=32, heads=1, blocks=1, dropout=0.1, max_len=50), "tests and quickstart"),
    }),
    "gsasrec": Entry(SASRec, "gbce", {
        "base": (dict(dim=128, heads=1, blocks=2, dropout=0.5, max_len=200, layout="pre", tied_output=False),
                 "Petrov & Macdonald 2023, ML-1M (256 negatives, t=0.75, dropout 0.5, separate output table)"),
        "small": (dict(dim=32, heads=1, blocks=1, dropout=0.1, max_len=50, tied_output=False), "tests"),
    }),
    "bert4rec": Entry(BERT4Rec, "cloze", {
        "base": (dict(dim=64, heads=2, blocks=2, dropout=0.1, max_len=200, ffn_mult=4, act="gelu",
                      mask_prob=0.2, layout="pre"), "Sun et al. 2019, ML-1M settings"),
        "small": (dict(dim=32, heads=2, blocks=1, dropout=0.1, max_len=50, ffn_mult=2, act="gelu",
                       mask_prob=0.2), "tests"),
    }),
    "hstu": Entry(HSTU, "sampled_softmax", {
        "base": (dict(dim=50, heads=1, blocks=2, dropout=0.2, max_len=200),
                 "Zhai et al. 2024 / generative-recommenders ML-1M"),
        "large": (dict(dim=50, heads=2, blocks=8, dropout=0.2, max_len=200),
                  "Zhai et al. 2024 / generative-recommenders ML-1M, HSTU-large (8 blocks, 2 heads of 25)"),
        "large_mol": (dict(dim=50, heads=2, blocks=8, dropout=0.2, max_len=200, similarity="mol", temperature=0.05,
                           mol_query_groups=8, mol_item_groups=4, mol_dim=64, mol_query_hidden=512,
                           mol_gate_hidden=128, mol_gate_dropout=0.2, mol_item_dropout=0.1, mol_mi_weight=0.001),
                      "Ding & Zhai 2025 (RAILS, WWW'25): HSTU-large with a mixture-of-logits similarity, "
                      "8 x 4 components of 64 (jaxrec.models.mol)"),
        "time": (dict(dim=50, heads=1, blocks=2, dropout=0.2, max_len=200, time_buckets=128),
                 "Zhai et al. 2024: relative position and time bias (128 log-time buckets); "
                 "needs timestamps"),
        "small": (dict(dim=32, heads=1, blocks=1, dropout=0.1, max_len=50), "tests"),
    }),
    # ranking models (cross-attention): score(history, candidates); trained on candidate lists
    "target_attention": Entry(TargetAttention, "listwise", {
        "base": (dict(dim=64, heads=2, dropout=0.2, max_len=200), "multi-head target attention"),
        "din": (dict(dim=64, attention="din", dropout=0.2, max_len=50),
                "Zhou et al. 2018 (DIN activation unit), 50 most recent items"),
        "small": (dict(dim=32, heads=2, dropout=0.1, max_len=50), "tests"),
    }),
    "bst": Entry(BST, "listwise", {
        "base": (dict(dim=64, heads=8, blocks=1, ffn_mult=4, dropout=0.2, max_len=20),
                 "Chen et al. 2019: 1 block, 8 heads, the 20 most recent items"),
        "small": (dict(dim=32, heads=2, blocks=1, ffn_mult=2, dropout=0.1, max_len=10), "tests"),
    }),
    "encdec": Entry(EncoderDecoder, "listwise", {
        "base": (dict(dim=64, heads=2, blocks=2, ffn_mult=2, dropout=0.2, max_len=200),
                 "history encoder + candidate decoder (cross-attention only)"),
        "listaware": (dict(dim=64, heads=2, blocks=2, ffn_mult=2, dropout=0.2, max_len=200,
                           candidate_attention=True), "decoder with candidate self-attention"),
        "small": (dict(dim=32, heads=2, blocks=1, ffn_mult=2, dropout=0.1, max_len=50), "tests"),
    }),
}


def resolve(name: str) -> tuple[Entry, str, dict]:
    """``sasrec`` or ``sasrec/plus`` -> (entry, variant, overrides)."""
    base, _, variant = name.partition("/")
    if base not in REGISTRY:
        raise UserError(f"unknown model {base!r}; available: {', '.join(REGISTRY)}")
    entry = REGISTRY[base]
    variant = variant or "base"
    if variant not in entry.variants:
        raise UserError(f"unknown variant {name!r}; variants of {base}: {', '.join(entry.variants)}")
    return entry, variant, dict(entry.variants[variant][0])


def model_settings(name: str, overrides: dict | None = None) -> dict:
    """The variant's settings with ``overrides`` (``model_args``) applied, each checked against
    the family's config class: an unknown setting or a bad value is one error naming it."""
    entry, _, cfg = resolve(name)
    cls = entry.cls.config_cls
    known = {f.name for f in dataclasses.fields(cls)} - {"num_items"}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in known:
            family = name.partition("/")[0]
            raise UserError(f"model_args.{key}: not a setting of {family} ({cls.__name__}); "
                            f"its settings: {', '.join(sorted(known))}")
        cfg[key] = value
    for key in cfg:
        cfg[key] = check_field(cls, key, cfg[key], "model_args.")
    cfg["features"] = tuple(cfg.get("features", ()))
    return cfg


def model_setting_type(name: str, key: str):
    """The annotated type of model setting ``key`` for model ``name`` (str if it has none:
    ``model_settings`` then names the unknown key)."""
    return hints(resolve(name)[0].cls.config_cls).get(key, str)


def build_model(name: str, num_items: int, seed: int = 0, catalog: ItemCatalog | None = None,
                **overrides):
    """A fresh model by registry name; ``catalog`` supplies side features when configured."""
    entry = resolve(name)[0]
    cfg = model_settings(name, overrides)
    feats = None
    if cfg["features"]:
        if catalog is None:
            raise UserError(f"model settings ask for item features {list(cfg['features'])}, "
                            "but no catalog was given")
        feats = item_features(catalog, cfg["features"])
    return entry.cls(entry.cls.config_cls(num_items=num_items, **cfg), rngs=nnx.Rngs(seed),
                     item_features=feats)
