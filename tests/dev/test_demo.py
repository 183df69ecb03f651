"""The README's first command: the demo runs end to end, prints its summary, and leaves no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _processes_marked(mark: str) -> set[int]:
    """PIDs whose environment carries ``mark``: the demo and everything it started (inherited env)."""
    needle = f"DEMO_TEST_MARK={mark}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\x00"):
            found.add(int(entry.name))
    return found


@pytest.mark.broker
def test_demo_prints_the_summary_and_cleans_up() -> None:
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDW_")}
    env["DEMO_TEST_MARK"] = mark
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # The events are published only once both workers answer /readyz 200 (joined, partitions assigned).
    assert out.index("two workers joined one consumer group and are ready") < out.index("published 49 events")
    assert "Summary: 49 events → 36 results, 13 dead letters" in out
    assert "-1308  ×4" in out and "-1101  ×4" in out and "invalid_json  ×1" in out
    assert "replayed 4 records" in out
    assert out.count("late-7") == 4  # the four fixed events, each now identified
    assert "workers stopped (exit codes [0, 0])" in out
    leaked = _processes_marked(mark)
    assert not leaked, f"processes left behind: {leaked}"
