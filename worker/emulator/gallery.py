"""Groups, persons and faces per appid: an in-memory index for matching, written through to SQLite.

Semantics (docs/api-notes.md#management-calls): a group exists while it has persons (``newperson``/``addgroupids``
create it, the last leaving person removes it) or once it was created explicitly (:meth:`Gallery.create_group`,
IAI's ``CreateGroup``: it stays, empty or not, until :meth:`Gallery.delete_group`); a face belongs to one
person; limits answer -1309 (faces per person), -1310 (persons per group), -1311 (groups per appid); a face
whose confidence against one of the person's faces is ≥ ``duplicate_confidence`` is a near-duplicate (-1312).
Callers may lower the face limit and skip the duplicate rule per call (IAI: five faces, no such rule).

Every mutation is committed to SQLite before it returns, so a restarted emulator with the same file
finds the same gallery. Vectors are stored as float32 (the synthetic engine's 36 values, the dlib engine's 128):
a face is computed once, at enrolment. A file names the engine that wrote it (``meta``: ``name/dim``) and another
engine refuses it, as it refuses a face whose vector has not the engine's dimension (ValueError).

Matching never touches SQLite: each set of requested groups gets a cached (n, dim) matrix of face vectors,
rebuilt lazily after a mutation.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from worker.emulator.faces import DetectedFace, FaceEngine, Rect, Vector

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS persons (
    appid TEXT NOT NULL, person_id TEXT NOT NULL, name TEXT NOT NULL, tag TEXT NOT NULL,
    gender INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (appid, person_id));
CREATE TABLE IF NOT EXISTS named_groups (
    appid TEXT NOT NULL, group_id TEXT NOT NULL, name TEXT NOT NULL, tag TEXT NOT NULL, created_ms INTEGER NOT NULL,
    PRIMARY KEY (appid, group_id));
CREATE TABLE IF NOT EXISTS memberships (
    appid TEXT NOT NULL, group_id TEXT NOT NULL, person_id TEXT NOT NULL,
    PRIMARY KEY (appid, group_id, person_id));
CREATE TABLE IF NOT EXISTS faces (
    appid TEXT NOT NULL, face_id TEXT NOT NULL, person_id TEXT NOT NULL, tag TEXT NOT NULL,
    x INTEGER NOT NULL, y INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    vector BLOB NOT NULL, PRIMARY KEY (appid, face_id));
"""
# Columns added to ``persons`` after its first release: a gallery file from before gets them on open.
ADDED_PERSON_COLUMNS = {"gender": "INTEGER NOT NULL DEFAULT 0", "created_ms": "INTEGER NOT NULL DEFAULT 0"}


class GalleryError(Exception):
    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(detail or str(code))
        self.code = code


@dataclass(frozen=True)
class Limits:
    max_groups: int = 5000  # per appid
    max_persons_per_group: int = 20000
    max_faces_per_person: int = 20
    duplicate_confidence: float = 99.0
    top_n: int = 5


@dataclass
class Person:
    person_id: str
    name: str = ""
    tag: str = ""
    group_ids: list[str] = field(default_factory=list)
    face_ids: list[str] = field(default_factory=list)
    gender: int = 0  # IAI: 0 unknown, 1 male, 2 female
    created_ms: int = 0


@dataclass(frozen=True)
class GroupInfo:
    """A group created explicitly (IAI ``CreateGroup``); implicit v1 groups are listed with their id as name."""

    group_id: str
    name: str
    tag: str = ""
    created_ms: int = 0


@dataclass(frozen=True)
class Face:
    face_id: str
    person_id: str
    tag: str
    rect: Rect
    vector: Vector


class Candidate(NamedTuple):
    person_id: str
    face_id: str
    confidence: float
    tag: str

    def to_json(self) -> dict[str, object]:
        return {"person_id": self.person_id, "face_id": self.face_id, "confidence": self.confidence, "tag": self.tag}


class _Index(NamedTuple):
    matrix: Vector
    face_ids: list[str]
    person_ids: list[str]


@dataclass
class _App:
    persons: dict[str, Person] = field(default_factory=dict)
    faces: dict[str, Face] = field(default_factory=dict)
    groups: dict[str, dict[str, None]] = field(default_factory=dict)  # ordered sets of person ids
    named: dict[str, GroupInfo] = field(default_factory=dict)  # explicitly created groups, in creation order
    indexes: dict[tuple[str, ...], _Index] = field(default_factory=dict)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


class Gallery:
    """All appids' galleries. Not thread-safe by design: the server calls it from its event loop only."""

    def __init__(self, engine: FaceEngine, db_path: str = ":memory:", limits: Limits | None = None) -> None:
        self.engine = engine
        self.limits = limits or Limits()
        self.db_path = db_path
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        if db_path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._check_engine()
        self._apps: dict[str, _App] = {}
        self.version = 0  # bumped by every mutation; lets callers cache search results
        self._seq = itertools.count()
        self._id_lock = threading.Lock()
        self._load()

    # --- persistence ----------------------------------------------------------------------------------------

    def _check_engine(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'engine'").fetchone()
        signature = f"{self.engine.name}/{self.engine.dim}"
        if row is None:
            self._db.execute("INSERT INTO meta (key, value) VALUES ('engine', ?)", (signature,))
        elif row[0] != signature:
            raise ValueError(f"{self.db_path} holds vectors of engine {row[0]}, not {signature}")

    def _migrate(self) -> None:
        have = {row[1] for row in self._db.execute("PRAGMA table_info(persons)")}
        for name, declaration in ADDED_PERSON_COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE persons ADD COLUMN {name} {declaration}")

    def _load(self) -> None:
        for appid, group_id, name, tag, created_ms in self._db.execute(
            "SELECT appid, group_id, name, tag, created_ms FROM named_groups ORDER BY rowid"
        ):
            self._app(appid).named[group_id] = GroupInfo(group_id, name, tag, created_ms)
        for appid, person_id, name, tag, gender, created_ms in self._db.execute(
            "SELECT appid, person_id, name, tag, gender, created_ms FROM persons ORDER BY rowid"
        ):
            self._app(appid).persons[person_id] = Person(person_id, name, tag, gender=gender, created_ms=created_ms)
        for appid, group_id, person_id in self._db.execute(
            "SELECT appid, group_id, person_id FROM memberships ORDER BY rowid"
        ):
            app = self._app(appid)
            app.groups.setdefault(group_id, {})[person_id] = None
            app.persons[person_id].group_ids.append(group_id)
        for appid, face_id, person_id, tag, x, y, w, h, blob in self._db.execute(
            "SELECT appid, face_id, person_id, tag, x, y, width, height, vector FROM faces ORDER BY rowid"
        ):
            app = self._app(appid)
            vector = np.frombuffer(blob, dtype=np.float32).copy()
            if vector.shape != (self.engine.dim,):
                expected = f"{self.engine.dim} ({self.engine.name})"
                raise ValueError(f"{self.db_path}: face {face_id} has {vector.size} values, not {expected}")
            app.faces[face_id] = Face(face_id, person_id, tag, Rect(x, y, w, h), vector)
            app.persons[person_id].face_ids.append(face_id)

    def close(self) -> None:
        self._db.close()

    def _app(self, appid: str) -> _App:
        app = self._apps.get(appid)
        if app is None:
            app = self._apps[appid] = _App()
        return app

    def _changed(self, app: _App) -> None:
        app.indexes.clear()
        self.version += 1

    def _new_face_id(self, app: _App) -> str:
        # Numeric like the documented examples; time-based so ids stay unique across restarts.
        with self._id_lock:
            while True:
                face_id = str((int(time.time() * 1000) << 22) | (next(self._seq) & 0x3FFFFF))
                if face_id not in app.faces:
                    return face_id

    def _check_vectors(self, faces: Iterable[DetectedFace | int]) -> None:
        """Before any change: every face's vector has the engine's dimension (an engine's bug, not the user's)."""
        for face in faces:
            if not isinstance(face, int) and np.shape(face.vector) != (self.engine.dim,):
                size = np.size(face.vector)
                raise ValueError(f"a face vector has {size} values, not {self.engine.dim} ({self.engine.name})")

    def _insert_face(self, appid: str, app: _App, person: Person, detected: DetectedFace, tag: str) -> str:
        face_id = self._new_face_id(app)
        vector = np.ascontiguousarray(detected.vector, dtype=np.float32)
        app.faces[face_id] = Face(face_id, person.person_id, tag, detected.rect, vector)
        person.face_ids.append(face_id)
        r = detected.rect
        self._db.execute(
            "INSERT INTO faces (appid, face_id, person_id, tag, x, y, width, height, vector)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (appid, face_id, person.person_id, tag, r.x, r.y, r.width, r.height, vector.tobytes()),
        )
        return face_id

    def _join_groups(self, appid: str, app: _App, person: Person, group_ids: Sequence[str]) -> list[str]:
        """Add person to groups (creating them); checks all limits before changing anything."""
        joining = [g for g in _unique(group_ids) if g not in person.group_ids]
        new_groups = [g for g in joining if g not in app.groups and g not in app.named]
        if len(app.groups.keys() | app.named.keys()) + len(new_groups) > self.limits.max_groups:
            raise GalleryError(-1311, "too many groups for this appid")
        for g in joining:
            if g in app.groups and len(app.groups[g]) >= self.limits.max_persons_per_group:
                raise GalleryError(-1310, f"group {g} is full")
        for g in joining:
            app.groups.setdefault(g, {})[person.person_id] = None
            person.group_ids.append(g)
            self._db.execute(
                "INSERT INTO memberships (appid, group_id, person_id) VALUES (?,?,?)", (appid, g, person.person_id)
            )
        return joining

    def _leave_groups(self, appid: str, app: _App, person: Person, group_ids: Iterable[str]) -> list[str]:
        left = []
        for g in _unique(group_ids):
            if g not in person.group_ids:
                continue
            person.group_ids.remove(g)
            members = app.groups[g]
            members.pop(person.person_id, None)
            if not members:
                del app.groups[g]
            self._db.execute(
                "DELETE FROM memberships WHERE appid=? AND group_id=? AND person_id=?", (appid, g, person.person_id)
            )
            left.append(g)
        return left

    def _person(self, appid: str, person_id: str) -> tuple[_App, Person]:
        app = self._apps.get(appid)
        person = app.persons.get(person_id) if app else None
        if app is None or person is None:
            raise GalleryError(-1303, f"person {person_id} does not exist")
        return app, person

    # --- operations (each one transaction) -------------------------------------------------------------------

    def _remove_person(self, appid: str, app: _App, person: Person) -> None:
        """Delete a person with its faces and memberships (inside the caller's transaction)."""
        self._leave_groups(appid, app, person, list(person.group_ids))
        for face_id in person.face_ids:
            app.faces.pop(face_id, None)
        self._db.execute("DELETE FROM faces WHERE appid=? AND person_id=?", (appid, person.person_id))
        self._db.execute("DELETE FROM persons WHERE appid=? AND person_id=?", (appid, person.person_id))
        del app.persons[person.person_id]

    # --- operations (each one transaction) -------------------------------------------------------------------

    def new_person(
        self,
        appid: str,
        person_id: str,
        group_ids: Sequence[str],
        face: DetectedFace,
        name: str = "",
        tag: str = "",
        *,
        gender: int = 0,
    ) -> tuple[str, list[str]]:
        """Create a person with one face in the groups; returns (face_id, joined group ids)."""
        self._check_vectors([face])
        app = self._app(appid)
        if person_id in app.persons:
            raise GalleryError(-1302, f"person {person_id} already exists")
        person = Person(person_id, name, tag, gender=gender, created_ms=int(time.time() * 1000))
        with self._db:
            self._db.execute("BEGIN")
            joined = self._join_groups(appid, app, person, group_ids)
            app.persons[person_id] = person
            self._db.execute(
                "INSERT INTO persons (appid, person_id, name, tag, gender, created_ms) VALUES (?,?,?,?,?,?)",
                (appid, person_id, name, tag, gender, person.created_ms),
            )
            face_id = self._insert_face(appid, app, person, face, tag)
        self._changed(app)
        return face_id, joined

    def del_person(self, appid: str, person_id: str) -> None:
        app, person = self._person(appid, person_id)
        with self._db:
            self._db.execute("BEGIN")
            self._remove_person(appid, app, person)
        self._changed(app)

    def create_group(self, appid: str, group_id: str, name: str, tag: str = "") -> GroupInfo:
        """Create an empty group that stays until :meth:`delete_group` (the caller checked it is new)."""
        if self.has_group(appid, group_id):
            raise ValueError(f"group {group_id} exists")
        info = GroupInfo(group_id, name, tag, int(time.time() * 1000))
        with self._db:
            self._db.execute(
                "INSERT INTO named_groups (appid, group_id, name, tag, created_ms) VALUES (?,?,?,?,?)",
                (appid, group_id, name, tag, info.created_ms),
            )
        self._app(appid).named[group_id] = info
        return info

    def delete_group(self, appid: str, group_id: str) -> list[str]:
        """Delete a group: its persons leave it, and those in no other group are deleted with their faces.

        Returns the deleted persons' ids; GalleryError(-1306) if the group does not exist."""
        self.check_groups(appid, [group_id])
        app = self._apps[appid]
        deleted: list[str] = []
        with self._db:
            self._db.execute("BEGIN")
            for person_id in list(app.groups.get(group_id, {})):
                person = app.persons[person_id]
                if person.group_ids == [group_id]:
                    self._remove_person(appid, app, person)
                    deleted.append(person_id)
                else:
                    self._leave_groups(appid, app, person, [group_id])
            app.named.pop(group_id, None)
            self._db.execute("DELETE FROM named_groups WHERE appid=? AND group_id=?", (appid, group_id))
        self._changed(app)
        return deleted

    def add_faces(
        self,
        appid: str,
        person_id: str,
        faces: Sequence[DetectedFace | int],
        tag: str = "",
        *,
        max_faces: int | None = None,
        duplicates: bool = True,
    ) -> tuple[list[str], list[int]]:
        """Add faces (an int is an image that already failed with that code); returns (added ids, code per item).

        ``max_faces`` lowers the faces-per-person limit for this call; ``duplicates=False`` skips the
        near-duplicate rule (-1312)."""
        app, person = self._person(appid, person_id)
        self._check_vectors(faces)
        limit = min(self.limits.max_faces_per_person, max_faces or self.limits.max_faces_per_person)
        added: list[str] = []
        codes: list[int] = []
        with self._db:
            self._db.execute("BEGIN")
            for item in faces:
                if isinstance(item, int):
                    codes.append(item)
                elif len(person.face_ids) >= limit:
                    codes.append(-1309)
                elif duplicates and self._is_duplicate(app, person, item.vector):
                    codes.append(-1312)
                else:
                    added.append(self._insert_face(appid, app, person, item, tag))
                    codes.append(0)
        if added:
            self._changed(app)
        return added, codes

    def _is_duplicate(self, app: _App, person: Person, vector: Vector) -> bool:
        if not person.face_ids:
            return False
        matrix = np.stack([app.faces[f].vector for f in person.face_ids])
        return bool(self.engine.similarity_matrix(vector[None, :], matrix).max() >= self.limits.duplicate_confidence)

    def del_faces(self, appid: str, person_id: str, face_ids: Sequence[str]) -> list[str]:
        app, person = self._person(appid, person_id)
        deleted = [f for f in _unique(face_ids) if f in person.face_ids]
        if not deleted:
            raise GalleryError(-1305, "none of the faces belongs to this person")
        with self._db:
            self._db.execute("BEGIN")
            for face_id in deleted:
                person.face_ids.remove(face_id)
                del app.faces[face_id]
                self._db.execute("DELETE FROM faces WHERE appid=? AND face_id=?", (appid, face_id))
        self._changed(app)
        return deleted

    def set_info(self, appid: str, person_id: str, name: str | None = None, tag: str | None = None) -> None:
        _app, person = self._person(appid, person_id)
        if name is not None:
            person.name = name
        if tag is not None:
            person.tag = tag
        with self._db:
            self._db.execute(
                "UPDATE persons SET name=?, tag=? WHERE appid=? AND person_id=?",
                (person.name, person.tag, appid, person_id),
            )

    def has_person(self, appid: str, person_id: str) -> bool:
        app = self._apps.get(appid)
        return app is not None and person_id in app.persons

    def get_person(self, appid: str, person_id: str) -> Person:
        return self._person(appid, person_id)[1]

    def has_group(self, appid: str, group_id: str) -> bool:
        app = self._apps.get(appid)
        return app is not None and (group_id in app.groups or group_id in app.named)

    def group_ids(self, appid: str) -> list[str]:
        app = self._apps.get(appid)
        return list(app.groups) + [g for g in app.named if g not in app.groups] if app else []

    def group_infos(self, appid: str) -> list[GroupInfo]:
        """Every group: the explicitly created ones in creation order, then implicit ones (id as name)."""
        app = self._apps.get(appid)
        if app is None:
            return []
        return list(app.named.values()) + [GroupInfo(g, g) for g in app.groups if g not in app.named]

    def person_ids(self, appid: str, group_id: str) -> list[str]:
        self.check_groups(appid, [group_id])
        return list(self._apps[appid].groups.get(group_id, {}))

    def face(self, appid: str, face_id: str) -> Face:
        app = self._apps.get(appid)
        face = app.faces.get(face_id) if app else None
        if face is None:
            raise GalleryError(-1305, f"face {face_id} does not exist")
        return face

    def add_group_ids(self, appid: str, person_id: str, group_ids: Sequence[str]) -> list[str]:
        app, person = self._person(appid, person_id)
        with self._db:
            self._db.execute("BEGIN")
            joined = self._join_groups(appid, app, person, group_ids)
        self._changed(app)
        return joined

    def del_group_ids(self, appid: str, person_id: str, group_ids: Sequence[str]) -> list[str]:
        app, person = self._person(appid, person_id)
        with self._db:
            self._db.execute("BEGIN")
            left = self._leave_groups(appid, app, person, group_ids)
        self._changed(app)
        return left

    def reset(self) -> None:
        """Forget every appid's gallery (memory and file)."""
        with self._db:
            self._db.execute("BEGIN")
            for table in ("persons", "memberships", "faces", "named_groups"):
                self._db.execute(f"DELETE FROM {table}")
        self._apps.clear()
        self.version += 1

    def counts(self) -> dict[str, int]:
        return {
            "appids": len(self._apps),
            "groups": sum(len(a.groups.keys() | a.named.keys()) for a in self._apps.values()),
            "persons": sum(len(a.persons) for a in self._apps.values()),
            "faces": sum(len(a.faces) for a in self._apps.values()),
        }

    # --- matching ------------------------------------------------------------------------------------------------

    def check_groups(self, appid: str, group_ids: Sequence[str]) -> None:
        for g in group_ids:
            if not self.has_group(appid, g):
                raise GalleryError(-1306, f"group {g} does not exist")

    def size(self, appid: str, group_ids: Sequence[str]) -> tuple[int, int]:
        """(persons, faces) across the groups, each counted once; GalleryError(-1306) for a missing group."""
        self.check_groups(appid, group_ids)
        index = self._index(self._apps[appid], group_ids)
        return len(set(index.person_ids)), len(index.face_ids)

    def _index(self, app: _App, group_ids: Sequence[str]) -> _Index:
        key = tuple(sorted(set(group_ids)))
        index = app.indexes.get(key)
        if index is None:
            face_ids: list[str] = []
            person_ids: list[str] = []
            vectors: list[Vector] = []
            seen: set[str] = set()
            for g in key:
                for pid in app.groups.get(g, {}):
                    if pid in seen:
                        continue
                    seen.add(pid)
                    for fid in app.persons[pid].face_ids:
                        face_ids.append(fid)
                        person_ids.append(pid)
                        vectors.append(app.faces[fid].vector)
            matrix = np.stack(vectors) if vectors else np.zeros((0, self.engine.dim), dtype=np.float32)
            if len(app.indexes) >= 64:
                app.indexes.clear()
            index = app.indexes[key] = _Index(matrix, face_ids, person_ids)
        return index

    def search(
        self, appid: str, group_ids: Sequence[str], queries: Sequence[Vector], *, top_n: int | None = None
    ) -> list[list[Candidate]]:
        """Top-N persons per query across the groups (best face per person), confidence descending.

        ``top_n`` defaults to ``Limits.top_n``. Raises GalleryError(-1306) if a group does not exist."""
        self.check_groups(appid, group_ids)
        app = self._apps[appid]
        index = self._index(app, group_ids)
        n = len(index.face_ids)
        if n == 0 or not queries:
            return [[] for _ in queries]
        sims = self.engine.similarity_matrix(np.stack(queries), index.matrix)
        top_n = top_n or self.limits.top_n
        k = top_n * self.limits.max_faces_per_person  # enough faces to hold top_n distinct persons
        results: list[list[Candidate]] = []
        for row in sims:
            if n <= k:  # small galleries: a Python sort beats numpy's per-call overhead
                values = row.tolist()
                order = sorted(range(n), key=values.__getitem__, reverse=True)
                conf = values.__getitem__
            else:
                part = np.argpartition(-row, k - 1)[:k]
                order = part[np.argsort(-row[part], kind="stable")].tolist()
                conf = row.item
            picked: list[Candidate] = []
            seen: set[str] = set()
            for i in order:
                pid = index.person_ids[i]
                if pid in seen:
                    continue
                seen.add(pid)
                face = app.faces[index.face_ids[i]]
                picked.append(Candidate(pid, face.face_id, round(conf(i), 6), face.tag))
                if len(picked) == top_n:
                    break
            results.append(picked)
        return results
