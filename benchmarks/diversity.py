"""The accuracy / diversity trade-off of the served diversity re-ranking (maximal marginal relevance).

    python benchmarks/diversity.py --checkpoint runs/ml1m_sasrec_ce_t40

For each diversity in --levels and each similarity (item embeddings; each categorical feature
of the catalog, e.g. ml-1m's genres) it evaluates the run's test split under its own protocol
(full ranking, seen items excluded, every user) with the lists a server answers for
``RecommendRequest.diversity`` (the top --pool re-ranked by MMR), and prints NDCG@10 and HR@10
against the beyond-accuracy measures of the top-10 lists (intra-list diversity by embeddings and
by genres, genre coverage per list, novelty, catalog coverage). Writes benchmarks/diversity.json
and a PNG of NDCG@10 against ILD and genre coverage.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("NDCG@10", "HR@10", "ILD@10", "ILD@10/genres", "Coverage@10/genres", "Novelty@10", "Coverage@10")


def main(argv=None) -> int:
    from jaxrec.data import load_dataset, make_split
    from jaxrec.inference import Recommender
    from jaxrec.metrics import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a retrieval run")
    ap.add_argument("--data", default=None, help="the run's data file (default: its config's path)")
    ap.add_argument("--levels", default="0,0.1,0.2,0.3,0.5", help="diversity values, comma-separated")
    ap.add_argument("--by", default=None,
                    help="similarities, comma-separated ('' = item embeddings; default: embeddings and every "
                         "catalog feature)")
    ap.add_argument("--pool", type=int, default=200)
    ap.add_argument("--out", default=str(HERE / "diversity.json"))
    args = ap.parse_args(argv)

    rec = Recommender.from_checkpoint(args.checkpoint)
    data = load_dataset(args.data or rec.config.data)
    split = make_split(data, rec.config.split)
    levels = [float(x) for x in args.levels.split(",")]
    sims = [""] + sorted(data.catalog.features) if args.by is None else args.by.split(",")
    rows, protocol = [], None
    for by in sims:
        for d in levels:
            if d == 0 and by != sims[0]:  # no diversity: the same lists whatever the similarity
                rows.append(dict(rows[0], by=by or "embeddings"))
                continue
            t = time.perf_counter()
            res = evaluate(rec, split, "test", ks=(10,), diversity=d, diversity_by=by, pool=args.pool)
            protocol = protocol or res.protocol.split("; diversity")[0].split("; beyond")[0]
            row = {"by": by or "embeddings", "diversity": d, "seconds": round(time.perf_counter() - t, 1),
                   **{c: res.metrics.get(c) for c in COLUMNS}}
            rows.append(row)
            print(f"  by {row['by']:<10} diversity {d:<4} NDCG@10 {row['NDCG@10']:.4f}  ILD@10 {row['ILD@10']:.3f}  "
                  f"genre coverage {row.get('Coverage@10/genres') or 0:.3f}  ({row['seconds']}s)", flush=True)
    base = rows[0]["NDCG@10"]
    print(f"\n{rec.name} step {rec.step} on {data.name}; protocol: {protocol}; MMR over the top {args.pool}\n")
    head = ["by", "diversity"] + list(COLUMNS) + ["NDCG vs 0"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        vals = [r["by"], f"{r['diversity']:g}"] + ["" if r[c] is None else f"{r[c]:.4f}" for c in COLUMNS]
        print("| " + " | ".join(vals + [f"{r['NDCG@10'] / base - 1:+.1%}"]) + " |")
    out = {"checkpoint": args.checkpoint, "model": rec.name, "step": rec.step, "data": data.name,
           "protocol": protocol, "pool": args.pool, "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no PNG)")
        return 0
    xs = [c for c in ("ILD@10", "ILD@10/genres", "Coverage@10/genres") if rows[0].get(c) is not None]
    fig, axes = plt.subplots(1, len(xs), figsize=(4.5 * len(xs), 3.8), squeeze=False)
    for ax, x in zip(axes[0], xs):
        for by in dict.fromkeys(r["by"] for r in rows):
            pts = [r for r in rows if r["by"] == by]
            ax.plot([r[x] for r in pts], [r["NDCG@10"] for r in pts], "o-", label=f"by {by}")
            for r in pts:
                ax.annotate(f"{r['diversity']:g}", (r[x], r["NDCG@10"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel(x)
        ax.set_ylabel("NDCG@10")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{rec.name} on {data.name}: accuracy vs diversity (MMR over the top {args.pool})", fontsize=10)
    fig.tight_layout()
    png = Path(args.out).with_suffix(".png")
    fig.savefig(png, dpi=120)
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
