"""``python -m jaxrec.cli`` = ``jaxrec``."""

import sys

from jaxrec.cli import main

sys.exit(main())
