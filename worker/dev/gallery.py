"""Annotated photos and the one HTML page that shows them, for people looking at results (the real-face demo,
``tail results --annotate DIR``).

* :func:`faces_of` — the faces of a result record (``result.schema.json``) as :class:`worker.api.models.Face` s;
  :func:`threshold_for` — the match threshold of the API that answered it (v1 90, IAI 80);
* :func:`fetch_image` — an image by URL: http(s) only, a bounded time and size, every failure a :class:`FetchError`;
* :class:`Gallery` — a folder of annotated JPEGs plus ``index.html``: static, relative links, no external assets,
  rewritten (atomically) after every photo so that it is always complete.

Drawing is :mod:`worker.emulator.annotate` (Pillow: the ``emulator`` extra).
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from worker.api.models import Candidate, Face, FaceRect
from worker.emulator.annotate import KNOWN, UNKNOWN, Mark, annotate, marks_for

#: The documented thresholds: v1's usual 90, IAI's suggested 80 (the result schema's ``api.name``).
THRESHOLDS = {"v1": 90.0, "iai": 80.0}
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # larger than any camera photo the APIs accept (v1: 5 MB base64)
FETCH_TIMEOUT_S = 10.0
MAX_ENTRIES = 1000  # the page lists the newest this many: a long tail must not grow it without end


class FetchError(Exception):
    """An image that could not be had; the message says why (for a line of output)."""


def threshold_for(doc: Mapping[str, Any]) -> float:
    api = doc.get("api")
    name = api.get("name") if isinstance(api, dict) else None
    return THRESHOLDS.get(str(name), THRESHOLDS["v1"])


def faces_of(doc: Mapping[str, Any]) -> list[Face]:
    """The faces of a result record; a face or candidate that does not have the schema's shape is left out."""
    faces: list[Face] = []
    raw = doc.get("faces")
    for f in raw if isinstance(raw, list) else []:
        rect = f.get("face_rect") if isinstance(f, dict) else None
        if not isinstance(rect, dict) or not all(isinstance(rect.get(k), int) for k in ("x", "y", "width", "height")):
            continue
        candidates = []
        for c in f.get("candidates") or []:
            if isinstance(c, dict) and isinstance(c.get("confidence"), int | float):
                candidates.append(
                    Candidate(
                        person_id=str(c.get("person_id", "?")),
                        face_id=str(c.get("face_id", "")),
                        confidence=float(c["confidence"]),
                        person_name=c.get("person_name") if isinstance(c.get("person_name"), str) else None,
                    )
                )
        faces.append(Face(FaceRect(rect["x"], rect["y"], rect["width"], rect["height"]), tuple(candidates)))
    return faces


def fetch_image(url: str, *, timeout_s: float = FETCH_TIMEOUT_S, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes at ``url`` (http or https; redirects to either followed, at most 5); raises :class:`FetchError`
    on another scheme, a non-2xx status, more than ``max_bytes``, or no answer within ``timeout_s`` per read."""
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError(f"not an http(s) URL: {url[:100]!r}")
    try:
        with requests.Session() as session:
            session.max_redirects = 5  # requests refuses a redirect to a scheme it has no adapter for (ftp, file)
            with session.get(url, stream=True, timeout=timeout_s) as resp:
                if not 200 <= resp.status_code < 300:
                    raise FetchError(f"HTTP {resp.status_code}")
                data = bytearray()
                for chunk in resp.iter_content(64 * 1024):
                    data += chunk
                    if len(data) > max_bytes:
                        raise FetchError(f"larger than {max_bytes} bytes")
                return bytes(data)
    except requests.RequestException as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}"[:300]) from exc


@dataclass(frozen=True)
class Entry:
    """One photo on the page: its file (relative to the page), a title and one line per face."""

    file: str
    title: str
    lines: tuple[str, ...]


def face_lines(marks: Sequence[Mark]) -> tuple[str, ...]:
    """What the page (and the demo) say per face: the label and where, strangers and unsearched faces named so."""
    lines = []
    for m in marks:
        x, y, w, h = m.box
        where = f"at ({x}, {y}) {w}×{h}"
        if m.colour == KNOWN:
            lines.append(f"{m.label} {where}")
        elif m.colour == UNKNOWN:
            lines.append(f"stranger (best {m.label.removeprefix('? ')}) {where}")
        else:
            lines.append(f"not searched {where}")
    return tuple(lines)


@dataclass
class Gallery:
    """``folder`` holds the annotated photos and ``index.html``; ``title`` heads the page."""

    folder: Path
    title: str = "multidentify-worker: annotated results"
    entries: list[Entry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def index(self) -> Path:
        return self.folder / "index.html"

    def add(
        self,
        name: str,
        image: bytes,
        faces: Sequence[Face],
        threshold: float,
        *,
        title: str = "",
        names: Mapping[str, str] | None = None,
    ) -> Entry:
        """Draw ``faces`` on ``image`` into ``<name>.jpg`` (``name`` made safe for a file name) and rewrite the
        page. Raises :class:`worker.emulator.faces.ImageError` for bytes that are no photo (nothing written)."""
        marks = marks_for(faces, threshold, names)
        data = annotate(image, marks)
        file = safe_name(name) + ".jpg"
        _write_atomically(self.folder / file, data)
        entry = Entry(file, title or name, face_lines(marks) or ("no faces",))
        kept = [e for e in self.entries if e.file != file][-(MAX_ENTRIES - 1) :]
        self.entries = [*kept, entry]
        _write_atomically(self.index, self.page().encode())
        return entry

    def page(self) -> str:
        figures = "\n".join(
            f'<figure><a href="{html.escape(e.file)}"><img src="{html.escape(e.file)}" alt="{html.escape(e.title)}">'
            f"</a><figcaption><b>{html.escape(e.title)}</b><ul>"
            + "".join(f"<li>{html.escape(line)}</li>" for line in e.lines)
            + "</ul></figcaption></figure>"
            for e in self.entries
        )
        known, unknown = (f"rgb{c}" for c in (KNOWN, UNKNOWN))
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; background: #f4f4f4; }}
main {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; background: #fff; padding: .5em; box-shadow: 0 1px 3px #999; max-width: 480px; }}
img {{ max-width: 100%; }}
.k {{ color: {known}; }} .u {{ color: {unknown}; }}
</style></head><body>
<h1>{html.escape(self.title)}</h1>
<p>Boxes: <b class="k">green</b> identified (name and confidence), <b class="u">orange</b> a stranger (the best
score, below the threshold), gray a face the API gave no candidates for. {len(self.entries)} photo(s).</p>
<main>
{figures}
</main></body></html>
"""


def safe_name(name: str) -> str:
    """A file name from an event id or a photo's name: letters, digits, ``._-`` only, at most 100 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")[:100]
    return cleaned or "_"


def _write_atomically(path: Path, data: bytes) -> None:
    """A reader (a browser refreshing the page) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
