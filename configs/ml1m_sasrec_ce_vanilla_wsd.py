"""``ml1m_sasrec_ce_vanilla.py`` with the schedule that met the BCE figure: the constant rate for
the first 70 of the 100 epochs, a linear decay to 0 over the last 30 (warmup-stable-decay), no
patience stop.

The published settings with a constant 1e-3 and patience 10 reach 0.1808 +- 0.0012 (best
validation at epochs 60-77, where patience stops each run at a noisy peak). The same settings for
SASRec BCE went from 0.1340 +- 0.0004 to 0.1356 +- 0.0012 with this schedule
(``ml1m_sasrec_bce_vanilla_wsd.py``), while a decay from the first epoch lowered them (0.1302);
on CE the constant runs peak earlier, so the decay over epochs 70-100 settles a model already near
its best. The model, the data and the epoch budget stay the published ones.

Expected (leave-one-out, full ranking, seen items excluded, all users): test NDCG@10 0.1821,
HR@10 0.3152 (SASRec+, Klenitskiy & Vasilev, RecSys 2023). Measured on the 2-core CPU
(session 47, three seeds side by side, 116 minutes): 0.1797, 0.1830, 0.1813 = 0.1813 +- 0.0017
(HR@10 0.3141), 99.6%, not met; +0.0005 over the constant rate, inside the seeds' spread: on CE
the decay settles a model that has converged by epoch 70. See benchmarks/RESULTS.md.

    for s in 0 1 2; do jaxrec train --config configs/ml1m_sasrec_ce_vanilla_wsd.py \\
        --data ../shared/data/ml-1m/ml-1m.txt --out runs/ml1m_sasrec_ce_vanilla_wsd_s$s --set seed=$s & done
"""

import dataclasses

from ml1m_sasrec_ce_vanilla import get_config as base  # configs build on each other by import


def get_config():
    return dataclasses.replace(base(), schedule="linear", decay_fraction=0.3, patience=1000)
