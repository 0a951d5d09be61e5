"""BERT4Rec (the paper's model, cloze masking, CE over the catalog) on ML-1M in 90 minutes of a 2-core CPU.

``ml1m_bert4rec.py``'s model and loss with the CPU recipe of ``ml1m_sasrec_ce_cpu15.py`` and
``ml1m_gsasrec_unseen_all_cpu110.py``: a fixed time budget spent fully, whatever the machine's speed.
- batch 32 instead of 128: four times the updates per epoch; on 2 cores a batch of 32 trains as
  many sequences a second as one of 128 (~350 vs ~300 a second, measured 2026-12-07);
- twice the learning rate (2e-3) after 100 warm-up steps;
- ``schedule="linear_time"``: the rate falls linearly to 0 exactly when the 90 minutes run out,
  so the run ends settled instead of where a patience counter happens to stop it.
The published settings (batch 128, lr 1e-3 constant, ~393 epochs) take ~2.3 hours a seed on these
2 cores; this recipe is the cheaper way to the three seeds issue 21 asks for.

Expected: the published BERT4Rec figure is the reference (test NDCG@10 0.1537, Klenitskiy &
Vasilev 2023); the published settings on an H100 gave 0.1539 (one seed). Measured on the 2-core
CPU: seed 0 (session 51; its first ~22 minutes beside CI) 234 epochs, best validation 0.1623 at
epoch 225, test 0.1551 / HR@10 0.2838 (100.9%); seed 1 (sessions 51-52, alone) 308 epochs, test
0.1627 / HR@10 0.2882 (105.9%); seed 2 (session 52) 271 epochs, test 0.1574 (102.4%). Three seeds:
0.1584 +- 0.0039, 103.1%, met; see benchmarks/RESULTS.md ("BERT4Rec with the 2-core CPU
recipe"). A time budget: a faster machine fits more epochs and, here, scores higher.

    jaxrec train --config configs/ml1m_bert4rec_cpu90.py --data ../shared/data/ml-1m/ml-1m.txt \\
        --out runs/ml1m_bert4rec_cpu90 [--set seed=1] [--resume]
"""

import dataclasses

from ml1m_bert4rec import get_config as base  # configs build on each other by import


def get_config():
    return dataclasses.replace(base(), batch_size=32, lr=2e-3, warmup_steps=100, schedule="linear_time",
                               max_minutes=90, epochs=5000, patience=1000)
