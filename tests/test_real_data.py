"""Checks on the real ml-1m file (skipped when ../shared/data is absent)."""

import numpy as np

from jaxrec.data import leave_one_out, load_dataset
from jaxrec.metrics import evaluate
from jaxrec.models import MostPopular


def test_ml1m_counts(ml1m_path):
    st = load_dataset(str(ml1m_path)).stats()
    assert (st["users"], st["items"], st["interactions"]) == (6040, 3416, 999_611)
    assert st["seq_len"]["min"] == 18 and st["seq_len"]["max"] == 2277


def test_ml1m_popularity_matches_independent_computation(ml1m_path):
    """An independent pass over the raw file, per user in NumPy, of the whole protocol."""
    raw = np.loadtxt(ml1m_path, dtype=np.int64)
    users = {}
    for u, i in raw:
        users.setdefault(u, []).append(i)
    counts = np.zeros(raw[:, 1].max() + 1)
    for s in users.values():
        np.add.at(counts, s[:-2], 1)
    ndcg, hr, mrr = [], [], []
    for s in users.values():
        hist, tgt = set(s[:-1]), s[-1]
        cand = np.array([j for j in range(1, len(counts)) if j not in hist or j == tgt])
        rank = 1 + int(((counts[cand] >= counts[tgt]) & (cand != tgt)).sum())
        hr.append(rank <= 10)
        ndcg.append(1 / np.log2(rank + 1) if rank <= 10 else 0.0)
        mrr.append(1 / rank)
    split = leave_one_out(load_dataset(str(ml1m_path)))
    m = evaluate(MostPopular.fit(split), split, "test").metrics
    assert abs(m["HR@10"] - np.mean(hr)) < 1e-4
    assert abs(m["NDCG@10"] - np.mean(ndcg)) < 1e-4
    assert abs(m["MRR"] - np.mean(mrr)) < 1e-4
