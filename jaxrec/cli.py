"""The ``jaxrec`` command line.

Subcommands: ``data stats``, ``eval``, ``quickstart`` (later: ``train``, ``recommend``,
``serve``, ``bench``). User mistakes raise :class:`jaxrec.errors.UserError`; they are
printed as one ``error:`` line with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from jaxrec.errors import UserError


# ---------------------------------------------------------------- shared options

def _add_data_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("path", help="data file, MovieLens directory, or 'synthetic[:options]'")
    else:
        p.add_argument("--data", default=None,
                       help="data file, MovieLens directory, or 'synthetic[:small|users=N,items=M,seed=S]'")
    p.add_argument("--format", default=None, help="file format (default: detected)")
    p.add_argument("--min-rating", type=float, default=None, help="keep events with rating >= this")
    p.add_argument("--k-core", type=int, default=None, help="iterative k-core filter on users and items")
    p.add_argument("--dedupe", action="store_true", help="drop consecutive repeats of the same item")
    for col in ("user", "item", "time", "rating"):
        p.add_argument(f"--{col}-col", default=None, help=f"{col} column name (CSV/Parquet)")


def _load(args):
    from jaxrec.data import load_dataset
    spec = getattr(args, "path", None) or args.data
    return load_dataset(spec, args.format, min_rating=args.min_rating, k_core=args.k_core,
                        dedupe=args.dedupe, user_col=args.user_col, item_col=args.item_col,
                        time_col=args.time_col, rating_col=args.rating_col)


def _print_metrics(metrics: dict, keys=None) -> None:
    keys = keys or [k for k in metrics if not k.startswith("Coverage")]
    width = max(len(k) for k in keys)
    for k in keys:
        print(f"  {k:<{width}}  {metrics[k]:.4f}")


# ---------------------------------------------------------------- commands

def cmd_data_stats(args) -> int:
    t0 = time.perf_counter()
    data = _load(args)
    st = data.stats()
    st["seconds"] = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps(st))
        return 0
    sl = st["seq_len"]
    print(f"dataset       {st['name']}")
    print(f"users         {st['users']:,}")
    print(f"items         {st['items']:,}")
    print(f"interactions  {st['interactions']:,}  (density {st['density']:.4%})")
    print(f"seq length    min {sl['min']}  mean {sl['mean']}  median {sl['median']:g}  max {sl['max']}")
    print(f"timestamps    {'yes' if st['has_time'] else 'no (file order is the order)'}")
    if data.reports:
        for r in data.reports:
            print(f"filter        {r}")
    else:
        print("filters       none applied")
    print(f"loaded in     {st['seconds']:.2f} s")
    return 0


def _add_model_options(p, required: bool) -> None:
    p.add_argument("--checkpoint", default=None, help="run directory written by jaxrec train")
    p.add_argument("--retriever", default=None, help="two-stage: retrieval run directory (with --ranker)")
    p.add_argument("--ranker", default=None, help="two-stage: ranking run directory (with --retriever)")
    p.add_argument("--candidates", type=int, default=200, help="two-stage: items retrieved for re-ranking")
    p.add_argument("--blend", type=float, default=None,
                   help="two-stage: final score = ranker + BLEND * retriever (0: the ranker alone; "
                        "default: the weight a residual ranker was trained with, else 0)")
    p.set_defaults(model_required=required)


def _open_model(args):
    """``--checkpoint DIR`` or ``--retriever DIR --ranker DIR [--candidates N]`` -> (model, name).

    The model is a ``Recommender`` or a two-stage ``Pipeline``; both recommend and evaluate alike.
    """
    from jaxrec.inference import Recommender

    two = (args.retriever, args.ranker)
    if args.checkpoint and any(two):
        raise UserError("give --checkpoint, or --retriever with --ranker, not both")
    if any(two):
        if not all(two):
            raise UserError("the two-stage pipeline needs both --retriever and --ranker")
        from jaxrec.pipeline import Pipeline
        retr, rank = Recommender.from_checkpoint(args.retriever), Recommender.from_checkpoint(args.ranker)
        name = f"{retr.config['train']['model']} -> top {args.candidates} -> {rank.config['train']['model']}"
        return Pipeline(retr, rank, args.candidates, blend=args.blend), name, retr.config
    if args.checkpoint:
        rec = Recommender.from_checkpoint(args.checkpoint)
        return rec, rec.config["train"]["model"], rec.config
    if args.model_required:
        raise UserError("give --checkpoint DIR, or --retriever DIR --ranker DIR")
    return None, None, None


def cmd_eval(args) -> int:
    from jaxrec.data import leave_one_out, load_dataset, make_split
    from jaxrec.metrics import evaluate, evaluate_lists
    from jaxrec.models import MostPopular

    scorer, model_name, config = _open_model(args)
    if scorer is not None:
        data = _load(args) if args.data else load_dataset(config["train"]["data"])
        if data.catalog.ids.tolist() != scorer.catalog.ids.tolist():
            raise UserError(f"{data.name}: its item catalog differs from the checkpoint's; "
                            "evaluate on the data the model was trained on")
        split = make_split(data, config["train"].get("split", "leave_one_out"))  # the run's protocol
    else:
        if args.model != "popular":
            raise UserError(f"unknown model {args.model!r}; use --model popular or --checkpoint DIR")
        if not args.data:
            raise UserError("--data is required with --model popular")
        model_name = args.model
        data = _load(args)
        split = leave_one_out(data)
        scorer = MostPopular.fit(split)
    ks = tuple(int(k) for k in args.ks.split(","))
    if getattr(scorer, "kind", None) == "ranking":  # a ranker alone: held-out candidate lists
        res = evaluate_lists(scorer.score, split, args.split, max_len=scorer.max_len, ks=ks,
                             negatives=args.sampled or 100, sampler=args.sampler or "popularity",
                             seed=args.seed)
    else:
        res = evaluate(scorer, split, args.split, ks=ks, sampled=args.sampled, sampler=args.sampler or "uniform",
                       seed=args.seed, progress=not args.json)
    out = {"model": model_name, "data": data.name, **res.to_json()}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{model_name} on {data.name}")
        print(f"protocol: {res.protocol}")
        _print_metrics(res.metrics)
    return 0


def cmd_train(args) -> int:
    from jaxrec.train import TrainConfig, apply_overrides, load_config_file, train

    cfg = load_config_file(args.config)
    for key in ("model", "data"):
        if getattr(args, key):
            cfg[key] = getattr(args, key)
    cfg = apply_overrides(cfg, args.set)
    if "data" not in cfg:
        raise UserError("--data is required (a path or 'synthetic')")
    results = train(TrainConfig.from_dict(cfg), args.out, resume=args.resume, progress=not args.quiet)
    print(f"wrote {args.out}/results.json")
    return 0 if results else 1


def _parse_times(spec: str | None) -> list[int] | None:
    """``--times 978300760,978302109`` -> ints (event times, one per history id)."""
    if not spec:
        return None
    try:
        return [int(t) for t in spec.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--times: integers (e.g. unix seconds) comma-separated, got {spec!r}") from None


def cmd_recommend(args) -> int:
    rec, _, _ = _open_model(args)
    if rec.kind == "ranking":
        raise UserError("a ranker alone cannot recommend from the whole catalog; "
                        "use --retriever DIR --ranker DIR")
    history = [h.strip() for h in args.history.split(",") if h.strip()]
    times = _parse_times(args.times)
    out = rec.recommend(history, k=args.k, exclude_seen=not args.include_seen, times=times, now=args.now)
    if args.json:
        print(json.dumps(dataclasses.asdict(out)))
        return 0
    if out.unknown:
        print(f"({out.unknown} unknown history id(s) skipped)")
    for rank, (item, score, title) in enumerate(zip(out.items, out.scores, out.titles), start=1):
        print(f"{rank:>3}. {item:<12} {score:8.3f}  {title or ''}")
    return 0


def _require_files(**paths) -> None:
    """A clear error for a named file option that points nowhere (instead of a traceback)."""
    import os
    for opt, path in paths.items():
        if path and not os.path.isfile(path):
            raise UserError(f"--{opt.replace('_', '-')}: no such file {path!r}")


def cmd_serve(args) -> int:
    import logging

    from jaxrec_server.main import ServeConfig, run_on_loop, serve_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ints = lambda s: [int(x) for x in s.split(",")] if s else None  # noqa: E731
    if bool(args.checkpoint) == bool(args.retriever):
        raise UserError("give --checkpoint DIR (or --retriever DIR), once")
    cfg = ServeConfig(args.checkpoint or args.retriever, ranker=args.ranker, candidates=args.candidates,
                      blend=args.blend, port=args.port, host=args.host, max_batch_size=args.max_batch_size,
                      max_delay_ms=args.max_delay_ms, max_queue=args.max_queue,
                      length_buckets=ints(args.length_buckets), k_buckets=ints(args.k_buckets),
                      max_history=args.max_history, metrics_port=args.metrics_port, watch=args.watch, tls_cert=args.tls_cert,
                      tls_key=args.tls_key, auth_token_file=args.auth_token_file, grace_s=args.grace_s)
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise UserError("--tls-cert and --tls-key go together")
    _require_files(tls_cert=cfg.tls_cert, tls_key=cfg.tls_key,
                   auth_token_file=cfg.auth_token_file)
    run_on_loop(serve_forever(cfg), args.event_loop)
    return 0


def cmd_query(args) -> int:
    import grpc

    from jaxrec_server.client import Client

    _require_files(tls_ca=args.tls_ca, auth_token_file=args.auth_token_file)
    token = open(args.auth_token_file).read().strip() if args.auth_token_file else None
    ca = open(args.tls_ca, "rb").read() if args.tls_ca else None
    history = [h.strip() for h in args.history.split(",") if h.strip()]
    try:
        with Client(args.target, token=token, tls_ca=ca, timeout=args.timeout) as c:
            r = c.recommend(history, k=args.k, exclude_seen=not args.include_seen, explain=args.explain,
                            times=_parse_times(args.times), now=args.now)
    except grpc.RpcError as e:
        raise UserError(f"{args.target}: {e.code().name}: {e.details()}") from None
    if args.json:
        from google.protobuf.json_format import MessageToDict
        print(json.dumps(MessageToDict(r)))
        return 0
    print(f"{r.model} (step {r.model_step})" + (f"; {r.unknown_history_items} unknown history id(s) skipped"
                                                if r.unknown_history_items else "")
          + ("; cold start: popular items" if r.cold_start else ""))
    for rank, it in enumerate(r.items, start=1):
        print(f"{rank:>3}. {it.item_id:<12} {it.score:8.3f}  {it.title}")
        for b in it.because:
            print(f"       because of {b.item_id} ({b.weight:.0%})")
    return 0


def cmd_quickstart(args) -> int:
    """Train a small SASRec on synthetic data, compare it with popularity, recommend."""
    import tempfile

    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.inference import Recommender
    from jaxrec.metrics import evaluate
    from jaxrec.models import MostPopular
    from jaxrec.train import TrainConfig, train

    print("jaxrec quickstart: the embedded synthetic dataset (nothing is downloaded)\n")
    data = load_dataset(args.data)
    st = data.stats()
    print(f"data: {st['users']:,} users, {st['items']:,} items, {st['interactions']:,} interactions, "
          f"length min/mean/max {st['seq_len']['min']}/{st['seq_len']['mean']}/{st['seq_len']['max']}\n")
    split = leave_one_out(data)
    out = args.out or tempfile.mkdtemp(prefix="jaxrec-quickstart-")
    cfg = TrainConfig(model="sasrec/small", data=args.data, loss="ce", batch_size=64, lr=3e-3,
                      epochs=args.epochs, eval_every=2, patience=3, max_minutes=args.minutes)
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


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxrec", description="Attention-based recommenders in JAX.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="inspect datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    ds = dsub.add_parser("stats", help="users, items, interactions, lengths, filter report")
    _add_data_args(ds, positional=True)
    ds.add_argument("--json", action="store_true", help="print one JSON object")
    ds.set_defaults(func=cmd_data_stats)

    t = sub.add_parser("train", help="train a model; writes checkpoints, metrics.jsonl, results.json")
    t.add_argument("--model", default=None, help="registry name, e.g. sasrec, sasrec/plus, bert4rec")
    t.add_argument("--data", default=None, help="data file or 'synthetic[:options]'")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--config", default=None, help="config file (.py with get_config() or .json)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set lr=0.002 --set model_args.dim=64")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("recommend", help="top-k items for a history, from a trained run")
    _add_model_options(r, required=True)
    r.add_argument("--history", required=True, help="external item ids, oldest first, comma-separated")
    r.add_argument("-k", type=int, default=10)
    r.add_argument("--times", default=None,
                   help="event times, one per history id (time-aware models, e.g. hstu/time)")
    r.add_argument("--now", type=int, default=None, help="prediction time (default: the last event's)")
    r.add_argument("--include-seen", action="store_true", help="allow items of the history")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_recommend)

    e = sub.add_parser("eval", help="evaluate a model under the full-ranking protocol")
    e.add_argument("--model", default="popular", help="baseline model name (popular)")
    _add_model_options(e, required=False)
    _add_data_args(e)
    e.add_argument("--split", choices=("test", "valid"), default="test")
    e.add_argument("--ks", default="1,5,10,20,50", help="cut-offs, comma-separated")
    e.add_argument("--sampled", type=int, default=None,
                   help="sampled protocol: rank against N negatives (old papers only)")
    e.add_argument("--sampler", choices=("uniform", "popularity"), default=None,
                   help="negatives of the sampled protocol (default uniform; popularity for a ranker's lists)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_eval)

    sv = sub.add_parser("serve", help="serve a trained run over gRPC (dynamic batching)")
    _add_model_options(sv, required=True)
    sv.add_argument("--port", type=int, default=50051)
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all)")
    sv.add_argument("--max-batch-size", type=int, default=64, help="1 turns batching off")
    sv.add_argument("--max-delay-ms", type=float, default=2.0)
    sv.add_argument("--max-queue", type=int, default=1024, help="waiting requests before RESOURCE_EXHAUSTED")
    sv.add_argument("--length-buckets", default=None, help="history length buckets, e.g. 16,64,200")
    sv.add_argument("--k-buckets", default=None, help="top-k buckets, e.g. 10,100")
    sv.add_argument("--max-history", type=int, default=None,
                    help="the model reads only the latest N items (default: its max_len); "
                         "exclude-seen still covers the whole request history")
    sv.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port")
    sv.add_argument("--watch", action="store_true", help="hot-reload newer checkpoints from --checkpoint")
    sv.add_argument("--tls-cert", default=None)
    sv.add_argument("--tls-key", default=None)
    sv.add_argument("--auth-token-file", default=None, help="require 'authorization: Bearer <token>'")
    sv.add_argument("--grace-s", type=float, default=10.0, help="drain time on SIGTERM")
    sv.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio",
                    help="the server's event loop (jaxrec_server.main.run_on_loop)")
    sv.set_defaults(func=cmd_serve)

    qy = sub.add_parser("query", help="ask a running server for recommendations")
    qy.add_argument("--target", default="localhost:50051")
    qy.add_argument("--history", required=True, help="external item ids, oldest first, comma-separated")
    qy.add_argument("-k", type=int, default=10)
    qy.add_argument("--times", default=None, help="event times, one per history id (time-aware models)")
    qy.add_argument("--now", type=int, default=None, help="prediction time (default: the last event's)")
    qy.add_argument("--include-seen", action="store_true")
    qy.add_argument("--explain", action="store_true", help="show which history items led to each item")
    qy.add_argument("--timeout", type=float, default=5.0)
    qy.add_argument("--tls-ca", default=None, help="CA certificate (PEM) for a TLS server")
    qy.add_argument("--auth-token-file", default=None)
    qy.add_argument("--json", action="store_true")
    qy.set_defaults(func=cmd_query)

    bn = sub.add_parser("bench", help="benchmarks: 'jaxrec bench serve --checkpoint DIR' (load test)")
    bn.add_argument("what", choices=["serve"])
    bn.add_argument("rest", nargs=argparse.REMAINDER, help="options of the load test (see --help)")
    bn.set_defaults(func=lambda a: __import__("jaxrec_server.loadtest", fromlist=["main"]).main(a.rest))

    q = sub.add_parser("quickstart", help="the end-to-end demo on the embedded synthetic data")
    q.add_argument("--data", default="synthetic:small")
    q.add_argument("--out", default=None, help="run directory (default: a new temp dir)")
    q.add_argument("--epochs", type=int, default=20)
    q.add_argument("--minutes", type=float, default=1.0, help="training time budget")
    q.set_defaults(func=cmd_quickstart)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
