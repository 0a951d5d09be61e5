"""``beauty_sasrec_ce_unseen.py`` with the authors' dropout: 0.1, not 0.5.

Why: the SASRec+ figure on beauty (0.0327) comes from Klenitskiy & Vasilev's own code, whose
``src/run_final.sh`` trains beauty with ``src/configs/SASRec.yaml`` unchanged but for the data
path: hidden 64, 2 blocks, 1 head, **dropout 0.1**, max_length 50, batch 128, lr 1e-3, at most
100 epochs, early stop after 10 epochs without a validation gain. ``beauty_sasrec_ce.py`` took
dropout 0.5 from the original SASRec paper's sparse-data setting, which is not what the SASRec+
figure was trained with. Everything else here is ``beauty_sasrec_ce_unseen.py``'s (the softmax over
the target and the items outside the window), so the pair is a one-setting ablation; the epoch
cap (100) and the patience (5 validations every 2 epochs = 10 epochs) are the authors'.

Cost on the 2-core CPU: ~65 s an epoch alone, validation every 2 epochs.

Expected: test NDCG@10 0.0327, HR@10 0.0533 (SASRec+, Klenitskiy & Vasilev, RecSys 2023).
Measured (session 54, seed 0, 2-core CPU, stopped with SIGTERM after 28 epochs, 39 minutes): the
validation figure rises faster than with dropout 0.5 (0.0222 against 0.0120 at epoch 10) and
flattens far lower (0.0334 / 0.0340 / 0.0342 / 0.0343 at 20 / 22 / 24 / 26, against 0.0407): the
epoch-26 checkpoint tests at 0.0274 / HR@10 0.0426 (``jaxrec eval``): with ~500 users a step
(see ``beauty_sasrec_ce_plus_b128.py``), dropout 0.1 is worse, not the missing setting alone.

    jaxrec train --config configs/beauty_sasrec_ce_unseen_d01.py --data ../shared/data/beauty/beauty.txt \\
        --out runs/beauty_sasrec_ce_unseen_d01_s0 --set seed=0
"""

import dataclasses

from beauty_sasrec_ce_unseen import get_config as base  # configs build on each other by import


def get_config():
    cfg = base()
    return dataclasses.replace(cfg, model_args={**cfg.model_args, "dropout": 0.1}, epochs=100, patience=5)
