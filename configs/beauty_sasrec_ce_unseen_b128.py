"""``beauty_sasrec_ce_unseen.py`` (dropout 0.5, the softmax over the items outside the window) at the
authors' 128 users a step instead of ~500.

Why: ``batch_size=128`` counts rows of the longest window (50); the length buckets give a bucket
of short windows proportionally more rows (``TrainBatches``), so on beauty (mean length 8.8) a
step of ``beauty_sasrec_ce_unseen.py`` held ~500 users, 78 steps an epoch, and its three seeds
took 54-60 epochs (~4,500 steps) to their best validation. Klenitskiy & Vasilev's code takes 128
users a step, 315 steps an epoch; ``length_buckets=[]`` does the same here (every user in one
window of 50). Dropout 0.5 stays: it gave beauty's best validation figure (0.0407-0.0413)
where the authors' 0.1 flattened at 0.0343 (``beauty_sasrec_ce_unseen_d01.py``) and their whole
setup peaked at epoch 7 (``beauty_sasrec_ce_vanilla.py``).

Cost on the 2-core CPU: 315 steps, ~100 s an epoch alone with validation every 2.

Expected: test NDCG@10 0.0327, HR@10 0.0533 (SASRec+, Klenitskiy & Vasilev, RecSys 2023).

    jaxrec train --config configs/beauty_sasrec_ce_unseen_b128.py --data ../shared/data/beauty/beauty.txt \\
        --out runs/beauty_sasrec_ce_unseen_b128_s0 --set seed=0
"""

import dataclasses

from beauty_sasrec_ce_unseen import get_config as base  # configs build on each other by import


def get_config():
    return dataclasses.replace(base(), length_buckets=[])
