"""gSASRec (256 negatives, gBCE with t=0.75) on ML-1M.

Expected (leave-one-out, full ranking, seen items excluded, all users): test NDCG@10 0.1726, HR@10 0.3003 (Petrov & Macdonald, RecSys 2023).
Measured on 1x H100 (two runs sharing the GPU), 8 minutes: test NDCG@10 0.1690 / 0.1678 / 0.1674
for seeds 0 / 1 / 2 (median 0.1678, 97.2%; bar 0.1674). The settings that matter: a separate output
item table (gsasrec/base, as in gSASRec-pytorch), 256 negatives per position, dropout 0.3 and the
learning rate decayed linearly to 0 over the time budget (schedule="linear_time": on a slower device,
raise max_minutes). See benchmarks/RESULTS.md.

    jaxrec train --config configs/ml1m_gsasrec.py --data ../shared/data/ml-1m/ml-1m.txt --out runs/ml1m_gsasrec
"""

from jaxrec.train.config import Config, Retrieval


def get_config():
    return Config(model='gsasrec/base', model_args={'dropout': 0.3}, loss='gbce',
                  num_negatives=256, batch_size=128, lr=0.001, epochs=2000, schedule='linear_time',
                  max_minutes=8.0, eval_every=5, patience=20, seed=0,
                  length_buckets=[32, 64, 100, 150], retrieval=Retrieval(gbce_t=0.75, shared_negatives=False),
                  expected={'dataset': 'ml-1m', 'NDCG@10': 0.1726, 'HR@10': 0.3003,
                            'source': 'Petrov & Macdonald, RecSys 2023'})
