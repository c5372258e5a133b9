"""`python -m devserver ...`: see devserver/cli.py."""

import sys

from .cli import main

sys.exit(main())
