"""Target-attention re-ranker on ML-1M, trained on hard negatives from the SASRec+ retriever.

No published figure: this ranker exists to re-rank a retrieval model's top-N. It needs the
retriever's run first (configs/ml1m_sasrec_ce.py -> runs/ml1m_sasrec_ce). Selected on
validation GAUC (held-out lists: target + 100 popularity negatives). The pipeline's
full-ranking figures come from ``python benchmarks/rankers.py``.

    jaxrec train --config configs/ml1m_target_attention.py --data ../shared/data/ml-1m/ml-1m.txt \\
        --out runs/ml1m_target_attention
"""

from jaxrec.train.config import Config, Ranking


def get_config():
    # Half the 63 negatives from the retriever's top 200 (what the ranker must re-order at
    # serving time), half by popularity (what GAUC on held-out lists measures). Item-id
    # embeddings start from the retriever's (same catalog, same dim 64).
    return Config(model="target_attention", loss="listwise", num_negatives=63, sampler="popularity",
                  batch_size=64, lr=1e-3, warmup_steps=100, epochs=100, eval_every=1, patience=4,
                  model_args={"features": ["genres"]}, seed=0,
                  ranking=Ranking(retriever="runs/ml1m_sasrec_ce", hard_pool=200, hard_fraction=0.5,
                                  cuts_per_user=4, init_from="runs/ml1m_sasrec_ce"),
                  expected={"dataset": "ml-1m", "ranker": True})
