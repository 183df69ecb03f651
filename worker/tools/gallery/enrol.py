"""Carrying out a :class:`~worker.tools.gallery.plan.Plan`: read the photos, call the API, record what was added.

Contract:

- :func:`load_photos` reads each file once to key it (:func:`~worker.tools.gallery.plan.photo_key`); a file that cannot
  be read is refused ``unreadable``, one over the API's request limit is refused with the code the client would
  refuse it with (v1 ``23``, IAI ``FailedOperation.ImageSizeExceed``) without being read;
- :func:`execute` runs one task per person on at most ``workers`` threads (the photos of one person one after the
  other: IAI refuses concurrent changes to one person); each photo ends ``enrolled``, ``skipped``, ``refused``
  (the service's or a local code: sending it again will not help) or ``failed`` (a transient failure that outlived
  the retry policy: a rerun may succeed); in a dry run, photos that would be sent end ``planned``;
- a person to create is created with the first photo the service accepts: a refused first photo does not keep the
  person out; a refusal of the person itself (the id is taken by another group, the id or the name is illegal:
  ``backends.PERSON_REFUSED``) refuses every photo of that person with the code, the others unsent;
- a configuration or credentials answer (class ``config``) stops the run: no new call starts, and
  :class:`Aborted` carries the error once the running calls are done;
- with ``single_face`` (IAI only: DetectFace), a photo with more than one face is refused ``several_faces``
  before it is sent (both APIs would enrol its largest face, maybe the wrong person);
- a person to create whose create is answered "the person exists" while the person is in the group (created
  meanwhile) gets the photo added instead;
- every write is preceded by a ``pending`` ledger record (the person's face ids before it) and followed by the face
  it added, or ``not_added``: a run killed in between leaves the pending record for the next run's plan;
- a write whose outcome is unknown (:func:`~worker.tools.gallery.backends.outcome_unknown`: a timeout, a connection
  lost) is never sent again in the run: the person is re-read, and the one face they gained since is the photo's
  (``enrolled``); otherwise the photo is ``failed`` (a rerun re-reads first) and the person's later photos are not
  sent (``held``: another write would leave the next run unable to tell which new face is whose);
- v1's ``-1312`` (near-identical face) for a photo whose earlier write had an unknown outcome means that write took
  effect: ``skipped`` (``already enrolled (near-identical face)``; adopted when the new face can be told), not
  refused; for any other photo it stays a refusal.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from worker.api.codes import ErrorClass
from worker.api.errors import ApiError
from worker.tools.gallery import ledger as ledger_mod
from worker.tools.gallery.backends import (
    NEAR_IDENTICAL,
    PERSON_EXISTS,
    PERSON_MISSING,
    PERSON_REFUSED,
    Backend,
    PersonRow,
    PhotoData,
    outcome_unknown,
)
from worker.tools.gallery.plan import (
    NEAR_DUPLICATE,
    RECOVERED,
    PersonTask,
    Photo,
    Plan,
    Refusal,
    photo_key,
    unclaimed_faces,
)
from worker.tools.gallery.sources import Entry

UNREADABLE = "unreadable"
SEVERAL_FACES = "several_faces"
HELD = "held"  # not sent: an earlier write of the same person has an unknown outcome
MAX_WORKERS = 32


class Aborted(Exception):
    """The API refused the configuration or the credentials (class ``config``): the run stopped."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one photo. ``status``: enrolled, skipped, refused, failed or planned (dry run)."""

    status: str
    person_id: str
    where: str
    source: str
    face_id: str | None = None
    created_person: bool = False
    code: str | None = None
    meaning: str | None = None  # the code's meaning in English (the registry's, worker.api.codes)
    message: str | None = None  # the service's own message, when it differs
    reason: str | None = None

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v is not False}


def refusal_of(error: ApiError, backend: Backend) -> Refusal:
    described = backend.describe(error)
    return Refusal(error.code, described, str(error.error_class), None if described == error.message else error.message)


def load_photos(entries: Sequence[Entry], backend: Backend) -> list[Photo]:
    """Each entry with its key, or the local refusal that keeps it from being sent."""
    photos = []
    for entry in entries:
        if entry.url is not None:
            photos.append(Photo(entry, photo_key(url=entry.url)))
            continue
        assert entry.path is not None
        try:
            size = entry.path.stat().st_size
            too_large = backend.size_refusal(size)
            if too_large is not None:
                photos.append(Photo(entry, None, refusal_of(too_large, backend)))
                continue
            data = entry.path.read_bytes()
        except OSError as exc:
            photos.append(Photo(entry, None, Refusal(UNREADABLE, f"cannot read the file: {exc.strerror or exc}")))
            continue
        photos.append(Photo(entry, photo_key(data)))
    return photos


def _refused(photo: Photo, refusal: Refusal) -> Outcome:
    status = "failed" if refusal.error_class == str(ErrorClass.TRANSIENT) else "refused"
    e = photo.entry
    return Outcome(
        status, e.person_id, e.where, e.source, code=refusal.code, meaning=refusal.meaning, message=refusal.message
    )


class _Run:
    def __init__(
        self,
        backend: Backend,
        group: str,
        writer: ledger_mod.Writer | None,
        dry_run: bool,
        on_photo: Callable[[Outcome], None],
        single_face: bool = False,
    ) -> None:
        self.single_face = single_face
        self.backend = backend
        self.group = group
        self.writer = writer
        self.dry_run = dry_run
        self.on_photo = on_photo
        self.stop = threading.Event()
        self.abort: ApiError | None = None
        self._lock = threading.Lock()

    def task(self, task: PersonTask) -> list[Outcome]:
        out: list[Outcome] = []

        def done(outcome: Outcome) -> None:
            out.append(outcome)
            self.on_photo(outcome)

        for photo in task.refused:
            assert photo.refusal is not None
            done(_refused(photo, photo.refusal))
        for skip in task.skipped:
            e = skip.photo.entry
            if skip.reason == RECOVERED and self.writer is not None and not self.dry_run:
                assert skip.photo.key is not None and skip.face_id is not None
                self.writer.record(
                    group=self.group,
                    person_id=task.person_id,
                    key=skip.photo.key,
                    face_id=skip.face_id,
                    source=e.source,
                )
            done(Outcome("skipped", e.person_id, e.where, e.source, face_id=skip.face_id, reason=skip.reason))
        person = _Person(exists=not task.create, faces=list(task.faces))
        blocked: Refusal | None = None
        unresolved: str | None = None  # a photo whose write has an unknown outcome: the person's others wait
        for photo in task.send:
            e = photo.entry
            if self.dry_run:
                reason = "add face" if person.exists else "create person"
                person.exists = True
                done(Outcome("planned", e.person_id, e.where, e.source, reason=reason))
                continue
            if blocked is not None:
                done(_refused(photo, blocked))
                continue
            if unresolved is not None:
                # Another write now would make the next run's re-read unable to tell which new face is whose.
                text = f"not sent: the outcome of {unresolved}'s write is unknown (a rerun checks it first)"
                done(Outcome("failed", e.person_id, e.where, e.source, code=HELD, meaning=text))
                continue
            if self.stop.is_set():
                done(Outcome("failed", e.person_id, e.where, e.source, code="aborted", meaning="the run stopped"))
                continue
            try:
                data, key = self._read(photo)
                if self.single_face and (count := self.backend.count_faces(data, 2)) > 1:
                    text = f"{count} or more faces in the photo: enrol a portrait (--single-face)"
                    done(_refused(photo, Refusal(SEVERAL_FACES, text)))
                    continue
                outcome, unknown = self._send(task, photo, data, key, person)
            except _Unreadable as exc:
                done(_refused(photo, exc.refusal))
                continue
            except ApiError as err:
                if err.error_class is ErrorClass.CONFIG:
                    with self._lock:
                        self.abort = self.abort or err
                    self.stop.set()
                    done(Outcome("failed", e.person_id, e.where, e.source, code=err.code, meaning=err.message))
                    continue
                if not person.exists and err.code in PERSON_REFUSED:
                    note = "the person id is taken outside this group" if err.code in PERSON_EXISTS else "the person"
                    blocked = Refusal(err.code, f"{self.backend.describe(err)} ({note})", message=err.message)
                    done(_refused(photo, blocked))
                    continue
                done(_refused(photo, refusal_of(err, self.backend)))
                continue
            if unknown:
                unresolved = e.where
            done(outcome)
        return out

    def _send(self, task: PersonTask, photo: Photo, data: PhotoData, key: str, person: _Person) -> tuple[Outcome, bool]:
        """Create the person with the photo, or add it to them: its outcome, and whether that outcome is unknown.

        A pending record goes first; a write whose outcome is unknown is never sent again here: the person is re-read
        and a face they gained since is the photo's (:func:`~worker.tools.gallery.plan.unclaimed_faces`). Raises the
        ApiError of a refusal (recorded ``not_added``)."""
        e = photo.entry
        for _ in range(2):  # a create answered "the person exists", with the person in the group, becomes an add
            create = not person.exists
            if self.writer is not None:
                self.writer.pending(
                    group=self.group, person_id=task.person_id, key=key, faces_before=person.faces, source=e.source
                )
            try:
                if create:
                    face_id = self.backend.create_person(self.group, task.person_id, task.person_name, data)
                else:
                    face_id = self.backend.add_face(task.person_id, data)
            except ApiError as err:
                if outcome_unknown(err):
                    found = self._unclaimed(task, person, create)
                    if found is not None and len(found) == 1:
                        return self._enrolled(task, photo, key, found[0], person, created=create), False
                    text = f"{self.backend.describe(err)}: the outcome is unknown (a rerun re-reads the person first)"
                    if found:
                        text += f"; {len(found)} faces appeared meanwhile, none of them certainly this photo's"
                    return Outcome("failed", e.person_id, e.where, e.source, code=err.code, meaning=text), True
                if err.code == NEAR_IDENTICAL and key in task.pending and not create:
                    # v1 refuses a face it holds: the earlier write of this very photo took effect after all.
                    found = self._unclaimed(task, person, create)
                    if found is not None and len(found) == 1:
                        return self._enrolled(task, photo, key, found[0], person, created=False), False
                    return Outcome("skipped", e.person_id, e.where, e.source, reason=NEAR_DUPLICATE), False
                if self.writer is not None:
                    self.writer.not_added(
                        group=self.group, person_id=task.person_id, key=key, code=err.code, source=e.source
                    )
                if create and err.code in PERSON_EXISTS:
                    row = self._person(task.person_id)
                    if row is not None and self.group in (row.group_ids or ()):
                        person.exists, person.faces = True, list(row.face_ids or ())  # created meanwhile: add to them
                        continue
                raise
            return self._enrolled(task, photo, key, face_id, person, created=create), False
        raise AssertionError("unreachable: a create becomes an add at most once")

    def _person(self, person_id: str) -> PersonRow | None:
        """The person as the service has them now, None when there is no such person."""
        try:
            return self.backend.person(person_id)
        except ApiError as err:
            if err.code in PERSON_MISSING:
                return None
            raise

    def _unclaimed(self, task: PersonTask, person: _Person, create: bool) -> tuple[str, ...] | None:
        """After a write with an unknown outcome: the faces the person gained since (none when they do not exist, or,
        for a create, are not in the group); None when the person cannot be read (the outcome stays unknown)."""
        try:
            row = self._person(task.person_id)
        except ApiError as err:
            if err.error_class is ErrorClass.CONFIG:
                raise
            return None
        if row is None or (create and self.group not in (row.group_ids or ())):
            return ()
        return unclaimed_faces(row.face_ids or (), person.faces, ())

    def _enrolled(
        self, task: PersonTask, photo: Photo, key: str, face_id: str, person: _Person, *, created: bool
    ) -> Outcome:
        e = photo.entry
        if self.writer is not None:
            self.writer.record(group=self.group, person_id=task.person_id, key=key, face_id=face_id, source=e.source)
        person.exists = True
        person.faces.append(face_id)
        return Outcome("enrolled", e.person_id, e.where, e.source, face_id=face_id, created_person=created)

    @staticmethod
    def _read(photo: Photo) -> tuple[PhotoData, str]:
        entry = photo.entry
        if entry.url is not None:
            return PhotoData(url=entry.url), photo_key(url=entry.url)
        assert entry.path is not None
        try:
            data = entry.path.read_bytes()  # again: the plan kept only the key, not every photo in memory
        except OSError as exc:
            raise _Unreadable(Refusal(UNREADABLE, f"cannot read the file: {exc.strerror or exc}")) from None
        return PhotoData(data=data), photo_key(data)


@dataclass
class _Person:
    """One person's state during their task: do they exist yet, and their face ids as far as this run knows."""

    exists: bool
    faces: list[str]


class _Unreadable(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.meaning)
        self.refusal = refusal


def execute(
    plan: Plan,
    backend: Backend,
    *,
    writer: ledger_mod.Writer | None,
    dry_run: bool = False,
    workers: int = 4,
    on_photo: Callable[[Outcome], None] = lambda _: None,
    single_face: bool = False,
) -> list[Outcome]:
    """Every photo's outcome, in the plan's order; raises :class:`Aborted` after a ``config`` answer."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be from 1 to {MAX_WORKERS}, not {workers}")
    if single_face and not backend.can_count_faces():
        raise ValueError(f"single_face needs a face detection call, which api {backend.api} lacks here")
    run = _Run(backend, plan.group, writer, dry_run, on_photo, single_face)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gallery") as pool:
        results = list(pool.map(run.task, plan.tasks))
    if run.abort is not None:
        raise Aborted(run.abort)
    return [outcome for result in results for outcome in result]
