"""SASRec+ (full softmax CE) on Amazon Beauty.

Expected (leave-one-out, full ranking, seen items excluded, all users): test NDCG@10 0.0327, HR@10 0.0533 (Klenitskiy & Vasilev, RecSys 2023).
Measured on 1x H100 (runs sharing the GPU): 0.0321 (98.2%; 48 epochs, early stop, 6.5 min). See benchmarks/RESULTS.md.

    jaxrec train --config configs/beauty_sasrec_ce.py --data ../shared/data/beauty/beauty.txt --out runs/beauty_sasrec_ce
"""

from jaxrec.train.config import Config


def get_config():
    return Config(model='sasrec/plus', loss='ce', model_args={'max_len': 50, 'dropout': 0.5},
                  batch_size=128, lr=0.001, epochs=200, eval_every=2, patience=5, seed=0,
                  expected={'dataset': 'beauty', 'NDCG@10': 0.0327, 'HR@10': 0.0533,
                            'source': 'Klenitskiy & Vasilev, RecSys 2023'})
