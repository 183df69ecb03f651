"""The product's import graph never reaches the development code: ``worker.dev`` or ``worker.emulator``.

The image installs neither the ``emulator`` extra nor anything under ``worker/dev/`` is meant to run in it, so a
product module that imported them would fail in production or drag test code in. Checked in a fresh interpreter,
since this test session itself has long imported both.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import worker

ROOT = Path(__file__).resolve().parent.parent
DEV_ONLY = ("worker.dev", "worker.emulator")


def product_modules() -> list[str]:
    """Every module of ``worker`` except the development packages and ``__main__`` (which runs the CLI)."""
    names = [m.name for m in pkgutil.walk_packages(worker.__path__, "worker.")]
    return sorted(n for n in names if not n.startswith(DEV_ONLY) and not n.endswith(".__main__"))


def test_the_product_never_imports_the_dev_code() -> None:
    modules = product_modules()
    assert {"worker.runtime.app", "worker.api.client", "worker.tools.replay", "worker.cli"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({DEV_ONLY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"product modules import development code: {done.stdout.strip()}"
