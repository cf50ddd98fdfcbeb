"""``python -m resnet_viz``: the command line (see resnet_viz.cli)."""

import sys

from .cli import main

sys.exit(main())
