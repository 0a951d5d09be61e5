"""The three-block all-windows SASRec+ recipe on raw ML-1M over the full 110 minutes (2-core CPU).

``ml1m_raw_sasrec_ce_unseen_all_b3_cpu35.py`` (one seed, 35 minutes, 46.6 epochs: NDCG@10 0.1914)
given the budget of the recipe it comes from (``ml1m_sasrec_ce_unseen_all_b3_cpu110.py``, 0.2009
+- 0.0018 on ``ml-1m.txt``), so that the raw-protocol row is read over 3 seeds at the recipe's own
length rather than a third of it. Nothing else changes: the learning-rate decay stretches with
``max_minutes``, as it does in the recipe.

Expected: the best published figure on this protocol, HSTU-large + MoL, NDCG@10 0.1979 (rails
README, WWW'25); issue 21 asks for 5% above it, 0.2078. Measured on the 2-core CPU (session 42,
seeds 0-2 side by side for the whole 110 minutes, 69-76 epochs each): NDCG@10 0.1947, 0.1958,
0.1922, mean 0.1943 +- 0.0018 (HR@10 0.3313): +2.6% over HSTU-large's published 0.1893, 98.2% of
0.1979, 93.5% of 0.2078 (not met); the three as an ensemble 0.1978. See benchmarks/RESULTS.md.

    for s in 0 1 2; do jaxrec train --config configs/ml1m_raw_sasrec_ce_unseen_all_b3_cpu110.py \\
        --data ../shared/data/ml-1m/user_movie_time_ordered_original_ids.txt \\
        --out runs/ml1m_raw_sasrec_ce_unseen_all_b3_cpu110_s$s --set seed=$s & done
"""

import dataclasses

from ml1m_raw_sasrec_ce_unseen_all_b3_cpu35 import get_config as base  # configs build on each other by import


def get_config():
    return dataclasses.replace(base(), max_minutes=110)
