"""The enrolment ledger: which photo became which face of which person, one JSON object a line, append-only.

How ``gallery enrol`` knows a photo is enrolled already: neither API keeps anything of the photo itself (v1 only
a person-level ``tag``, IAI nothing at all), so each face the command adds is recorded here with the photo's
key (:func:`worker.tools.gallery.plan.photo_key`) and the face id the service gave it. A record counts only while the
person still holds that face (the plan checks it against the service), so a face deleted since is enrolled
again, and a lost ledger only costs re-sending: v1 refuses a near-identical face (``-1312``).

Records are scoped by ``target`` (the API and endpoint: see :func:`target_of`) so one ledger serves several
accounts without mixing them. Each record is flushed when its face is added: an interrupted run keeps what it did.
Lines that are not records (a torn last line) are ignored. At most :data:`MAX_RECORDS` records are read.
"""

from __future__ import annotations

import datetime
import threading
from pathlib import Path
from typing import IO

import orjson

MAX_RECORDS = 1_000_000
DEFAULT_NAME = ".gallery-ledger.jsonl"


def default_path(source: Path) -> Path:
    """Next to what was enrolled: ``SOURCE/.gallery-ledger.jsonl`` for a folder, ``<manifest>.ledger.jsonl``."""
    return source / DEFAULT_NAME if source.is_dir() else source.with_name(source.name + ".ledger.jsonl")


def target_of(api: str, endpoint: str, account: str = "") -> str:
    """The scope of a record: ``v1 https://…#<appid>`` or ``iai https://…`` (its region is part of the account's
    data, so ``iai <endpoint>#<region>``)."""
    return f"{api} {endpoint}#{account}" if account else f"{api} {endpoint}"


def read(path: Path, target: str) -> dict[tuple[str, str], str]:
    """(person id, photo key) → face id for ``target``'s records (a later record of the same photo wins)."""
    found: dict[tuple[str, str], str] = {}
    if not path.exists():
        return found
    with path.open("rb") as file:
        for count, line in enumerate(file):
            if count >= MAX_RECORDS:
                break
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(record, dict) or record.get("target") != target:
                continue
            person, key, face = record.get("person_id"), record.get("key"), record.get("face_id")
            if isinstance(person, str) and isinstance(key, str) and isinstance(face, str):
                found[(person, key)] = face
    return found


class Writer:
    """Appends records; safe to share between threads. Opens the file on the first record (a dry run, or a run
    that adds nothing, leaves no file behind)."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self._target = target
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None

    def record(self, *, group: str, person_id: str, key: str, face_id: str, source: str) -> None:
        line = orjson.dumps(
            {
                "target": self._target,
                "group": group,
                "person_id": person_id,
                "key": key,
                "face_id": face_id,
                "source": source,
                "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
        )
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            self._file.write(line + b"\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
