"""SASRec (BCE, one negative per position) on ML-1M, as the published 0.1341 was measured.

The figure is Klenitskiy & Vasilev's "SASRec vanilla" (RecSys 2023); their code trains it with
settings that differ from ``ml1m_sasrec_bce.py`` (Kang & McAuley's d=50, dropout 0.2):
- the model: d=64, dropout 0.1, the original SASRec layout (``sasrec/vanilla``), its item table
  started at N(0, 0.02) as their code does (``embed_init_std``; ours: N(0, 1/sqrt(64)));
- the negative: one per position, drawn uniformly from the items *outside the sequence's
  window* (``retrieval.negatives_outside_sequence``), never one of the user's own items;
- the optimiser: Adam with PyTorch's b2=0.999, no gradient clipping, lr 1e-3, batch 128;
- the schedule: at most 100 epochs, validation every epoch, stop after 10 without improvement;
- the batches: 128 sequences each, every one in the 200-item window (no length buckets, which
  would put up to 800 short sequences in a step: 31 steps an epoch instead of 48).

Expected (leave-one-out, full ranking, seen items excluded, all users): test NDCG@10 0.1341,
HR@10 0.25 (Klenitskiy & Vasilev, RecSys 2023). Measured on the 2-core CPU (session 36, seeds
0-2, 99-100 epochs): 0.1337, 0.1339, 0.1345, mean 0.1340 +- 0.0004 (99.9%), HR@10 0.2510; the
table init alone took validation at epoch 20 from 0.077 to 0.112. See benchmarks/RESULTS.md.

    jaxrec train --config configs/ml1m_sasrec_bce_vanilla.py --data ../shared/data/ml-1m/ml-1m.txt \\
        --out runs/ml1m_sasrec_bce_vanilla
"""

import dataclasses

from ml1m_sasrec_bce import get_config as base  # configs build on each other by import

from jaxrec.train.config import Retrieval


def get_config():
    return dataclasses.replace(base(), model="sasrec/vanilla", model_args={"embed_init_std": 0.02},
                               epochs=100, eval_every=1, patience=10, length_buckets=[],
                               clip_norm=0.0, adam_b2=0.999,
                               retrieval=Retrieval(negatives_outside_sequence=True))
