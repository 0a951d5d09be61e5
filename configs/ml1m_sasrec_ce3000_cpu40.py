"""SASRec+ 3000 negatives with the 40-minute CPU recipe (``ml1m_sasrec_ce_cpu40.py``).

The CPU recipe (batch 8, lr 4e-3, linear decay to 0 when the 40 minutes end) with the loss of
``ml1m_sasrec_ce3000.py``: cross-entropy over the positive and 3,000 uniform negatives shared
by a sequence's positions, instead of the full softmax. Side by side with the full-softmax
run of the same recipe (0.1793), it measures what the sampled loss costs or gains.

Expected: the published SASRec+ 3000 figure (test NDCG@10 0.1857) is the reference.

    jaxrec train --config configs/ml1m_sasrec_ce3000_cpu40.py --data ../shared/data/ml-1m/ml-1m.txt \\
        --out runs/ml1m_sasrec_ce3000_cpu40
"""

import dataclasses

from ml1m_sasrec_ce3000 import get_config as sampled
from ml1m_sasrec_ce_cpu40 import get_config as base  # configs build on each other by import


def get_config():
    s = sampled()
    return dataclasses.replace(base(), loss=s.loss, num_negatives=s.num_negatives, sampler=s.sampler,
                               retrieval=s.retrieval, expected=s.expected)
