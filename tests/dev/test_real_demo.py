"""``demo --real-faces``: real people enrolled from photos are found in their other photos and in pasted group
pictures, strangers are marked, the annotated photos and the page that shows them are written, and no process is
left behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from PIL import Image

from tests.dev.test_demo import _processes_marked
from worker.dev.photos import dlib_missing, fetched

ROOT = Path(__file__).resolve().parents[2]
MISSING = dlib_missing()
pytestmark = [pytest.mark.real_faces, pytest.mark.broker, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

#: Who each published photo shows, as the demo prints it (the order of faces: largest first).
EXPECTED = {
    "grace_hopper.jpg": ["stranger"],
    "group-1.jpg": ["Barack Obama", "Joe Biden", "Eileen Collins", "stranger"],
    "group-2.jpg": ["Barack Obama", "stranger", "Joe Biden"],
    "obama2.jpg": ["Barack Obama"],
    "obama3.jpg": ["Barack Obama"],
}


def found_in(out: str) -> dict[str, list[str]]:
    """The demo's step 5 as {photo: [who per face]}: a photo line, then one indented line per face."""
    section = out.split("5. who was found where")[1].split("\n6. ")[0]
    found: dict[str, list[str]] = {}
    current = ""
    for line in section.splitlines()[1:]:
        if re.match(r"^   \S+\.jpg", line):
            current = line.split()[0]
            found[current] = []
        elif line.startswith("      ") and current:
            face = re.match(r"^\s+(stranger|[A-Z][a-z]+ [A-Z][a-z]+) ", line)
            assert face, line
            found[current].append(face.group(1))
    return found


@pytest.mark.parametrize("api", ["v1", "iai"])
def test_the_real_faces_demo_finds_everyone_where_they_are_and_draws_it(api: str, tmp_path: Path) -> None:
    if isinstance(fetched(), str):
        pytest.skip(f"the fetched photos are missing: {fetched()}")
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDW_")}
    env["DEMO_TEST_MARK"] = mark
    folder = tmp_path / "out"
    argv = [sys.executable, "-m", "worker", "demo", "--real-faces", "--api", api, "--out", str(folder)]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout

    assert "Barack Obama (obama.jpg), Joe Biden (biden.jpg), Eileen Collins (astronaut.jpg)" in out
    found = found_in(out)
    assert {photo: sorted(who) for photo, who in found.items()} == {p: sorted(w) for p, w in EXPECTED.items()}
    assert "5 of 5 photos: everyone found where they are, strangers marked" in out
    assert "workers stopped (exit codes [0, 0])" in out

    # One annotated photo per published one, and a page that shows each, by relative links only.
    assert sorted(p.name for p in folder.iterdir()) == sorted([*(p for p in EXPECTED), "index.html"])
    page = (folder / "index.html").read_text()
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == sorted(EXPECTED)
    assert "<script" not in page and "<link" not in page and "://" not in page
    for photo in EXPECTED:
        with Image.open(folder / photo) as img:
            assert img.format == "JPEG"
    assert page.count("stranger (best") == 3 and page.count("Barack Obama") == 4
    assert f"{folder / 'index.html'}" in out
    assert not _processes_marked(mark), "processes left behind"
