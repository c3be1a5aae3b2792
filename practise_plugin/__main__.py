"""``python -m practise_plugin``: the ``practise`` command (also what ``torchrun -m practise_plugin`` runs)."""

import sys

from .cli import main

sys.exit(main())
