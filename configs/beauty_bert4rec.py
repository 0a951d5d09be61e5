"""BERT4Rec on Amazon Beauty.

Expected (leave-one-out, full ranking, seen items excluded, all users): test NDCG@10 0.0187, HR@10 0.0338 (Klenitskiy & Vasilev, RecSys 2023).
Measured on 1x H100 (runs sharing the GPU): 0.0195 (104.2%; 71 epochs in a 7-minute budget). See benchmarks/RESULTS.md.

    jaxrec train --config configs/beauty_bert4rec.py --data ../shared/data/beauty/beauty.txt --out runs/beauty_bert4rec
"""

from jaxrec.train.config import Config


def get_config():
    return Config(model='bert4rec/base', loss='cloze', model_args={'max_len': 50}, batch_size=128,
                  lr=0.001, epochs=400, eval_every=5, patience=8, seed=0,
                  expected={'dataset': 'beauty', 'NDCG@10': 0.0187, 'HR@10': 0.0338,
                            'source': 'Klenitskiy & Vasilev, RecSys 2023'})
