"""SASRec+ (full softmax cross-entropy) on ML-1M within 15 minutes of training on a 2-core CPU.

The model is the paper's (``sasrec/plus``: d=64, 2 blocks, 1 head, L=200, dropout 0.1); only
the schedule is for a fixed time budget:
- batch 8 sequences instead of 32: four times the updates per epoch at ~10% fewer
  positions/s on 2 cores, so the model leaves the popularity plateau of the first epochs
  sooner (validation NDCG@10 0.137 after 2 epochs vs 0.098);
- twice the learning rate of ``ml1m_sasrec_ce.py`` (4e-3);
- ``schedule="linear_time"``: after 100 warmup steps the learning rate falls linearly to 0
  exactly when the 15 minutes run out, however many epochs this machine manages (about 18
  here); a step-count schedule would either stop mid-decay on a slow day or end early on a
  fast one. Without dropout the same schedule overfits after ~14 epochs (0.1665).
For full convergence use ml1m_sasrec_ce.py.

Expected: the published SASRec+ figure is the reference (test NDCG@10 0.1821); the target
for this budget is 0.17. Measured on the 2-core CPU: 0.1731 (HR@10 0.3028; 18 epochs,
15.1 min) for this file as committed, 0.1745 for the probe run it came from; see benchmarks/RESULTS.md (row ``ml1m_sasrec_ce_cpu15``).

    jaxrec train --config configs/ml1m_sasrec_ce_cpu15.py --data ../shared/data/ml-1m/ml-1m.txt \\
        --out runs/ml1m_sasrec_ce_cpu15
"""

import dataclasses

from ml1m_sasrec_ce import get_config as base  # configs build on each other by import


def get_config():
    return dataclasses.replace(base(), batch_size=8, lr=4e-3, schedule="linear_time", max_minutes=15,
                               epochs=100)
