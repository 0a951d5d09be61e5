"""Data layer: files -> Interactions -> SequenceData -> splits -> fixed-shape batches.

``load_dataset`` is the one entry point used by the CLI, the trainer and the tests.
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxrec.data.loaders import FORMATS, movielens_item_metadata, read_interactions
from jaxrec.data.prepare import is_prepared, load_prepared
from jaxrec.data.preprocess import build_sequences
from jaxrec.data.splits import EvalSet, Split, last_out, leave_one_out, make_split, temporal_split
from jaxrec.data.synthetic import SyntheticConfig, generate, parse_spec
from jaxrec.data.types import PAD, FilterReport, Interactions, ItemCatalog, SequenceData

DATA_DIR_ENV = "JAXREC_DATA_DIR"


def resolve_path(spec: str) -> Path:
    """A path as given, or relative to ``$JAXREC_DATA_DIR`` when it does not exist as given."""
    p = Path(spec).expanduser()
    if not p.exists() and os.environ.get(DATA_DIR_ENV):
        alt = Path(os.environ[DATA_DIR_ENV]) / spec
        if alt.exists():
            return alt
    return p


def load_dataset(spec: str, fmt: str | None = None, *, min_rating: float | None = None,
                 k_core: int | None = None, dedupe: bool = False, user_col: str | None = None,
                 item_col: str | None = None, time_col: str | None = None,
                 rating_col: str | None = None) -> SequenceData:
    """Load ``spec`` (a file path, a MovieLens directory, a directory written by ``jaxrec data
    prepare`` (memory-mapped, used as prepared), or ``synthetic[:options]``)."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return generate(parse_spec(spec))
    path = resolve_path(spec)
    if is_prepared(path):
        return load_prepared(path)
    columns = {k: v for k, v in dict(user_col=user_col, item_col=item_col, time_col=time_col,
                                     rating_col=rating_col).items() if v is not None}
    inter, used = read_interactions(path, fmt, **columns)
    src = Path(inter.source)
    return build_sequences(inter, min_rating=min_rating, k=k_core, dedupe=dedupe, name=str(src),
                           item_metadata=lambda ids: movielens_item_metadata(src, used, ids))


__all__ = [
    "FORMATS", "PAD", "EvalSet", "FilterReport", "Interactions", "ItemCatalog", "SequenceData",
    "Split", "SyntheticConfig", "build_sequences", "generate", "last_out", "leave_one_out", "load_dataset",
    "make_split", "parse_spec", "read_interactions", "temporal_split",
]
