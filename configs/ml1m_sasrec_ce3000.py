"""SASRec+ 3000: SASRec trained with cross-entropy over the positive and 3,000 sampled negatives.

Klenitskiy & Vasilev (RecSys 2023, "Turning Dross Into Gold Loss"), their code's settings
(`src/configs/SASRec.yaml` + `+dataset.num_negatives=3000`): d=64, 2 blocks, 1 head, L=200,
dropout 0.1, batch 128, Adam lr 1e-3, at most 100 epochs, patience 10; one draw of 3,000
uniform negatives per sequence, shared by all its positions (`full_negative_sampling=False`).
Differences here: our draws are with replacement and exclude only each position's own
positive (theirs: without replacement, excluding the whole sequence; that draw is
``retrieval.negatives_outside_sequence=true``, ``ml1m_sasrec_ce3000_unseen_cpu40.py``), and uniform sampling
needs no logQ correction (its log q is a constant). On ML-1M's 3,416 items 3,000 negatives
cost about what the full softmax does; the point of the recipe is larger catalogs.

Expected: test NDCG@10 0.1857 (the paper's table for ml-1m.txt), the best published figure on
this file that we know of.

    jaxrec train --config configs/ml1m_sasrec_ce3000.py --data ../shared/data/ml-1m/ml-1m.txt \\
        --out runs/ml1m_sasrec_ce3000
"""

from jaxrec.train.config import Config, Retrieval


def get_config():
    return Config(model='sasrec/plus', loss='sampled_softmax', num_negatives=3000, sampler='uniform',
                  retrieval=Retrieval(shared_negatives=True), batch_size=128, lr=1e-3, warmup_steps=0,
                  epochs=100, eval_every=1, patience=10, seed=0, length_buckets=[32, 64, 100, 150],
                  expected={'dataset': 'ml-1m', 'NDCG@10': 0.1857,
                            'source': 'Klenitskiy & Vasilev, RecSys 2023 (SASRec+ 3000)'})
