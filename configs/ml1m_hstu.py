"""HSTU (sampled softmax, 128 negatives, logQ-corrected) on ML-1M (leave-one-out protocol).

Expected (leave-one-out, full ranking, seen items excluded, all users): no published figure on this protocol; raw-protocol HSTU NDCG@10 0.1720 (generative-recommenders).
Measured on 1x H100 (runs sharing the GPU): 0.1753 on this protocol (230 epochs, early stop, 4.5 min). See benchmarks/RESULTS.md.

    jaxrec train --config configs/ml1m_hstu.py --data ../shared/data/ml-1m/ml-1m.txt --out runs/ml1m_hstu
"""

from jaxrec.train.config import Config, Retrieval


def get_config():
    return Config(model='hstu/base', loss='sampled_softmax', num_negatives=128, batch_size=128,
                  lr=0.001, epochs=400, eval_every=5, patience=5, seed=0,
                  length_buckets=[32, 64, 100, 150], retrieval=Retrieval(shared_negatives=True),
                  expected={'dataset': 'ml-1m', 'NDCG@10': None, 'HR@10': None,
                            'source': 'no published figure on this protocol; raw-protocol HSTU NDCG@10 0.1720 (generative-recommenders)'})
