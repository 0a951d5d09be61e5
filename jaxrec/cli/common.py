"""Options and helpers the command groups share: data loading, opening a model, printing."""

from __future__ import annotations

import argparse
import os

from jaxrec.errors import UserError


def add_data_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
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


def load_data(args):
    from jaxrec.data import load_dataset
    spec = getattr(args, "path", None) or args.data
    return load_dataset(spec, args.format, min_rating=args.min_rating, k_core=args.k_core,
                        dedupe=args.dedupe, user_col=args.user_col, item_col=args.item_col,
                        time_col=args.time_col, rating_col=args.rating_col)


def print_metrics(metrics: dict, keys=None) -> None:
    keys = keys or [k for k in metrics if not k.startswith("Coverage")]
    width = max(len(k) for k in keys)
    for k in keys:
        print(f"  {k:<{width}}  {metrics[k]:.4f}")


def add_model_options(p, required: bool) -> None:
    p.add_argument("--checkpoint", default=None, help="run directory written by jaxrec train")
    p.add_argument("--retriever", default=None, help="two-stage: retrieval run directory (with --ranker)")
    p.add_argument("--ranker", default=None, help="two-stage: ranking run directory (with --retriever)")
    p.add_argument("--candidates", type=int, default=200, help="two-stage: items retrieved for re-ranking")
    p.add_argument("--blend", type=float, default=None,
                   help="two-stage: final score = ranker + BLEND * retriever (0: the ranker alone; "
                        "default: the weight a residual ranker was trained with, else 0)")
    p.set_defaults(model_required=required)


def open_model(args):
    """``--checkpoint DIR``, ``--retriever DIR --ranker DIR [--candidates N]`` or (eval and
    recommend) ``--ensemble DIR DIR ...`` -> (model, name, the (first) run's ``Config``).

    The model is a ``Recommender``, a two-stage ``Pipeline`` or an ``Ensemble``; all recommend
    and evaluate alike.
    """
    from jaxrec.inference import Recommender

    two = (args.retriever, args.ranker)
    if args.checkpoint and any(two):
        raise UserError("give --checkpoint, or --retriever with --ranker, not both")
    if getattr(args, "ensemble", None):
        if args.checkpoint or any(two):
            raise UserError("give --ensemble DIR DIR ..., or --checkpoint, or --retriever with --ranker: one of them")
        from jaxrec.ensemble import Ensemble
        ens = Ensemble([Recommender.from_checkpoint(d) for d in args.ensemble])
        return ens, ens.name, ens.config
    if any(two):
        if not all(two):
            raise UserError("the two-stage pipeline needs both --retriever and --ranker")
        from jaxrec.pipeline import Pipeline
        retr, rank = Recommender.from_checkpoint(args.retriever), Recommender.from_checkpoint(args.ranker)
        name = f"{retr.name} -> top {args.candidates} -> {rank.name}"
        return Pipeline(retr, rank, args.candidates, blend=args.blend), name, retr.config
    if args.checkpoint:
        rec = Recommender.from_checkpoint(args.checkpoint)
        return rec, rec.name, rec.config
    if args.model_required:
        raise UserError("give --checkpoint DIR, or --retriever DIR --ranker DIR")
    return None, None, None


def parse_times(spec: str | None) -> list[int] | None:
    """``--times 978300760,978302109`` -> ints (event times, one per history id)."""
    if not spec:
        return None
    try:
        return [int(t) for t in spec.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--times: integers (e.g. unix seconds) comma-separated, got {spec!r}") from None


def require_files(**paths) -> None:
    """A clear error for a named file option that points nowhere (instead of a traceback)."""
    for opt, path in paths.items():
        if path and not os.path.isfile(path):
            raise UserError(f"--{opt.replace('_', '-')}: no such file {path!r}")


