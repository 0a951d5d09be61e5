"""BERT4Rec (cloze masking, CE over the catalog) on ML-1M.

Expected (leave-one-out, full ranking, seen items excluded, all users): test NDCG@10 0.1537, HR@10 0.2843 (Klenitskiy & Vasilev, RecSys 2023).
Measured on 1x H100 (runs sharing the GPU): 0.1539 (100.1%; 393 epochs in an 8-minute budget). See benchmarks/RESULTS.md.

    jaxrec train --config configs/ml1m_bert4rec.py --data ../shared/data/ml-1m/ml-1m.txt --out runs/ml1m_bert4rec
"""

from jaxrec.train.config import Config


def get_config():
    return Config(model='bert4rec/base', loss='cloze', batch_size=128, lr=0.001, epochs=2000,
                  eval_every=5, patience=8, seed=0,
                  length_buckets=[32, 64, 100, 150],
                  expected={'dataset': 'ml-1m', 'NDCG@10': 0.1537, 'HR@10': 0.2843,
                            'source': 'Klenitskiy & Vasilev, RecSys 2023'})
