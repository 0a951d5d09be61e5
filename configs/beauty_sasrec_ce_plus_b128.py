"""``beauty_sasrec_ce.py`` (the pre-norm ``sasrec/plus``) with two of the authors' settings it lacked:
dropout 0.1 and 128 users a step. An ablation between it and ``beauty_sasrec_ce_vanilla.py``.

Klenitskiy & Vasilev's code (``src/run_final.sh``: beauty with ``src/configs/SASRec.yaml``
unchanged but for the data path) trains beauty's SASRec+ with dropout 0.1 and 128 users a step.
``beauty_sasrec_ce.py`` took dropout 0.5 (the original SASRec paper's sparse-data setting), and
its ``batch_size=128`` is 128 rows of the longest window (50): the length buckets give a bucket of
short windows proportionally more rows (``TrainBatches``), so on beauty (mean length 8.8) a step
held ~500 users, 78 steps an epoch where the authors take 315. ``length_buckets=[]`` puts every
user in one window of 50, 128 users a step. The model (pre-norm layout, LeCun-normal dense
layers, item table at N(0, 1/d)) and the clipping stay ``sasrec/plus``'s; the whole of the
authors' setup is ``beauty_sasrec_ce_vanilla.py``.

Cost on the 2-core CPU: 315 steps, ~100 s an epoch alone with validation every 2.

Expected: test NDCG@10 0.0327, HR@10 0.0533 (SASRec+, Klenitskiy & Vasilev, RecSys 2023).
Measured (session 54, seed 0, stopped with SIGTERM after 16 epochs, 31 minutes): validation
0.0206 / 0.0319 / 0.0361 / 0.0375 at epochs 4 / 8 / 12 / 16, still rising; the epoch-16 checkpoint
tests at 0.0283 / HR@10 0.0459 (``jaxrec eval``). Stopped for the vanilla config; not a result.

    jaxrec train --config configs/beauty_sasrec_ce_plus_b128.py --data ../shared/data/beauty/beauty.txt \\
        --out runs/beauty_sasrec_ce_plus_b128_s0 --set seed=0 [--resume]
"""

import dataclasses

from beauty_sasrec_ce import get_config as base  # configs build on each other by import


def get_config():
    cfg = base()
    return dataclasses.replace(cfg, model_args={**cfg.model_args, "dropout": 0.1}, length_buckets=[],
                               epochs=100, patience=5)
