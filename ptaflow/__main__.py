"""`python -m ptaflow ...` is the `ptaflow` command (e.g. on cluster nodes without the script)."""

import sys

from .cli import main

sys.exit(main())
