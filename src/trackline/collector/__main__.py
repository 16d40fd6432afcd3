"""`python -m trackline.collector`: the same as `trackline collector`."""

import sys

from trackline.cli.collector import main

sys.exit(main())
