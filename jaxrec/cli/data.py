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


def add_parsers(sub) -> None:
    d = sub.add_parser("data", help="inspect datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    ds = dsub.add_parser("stats", help="users, items, interactions, lengths, filter report")
    add_data_args(ds, positional=True)
    ds.add_argument("--json", action="store_true", help="print one JSON object")
    ds.set_defaults(func=cmd_data_stats)
