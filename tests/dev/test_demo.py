"""The README's first command: the demo runs end to end, prints its summary, and leaves no process behind,
on either face API (``--api iai``: enrolled through IAI, IAI's codes in the summary and the replay).

Its workers also read a camera topic in CloudEvents and a MinIO topic of bucket notifications
(docs/event-formats.md): each usable record is identified (the person in its image), each unusable notification
is dead-lettered with its format's code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from worker.config import ApiName
from worker.dev.scenario import EXPECTED_CODES

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
@pytest.mark.parametrize("api", ["v1", "iai"])
def test_demo_prints_the_summary_and_cleans_up(api: ApiName) -> None:
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDW_")}
    env["DEMO_TEST_MARK"] = mark
    argv = [sys.executable, "-m", "worker", "demo", *(["--api", api] if api != "v1" else [])]  # v1: the default
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    codes = EXPECTED_CODES[api]
    assert f"API {api}" in out
    if api == "iai":
        assert "through IAI's CreateGroup, then CreatePerson per person" in out
    # The events are published only once both workers answer /readyz 200 (joined, partitions assigned).
    assert out.index("two workers joined one consumer group and are ready") < out.index("published 49 events")
    assert "Summary: 49 events → 36 results, 13 dead letters" in out
    assert f"{codes['unreachable']}  ×4" in out and f"{codes['no_face']}  ×4" in out and "invalid_json  ×1" in out
    assert "every event got the output the scenario expects" in out
    # The other input formats: the person in each usable record's image, the code of each unusable notification.
    assert "the workers also read camera.events (cloudevents) and minio.images (s3, image URLs http://127.0.0.1:" in out
    formats = out[out.index("camera.events (cloudevents)") :]
    for label, found in (
        ("camera.events  structured CloudEvent", r"bob \(\d+\)"),
        ("camera.events  binary CloudEvent", r"carol \(\d+\), unknown"),
        ("minio.images   s3:ObjectCreated:Put     lobby/alice 1.jpg", r"alice \(\d+\)"),
        ("minio.images   s3:ObjectCreated:Put     lobby/dave 2.jpg", r"dave \(\d+\)"),
        ("minio.images   s3:ObjectRemoved:Delete  lobby/alice 1.jpg", r"dead letter not_object_created"),
        ("minio.images   s3:ObjectCreated:Put     lobby/clip.mp4", r"dead letter not_an_image"),
    ):
        assert re.search(re.escape(label) + r"[^\n]*→ " + found, formats), (label, formats[:2000])
    assert "every record of the three topics got the output the scenario expects" in out
    assert f"replaying dead letters with code {codes['unreachable']} only" in out
    assert "replayed 4 records" in out
    assert out.count("late-7") == 4  # the four fixed events, each now identified
    assert "workers stopped (exit codes [0, 0])" in out
    leaked = _processes_marked(mark)
    assert not leaked, f"processes left behind: {leaked}"
