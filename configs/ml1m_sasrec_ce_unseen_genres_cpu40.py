"""SASRec+ whose softmax leaves out the window's items, with genre embeddings: the two leads together.

``ml1m_sasrec_ce_unseen_cpu40.py`` (the full softmax over the target and the items outside the
sequence's training window) with ``model_args.features=["genres"]`` as in
``ml1m_sasrec_ce_genres_cpu40.py`` (each item's representation is its id embedding plus the
mean of its genres' embeddings, from movies.dat beside ml-1m.txt). Each lead alone lifted the
40-minute recipe: the excluded-window softmax to 0.1907 (one seed), genres to a mean of 0.1839
over 3 seeds, against 0.1804 for the plain recipe.

Expected: the target is the issue's 5%-above-the-best bar on this file, test NDCG@10 >= 0.195
(the best published figure, SASRec+ 3000, is 0.1857). Measured on the 2-core CPU (session 24,
seed 0): test 0.1904 / HR@10 0.3260 after 189 epochs (best validation 0.1993), level with the
flag alone (0.1907): the two leads do not add up. benchmarks/RESULTS.md, "Longer budgets for the
CPU recipe".

    jaxrec train --config configs/ml1m_sasrec_ce_unseen_genres_cpu40.py \\
        --data ../shared/data/ml-1m/ml-1m.txt --out runs/ml1m_sasrec_ce_unseen_genres_cpu40
"""

import dataclasses

from ml1m_sasrec_ce_unseen_cpu40 import get_config as base  # configs build on each other by import


def get_config():
    return dataclasses.replace(base(), model_args={"features": ["genres"]})
