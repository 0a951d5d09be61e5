"""The ``jaxrec`` command line, one module per command group.

    jaxrec data stats PATH                      (cli/data.py)
    jaxrec train | runs | quickstart            (cli/train.py)
    jaxrec eval | recommend                     (cli/model.py)
    jaxrec serve | query | bench serve          (cli/serve.py)

User mistakes raise :class:`jaxrec.errors.UserError`; they are printed as one ``error:`` line
with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys

from jaxrec.cli import data, model, serve, train
from jaxrec.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxrec", description="Attention-based recommenders in JAX.")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (data, train, model, serve):
        group.add_parsers(sub)
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
