"""Encoder-decoder re-ranker on ML-1M: the target-attention config with another model.

Same training data, negatives (half from the SASRec+ retriever's top 200), warm start and
selection as configs/ml1m_target_attention.py. Pipeline figures: python benchmarks/rankers.py.

    jaxrec train --config configs/ml1m_encdec.py --data ../shared/data/ml-1m/ml-1m.txt --out runs/ml1m_encdec
"""

import dataclasses

from ml1m_target_attention import get_config as base  # configs build on each other by import


def get_config():
    cfg = base()
    return dataclasses.replace(cfg, model='encdec')
