"""Rankers and the two-stage pipeline: scoring cost, GAUC, and NDCG@10 next to retrieval alone.

    python benchmarks/rankers.py --cost                        # candidates scored per second
    python benchmarks/rankers.py --quality --retriever runs/ml1m_sasrec_ce \\
        --rankers runs/ml1m_target_attention,runs/ml1m_encdec,runs/ml1m_bst --candidates 200

Cost: each ranker's base variant (random weights: cost does not depend on them) scores N =
100, 500, 1000 candidates for one user with a full 200-item history (ml-1m sized catalog),
median of repeated jitted calls after compilation, with the retrieval model's whole-catalog
scoring beside it. Quality, on ml-1m test, all in one run: each ranker's GAUC/AUC on held-out
lists (target + 100 popularity negatives), then the pipeline's full-ranking NDCG@10 (seen
items excluded, 6,040 users) next to the retriever alone. The blend weight (final = ranker +
w * retriever) is chosen on the validation split, never on test; w = 0 (the ranker alone)
is always reported too. Prints tables, writes benchmarks/rankers.json, and places the tables
between markers in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
from results_md import write_block

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ML1M = ROOT.parent / "shared" / "data" / "ml-1m" / "ml-1m.txt"
RANKERS = ["target_attention", "target_attention/din", "bst", "encdec", "encdec/listaware"]


def _median_s(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cost(ns=(100, 500, 1000), num_items: int = 3416, repeats: int = 7) -> list[dict]:
    from flax import nnx

    from jaxrec.models import build_model

    rng = np.random.default_rng(0)
    rows = []
    retr = build_model("sasrec/plus", num_items)
    g, p = nnx.split(retr)
    score_all = jax.jit(lambda p, h: nnx.merge(g, p).score_all(h))
    h200 = rng.integers(1, num_items + 1, (1, 200)).astype(np.int32)
    s = _median_s(lambda: score_all(p, h200), repeats)
    rows.append({"model": "sasrec/plus (retrieval, whole catalog)", "N": num_items, "ms": s * 1e3,
                 "candidates_per_s": num_items / s})
    for name in RANKERS:
        m = build_model(name, num_items)
        g, p = nnx.split(m)
        fn = jax.jit(lambda p, h, c, g=g: nnx.merge(g, p).score(h, c))
        h = h200[:, -m.config.max_len:]
        for n in ns:
            c = rng.integers(1, num_items + 1, (1, n)).astype(np.int32)
            s = _median_s(lambda fn=fn, p=p, h=h, c=c: fn(p, h, c), repeats)
            rows.append({"model": name, "history": m.config.max_len, "N": n, "ms": s * 1e3,
                         "candidates_per_s": n / s})
            print(f"{name:<22} N={n:<5} {s * 1e3:8.2f} ms  {n / s:12,.0f} candidates/s", flush=True)
    return rows


def quality(retriever: str, rankers: list[str], n: int, blends, data: str) -> dict:
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.inference import Recommender
    from jaxrec.metrics import evaluate, evaluate_lists
    from jaxrec.pipeline import Pipeline, default_blend, with_prior

    split = leave_one_out(load_dataset(data))
    retr = Recommender.from_checkpoint(retriever)
    t = time.perf_counter()
    base = evaluate(retr, split, "test").metrics
    out = {"retriever": {"run": retriever, "model": retr.name,
                         "NDCG@10": base["NDCG@10"], "HR@10": base["HR@10"],
                         "eval_s": time.perf_counter() - t,
                         "lists": evaluate_lists(retr.score, split, "test", max_len=retr.max_len).metrics},
           "rankers": []}
    print(f"retrieval alone: NDCG@10 {base['NDCG@10']:.4f}", flush=True)
    for run in rankers:
        rank = Recommender.from_checkpoint(run)
        res = json.loads((Path(run) / "results.json").read_text())
        trained_w = default_blend(rank, None)  # > 0: trained as a residual on the retriever
        # a residual ranker's GAUC is that of what it was trained to be: ranker + w * retriever
        score, max_len = with_prior(rank.score, rank.max_len, retr, trained_w)
        lists = evaluate_lists(score, split, "test", max_len=max_len).metrics
        valid = {}
        for w in sorted(set(blends) | {trained_w}):  # choose the blend on validation
            valid[w] = evaluate(Pipeline(retr, rank, n, blend=w), split, "valid").metrics["NDCG@10"]
        best_w = max(valid, key=valid.get)
        t = time.perf_counter()
        test = {w: evaluate(Pipeline(retr, rank, n, blend=w), split, "test").metrics for w in {0.0, best_w}}
        row = {"run": run, "model": rank.name, "epochs": res["epochs"],
               "train_min": res["train_seconds"] / 60, "device": res["device"], "N": n,
               "residual": trained_w, "GAUC": lists["GAUC"], "AUC": lists["AUC"], "valid_NDCG@10_by_blend": valid,
               "blend": best_w, "NDCG@10_ranker_only": test[0.0]["NDCG@10"],
               "NDCG@10_blend": test[best_w]["NDCG@10"], "HR@10_blend": test[best_w]["HR@10"],
               "pipeline_eval_s": time.perf_counter() - t}
        out["rankers"].append(row)
        print(f"{row['model']}: GAUC {row['GAUC']:.4f}  pipeline NDCG@10 ranker-only "
              f"{row['NDCG@10_ranker_only']:.4f}, blend {best_w} {row['NDCG@10_blend']:.4f}", flush=True)
    return out


def tables(res: dict) -> str:
    lines = []
    if "quality" in res:
        q = res["quality"]
        b = q["retriever"]
        lines += ["| stage(s) | epochs | train min | GAUC (test lists) | test NDCG@10 | vs retrieval | HR@10 |",
                  "|---|---|---|---|---|---|---|",
                  f"| {b['model']} alone (retrieval) | - | - | {b['lists']['GAUC']:.4f} | {b['NDCG@10']:.4f} | 1.000 | {b['HR@10']:.4f} |"]
        for r in q["rankers"]:
            alone = (f"residual on {r['residual']:g} x retrieval, its correction alone" if r.get("residual")
                     else "ranker alone")
            lines.append(f"| -> top {r['N']} -> {r['model']} ({alone}) | {r['epochs']:g} | {r['train_min']:.1f} | "
                         f"{r['GAUC']:.4f} | {r['NDCG@10_ranker_only']:.4f} | "
                         f"{r['NDCG@10_ranker_only'] / b['NDCG@10']:.3f} | - |")
            if r["blend"]:
                lines.append(f"| -> top {r['N']} -> {r['model']} + {r['blend']} x retrieval score | | | | "
                             f"{r['NDCG@10_blend']:.4f} | {r['NDCG@10_blend'] / b['NDCG@10']:.3f} | {r['HR@10_blend']:.4f} |")
        lines.append("")
    if "cost" in res:
        lines += ["| model | history | N | ms per user | candidates/s |", "|---|---|---|---|---|"]
        for r in res["cost"]:
            lines.append(f"| {r['model']} | {r.get('history', 200)} | {r['N']} | {r['ms']:.2f} | {r['candidates_per_s']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cost", action="store_true")
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--retriever", default=str(ROOT / "runs" / "ml1m_sasrec_ce"))
    ap.add_argument("--rankers", default="")
    ap.add_argument("--data", default=str(ML1M), help="ml-1m.txt (movies.dat beside it for genres)")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--blends", default="0,0.5,1,2")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "rankers.json"))
    args = ap.parse_args()
    prev = Path(args.out)
    res = json.loads(prev.read_text()) if prev.exists() else {}
    res["device"] = f"{jax.device_count()}x {jax.devices()[0].device_kind}"
    if args.cost:
        res["cost"] = cost()
    if args.quality:
        res["quality"] = quality(args.retriever, [r for r in args.rankers.split(",") if r], args.candidates,
                                 [float(w) for w in args.blends.split(",")], args.data)
    prev.write_text(json.dumps(res, indent=2))
    text = tables(res)
    print(text)
    print(f"updated {write_block('rankers', text, 'Rankers and the two-stage pipeline')}")


if __name__ == "__main__":
    main()
