"""What ``gallery enrol`` reads: a folder with one sub-folder per person, or a CSV / JSON-lines manifest; no API.

Folder layout (``SOURCE/<person_id>/<photo>``)::

    people/
      alice/            person id "alice"
        name.txt        optional: the person's name (its first line); else the name is the id
        1.jpg 2.png     photos (.jpg .jpeg .png .bmp .webp .gif, any case); other files are ignored
      bob/ ...

Hidden entries (a leading dot) are ignored, and so is every file directly in ``SOURCE``.

Manifest (``.csv`` with a header row, or ``.jsonl`` / ``.ndjson`` with one JSON object a line): per photo
``person_id`` (required), ``person_name`` (optional), ``image`` (a path, relative to the manifest's folder, or an
``http(s)://`` URL the service downloads; ``path`` and ``url`` are accepted as column names too) and ``group``
(optional: a row naming another group than the command's is left out, so one manifest can hold several groups).

Contract: entries come in a stable order (folder: persons and photos sorted by name; manifest: its order); a
malformed manifest raises :class:`SourceError` naming the file and line; at most :data:`MAX_ENTRIES` entries.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"})
MANIFEST_SUFFIXES = frozenset({".csv", ".jsonl", ".ndjson"})
NAME_FILE = "name.txt"
MAX_ENTRIES = 100_000  # the bound of one run; a larger gallery is enrolled in several runs
MAX_NAME_CHARS = 60  # IAI's PersonName limit; longer names are cut here rather than refused by the service


class SourceError(ValueError):
    """The source cannot be read as a gallery: the message names the file (and line) and what is wrong."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One photo of one person. Exactly one of ``path`` and ``url`` is set; ``where`` names it in messages
    (``alice/1.jpg``, ``people.csv:3``); ``group`` is the manifest's (None: the command's group)."""

    person_id: str
    person_name: str | None
    path: Path | None
    url: str | None
    where: str
    group: str | None = None

    @property
    def source(self) -> str:
        return self.url if self.url is not None else str(self.path)


def read_source(source: Path) -> list[Entry]:
    """The entries of ``source`` (a folder or a manifest); raises SourceError."""
    if source.is_dir():
        entries = list(_bounded(_folder_entries(source)))
    elif source.is_file():
        if source.suffix.lower() not in MANIFEST_SUFFIXES:
            raise SourceError(f"{source}: a manifest ends in .csv, .jsonl or .ndjson")
        entries = list(_bounded(_manifest_entries(source)))
    else:
        raise SourceError(f"{source}: no such folder or manifest")
    return entries


def _bounded(entries: Iterator[Entry]) -> Iterator[Entry]:
    for count, entry in enumerate(entries, 1):
        if count > MAX_ENTRIES:
            raise SourceError(f"more than {MAX_ENTRIES} photos in one source: split it")
        yield entry


def _folder_entries(root: Path) -> Iterator[Entry]:
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = _name_of(folder)
        for photo in sorted(folder.iterdir()):
            if photo.name.startswith(".") or not photo.is_file() or photo.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            yield Entry(folder.name, name, photo, None, f"{folder.name}/{photo.name}")


def _name_of(folder: Path) -> str | None:
    file = folder / NAME_FILE
    if not file.is_file():
        return None
    try:
        first = file.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{file}: unreadable ({exc})") from None
    if not first:
        return None
    return first[0].strip()[:MAX_NAME_CHARS] or None


def _manifest_entries(manifest: Path) -> Iterator[Entry]:
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{manifest}: unreadable ({exc})") from None
    if manifest.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "person_id" not in reader.fieldnames:
            raise SourceError(f"{manifest}:1: the header must name a person_id column (and image, path or url)")
        for row in reader:
            yield entry_of(row, manifest, reader.line_num)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise SourceError(f"{manifest}:{number}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise SourceError(f"{manifest}:{number}: not a JSON object")
        yield entry_of(row, manifest, number)


def entry_of(row: Mapping[str, Any], manifest: Path, line: int) -> Entry:
    """One manifest row → an entry; raises SourceError naming the line. Pure but for nothing: no file is opened."""
    where = f"{manifest.name}:{line}"

    def text(*names: str) -> str | None:
        for name in names:
            value = row.get(name)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise SourceError(f"{manifest}:{line}: {name} must be a string, not {value!r}")
            return value.strip() or None
        return None

    person_id = text("person_id")
    if person_id is None:
        raise SourceError(f"{manifest}:{line}: person_id is empty")
    image = text("image", "path", "url")
    if image is None:
        raise SourceError(f"{manifest}:{line}: no image (an image, path or url field)")
    name = text("person_name", "name")
    group = text("group", "group_id")
    name = name[:MAX_NAME_CHARS] if name else None
    if image.lower().startswith(("http://", "https://")):
        return Entry(person_id, name, None, image, where, group)
    path = Path(image).expanduser()
    return Entry(person_id, name, path if path.is_absolute() else manifest.parent / path, None, where, group)
