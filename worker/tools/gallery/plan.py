"""What ``gallery enrol`` does with each photo, decided from what is known; pure (no API, no files).

Inputs: the source's photos, each with its identity ``key`` (:func:`photo_key`) or the local reason it cannot be
sent; the persons of the group with their current face ids (from the service); the ledger's records of earlier
runs (person, key → face id). Rules, in order, per photo:

1. a photo of another group (a manifest's ``group``) is left out, not reported;
2. a photo refused locally (unreadable, too large) is ``refused`` with that code;
3. the same photo twice for one person (same key) → ``skipped`` (``duplicate in source``);
4. the ledger says this photo became face F of this person, and the person still has F → ``skipped``
   (``already enrolled``). A record whose face is gone (deleted since) does not count: the photo is sent again;
5. the ledger has a write of this photo whose outcome is unknown (``pending``: the run was killed, or the answer
   never came), with the person's faces before it: the faces the person gained since that no record claims
   (:func:`unclaimed_faces`) decide. One → that is the photo's face: ``skipped`` (``already enrolled
   (recovered)``), to be recorded; none → the write did not take effect: sent again, marked ``pending`` (v1's
   ``-1312`` "near-identical face" then means the earlier write did take effect); several → which one is this
   photo's cannot be told: ``refused`` (``ambiguous_outcome``), never sent again blindly;
6. otherwise the photo is sent: a person the group does not hold is created with their first photo that the
   service accepts, and the others are added to them.

Persons keep the order of their first photo in the source, photos their source order.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from worker.tools.gallery.sources import Entry

ALREADY_ENROLLED = "already enrolled"
RECOVERED = "already enrolled (recovered)"
NEAR_DUPLICATE = "already enrolled (near-identical face)"
DUPLICATE_IN_SOURCE = "duplicate in source"
AMBIGUOUS_OUTCOME = "ambiguous_outcome"


def unclaimed_faces(current: Sequence[str], before: Sequence[str], claimed: Collection[str]) -> tuple[str, ...]:
    """The faces a person holds now (``current``) that they did not hold before a write (``before``) and that no
    ledger record gives another photo (``claimed``): what that write may have added. With one run at a time on a
    ledger and one write at a time per person, exactly one means the write took effect and that face is its."""
    gone = set(before) | set(claimed)
    return tuple(f for f in current if f not in gone)


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
    """One person's work: create them (``create``) with the first of ``send`` the service accepts, add the rest.
    ``faces``: the person's face ids now; ``pending``: the keys of ``send`` whose earlier write has an unknown
    outcome (rule 5)."""

    person_id: str
    person_name: str | None
    create: bool
    send: tuple[Photo, ...]
    skipped: tuple[Skip, ...] = ()
    refused: tuple[Photo, ...] = ()
    faces: tuple[str, ...] = ()
    pending: frozenset[str] = frozenset()


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
    pending: set[str] = field(default_factory=set)


def plan_enrolment(
    group: str,
    photos: Sequence[Photo],
    existing: Mapping[str, Sequence[str]],
    ledger: Mapping[tuple[str, str], str],
    pending: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> Plan:
    """The plan (see the module's rules). ``existing``: person id → current face ids, for the group's persons the
    source names; ``ledger``: (person id, key) → the face id a photo became; ``pending``: (person id, key) → the
    person's face ids before a write of that photo whose outcome is unknown."""
    pending = pending or {}
    claimed: dict[str, set[str]] | None = None  # person id → the faces the ledger gives their photos
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
        before = pending.get((entry.person_id, photo.key))
        if before is not None:
            if claimed is None:  # once, and only when something is pending: the ledger may be large
                claimed = {}
                for (pid, _), face in ledger.items():
                    claimed.setdefault(pid, set()).add(face)
            found = unclaimed_faces(existing.get(entry.person_id, ()), before, claimed.get(entry.person_id, ()))
            if len(found) == 1:
                person.skipped.append(Skip(photo, RECOVERED, found[0]))
                continue
            if len(found) > 1:
                text = (
                    f"an earlier write of this photo has an unknown outcome and the person has {len(found)} faces "
                    "added since that no ledger record names: which is this photo's cannot be told"
                )
                person.refused.append(dataclasses.replace(photo, refusal=Refusal(AMBIGUOUS_OUTCOME, text)))
                continue
            person.pending.add(photo.key)
        person.send.append(photo)
    tasks = tuple(
        PersonTask(
            person_id=pid,
            person_name=p.name,
            create=pid not in existing,
            send=tuple(p.send),
            skipped=tuple(p.skipped),
            refused=tuple(p.refused),
            faces=tuple(existing.get(pid, ())),
            pending=frozenset(p.pending),
        )
        for pid, p in persons.items()
    )
    return Plan(group=group, tasks=tasks, left_out=left_out)
