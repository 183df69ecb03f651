"""Real photos of real people, for the real-face demo, tests and benchmarks (tests/data/faces/README.md says where
each comes from).

* :func:`committed` — the public-domain portraits committed in ``tests/data/faces`` (Eileen Collins, Grace Hopper),
  or None when this is an installed package without the repository's tests folder;
* :func:`fetched` — three photos of Barack Obama and one of Joe Biden from the ``face_recognition==1.3.0`` source
  distribution, downloaded once by pip into a cache folder (its sha256 checked; ``make install`` does it), or the
  reason they are not there;
* :func:`compose` — a group picture pasted together from face crops, with where each face went; :func:`overlap`;
* :func:`dlib_missing` — why the real engine cannot run here, or None.

``python -m worker.dev.photos`` fetches the photos now (``make install`` does, through ``tests.emulator.real_photos``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

#: The committed photos: in the repository, beside the package (an installed package has none).
DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "faces"
SDIST = "face_recognition==1.3.0"
PIP_DOWNLOAD = ("-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check", "--quiet")
SDIST_FILE = "face_recognition-1.3.0.tar.gz"
SDIST_SHA256 = "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec"
FETCHED = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
PIP_TIMEOUT_S = 180


COMMITTED = ("astronaut.jpg", "grace_hopper.jpg")


def committed(name: str) -> bytes:
    """``astronaut.jpg`` or ``grace_hopper.jpg``; raises FileNotFoundError outside the repository."""
    return (DATA / name).read_bytes()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "multidentify-worker" / "face-photos"


@functools.cache
def fetched() -> dict[str, bytes] | str:
    """The photos of :data:`FETCHED` by name, or why they could not be had (then the tests that need them skip)."""
    folder = cache_dir()
    if all((folder / name).is_file() for name in FETCHED):
        return {name: (folder / name).read_bytes() for name in FETCHED}
    with tempfile.TemporaryDirectory(prefix="face-photos-") as tmp:
        try:
            done = subprocess.run(
                [sys.executable, *PIP_DOWNLOAD, "--dest", tmp, SDIST],
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"pip could not fetch {SDIST} for its test photos: {exc}"
        sdist = Path(tmp) / SDIST_FILE
        if done.returncode != 0 or not sdist.is_file():
            return f"pip could not fetch {SDIST} for its test photos: {done.stderr.strip()[-300:]}"
        data = sdist.read_bytes()
        if hashlib.sha256(data).hexdigest() != SDIST_SHA256:
            return f"{SDIST_FILE} from pip does not have the expected sha256"
        photos: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for name in FETCHED:
                member = tar.extractfile(f"face_recognition-1.3.0/tests/test_images/{name}")
                if member is None:
                    return f"{SDIST_FILE} has no tests/test_images/{name}"
                photos[name] = member.read()
        staging = Path(tmp) / "photos"
        staging.mkdir()
        for name, content in photos.items():
            (staging / name).write_bytes(content)
        # No cache (read-only home) only costs the next run a download; another process may have filled it meanwhile.
        with contextlib.suppress(OSError):
            folder.parent.mkdir(parents=True, exist_ok=True)
            if not folder.exists():
                shutil.move(str(staging), str(folder))
        return photos


def dlib_missing() -> str | None:
    """Why the dlib engine cannot run in this environment (the ``faces`` extra is missing), or None."""
    try:
        from worker.emulator.dlib_engine import DlibEngine

        DlibEngine()
    except RuntimeError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Placed:
    """One face pasted into a composition: who, and its expected box (x, y, width, height) in the picture."""

    who: str
    box: tuple[int, int, int, int]


def compose(
    size: tuple[int, int],
    parts: Sequence[tuple[str, bytes, tuple[int, int, int, int], tuple[int, int], float]],
    background: tuple[int, int, int] = (90, 100, 110),
) -> tuple[bytes, list[Placed]]:
    """A JPEG of ``size`` made of crops: each part is (who, photo, the face's box in that photo, where the crop's
    top-left goes, scale). Around each face a margin of half its size is kept, so the detector sees a head, not
    a cut-out face. Returns the picture and where each face ended up."""
    canvas = Image.new("RGB", size, background)
    placed: list[Placed] = []
    for who, photo, (fx, fy, fw, fh), (px, py), scale in parts:
        img = Image.open(io.BytesIO(photo)).convert("RGB")
        margin_x, margin_y = fw // 2, fh // 2
        crop = (
            max(0, fx - margin_x),
            max(0, fy - margin_y),
            min(img.width, fx + fw + margin_x),
            min(img.height, fy + fh + margin_y),
        )
        piece = img.crop(crop)
        piece = piece.resize((round(piece.width * scale), round(piece.height * scale)), Image.Resampling.LANCZOS)
        canvas.paste(piece, (px, py))
        box = (
            px + round((fx - crop[0]) * scale),
            py + round((fy - crop[1]) * scale),
            round(fw * scale),
            round(fh * scale),
        )
        placed.append(Placed(who, box))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=92)
    return buf.getvalue(), placed


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / float(aw * ah + bw * bh - inter)


if __name__ == "__main__":  # `make install`: fetch the photos now, so that tests and demo never reach the network
    got = fetched()
    if isinstance(got, str):
        sys.exit(got)
    print(f"real-face photos in {cache_dir()}: {', '.join(sorted(got))}")
