"""SASRec+ with genre embeddings on ML-1M, 40 minutes on a 2-core CPU: the features ablation.

``ml1m_sasrec_ce_cpu40.py`` unchanged but for ``model_args.features=["genres"]``: each item's
representation is its id embedding plus the mean of its genres' embeddings (movies.dat beside
ml-1m.txt; ``jaxrec.models.layers.FeatureEmbedding``), as in the input and output tables alike.
A lead from the new-items benchmark (benchmarks/RESULTS.md, "New items at serve time"), where
this model trained 10 minutes on 95% of the items.

Expected: the published SASRec+ figure is the reference (test NDCG@10 0.1821, Klenitskiy &
Vasilev 2023; no genres there). Measured on the 2-core CPU (2026-12-01, sharing the cores with
other work): seed 0 0.1866 (HR@10 0.3182; 172 epochs), seed 1 0.1835 (HR@10 0.3161; 144 epochs),
seed 2 0.1815 (HR@10 0.3147; 58 epochs, starved by test runs), mean 0.1839, against 0.1793 for
``ml1m_sasrec_ce_cpu40.py`` without genres (one seed); see
benchmarks/RESULTS.md ("Longer budgets for the CPU recipe").

    jaxrec train --config configs/ml1m_sasrec_ce_genres_cpu40.py --data ../shared/data/ml-1m/ml-1m.txt \\
        --out runs/ml1m_sasrec_ce_genres_cpu40
"""

import dataclasses

from ml1m_sasrec_ce_cpu40 import get_config as base  # configs build on each other by import


def get_config():
    return dataclasses.replace(base(), model_args={"features": ["genres"]})
