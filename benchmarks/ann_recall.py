"""Recall of the approximate item index (``jaxrec.ann``) on trained models and real data.

    python benchmarks/ann_recall.py --checkpoint runs/beauty_sasrec_ce --data ../shared/data/beauty/beauty.txt

For each run: the test users' histories (leave-one-out, up to ``--users``), their exact top-k
(seen items excluded, as the server does) against the index's, for each index spec and search
setting; recall@10 and @100, search time per query on one thread, build time, and the test
NDCG@10 of the index's lists next to the exact lists' (what the approximation costs in the
metric users see). ``benchmarks/scale.py --index`` measures the same on synthetic catalogs of
up to 10M items, whose mostly untrained embeddings are close to random: the hard case.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def ndcg10(lists: np.ndarray, targets: np.ndarray) -> float:
    hit = lists[:, :10] == targets[:, None]  # (U, 10)
    return float((hit / np.log2(np.arange(2, 12))[None, :]).sum(1).mean())


def measure(run: str, data: str, specs: list[str], users: int) -> list[dict]:
    import faiss

    from jaxrec.ann import ItemIndex, recall_at_k
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.data.splits import pad_histories
    from jaxrec.inference import Recommender

    rec = Recommender.from_checkpoint(run)
    split = leave_one_out(load_dataset(data))
    es = split.test
    n = min(users, len(es))
    hist = pad_histories(split.data.items, es.start[:n], es.end[:n], rec.stage.max_len)  # (n, L)
    targets = np.asarray(es.target[:n])
    exact, vecs = [], []
    for lo in range(0, n, 256):
        h = hist[lo: lo + 256]
        exact.append(np.asarray(rec.scorer.top_k(h, 100, exclude=h).items))
        vecs.append(np.asarray(rec.scorer.user_vectors(h)[0]))
    exact, vecs = np.concatenate(exact), np.concatenate(vecs)
    removed = [h[h > 0] for h in hist]
    rows = []
    for entry in specs:
        spec, _, params = entry.partition(":")
        t = time.perf_counter()
        index = ItemIndex(rec.scorer.item_vectors(), spec)
        build = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        for p in (params.split(";") if params else [""]):
            if p:
                index.set_params(p)
            t = time.perf_counter()
            got = index.search(vecs, 100, removed)[1]
            ms = 1000 * (time.perf_counter() - t) / n
            rows.append({"run": run, "items": index.size, "users": n, "index": index.describe(), "build_s": build,
                         "recall@10": recall_at_k(got[:, :10], exact[:, :10]), "recall@100": recall_at_k(got, exact),
                         "ms_per_query": ms, "ndcg10_exact": ndcg10(exact, targets), "ndcg10_index": ndcg10(got, targets)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", required=True)
    ap.add_argument("--data", action="append", required=True, help="one per --checkpoint")
    ap.add_argument("--index", action="append", default=None,
                    help="SPEC[:PARAMS;PARAMS...], e.g. 'HNSW32:efSearch=64;efSearch=128' (repeatable)")
    ap.add_argument("--users", type=int, default=4096)
    ap.add_argument("--out", default="benchmarks/ann_recall.json")
    args = ap.parse_args(argv)
    specs = args.index or ["HNSW32:efSearch=32;efSearch=64;efSearch=128;efSearch=256", "ivf:nprobe=8;nprobe=32;nprobe=128"]
    rows = []
    for run, data in zip(args.checkpoint, args.data, strict=True):
        rows += measure(run, data, specs, args.users)
    cols = ["run", "items", "index", "recall@10", "recall@100", "ms_per_query", "ndcg10_exact", "ndcg10_index", "build_s"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else f"{r[c]:,}" if isinstance(r[c], int)
                                else str(r[c]) for c in cols) + " |")
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
