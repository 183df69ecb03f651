"""``python -m worker`` is ``multidentify-worker``."""

import sys

from worker.cli import main

sys.exit(main())
