"""SASRec+ on Amazon Beauty with its softmax over the target and the items outside the sequence.

``beauty_sasrec_ce.py`` (the pre-norm ``sasrec/plus`` with max_len 50, dropout 0.5, batch 128,
lr 1e-3, early stop; not all the authors' settings: their code uses dropout 0.1 and 128 users a
step, where these length buckets put ~500 in a step: ``beauty_sasrec_ce_vanilla.py`` is theirs
whole, ``beauty_sasrec_ce_unseen_b128.py`` this at 128 users a step) with one change: ``retrieval.negatives_outside_sequence``, so an item the
user chose elsewhere in the window is never pushed down as a negative. On ml-1m.txt the same
change, at the same budget and nothing else changed, lifted the CPU recipe from 0.1804 to
0.1898 (mean of 3 seeds, ``ml1m_sasrec_ce_unseen_cpu40.py``); the plain config on beauty reached
0.0321 on an H100 (98.2% of the published 0.0327). This asks whether the change closes beauty's
last 2% with the rest kept, a check that it is not tuned to ml-1m.

Cost on the 2-core CPU: 78 batches an epoch (length buckets from the data), ~55 s an epoch alone
(the catalog softmax skips padded positions since session 47): about 80 minutes a seed.

Expected: test NDCG@10 0.0327, HR@10 0.0533 (SASRec+, Klenitskiy & Vasilev, RecSys 2023).
Measured (session 48, seed 0, 2-core CPU, ~55 s an epoch alone): best validation 0.0407 at epoch
56, early stop at 66, test 0.0322 / HR@10 0.0509 (98.5%, not met; the plain config on an H100:
0.0321). Seed 1 (session 50): best validation 0.0407 at epoch 54, early stop at 64, test 0.0325 /
HR@10 0.0515. Seed 2 (sessions 50-51): best validation 0.0413 at epoch 60, early stop at 70, test
0.0319 / HR@10 0.0505. Three seeds: 0.0322 +- 0.0003 (98.5%, not met). See benchmarks/RESULTS.md.

    jaxrec train --config configs/beauty_sasrec_ce_unseen.py --data ../shared/data/beauty/beauty.txt \\
        --out runs/beauty_sasrec_ce_unseen_s0 --set seed=0
"""

import dataclasses

from beauty_sasrec_ce import get_config as base  # configs build on each other by import


def get_config():
    cfg = base()
    return dataclasses.replace(cfg, retrieval=dataclasses.replace(cfg.retrieval, negatives_outside_sequence=True))
