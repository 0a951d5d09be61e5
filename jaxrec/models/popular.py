"""MostPopular: the baseline every sequential model must beat by a wide margin.

Score of item i = how often i occurs in the training sequences (leave-one-out: s[:n-2]
of every user). Ties between equally popular items count against the target, as in every
evaluation here.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxrec.data.splits import Split


class MostPopular:
    """Implements the ``Scorer`` interface of ``jaxrec.metrics`` with a constant score vector."""

    max_len = 1  # reads no history

    def __init__(self, counts: np.ndarray):
        self.counts = np.asarray(counts, np.float32)  # (N+1,)
        self._scores = jnp.asarray(self.counts)

    @classmethod
    def fit(cls, split: Split) -> "MostPopular":
        return cls(split.train_item_counts())

    def score_all(self, history: np.ndarray):
        return jnp.broadcast_to(self._scores, (history.shape[0], self._scores.shape[0]))  # (B, N+1)
