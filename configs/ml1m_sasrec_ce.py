"""SASRec+ (full softmax cross-entropy) on ML-1M.

Expected (Klenitskiy & Vasilev, RecSys 2023, leave-one-out, full ranking, seen excluded):
test NDCG@10 0.1821, HR@10 0.3152.

Measured: 0.1771 on 1x H100 (97.3%; 72 epochs, early stop, 5.0 min, runs sharing the GPU);
0.1732 after 65.6 min and 0.1497 after 15 min on the 2-core CPU. See benchmarks/RESULTS.md.

    jaxrec train --config configs/ml1m_sasrec_ce.py --data ../shared/data/ml-1m/ml-1m.txt --out runs/ml1m_sasrec_ce
"""

from jaxrec.train.config import Config


def get_config():
    # Batch 32 sequences (length-bucketed: about 6,400 positions a step) gives 4x the updates
    # of batch 128 per second on a 2-core CPU at about the same positions/s.
    return Config(model='sasrec/plus', loss='ce', batch_size=32, lr=0.002, warmup_steps=100,
                  epochs=200, eval_every=2, patience=5, seed=0,
                  length_buckets=[32, 64, 100, 150],
                  expected={'dataset': 'ml-1m', 'NDCG@10': 0.1821, 'HR@10': 0.3152,
                            'source': 'Klenitskiy & Vasilev, RecSys 2023'})
