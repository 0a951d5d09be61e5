"""Serving load benchmark (see ``jaxrec_server.loadtest``): writes benchmarks/serve_load.{json,png}.

    python benchmarks/serve_load.py --checkpoint runs/ml1m_sasrec_ce
"""

import sys
from pathlib import Path

from jaxrec_server.loadtest import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--out" not in argv:
        argv += ["--out", str(Path(__file__).resolve().parent / "serve_load.json")]
    sys.exit(main(argv))
