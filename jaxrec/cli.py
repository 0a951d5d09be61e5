"""The ``jaxrec`` command line.

Subcommands: ``data stats``, ``eval``, ``quickstart`` (later: ``train``, ``recommend``,
``serve``, ``bench``). User mistakes raise :class:`jaxrec.errors.UserError`; they are
printed as one ``error:`` line with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from jaxrec.errors import UserError


# ---------------------------------------------------------------- shared options

def _add_data_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("path", help="data file, MovieLens directory, or 'synthetic[:options]'")
    else:
        p.add_argument("--data", required=True,
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


def cmd_eval(args) -> int:
    from jaxrec.data import leave_one_out
    from jaxrec.metrics import evaluate
    from jaxrec.models import MostPopular

    if args.model != "popular":
        raise UserError(f"unknown model {args.model!r}; available: popular")
    data = _load(args)
    split = leave_one_out(data)
    scorer = MostPopular.fit(split)
    ks = tuple(int(k) for k in args.ks.split(","))
    res = evaluate(scorer, split, args.split, ks=ks, sampled=args.sampled, sampler=args.sampler,
                   seed=args.seed, progress=not args.json)
    out = {"model": args.model, "data": data.name, **res.to_json()}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.model} on {data.name}")
        print(f"protocol: {res.protocol}")
        _print_metrics(res.metrics)
    return 0


def cmd_quickstart(args) -> int:
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.metrics import evaluate
    from jaxrec.models import MostPopular

    print("jaxrec quickstart: the embedded synthetic dataset (nothing is downloaded)\n")
    data = load_dataset(args.data)
    st = data.stats()
    print(f"data: {st['users']:,} users, {st['items']:,} items, {st['interactions']:,} interactions, "
          f"length min/mean/max {st['seq_len']['min']}/{st['seq_len']['mean']}/{st['seq_len']['max']}")
    split = leave_one_out(data)
    res = evaluate(MostPopular.fit(split), split, "test")
    print(f"\nMostPopular baseline\nprotocol: {res.protocol}")
    _print_metrics(res.metrics, ["HR@10", "NDCG@10", "MRR"])
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

    e = sub.add_parser("eval", help="evaluate a model under the full-ranking protocol")
    e.add_argument("--model", default="popular", help="baseline model name (popular)")
    _add_data_args(e)
    e.add_argument("--split", choices=("test", "valid"), default="test")
    e.add_argument("--ks", default="1,5,10,20,50", help="cut-offs, comma-separated")
    e.add_argument("--sampled", type=int, default=None,
                   help="sampled protocol: rank against N negatives (old papers only)")
    e.add_argument("--sampler", choices=("uniform", "popularity"), default="uniform")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_eval)

    q = sub.add_parser("quickstart", help="the end-to-end demo on the embedded synthetic data")
    q.add_argument("--data", default="synthetic:small")
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
