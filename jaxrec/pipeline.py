"""Two-stage recommendation: retrieve top-N with a retrieval model, re-rank with a ranker.

    scores = retriever.score_all(history)            # (B, N_items+1), one dot product per item
    cand   = top_N(where(allowed, scores, -inf))     # (B, N) the retriever's best unseen items
    rs     = ranker.score(history, cand)             # (B, N) cross-attention, per candidate
    top-k of rs (+ blend x retrieval score) -> items # (B, k)

Both stages run inside one jitted function of ``jaxrec.scoring`` (no host round trip between
them); evaluation, ``jaxrec recommend`` and the server all call that one function. For the
full-ranking protocol the pipeline's ``score_all`` puts the N candidates above every other
item, ordered by the ranker; the rest keep the retriever's order, so the metrics are exactly
those of the pipeline's output.
"""

from __future__ import annotations

import numpy as np

from jaxrec.errors import UserError
from jaxrec.inference import Recommender, Recommends
from jaxrec.scoring import Scorer


def default_blend(ranker: Recommender, blend: float | None) -> float:
    """``blend``, or when None the weight the ranker was trained with as a residual on its
    retriever (``ranking.residual`` in its config; 0 for a ranker trained alone)."""
    return float(ranker.config.ranking.residual) if blend is None else float(blend)


def check_stages(retriever, ranker, candidates: int) -> None:
    """The two checkpoints fit together: model kinds, one catalog, 1 <= N <= catalog size."""
    if retriever.kind != "retrieval":
        raise UserError("the first stage must be a retrieval model (sasrec, bert4rec, gsasrec, hstu)")
    if ranker.kind != "ranking":
        raise UserError("the second stage must be a ranking model (target_attention, bst, encdec)")
    if list(retriever.catalog.ids) != list(ranker.catalog.ids):
        raise UserError("retriever and ranker were trained on different catalogs")
    if retriever.uses_time:
        raise UserError("the two-stage pipeline does not pass event times yet: use a retriever "
                        "without relative time bias (time_buckets=0)")
    n_items = retriever.catalog.num_items
    if not 0 < candidates <= n_items:
        raise UserError(f"candidates must be in 1..{n_items}, got {candidates}")


class Pipeline(Recommends):
    """A retrieval ``Recommender`` and a ranking ``Recommender`` as one compiled scorer."""

    def __init__(self, retriever: Recommender, ranker: Recommender, candidates: int = 200,
                 exclude_seen: bool = True, blend: float | None = None):
        check_stages(retriever, ranker, candidates)
        self.retriever, self.ranker, self.n = retriever, ranker, candidates
        self.blend = default_blend(ranker, blend)
        self.catalog, self.exclude_seen = retriever.catalog, exclude_seen
        self.kind = "pipeline"
        self.name = f"{retriever.name}+{ranker.name}"
        self.step = retriever.step
        self.scorer = Scorer(retriever.stage, ranker.stage, candidates, self.blend)

    def score_all(self, history: np.ndarray, times=None) -> np.ndarray:
        """The evaluation ``Scorer`` interface over the pipeline's final order (see module doc)."""
        history = np.asarray(history, np.int32)
        exclude = history if self.exclude_seen else np.zeros((len(history), 1), np.int32)
        return self.scorer.final_scores(history, exclude)

    def stages(self, history: np.ndarray, k: int, exclude_seen: bool = True):
        """(B, L) -> (retrieval scores (B, N+1), final values (B, k), items (B, k))."""
        out = self.scorer.top_k(history, k, exclude=history if exclude_seen else None)
        return self.retriever.score_all(history), out.values, out.items
