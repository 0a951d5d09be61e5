"""SASRec+ on Amazon Beauty with its softmax over the target and the items outside the sequence.

``beauty_sasrec_ce.py`` (the published SASRec+ settings: max_len 50, dropout 0.5, batch 128,
lr 1e-3, early stop) with one change: ``retrieval.negatives_outside_sequence``, so an item the
user chose elsewhere in the window is never pushed down as a negative. On ml-1m.txt the same
change, at the same budget and nothing else changed, lifted the CPU recipe from 0.1804 to
0.1898 (mean of 3 seeds, ``ml1m_sasrec_ce_unseen_cpu40.py``); the plain config on beauty reached
0.0321 on an H100 (98.2% of the published 0.0327). This asks whether the change closes beauty's
last 2% with the published settings otherwise kept, a check that it is not tuned to ml-1m.

Cost on the 2-core CPU: 78 batches an epoch (length buckets from the data), ~2-3 minutes an epoch
alone; the plain config stopped at epoch 48 on the H100, so a seed is about two hours and is
trained in pieces with ``--resume``.

Expected: test NDCG@10 0.0327, HR@10 0.0533 (SASRec+, Klenitskiy & Vasilev, RecSys 2023).
Not yet measured: seed 0 was stopped by SIGTERM after epoch 7 in session 46 (validation 0.0067 at
epoch 6, beside three other runs); its checkpoint did not reach session 47 (``runs/`` is not kept
from one machine to the next), where the cores went to ``ml1m_sasrec_ce_vanilla_wsd.py``: start
it again from the beginning, and take ``--resume`` only within one machine's ``runs/``.

    jaxrec train --config configs/beauty_sasrec_ce_unseen.py --data ../shared/data/beauty/beauty.txt \\
        --out runs/beauty_sasrec_ce_unseen_s0 --set seed=0
"""

import dataclasses

from beauty_sasrec_ce import get_config as base  # configs build on each other by import


def get_config():
    cfg = base()
    return dataclasses.replace(cfg, retrieval=dataclasses.replace(cfg.retrieval, negatives_outside_sequence=True))
