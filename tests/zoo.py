"""The model lists every test file parameterises over, read from the registry: a model added
there is tested everywhere without editing a test."""

from jaxrec.models import REGISTRY


def _small(kind: str) -> list[str]:
    return [f"{name}/small" for name, e in REGISTRY.items() if e.cls.kind == kind and "small" in e.variants]


RETRIEVAL = _small("retrieval")  # sasrec, gsasrec, bert4rec, hstu
RANKING = _small("ranking")  # target_attention, bst, encdec
# variants whose architecture differs from their family's small one
RANKING_VARIANTS = RANKING + ["target_attention/din", "encdec/listaware"]
