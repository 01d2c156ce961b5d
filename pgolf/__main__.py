"""``python -m pgolf`` (and ``torchrun -m pgolf``) = the ``pgolf`` command."""

import sys

from pgolf.cli import main

sys.exit(main())
