"""What ``gallery enrol`` does with each photo, decided from what is known; pure (no API, no files).

Inputs: the source's photos, each with its identity ``key`` (:func:`photo_key`) or the local reason it cannot be
sent; the persons of the group with their current face ids (from the service); the ledger's records of earlier
runs (person, key → face id). Rules, in order, per photo:

1. a photo of another group (a manifest's ``group``) is left out, not reported;
2. a photo refused locally (unreadable, too large) is ``refused`` with that code;
3. the same photo twice for one person (same key) → ``skipped`` (``duplicate in source``);
4. the ledger says this photo became face F of this person, and the person still has F → ``skipped``
   (``already enrolled``). A record whose face is gone (deleted since) does not count: the photo is sent again;
5. otherwise the photo is sent: a person the group does not hold is created with their first photo that the
   service accepts, and the others are added to them.

Persons keep the order of their first photo in the source, photos their source order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from worker.tools.gallery.sources import Entry

ALREADY_ENROLLED = "already enrolled"
DUPLICATE_IN_SOURCE = "duplicate in source"


def photo_key(data: bytes | None = None, url: str | None = None) -> str:
    """A photo's identity in the ledger: the SHA-256 of its bytes (``sha256:<hex>``), or of its URL when the service
    downloads it (``url-sha256:<hex>``: the content behind a URL is not read here, so a changed picture under the
    same URL counts as the same photo)."""
    if data is not None:
        return "sha256:" + hashlib.sha256(data).hexdigest()
    if url is None:
        raise ValueError("a photo key needs the bytes or the url")
    return "url-sha256:" + hashlib.sha256(url.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a photo was not enrolled: the API's code (v1 ``-1101``, IAI ``InvalidParameterValue.NoFaceInPhoto``)
    or a local one (``unreadable``), with its meaning and class (``permanent``; ``transient`` for a failure that a
    rerun may not see)."""

    code: str
    meaning: str
    error_class: str = "permanent"
    message: str | None = None  # the service's own words, when they differ from ``meaning``


@dataclass(frozen=True, slots=True)
class Photo:
    """A source entry as the plan sees it: its key, or the local refusal that keeps it from being sent."""

    entry: Entry
    key: str | None
    refusal: Refusal | None = None


@dataclass(frozen=True, slots=True)
class Skip:
    photo: Photo
    reason: str
    face_id: str | None = None


@dataclass(frozen=True, slots=True)
class PersonTask:
    """One person's work: create them (``create``) with the first of ``send`` the service accepts, add the rest."""

    person_id: str
    person_name: str | None
    create: bool
    send: tuple[Photo, ...]
    skipped: tuple[Skip, ...] = ()
    refused: tuple[Photo, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    group: str
    tasks: tuple[PersonTask, ...]
    left_out: int = 0  # photos of other groups (a manifest's group column)

    @property
    def to_send(self) -> int:
        return sum(len(t.send) for t in self.tasks)

    @property
    def to_create(self) -> int:
        return sum(1 for t in self.tasks if t.create and t.send)


@dataclass
class _Person:
    name: str | None = None
    send: list[Photo] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    refused: list[Photo] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)


def plan_enrolment(
    group: str,
    photos: Sequence[Photo],
    existing: Mapping[str, Sequence[str]],
    ledger: Mapping[tuple[str, str], str],
) -> Plan:
    """The plan (see the module's rules). ``existing``: person id → current face ids, for the group's persons the
    source names; ``ledger``: (person id, key) → the face id a photo became."""
    persons: dict[str, _Person] = {}
    left_out = 0
    for photo in photos:
        entry = photo.entry
        if entry.group is not None and entry.group != group:
            left_out += 1
            continue
        person = persons.setdefault(entry.person_id, _Person())
        if person.name is None and entry.person_name:
            person.name = entry.person_name
        if photo.refusal is not None or photo.key is None:
            person.refused.append(photo)
            continue
        if photo.key in person.keys:
            person.skipped.append(Skip(photo, DUPLICATE_IN_SOURCE))
            continue
        person.keys.add(photo.key)
        face_id = ledger.get((entry.person_id, photo.key))
        if face_id is not None and face_id in existing.get(entry.person_id, ()):
            person.skipped.append(Skip(photo, ALREADY_ENROLLED, face_id))
            continue
        person.send.append(photo)
    tasks = tuple(
        PersonTask(
            person_id=pid,
            person_name=p.name,
            create=pid not in existing,
            send=tuple(p.send),
            skipped=tuple(p.skipped),
            refused=tuple(p.refused),
        )
        for pid, p in persons.items()
    )
    return Plan(group=group, tasks=tasks, left_out=left_out)
