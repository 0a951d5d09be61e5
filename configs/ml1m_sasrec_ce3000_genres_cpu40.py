"""SASRec+ 3000 negatives with genre embeddings, 40 minutes on a 2-core CPU: the two best leads together.

``ml1m_sasrec_ce3000_cpu40.py`` (cross-entropy over the positive and 3,000 uniform negatives
shared by a sequence's positions; the 40-minute CPU recipe) with the item features of
``ml1m_sasrec_ce_genres_cpu40.py`` (each item's representation is its id embedding plus the
mean of its genres' embeddings, from movies.dat beside ml-1m.txt). Each lead alone, one seed,
same recipe: 3,000 negatives 0.1836, genres 0.1866 (mean of 3 seeds 0.1839), the full softmax
without genres 0.1793; this config measures whether they add up.

Expected: the published SASRec+ 3000 figure (test NDCG@10 0.1857) is the reference; the issue's
target for the best model on this file is 0.195 (5% above it). Measured on the 2-core CPU
(2026-12-02 and -03, three seeds): test NDCG@10 0.1821, 0.1827, 0.1835, mean 0.1828 +- 0.0007
(HR@10 0.3172; 83-120 epochs): no gain over either lead alone at this budget; see
benchmarks/RESULTS.md ("Longer budgets for the CPU recipe").

    jaxrec train --config configs/ml1m_sasrec_ce3000_genres_cpu40.py --data ../shared/data/ml-1m/ml-1m.txt \\
        --out runs/ml1m_sasrec_ce3000_genres_cpu40
"""

import dataclasses

from ml1m_sasrec_ce3000_cpu40 import get_config as base  # configs build on each other by import


def get_config():
    return dataclasses.replace(base(), model_args={"features": ["genres"]})
