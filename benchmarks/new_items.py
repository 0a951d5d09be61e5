"""New items at serve time: how items the model never trained on fare once added with AddItems.

    python benchmarks/new_items.py --data ../shared/data/ml-1m/ml-1m.txt --minutes 10

A share of the items (--held, 5% by default, seeded) is taken out of the training data entirely:
every interaction with them is removed before the split, as if they were released after the
model was trained. A SASRec+ with genre embeddings (``model_args.features=["genres"]``) trains on
the rest for --minutes (the linear_time recipe of configs/ml1m_sasrec_ce_cpu15.py). Then a serving
engine with ``--new-item-slots`` takes the held-out items through ``Engine.add_items`` (what the
AddItems RPC calls), each with its genres from movies.dat, and answers every test user:

* exposure: the share of top-10 slots that go to new items, against their share of the catalog;
* new-item recall@10: for the users who interacted with a held-out item (in the original data),
  the share whose top-10 among the new items only (allow = the new items) holds one of them,
  against 10 new items drawn at random: new items have no interactions, so without features a
  server can only order them arbitrarily.

Each is measured for every --quantiles value: the base id row of a new item is the mean over the
trained items at or below that quantile of training occurrences (``Scorer.RARE_QUANTILE``, the
served default 0.1; 1.0 = every trained item). Writes benchmarks/new_items.json; prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    from jaxrec.data import build_sequences, leave_one_out
    from jaxrec.data.loaders import movielens_item_metadata, read_interactions
    from jaxrec.inference import Recommender
    from jaxrec.scoring import Scorer
    from jaxrec.train import Config, train
    from jaxrec_server.engine import Engine, Query

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="ml-1m.txt (movies.dat beside it gives the genres)")
    ap.add_argument("--held", type=float, default=0.05, help="share of items held out as new")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget")
    ap.add_argument("--run", default="/tmp/jaxrec_new_items_run", help="where the run is trained (reused if there)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quantiles", default="0.1,0.25,1.0", help="base id rows to compare (see above)")
    ap.add_argument("--out", default=str(HERE / "new_items.json"))
    args = ap.parse_args(argv)

    inter, fmt = read_interactions(args.data)
    meta = lambda ids: movielens_item_metadata(Path(args.data), fmt, ids)  # noqa: E731
    full = build_sequences(inter, name=str(args.data), item_metadata=meta)
    rng = np.random.default_rng(args.seed)
    all_ids = full.catalog.ids[1:]
    held = set(rng.choice(all_ids, int(round(args.held * len(all_ids))), replace=False).tolist())
    keep = ~np.isin(inter.item.astype(str), list(held))
    data = build_sequences(inter.take(keep), name=f"{args.data} without {len(held)} items",
                           item_metadata=meta)
    print(f"{len(held)} of {len(all_ids)} items held out as new ({int((~keep).sum()):,} interactions removed); "
          f"training on {data.num_items} items, {data.num_users} users", flush=True)
    split = leave_one_out(data)
    run = Path(args.run)
    if not (run / "results.json").exists():
        cfg = Config(model="sasrec/plus", data=str(args.data), loss="ce", batch_size=8, lr=4e-3, warmup_steps=100,
                     schedule="linear_time", max_minutes=args.minutes, epochs=100, eval_every=2, patience=5,
                     seed=args.seed, length_buckets=[32, 64, 100, 150], model_args={"features": ["genres"]})
        train(cfg, run, split=split, progress=False)
    if Recommender.from_checkpoint(run).catalog.ids.tolist() != data.catalog.ids.tolist():
        raise SystemExit(f"{run}: trained on another catalog; remove it or give --run")
    cat = full.catalog
    genres = lambda x: cat.feature_values("genres", cat.index_of([x])[0])  # noqa: E731
    new_ids = sorted(held, key=str)
    es = split.test
    full_user_ids = full.user_ids
    uid_to_row = {u: i for i, u in enumerate(data.user_ids.tolist())}
    held_idx_full = set(full.catalog.index_of(new_ids).tolist())
    rows = []
    for q in (float(x) for x in args.quantiles.split(",")):
        Scorer.RARE_QUANTILE = q
        engine = Engine(Recommender.from_checkpoint(run), max_batch_size=64, k_buckets=[10],
                        new_item_slots=len(held), diversity_pool=0)
        t = time.perf_counter()
        added, unknown = engine.add_items([(x, cat.title(cat.index_of([x])[0]) or "", {"genres": genres(x)})
                                           for x in new_ids])
        add_s = time.perf_counter() - t
        new_idx = engine.catalog.index_of(new_ids)
        is_new = np.zeros(engine.num_items + 1, bool)
        is_new[new_idx] = True
        # every test user's answer from the served engine, history as the test input
        queries = [Query(data.items[max(es.start[i], es.end[i] - engine.max_len): es.end[i]].astype(np.int32), 10)
                   for i in range(len(es))]
        slots = new_in = users_with_new = 0
        for lo in range(0, len(queries), 64):
            for a in engine.run(queries[lo: lo + 64]):
                slots += len(a.items)
                k_new = int(is_new[a.items].sum())
                new_in += k_new
                users_with_new += k_new > 0
        # new-item recall: users of the original data who interacted with a held-out item
        hits = rand_hits = n_users = 0
        allow = new_idx.astype(np.int32)
        batch = []
        for u in range(full.num_users):
            mine = {full.catalog.ids[i] for i in full.sequence(u) if i in held_idx_full}
            row = uid_to_row.get(full_user_ids[u])
            if mine and row is not None:
                batch.append((mine, Query(data.sequence(row)[-engine.max_len:].astype(np.int32), 10, True, allow=allow)))
        pick_rng = np.random.default_rng(args.seed + 1)
        for lo in range(0, len(batch), 64):
            part = batch[lo: lo + 64]
            for (mine, _), a in zip(part, engine.run([q_ for _, q_ in part])):
                hits += bool({engine.catalog.ids[i] for i in a.items} & mine)
                rand_hits += bool(set(pick_rng.choice(new_ids, 10, replace=False).tolist()) & mine)
                n_users += 1
        rows.append({"base_quantile": q, "add_items_seconds": round(add_s, 3), "unknown_values": len(unknown),
                     "top10_share_new": new_in / max(1, slots),
                     "users_with_a_new_item_in_top10": users_with_new / len(es),
                     "recall_users": n_users, "new_item_recall@10": hits / max(1, n_users),
                     "random_new_item_recall@10": rand_hits / max(1, n_users)})
        print(f"  base quantile {q:g}: top-10 share of new items {rows[-1]['top10_share_new']:.4f}, new-item "
              f"recall@10 {rows[-1]['new_item_recall@10']:.4f} (random {rows[-1]['random_new_item_recall@10']:.4f})",
              flush=True)
    rec = Recommender.from_checkpoint(run)
    interactions_share = float((~keep).sum() / len(keep))
    out = {"data": str(args.data), "held_items": len(held), "catalog": len(all_ids),
           "catalog_share_new": len(held) / len(all_ids), "interaction_share_new": interactions_share,
           "run": str(run), "model": rec.name, "step": rec.step, "test_users": len(es),
           "test_NDCG@10_of_the_run": json.loads((run / "results.json").read_text())["metrics"]["NDCG@10"],
           "rows": rows}
    print(f"\n{rec.name} step {rec.step} with genre embeddings (test NDCG@10 {out['test_NDCG@10_of_the_run']:.4f} "
          f"on the reduced catalog), trained without {len(held)} items: {out['catalog_share_new']:.1%} of the "
          f"catalog, {interactions_share:.1%} of the interactions; {len(es)} test users\n")
    print("| base id row: rarest share of trained items | top-10 slots to new items | users with a new item in "
          "top-10 | new-item recall@10 | random new items | AddItems s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['base_quantile']:g} | {r['top10_share_new']:.4f} | {r['users_with_a_new_item_in_top10']:.4f} | "
              f"{r['new_item_recall@10']:.4f} | {r['random_new_item_recall@10']:.4f} | {r['add_items_seconds']} |")
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
