"""SASRec+ (full softmax cross-entropy) on ML-1M.

Expected (Klenitskiy & Vasilev, RecSys 2023, leave-one-out, full ranking, seen excluded):
test NDCG@10 0.1821, HR@10 0.3152.

    jaxrec train --config configs/ml1m_sasrec_ce.py --data ../shared/data/ml-1m/ml-1m.txt --out runs/ml1m_sasrec_ce
"""


def get_config():
    return dict(model="sasrec/plus", loss="ce", batch_size=128, lr=1e-3, epochs=200,
                eval_every=2, patience=5, seed=0)
