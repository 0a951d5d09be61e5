"""SASRec (BCE, one negative per position) on ML-1M.

Expected (leave-one-out, full ranking, seen items excluded, all users): test NDCG@10 0.1341, HR@10 0.25 (Klenitskiy & Vasilev, RecSys 2023).
Measured on 1x H100 (runs sharing the GPU): 0.1304 (97.2%; 260 epochs, early stop, 6.0 min). See benchmarks/RESULTS.md.

    jaxrec train --config configs/ml1m_sasrec_bce.py --data ../shared/data/ml-1m/ml-1m.txt --out runs/ml1m_sasrec_bce
"""

from jaxrec.train.config import Config


def get_config():
    return Config(model='sasrec/base', loss='bce', num_negatives=1, batch_size=128, lr=0.001,
                  epochs=400, eval_every=5, patience=5, seed=0,
                  length_buckets=[32, 64, 100, 150],
                  expected={'dataset': 'ml-1m', 'NDCG@10': 0.1341, 'HR@10': 0.25,
                            'source': 'Klenitskiy & Vasilev, RecSys 2023'})
