"""An ensemble of retrieval runs on one catalog: the mean of their log-probabilities.

    scores_m = member_m.score_all(history)              # (B, N+1) each member's own scores
    logp_m   = log_softmax(scores_m over items 1..N)    # (B, N+1) comparable across members
    score    = mean_m logp_m                            # (B, N+1) a geometric mean of the members'
                                                        #          next-item distributions

Why log-probabilities: members trained alike can still differ in scale (a dot product, a
cosine over a temperature, another width), and raw scores would let the largest scale decide;
each member's softmax is what its loss trained, so the mean of log-probabilities weighs them
equally. Why at all: runs of one recipe that differ only by seed (or a setting) make different
errors, and on ml-1m their mean ranks better than any of them (benchmarks/RESULTS.md,
"Ensembles"); the price is one forward pass per member at every call.

An ``Ensemble`` evaluates (``jaxrec eval --ensemble A B ...``) and recommends (``jaxrec
recommend --ensemble ...``) as one model, passing event times to members that read them (HSTU
with ``time_buckets``); it scores the whole catalog in one piece (no catalog
chunks), and the server does not serve it (one checkpoint per served model).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.errors import UserError
from jaxrec.inference import Recommender, Recommends
from jaxrec.scoring import MASKED


def _combine(scores: list) -> jax.Array:
    """Members' (B, N+1) scores -> the mean of their log-softmax over items 1..N (index 0, the
    padding id, stays MASKED)."""
    logp = [jax.nn.log_softmax(s.at[:, 0].set(-jnp.inf), axis=-1) for s in scores]  # (B, N+1) each
    return (sum(logp) / len(logp)).at[:, 0].set(MASKED)


class Ensemble(Recommends):
    """Retrieval ``Recommender``s of one catalog scored as one model (see the module doc)."""

    def __init__(self, members: list[Recommender]):
        if len(members) < 2:
            raise UserError("an ensemble needs at least two runs")
        first = members[0]
        for m in members:
            if m.kind != "retrieval":
                raise UserError(f"an ensemble combines retrieval models; {m.name} is a {m.kind} model")
            if list(m.catalog.ids) != list(first.catalog.ids):
                raise UserError(f"{m.name} was trained on another item catalog than {first.name}: "
                                "an ensemble's runs must share one")
        self.members, self.catalog = members, first.catalog
        self.kind, self.config, self.step = "retrieval", first.config, None
        self.name = "ensemble(" + ", ".join(m.name + (f" {m.run.path.name}" if m.run is not None else "")
                                            for m in members) + ")"
        self._combine = jax.jit(_combine)

    @property
    def max_len(self) -> int:
        return max(m.max_len for m in self.members)

    @property
    def uses_time(self) -> bool:
        """Whether any member reads event times (HSTU's relative time bias): the ensemble is then
        given them, and passes each such member its own window's."""
        return any(m.uses_time for m in self.members)

    def _member_scores(self, m, history: np.ndarray, times) -> jax.Array:
        h = history[:, -m.max_len:]  # (B, w) its own latest items
        if not m.uses_time:
            return m.score_all(h)
        if times is None:
            raise UserError(f"{m.name} reads event times: give the ensemble times")
        return m.score_all(h, np.asarray(times)[:, -(h.shape[1] + 1):])  # (B, w + 1): its items' and the query's

    def score_all(self, history: np.ndarray, times=None) -> jax.Array:
        """(B, L) item indices -> (B, N+1) the mean of the members' log-probabilities; each
        member reads its own ``max_len`` latest items. ``times`` (B, L + 1), for members that use
        them: the history's event times and the query's last."""
        history = np.asarray(history, np.int32)
        return self._combine([self._member_scores(m, history, times) for m in self.members])

    def score(self, history: np.ndarray, candidates: np.ndarray, times=None) -> jax.Array:
        """(B, L) history, (B, C) candidate indices -> (B, C) ensemble scores."""
        return jnp.take_along_axis(self.score_all(history, times), jnp.asarray(candidates, jnp.int32), axis=1)

    def top_k(self, history: np.ndarray, k: int, exclude_seen: bool = True, times=None):
        """(B, L) -> (values, items) (B, k), seen items removed if asked."""
        s = self.score_all(history, times)  # (B, N+1)
        if exclude_seen:
            h = jnp.asarray(history, jnp.int32)
            s = s.at[jnp.arange(s.shape[0])[:, None], h].set(MASKED)
        s = s.at[:, 0].set(MASKED)
        values, items = jax.lax.top_k(s, k)
        return values, items

    def recommend(self, history, k: int = 10, exclude_seen: bool = True, times=None, now=None,
                  diversity: float = 0.0, diversity_by: str = "", **kw):
        if diversity or diversity_by:
            raise UserError("diversity re-ranks one model's lists: not available for an ensemble")
        return super().recommend(history, k, exclude_seen, times, now)
