"""``jaxrec data stats``: users, items, interactions, lengths and what the filters removed."""

from __future__ import annotations

import json
import time

from jaxrec.cli.common import add_data_args, load_data


def cmd_data_stats(args) -> int:
    t0 = time.perf_counter()
    data = load_data(args)
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


def cmd_data_prepare(args) -> int:
    from jaxrec.data.prepare import prepare

    t0 = time.perf_counter()
    rec = prepare(args.source, args.out, user_col=args.user_col, item_col=args.item_col,
                  time_col=args.time_col, progress=not args.quiet)
    print(f"prepared {rec['events']:,} events of {rec['users']:,} users and {rec['items']:,} items "
          f"from {rec['source']} into {args.out} in {time.perf_counter() - t0:.1f} s "
          f"({'with' if rec['has_time'] else 'without'} times); train with --data {args.out}")
    return 0


def add_parsers(sub) -> None:
    d = sub.add_parser("data", help="inspect and prepare datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    ds = dsub.add_parser("stats", help="users, items, interactions, lengths, filter report")
    add_data_args(ds, positional=True)
    ds.add_argument("--json", action="store_true", help="print one JSON object")
    ds.set_defaults(func=cmd_data_stats)
    dp = dsub.add_parser("prepare", help="stream a CSV/TSV/Parquet event file into memory-mapped arrays "
                                         "(data larger than memory; jaxrec.data.prepare)")
    dp.add_argument("source", help="event file: .csv, .tsv or .parquet with a header / named columns")
    dp.add_argument("--out", required=True, help="the prepared directory (replaced if it exists)")
    dp.add_argument("--user-col", default=None)
    dp.add_argument("--item-col", default=None)
    dp.add_argument("--time-col", default=None)
    dp.add_argument("--quiet", action="store_true", help="no progress bars")
    dp.set_defaults(func=cmd_data_prepare)
