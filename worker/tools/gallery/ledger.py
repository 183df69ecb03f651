"""The enrolment ledger: which photo became which face of which person, one JSON object a line, append-only.

How ``gallery enrol`` knows a photo is enrolled already: neither API keeps anything of the photo itself (v1 only
a person-level ``tag``, IAI nothing at all), so each face the command adds is recorded here with the photo's
key (:func:`worker.tools.gallery.plan.photo_key`) and the face id the service gave it. A record counts only while the
person still holds that face (the plan checks it against the service), so a face deleted since is enrolled again.

Records of one photo (person id, key), the last one of a photo deciding its state:

- ``{"state": "pending", "faces_before": [...]}`` written *before* each create or add: the person's face ids at
  that moment. While it is the photo's last record, the outcome of that write is unknown (the run was killed, or
  the answer never came): the next run re-reads the person and takes a face they gained since, that no record names,
  as the photo's (:func:`worker.tools.gallery.plan.unclaimed_faces`);
- ``{"face_id": F}`` (``"state": "added"``; records without a state are this) once the service answered F;
- ``{"state": "not_added", "code": C}`` when the service answered that it did not add it (a refusal).

Records are scoped by ``target`` (the API and endpoint: see :func:`target_of`) so one ledger serves several
accounts without mixing them. Each record is flushed when it is written: an interrupted run keeps what it did.
Lines that are not records (a run killed mid-record leaves a fragment without its newline) are skipped and counted
(:attr:`State.unreadable`, which the command reports); a writer that opens a ledger whose last byte is not a newline
ends that fragment first, so its own first record (a ``pending`` one) is a line of its own. Every line is read,
however long the ledger: the state holds one entry per photo of the target, so memory follows the photos, not the
lines. A line longer than :data:`MAX_LINE_BYTES` (no record is) counts as unreadable.

One run at a time: :meth:`Writer.lock` takes an exclusive ``flock`` on the ledger for the whole run (read, plan and
writes), and refuses (:class:`LedgerLocked`) when another run holds it: two runs would plan the same photos.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

#: A record is a few hundred bytes; a longer line is not one, and is skipped without being held whole in memory.
MAX_LINE_BYTES = 1 << 20
DEFAULT_NAME = ".gallery-ledger.jsonl"

Photo = tuple[str, str]  # (person id, photo key)


class LedgerLocked(Exception):
    """Another run holds the ledger."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"the ledger {path} is held by another run of gallery enrol; wait for it to finish")
        self.path = path


@dataclass(frozen=True, slots=True)
class State:
    """What a ledger says for one target: ``faces`` (photo → its face id), ``pending`` (photo → the person's face ids
    before a write whose outcome is unknown), ``unreadable`` (lines of any target that are not records, such as a
    fragment left by a run killed mid-record) and ``first_unreadable`` (the first one's line number)."""

    faces: dict[Photo, str] = field(default_factory=dict)
    pending: dict[Photo, tuple[str, ...]] = field(default_factory=dict)
    unreadable: int = 0
    first_unreadable: int | None = None


def default_path(source: Path) -> Path:
    """Next to what was enrolled: ``SOURCE/.gallery-ledger.jsonl`` for a folder, ``<manifest>.ledger.jsonl``."""
    return source / DEFAULT_NAME if source.is_dir() else source.with_name(source.name + ".ledger.jsonl")


def target_of(api: str, endpoint: str, account: str = "") -> str:
    """The scope of a record: ``v1 https://…#<appid>`` or ``iai https://…`` (its region is part of the account's
    data, so ``iai <endpoint>#<region>``)."""
    return f"{api} {endpoint}#{account}" if account else f"{api} {endpoint}"


def read(path: Path, target: str) -> State:
    """``target``'s records, each photo in the state its last record gives it; every line is read."""
    state = State()
    if not path.exists():
        return state
    unreadable, first = 0, None
    with path.open("rb") as file:
        for number, line in enumerate(_lines(file), start=1):
            try:
                record = orjson.loads(line) if line is not None else None
            except orjson.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                if line is None or line.strip():  # an empty line is no record, and no damage either
                    unreadable += 1
                    first = first or number
                continue
            if record.get("target") == target:
                _apply(state, record)
    return State(state.faces, state.pending, unreadable, first)


def _lines(file: IO[bytes]) -> Iterator[bytes | None]:
    """Each line of ``file``; None for one longer than MAX_LINE_BYTES, which is skipped in bounded pieces."""
    while line := file.readline(MAX_LINE_BYTES + 1):
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while (rest := file.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield None


def _apply(state: State, record: dict[str, object]) -> None:
    person, key = record.get("person_id"), record.get("key")
    if not isinstance(person, str) or not isinstance(key, str):
        return
    photo = (person, key)
    kind = record.get("state", "added")
    if kind == "pending":
        before = record.get("faces_before")
        if isinstance(before, list):
            state.faces.pop(photo, None)
            state.pending[photo] = tuple(str(f) for f in before)
    elif kind == "added":
        face = record.get("face_id")
        if isinstance(face, str):
            state.pending.pop(photo, None)
            state.faces[photo] = face
    elif kind == "not_added":
        state.pending.pop(photo, None)


class Writer:
    """Appends records; safe to share between threads. Without :meth:`lock` the file is opened on the first record."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self._target = target
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None

    def lock(self) -> None:
        """Open (create) the ledger and hold an exclusive lock on it until :meth:`close`; LedgerLocked when another
        run holds it (non-blocking: a second run is told at once, not queued)."""
        with self._lock:
            if self._file is None:
                self._file = self._open()
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.close()
                self._file = None
                raise LedgerLocked(self.path) from None
            self._end_torn_line(self._file)  # under the lock: no other run is appending

    def _open(self) -> IO[bytes]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.path.open("a+b")  # appends; readable, to look at the last byte

    @staticmethod
    def _end_torn_line(file: IO[bytes]) -> None:
        """A run killed mid-record left a fragment without its newline: end it, or the next record would join it
        and be unreadable too (a lost pending record: a write whose outcome is unknown would be sent again)."""
        size = os.fstat(file.fileno()).st_size
        if size and os.pread(file.fileno(), 1, size - 1) != b"\n":
            file.write(b"\n")
            file.flush()

    def record(self, *, group: str, person_id: str, key: str, face_id: str, source: str) -> None:
        """The photo became ``face_id``."""
        self._write({"group": group, "person_id": person_id, "key": key, "face_id": face_id, "source": source})

    def pending(self, *, group: str, person_id: str, key: str, faces_before: Sequence[str], source: str) -> None:
        """A create or add of the photo is about to be sent; the person holds ``faces_before``."""
        self._write(
            {
                "state": "pending",
                "group": group,
                "person_id": person_id,
                "key": key,
                "faces_before": list(faces_before),
                "source": source,
            }
        )

    def not_added(self, *, group: str, person_id: str, key: str, code: str, source: str) -> None:
        """The service answered that it did not add the photo (``code``)."""
        self._write(
            {"state": "not_added", "group": group, "person_id": person_id, "key": key, "code": code, "source": source}
        )

    def _write(self, fields: dict[str, object]) -> None:
        line = orjson.dumps(
            {
                "target": self._target,
                **fields,
                "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
        )
        with self._lock:
            if self._file is None:
                self._file = self._open()
                self._end_torn_line(self._file)
            self._file.write(line + b"\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file (and so release the lock)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
