"""`python -m trackline` runs the `trackline` command."""

import sys

from trackline.cli import main

sys.exit(main())
