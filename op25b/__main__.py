"""``python -m op25b`` runs the command line."""

import sys

from op25b.cli import main

sys.exit(main())
