"""``jaxrec train``, ``jaxrec runs`` and ``jaxrec quickstart``."""

from __future__ import annotations

from jaxrec.errors import UserError


def cmd_train(args) -> int:
    if args.distributed or args.coordinator:  # before anything touches a device
        from jaxrec.sharding import initialize_distributed
        if args.coordinator and (args.num_processes is None or args.process_id is None):
            raise UserError("--coordinator needs --num-processes and --process-id")
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    from jaxrec.train import load_config_file, train

    if not (args.data or args.config):
        raise UserError("--data is required (a path or 'synthetic')")
    cfg = load_config_file(args.config)
    sets = [f"{key}={getattr(args, key)}" for key in ("model", "data") if getattr(args, key)]
    cfg = cfg.with_overrides(sets + args.set)  # --model/--data are overrides like any other
    from jaxrec.train.signals import TrainingStopped
    try:
        results = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    except TrainingStopped as e:  # SIGTERM / Ctrl-C: checkpoints/last was saved first
        print(e, flush=True)
        return 128 + e.signum
    print(f"wrote {args.out}/results.json")
    return 0 if results else 1


def cmd_quickstart(args) -> int:
    """Train a small SASRec on synthetic data, compare it with popularity, recommend."""
    import tempfile

    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.inference import Recommender
    from jaxrec.metrics import evaluate
    from jaxrec.models import MostPopular
    from jaxrec.train import Config, train

    print("jaxrec quickstart: the embedded synthetic dataset (nothing is downloaded)\n")
    data = load_dataset(args.data)
    st = data.stats()
    print(f"data: {st['users']:,} users, {st['items']:,} items, {st['interactions']:,} interactions, "
          f"length min/mean/max {st['seq_len']['min']}/{st['seq_len']['mean']}/{st['seq_len']['max']}\n")
    split = leave_one_out(data)
    out = args.out or tempfile.mkdtemp(prefix="jaxrec-quickstart-")
    cfg = Config(model="sasrec/small", data=args.data, loss="ce", batch_size=64, lr=3e-3,
                 epochs=args.epochs, eval_every=2, patience=3, max_minutes=args.minutes).validate()
    res = train(cfg, out, split=split, progress=True)
    pop = evaluate(MostPopular.fit(split), split, "test")
    print(f"\nprotocol: {res['protocol']}")
    print(f"{'model':<14} {'HR@10':>7} {'NDCG@10':>8} {'MRR':>7}")
    for name, m in (("MostPopular", pop.metrics), ("SASRec", res["metrics"])):
        print(f"{name:<14} {m['HR@10']:>7.4f} {m['NDCG@10']:>8.4f} {m['MRR']:>7.4f}")
    ratio = res["metrics"]["NDCG@10"] / max(pop.metrics["NDCG@10"], 1e-9)
    print(f"SASRec / MostPopular NDCG@10: {ratio:.1f}x")
    rec = Recommender.from_checkpoint(out)
    u = split.test.user[0]
    history = data.catalog.external(data.items[split.test.start[0]:split.test.end[0]])
    top = rec.recommend(history, k=5)
    print(f"\nuser {data.user_ids[u]}: last items {', '.join(history[-5:])} "
          f"(next, held out: {data.catalog.ids[split.test.target[0]]})")
    print(f"recommended: {', '.join(top.items)}")
    print(f"\nrun directory: {out}\n  jaxrec recommend --checkpoint {out} --history {','.join(history[-5:])}")
    return 0


def cmd_runs(args) -> int:
    """One line per run directory: what it trains, how far it got, its best validation, its test
    result; a directory of run directories lists each one."""
    import json
    from pathlib import Path

    from jaxrec.train import RunDir

    dirs = []
    for d in map(Path, args.dirs):
        if (d / "config.json").exists():
            dirs.append(d)
        elif d.is_dir() and (inner := sorted(p for p in d.iterdir() if (p / "config.json").exists())):
            dirs.extend(inner)
        else:
            raise UserError(f"{d}: not a jaxrec run directory (no config.json), nor a directory of them")
    rows = [RunDir.open(d).summary() for d in dirs]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    num = (lambda v, f="{:.4f}": "-" if v is None else f.format(v))
    table = [("run", "model (loss)", "epochs", "trained min", "best valid (epoch)", "last valid (epoch)",
              "test NDCG@10", "state")]
    for r in rows:
        budget = "" if r["max_minutes"] is None else f" / {r['max_minutes']:g}"
        epoch = num(r["epoch"], "{:g}") + (f" +{r['batch']}b" if r.get("batch") else "")
        best = "-" if r["best_valid"] is None else f"{r['best_valid']:.4f} ({r['best_epoch']:g})"
        last = "-" if r["last_valid"] is None else f"{r['last_valid']:.4f} ({r['last_valid_epoch']:g})"
        test = r["test"] and r["test"].get("NDCG@10")
        state = f"finished: {r['stopped_by']}" if r["state"] == "finished" else r["state"]
        table.append((r["path"], f"{r['model']} ({r['loss']})", epoch, num(r["trained_min"], "{:.1f}") + budget,
                      best, last, num(test), state))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return 0


def add_parsers(sub) -> None:
    t = sub.add_parser("train", help="train a model; writes checkpoints, metrics.jsonl, results.json")
    t.add_argument("--model", default=None, help="registry name, e.g. sasrec, sasrec/plus, bert4rec")
    t.add_argument("--data", default=None, help="data file or 'synthetic[:options]'")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--config", default=None, help="config file (.py with get_config(), or .json)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config setting (repeatable; names and types are checked), e.g. "
                        "--set lr=0.002 --set model_args.dim=64 --set ranking.retriever=runs/r")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    t.add_argument("--distributed", action="store_true",
                   help="one process of a multi-host run; JAX detects the cluster (TPU pod, SLURM, Open MPI)")
    t.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="a multi-host run elsewhere: process 0's address (with --num-processes, --process-id)")
    t.add_argument("--num-processes", type=int, default=None)
    t.add_argument("--process-id", type=int, default=None)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("runs", help="where run directories stand: epochs, minutes trained, best validation, test")
    r.add_argument("dirs", nargs="+", metavar="DIR", help="run directories, or directories holding them (runs/)")
    r.add_argument("--json", action="store_true", help="the full summaries as JSON")
    r.set_defaults(func=cmd_runs)

    q = sub.add_parser("quickstart", help="the end-to-end demo on the embedded synthetic data")
    q.add_argument("--data", default="synthetic:small")
    q.add_argument("--out", default=None, help="run directory (default: a new temp dir)")
    q.add_argument("--epochs", type=int, default=20)
    q.add_argument("--minutes", type=float, default=1.0, help="training time budget")
    q.set_defaults(func=cmd_quickstart)
