"""eSASRec-style: SASRec+ 3000 negatives with LiGR layers, the 40-minute CPU recipe.

``ml1m_sasrec_ce3000_cpu40.py`` with one change, the model: ``sasrec/ligr`` (the blocks'
residual updates gated per channel by sigmoid(W x), and a SwiGLU feed-forward; Tikhonovich et
al., RecSys 2025, report LiGR layers with a sampled softmax above SASRec+ on their ML-1M split).
Side by side with the ``pre``-layout run of the same recipe (mean of 3 seeds 0.1832), it
measures what the layers add on SASRec's file.

Expected: the published SASRec+ 3000 figure (test NDCG@10 0.1857) is the reference.

    jaxrec train --config configs/ml1m_esasrec_cpu40.py --data ../shared/data/ml-1m/ml-1m.txt \\
        --out runs/ml1m_esasrec_cpu40
"""

import dataclasses

from ml1m_sasrec_ce3000_cpu40 import get_config as base  # configs build on each other by import


def get_config():
    return dataclasses.replace(base(), model="sasrec/ligr")
