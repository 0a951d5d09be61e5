"""A trained run directory -> a compiled ``Recommender`` (top-k, scores, explanations).

Histories arrive as external item ids; unknown ids are skipped and counted, the most
recent ``max_len`` known items are used, and the result speaks external ids (with titles
when the catalog has them). Scoring and ranking are ``jaxrec.scoring``'s; only parameters
are restored (no optimizer is built).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxrec.data import ItemCatalog
from jaxrec.data.codec import encode_history, history_times, left_pad
from jaxrec.errors import UserError
from jaxrec.data.features import feature_lists
from jaxrec.scoring import DEFAULT_POOL, Scorer, Stage
from jaxrec.train.config import Config
from jaxrec.train.rundir import ModelInfo, RunDir


@dataclasses.dataclass
class Recommendation:
    items: list  # external ids, best first
    scores: list
    titles: list
    unknown: int  # history ids not in the catalog (skipped)


class Recommends:
    """External ids in, ``Recommendation`` out, for anything with a ``catalog`` and a
    ``scorer`` (``jaxrec.scoring.Scorer``): a model or a two-stage pipeline."""

    catalog: ItemCatalog
    scorer: Scorer
    kind: str

    @property
    def max_len(self) -> int:
        return self.scorer.max_len

    @property
    def uses_time(self) -> bool:  # the model reads event times (HSTU relative time bias)
        return self.scorer.uses_time

    def score_all(self, history: np.ndarray, times=None) -> jax.Array:
        """The evaluation ``Scorer`` interface: (B, L) item indices -> (B, N+1) scores (a
        pipeline's: its final order). ``times`` (B, L + 1) for a model with ``uses_time``."""
        return self.scorer.score_all(history, times)

    def score(self, history: np.ndarray, candidates: np.ndarray, times=None) -> jax.Array:
        """(B, L) history, (B, C) candidate indices -> (B, C) scores."""
        return self.scorer.score(history, candidates, times)

    def top_k(self, history: np.ndarray, k: int, exclude_seen: bool = True, times=None):
        """(B, L) -> (values, items) (B, k), seen items removed if asked."""
        out = self.scorer.top_k(history, k, exclude=history if exclude_seen else None, times=times)
        return out.values, out.items

    def recommend(self, history, k: int = 10, exclude_seen: bool = True, times=None,
                  now=None, diversity: float = 0.0, diversity_by: str = "",
                  pool: int = DEFAULT_POOL) -> Recommendation:
        """Top-k for one history of external ids; ``times`` (one per id, e.g. unix seconds) and
        ``now`` are read by time-aware models and required by them. ``diversity`` (0..1): the
        top ``pool`` re-ranked by maximal marginal relevance (``Scorer.diversify``), by item
        embeddings or the catalog feature ``diversity_by``, as a server answers."""
        n = self.catalog.num_items
        if not 0 < k <= n:
            raise UserError(f"k must be in 1..{n}, got {k}")
        if not 0.0 <= diversity <= 1.0:
            raise UserError(f"diversity must be in 0..1, got {diversity}")
        h = encode_history(self.catalog, history)
        if not len(h.items):
            raise UserError("no known item ids in the history")
        row = left_pad([h.latest(self.max_len)], self.max_len)
        t = None
        if self.uses_time:
            if times is None:
                raise UserError("this model uses event times (relative time bias): give times, "
                                "one per history item")
            try:
                t = left_pad([history_times(h, times, self.max_len, now)], self.max_len + 1)
            except ValueError as e:
                raise UserError(f"times: {e}") from None
        if diversity > 0 or diversity_by:
            pool = min(max(int(pool), k), n)
            top = self.scorer.top_k(row, pool, exclude=row if exclude_seen else None, times=t)
            top = self.scorer.diversify(top, k, np.array([diversity], np.float32), pool=pool,
                                        feats=feature_lists(self.catalog, diversity_by) if diversity_by else None)
            vals, idx = top.values, top.items
        else:
            vals, idx = self.top_k(row, k, exclude_seen, times=t)
        idx, vals = np.asarray(idx)[0], np.asarray(vals)[0]
        keep = np.isfinite(vals)
        idx, vals = idx[keep], vals[keep]
        return Recommendation(self.catalog.external(idx), vals.tolist(),
                              [self.catalog.title(i) for i in idx], h.unknown)


class Recommender(Recommends):
    """One trained model: its run's config, catalog, parameters and a compiled scorer."""

    def __init__(self, graphdef, params, catalog: ItemCatalog, config: Config, info: ModelInfo,
                 step: int | None = None, run: RunDir | None = None):
        self.graphdef, self.params, self.catalog, self.config, self.info = graphdef, params, catalog, config, info
        self.step, self.run = step, run
        self.name = config.model
        self.stage = Stage(graphdef, params, info.max_len, info.dtype, info.uses_time)
        self.kind = self.stage.kind  # "retrieval" or "ranking"
        self.scorer = Scorer(self.stage)

    def with_table_dtype(self, dtype: str) -> "Recommender":
        """Score from now on with the item table kept as ``dtype`` (``CompactTable``: bfloat16, or
        int8 with per-row scales), as ``jaxrec serve --table-dtype`` does; returns self."""
        if self.kind != "retrieval":
            raise UserError(f"--table-dtype applies to retrieval models, not a {self.kind} model")
        self.scorer = Scorer(self.stage, chunk=self.scorer.chunk, recall=self.scorer.recall, table_dtype=dtype)
        return self

    def rank_targets(self, history, targets, exclude, k: int = 0, times=None):
        """Evaluation's full ranking of one batch, in catalog chunks (``Scorer.rank_targets``)."""
        return self.scorer.rank_targets(history, targets, exclude, k, times)

    @classmethod
    def from_model(cls, model, catalog: ItemCatalog, config: Config, step: int | None = None) -> "Recommender":
        """A model in memory (fresh or trained elsewhere) as a Recommender."""
        graphdef, params = nnx.split(model)
        mc = model.config
        info = ModelInfo(config.model, model.kind, mc.max_len, mc.dtype, getattr(model, "uses_time", False),
                         dataclasses.asdict(mc))
        return cls(graphdef, params, catalog, config, info, step)

    @classmethod
    def from_checkpoint(cls, run_dir: str | Path, which: str = "best") -> "Recommender":
        run = RunDir.open(run_dir)
        m = run.load_model(which)
        return cls(m.graphdef, m.params, m.catalog, m.config, m.info, m.step, run)
