"""A trained run directory -> a compiled ``Recommender`` (top-k, scores, explanations).

Histories arrive as external item ids; unknown ids are skipped and counted, the most
recent ``max_len`` known items are used, and the result speaks external ids (with titles
when the catalog has them). The jitted functions are compiled per (batch, length) shape.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.data import ItemCatalog
from jaxrec.data.splits import query_times
from jaxrec.errors import UserError
from jaxrec.metrics import masked_top_k
from jaxrec.models import build_model
from jaxrec.train.checkpoint import restore_run
from jaxrec.train.config import TrainConfig
from jaxrec.train.step import ModelScorer, RankScorer, make_optimizer


@dataclasses.dataclass
class Recommendation:
    items: list  # external ids, best first
    scores: list
    titles: list
    unknown: int  # history ids not in the catalog (skipped)


class Recommends:
    """External ids in, ``Recommendation`` out, for anything with a catalog, ``max_len`` and
    ``top_k(history (B, L), k, exclude_seen) -> (values, items)`` (a model or a pipeline)."""

    catalog: ItemCatalog
    max_len: int
    uses_time: bool = False  # the model reads event times (HSTU relative time bias)

    def encode_history(self, external_ids) -> tuple[np.ndarray, int]:
        idx = self.catalog.index_of(external_ids)
        unknown = int((idx == 0).sum())
        idx = idx[idx > 0][-self.max_len:]
        row = np.zeros(self.max_len, np.int32)
        if len(idx):
            row[-len(idx):] = idx
        return row, unknown

    def encode_times(self, external_ids, times, now=None) -> np.ndarray:
        """(max_len + 1,) int32 times aligned with ``encode_history``, relative to the last known
        item's time; the last entry is the prediction time ``now`` (default: the last item's)."""
        times = np.asarray(times, np.int64)
        if times.shape != (len(external_ids),):
            raise UserError(f"times: need one per history item ({len(external_ids)}), got {times.size}")
        try:
            rel = query_times(times[self.catalog.index_of(external_ids) > 0][-self.max_len:], now)
        except ValueError as e:
            raise UserError(f"times: {e}") from None
        row = np.zeros(self.max_len + 1, np.int32)
        row[-len(rel):] = rel
        return row

    def recommend(self, history, k: int = 10, exclude_seen: bool = True, times=None,
                  now=None) -> Recommendation:
        """Top-k for one history of external ids; ``times`` (one per id, e.g. unix seconds) and
        ``now`` are read by time-aware models and required by them."""
        n = self.catalog.num_items
        if not 0 < k <= n:
            raise UserError(f"k must be in 1..{n}, got {k}")
        row, unknown = self.encode_history(history)
        if not row.any():
            raise UserError("no known item ids in the history")
        t = None
        if self.uses_time:
            if times is None:
                raise UserError("this model uses event times (relative time bias): give times, "
                                "one per history item")
            t = self.encode_times(history, times, now)[None]
        vals, idx = self.top_k(row[None], k, exclude_seen, times=t)
        idx, vals = np.asarray(idx)[0], np.asarray(vals)[0]
        keep = np.isfinite(vals)
        idx, vals = idx[keep], vals[keep]
        return Recommendation(self.catalog.external(idx), vals.tolist(),
                              [self.catalog.title(i) for i in idx], unknown)


class Recommender(Recommends):
    def __init__(self, graphdef, params, catalog: ItemCatalog, config: dict, step: int | None = None):
        self.graphdef, self.params, self.catalog, self.config = graphdef, params, catalog, config
        self.step = step
        self.max_len = int(config["model"]["max_len"])
        self.kind = nnx.merge(graphdef, params).kind  # "retrieval" or "ranking"
        self.uses_time = int(config["model"].get("time_buckets", 0)) > 0
        dtype = config["model"].get("dtype")
        self._scorer = (ModelScorer(graphdef, params, self.max_len, dtype, uses_time=self.uses_time)
                        if self.kind == "retrieval" else RankScorer(graphdef, params, self.max_len, dtype))

    @classmethod
    def from_checkpoint(cls, run_dir: str | Path, which: str = "best") -> "Recommender":
        d = Path(run_dir)
        if not (d / "config.json").exists():
            raise UserError(f"{d}: not a jaxrec run directory (no config.json)")
        config = json.loads((d / "config.json").read_text())
        catalog = ItemCatalog.load(d / "catalog.json")
        tcfg = TrainConfig.from_dict(config["train"])
        model = build_model(tcfg.model, catalog.num_items, tcfg.seed, catalog=catalog, **tcfg.model_args)
        graphdef, params = nnx.split(model)
        tx = make_optimizer(tcfg, 1)
        like = {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}
        state, _ = restore_run(d, like, which)
        if state is None:
            raise UserError(f"{d}: no {which!r} checkpoint yet")
        return cls(graphdef, state["params"], catalog, config, int(state["step"]))

    def score_all(self, history: np.ndarray, times=None) -> jax.Array:
        """The evaluation ``Scorer`` interface: (B, L) item indices -> (B, N+1) scores.
        ``times`` (B, L + 1): event times, for a model with ``uses_time``."""
        if self.kind != "retrieval":
            raise UserError("a ranking model scores given candidates (score), not the whole catalog; "
                            "pair it with a retrieval model (jaxrec.pipeline.Pipeline)")
        return self._scorer.score_all(history, times)

    def score(self, history: np.ndarray, candidates: np.ndarray, times=None) -> jax.Array:
        """(B, L) history, (B, C) candidate indices -> (B, C) scores (any model kind)."""
        if self.kind == "ranking":
            return self._scorer.score(history, candidates)
        return jnp.take_along_axis(self._scorer.score_all(history, times), jnp.asarray(candidates), axis=1)

    def top_k(self, history: np.ndarray, k: int, exclude_seen: bool = True, times=None):
        """(B, L) -> (values, items) (B, k) over the whole catalog, seen items removed if asked."""
        scores = self.score_all(history, times)
        excl = history if exclude_seen else np.zeros((len(history), 1), np.int32)
        return masked_top_k(scores, excl, k)
