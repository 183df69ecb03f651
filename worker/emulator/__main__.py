"""``python -m worker.emulator`` — see worker.emulator.cli."""

from __future__ import annotations

import sys

from worker.emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
