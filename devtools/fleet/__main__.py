"""`python -m devtools.fleet`: see cli.py."""

import sys

from devtools.fleet.cli import main

sys.exit(main())
