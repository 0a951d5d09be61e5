"""``jaxrec eval`` and ``jaxrec recommend``: a trained run (or a two-stage pipeline) at work."""

from __future__ import annotations

import dataclasses
import json

from jaxrec.cli.common import add_data_args, add_model_options, load_data, open_model, parse_times, print_metrics
from jaxrec.errors import UserError


def cmd_eval(args) -> int:
    from jaxrec.data import leave_one_out, load_dataset, make_split
    from jaxrec.metrics import evaluate, evaluate_lists
    from jaxrec.models import MostPopular

    scorer, model_name, config = open_model(args)
    if scorer is not None:
        data = load_data(args) if args.data else load_dataset(config.data)
        if data.catalog.ids.tolist() != scorer.catalog.ids.tolist():
            raise UserError(f"{data.name}: its item catalog differs from the checkpoint's; "
                            "evaluate on the data the model was trained on")
        split = make_split(data, config.split)  # the run's protocol
    else:
        if args.model != "popular":
            raise UserError(f"unknown model {args.model!r}; use --model popular or --checkpoint DIR")
        if not args.data:
            raise UserError("--data is required with --model popular")
        model_name = args.model
        data = load_data(args)
        split = leave_one_out(data)
        scorer = MostPopular.fit(split)
    ks = tuple(int(k) for k in args.ks.split(","))
    if args.table_dtype != "float32":  # evaluate what a --table-dtype server would answer
        if not hasattr(scorer, "with_table_dtype"):
            raise UserError("--table-dtype applies to a retrieval model's checkpoint")
        scorer.with_table_dtype(args.table_dtype)
    if getattr(scorer, "kind", None) == "ranking":  # a ranker alone: held-out candidate lists
        res = evaluate_lists(scorer.score, split, args.split, max_len=scorer.max_len, ks=ks,
                             negatives=args.sampled or 100, sampler=args.sampler or "popularity",
                             seed=args.seed)
    else:
        res = evaluate(scorer, split, args.split, ks=ks, sampled=args.sampled, sampler=args.sampler or "uniform",
                       seed=args.seed, progress=not args.json, diversity=args.diversity,
                       diversity_by=args.diversity_by, pool=args.diversity_pool)
    out = {"model": model_name, "data": data.name, **res.to_json()}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{model_name} on {data.name}")
        print(f"protocol: {res.protocol}")
        if res.beyond:
            print(f"beyond accuracy: {res.beyond}")
        print_metrics(res.metrics)
    return 0


def cmd_recommend(args) -> int:
    rec, _, _ = open_model(args)
    if rec.kind == "ranking":
        raise UserError("a ranker alone cannot recommend from the whole catalog; "
                        "use --retriever DIR --ranker DIR")
    history = [h.strip() for h in args.history.split(",") if h.strip()]
    times = parse_times(args.times)
    out = rec.recommend(history, k=args.k, exclude_seen=not args.include_seen, times=times, now=args.now,
                        diversity=args.diversity, diversity_by=args.diversity_by, pool=args.diversity_pool)
    if args.json:
        print(json.dumps(dataclasses.asdict(out)))
        return 0
    if out.unknown:
        print(f"({out.unknown} unknown history id(s) skipped)")
    for rank, (item, score, title) in enumerate(zip(out.items, out.scores, out.titles), start=1):
        print(f"{rank:>3}. {item:<12} {score:8.3f}  {title or ''}")
    return 0



def add_parsers(sub) -> None:
    r = sub.add_parser("recommend", help="top-k items for a history, from a trained run")
    add_model_options(r, required=True)
    add_ensemble_option(r)
    r.add_argument("--history", required=True, help="external item ids, oldest first, comma-separated")
    r.add_argument("-k", type=int, default=10)
    r.add_argument("--times", default=None,
                   help="event times, one per history id (time-aware models, e.g. hstu/time)")
    r.add_argument("--now", type=int, default=None, help="prediction time (default: the last event's)")
    r.add_argument("--include-seen", action="store_true", help="allow items of the history")
    add_diversity_options(r)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_recommend)

    e = sub.add_parser("eval", help="evaluate a model under the full-ranking protocol")
    e.add_argument("--model", default="popular", help="baseline model name (popular)")
    add_model_options(e, required=False)
    add_ensemble_option(e)
    add_data_args(e)
    e.add_argument("--split", choices=("test", "valid"), default="test")
    e.add_argument("--ks", default="1,5,10,20,50", help="cut-offs, comma-separated")
    e.add_argument("--sampled", type=int, default=None,
                   help="sampled protocol: rank against N negatives (old papers only)")
    e.add_argument("--sampler", choices=("uniform", "popularity"), default=None,
                   help="negatives of the sampled protocol (default uniform; popularity for a ranker's lists)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--table-dtype", choices=["float32", "bfloat16", "int8"], default="float32",
                   help="score with the item table as jaxrec serve --table-dtype keeps it")
    add_diversity_options(e)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_eval)


def add_ensemble_option(p) -> None:
    p.add_argument("--ensemble", nargs="+", default=None, metavar="DIR",
                   help="two or more retrieval runs of one catalog as one model: the mean of their "
                        "log-probabilities (jaxrec.ensemble)")


def add_diversity_options(p) -> None:
    p.add_argument("--diversity", type=float, default=0.0,
                   help="0..1: re-rank the top --diversity-pool by maximal marginal relevance (as a server's "
                        "RecommendRequest.diversity)")
    p.add_argument("--diversity-by", default="",
                   help="similarity for --diversity: item embeddings (default) or a catalog feature, e.g. genres")
    p.add_argument("--diversity-pool", type=int, default=200, help="candidates the re-ranking chooses among")

