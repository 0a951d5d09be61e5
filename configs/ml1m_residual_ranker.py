"""Target attention trained as a residual on the SASRec+ retriever's score, on ML-1M.

The re-rankers of ``ml1m_target_attention.py`` are trained alone and then blended with the
retrieval score; alone they stay below the retriever (GAUC 0.84 vs 0.87), so blending adds
little. Here the training loss sees ``ranker + residual * retriever score`` for every
candidate (``residual=1``): the retriever's ordering is the starting point and the ranker
learns only the correction, spending its capacity on the hard negatives the retriever ranks
too high. The pipeline blends with the same weight by default (``Pipeline(blend=None)``).
Needs the retriever's run (configs/ml1m_sasrec_ce.py -> runs/ml1m_sasrec_ce).

Measured (2-core CPU, 2026-11-23, ``benchmarks/rankers.py``): GAUC of the sum 0.874 vs the
retriever's 0.870, but pipeline test NDCG@10 0.1731 vs 0.1732 for retrieval alone: the
retriever's scores on its own training sequences are in-sample, so the correction learned
on them does not carry to held-out positions. Kept as the starting point for a residual on
out-of-sample retrieval scores; ``ml1m_target_attention.py`` blended is the better pipeline.

    jaxrec train --config configs/ml1m_residual_ranker.py --data ../shared/data/ml-1m/ml-1m.txt \
        --out runs/ml1m_residual_ranker
"""

from jaxrec.train.config import Config, Ranking


def get_config():
    return Config(model='target_attention', loss='listwise', num_negatives=63,
                  sampler='popularity', batch_size=64, lr=0.001, warmup_steps=100, epochs=100,
                  max_minutes=15, eval_every=1, patience=4, model_args={'features': ['genres']},
                  seed=0,
                  ranking=Ranking(retriever='runs/ml1m_sasrec_ce', hard_pool=200, hard_fraction=0.5,
                                  residual=1.0, cuts_per_user=4, init_from='runs/ml1m_sasrec_ce'),
                  expected={'dataset': 'ml-1m', 'ranker': True})
