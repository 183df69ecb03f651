"""Mixed batches of synthetic image events with their expected outcomes (demo, tests, benchmarks).

A scenario enrolls a small gallery in the emulator, writes synthetic photos into the folder the
emulator serves under ``/images/``, and builds input events of every kind a camera fleet sends:
known people, strangers, images without faces, URLs that do not exist (yet), and malformed events.
Each event carries what the worker should make of it, so a caller can check every output.

Besides the worker's own events, a scenario can hold records of the other input formats (docs/event-formats.md),
each for its own topic: CloudEvents from cameras (:meth:`Scenario.add_camera_events`, one structured and one binary,
as ``multidentify-worker produce --cloudevents`` writes them) and MinIO bucket notifications for objects written
into the served folder (:meth:`Scenario.add_bucket_notifications`, bucket :data:`BUCKET`, image URLs from
:attr:`Scenario.image_url_template`), usable ones and ones the worker refuses with its format's code.

A scenario is for one face API (``api``, the worker's setting of that name): people are enrolled through it
(v1: ``newperson``; IAI: ``CreateGroup`` once, then ``CreatePerson`` per person, as an IAI user must — IAI
data are apart from v1's), and the dead-letter codes its events expect are that API's
(:data:`EXPECTED_CODES`, the one place that says what the emulator answers for each kind of bad image).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from worker.api.client import ClientOptions, MultidentifyClient
from worker.api.iai_client import IaiClient, IaiOptions
from worker.config import ApiName
from worker.core.formats import objects
from worker.dev.harness.outputs import Output
from worker.dev.notifications import OBJECT_CREATED, OBJECT_REMOVED, minio_notification
from worker.emulator import DEV_ACCOUNT, Account, synth
from worker.tools import produce

DEFAULT_GROUP = "demo"
#: The bucket of :meth:`Scenario.add_bucket_notifications`: the emulator serves the images folder as ``/images/``.
BUCKET = "images"

#: What each kind of image the worker cannot identify is dead-lettered with, per API: the emulator's answers
#: (docs/api-notes.md, "IAI at the emulator": a failed download → ImageDownloadError, no face → NoFaceInPhoto).
EXPECTED_CODES: dict[ApiName, dict[str, str]] = {
    "v1": {"no_face": "-1101", "unreachable": "-1308"},
    "iai": {"no_face": "InvalidParameterValue.NoFaceInPhoto", "unreachable": "FailedOperation.ImageDownloadError"},
}


@dataclass(frozen=True)
class ScenarioEvent:
    """One input record and what should come out of it.

    ``event_id`` is the id its outputs carry, except for a record whose id the worker derives from its coordinates
    (an object-store notification): then the scenario's own, and :meth:`Scenario.place` links its outputs."""

    event_id: str
    value: bytes
    key: bytes | None
    expect: str  # "result" or the dead-letter code
    people: tuple[str | None, ...] = ()  # expected best match per face (None = a stranger)
    image_name: str | None = None  # the image file, or the object key
    topic: str | None = None  # None: the scenario's event topic; else a topic in another format
    headers: tuple[tuple[str, bytes], ...] = ()
    label: str = ""  # what the record is, for a reader: "binary CloudEvent", "s3:ObjectRemoved:Delete"


@dataclass
class Scenario:
    images_dir: Path
    images_url: str  # e.g. http://127.0.0.1:PORT/images/
    group: str = DEFAULT_GROUP
    api: ApiName = "v1"  # the API the worker calls: how people are enrolled, which codes events expect
    enrolled: list[str] = field(default_factory=list)
    events: list[ScenarioEvent] = field(default_factory=list)
    missing_images: dict[str, bytes] = field(default_factory=dict)  # name → bytes to write on "fix"
    placed: dict[tuple[str, int, int], str] = field(default_factory=dict)  # (topic, partition, offset) → event id

    def code(self, kind: str) -> str:
        """The dead-letter code this scenario's API gives an image of ``kind`` (a key of :data:`EXPECTED_CODES`)."""
        return EXPECTED_CODES[self.api][kind]

    def enroll(self, client: MultidentifyClient | IaiClient, people: Sequence[str]) -> None:
        """One person per name in ``group``, enrolled from its own photo (seed 1) through ``client``'s API.

        IAI creates the group first (CreateGroup) unless the account has it already, then one CreatePerson per
        name; v1 creates the group with its first person (newperson)."""
        if isinstance(client, IaiClient) and self.group not in {g.group_id for g in client.groups()}:
            client.create_group(self.group, self.group)
        for name in people:
            image, _ = synth.scene_with_faces([name], (200, 200), seed=1)
            if isinstance(client, IaiClient):
                client.create_person(self.group, name, name.title(), image=image)
            else:
                client.newperson(name, [self.group], image=image, person_name=name.title(), tag="demo")
            self.enrolled.append(name)

    def enroll_at(
        self, api_url: str, people: Sequence[str], account: Account = DEV_ACCOUNT, *, api: ApiName | None = None
    ) -> None:
        """:meth:`enroll` through a client of the API at ``api_url`` signing as ``account``.

        ``api`` is the API enrolled through (default: the scenario's); the emulator serves both at one URL."""
        client: MultidentifyClient | IaiClient
        if (api or self.api) == "iai":
            client = IaiClient(IaiOptions(secret_id=account.secret_id, secret_key=account.secret_key, endpoint=api_url))
        else:
            client = MultidentifyClient(
                ClientOptions(
                    appid=account.appid, secret_id=account.secret_id, secret_key=account.secret_key, base_url=api_url
                )
            )
        with client:
            self.enroll(client, people)

    def _image(self, name: str, people: Sequence[str], seed: int) -> str:
        data, _ = (
            synth.scene_with_faces(list(people), (480, 360), seed=seed)
            if people
            else (
                synth.render_scene([], (480, 360), seed=seed),
                [],
            )
        )
        path = self.images_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)  # an object key may name folders
        path.write_bytes(data)
        return self.images_url + name

    def _event(self, url: str, *, expect: str, people: Sequence[str | None] = (), name: str | None = None) -> None:
        event_id = uuid.uuid4().hex
        value = orjson.dumps({"event_id": event_id, "image_url": url, "metadata": {"camera": "demo-cam"}})
        self.events.append(ScenarioEvent(event_id, value, event_id.encode(), expect, tuple(people), name))

    def add_known(self, count: int, *, stranger_every: int = 3, seed: int = 100) -> None:
        """Images with 1–2 enrolled people, some with a stranger beside them."""
        for i in range(count):
            people: list[str] = [self.enrolled[i % len(self.enrolled)]]
            if len(self.enrolled) > 1 and i % 2:
                people.append(self.enrolled[(i + 1) % len(self.enrolled)])
            expected: list[str | None] = list(people)
            if stranger_every and i % stranger_every == 0:
                people.append(f"stranger-{seed + i}")
                expected.append(None)
            name = f"known-{seed + i}.jpg"
            self._event(self._image(name, people, seed + i), expect="result", people=expected, name=name)

    def add_strangers(self, count: int, seed: int = 300) -> None:
        for i in range(count):
            name = f"stranger-{seed + i}.jpg"
            url = self._image(name, [f"stranger-{seed + i}"], seed + i)
            self._event(url, expect="result", people=[None], name=name)

    def add_no_face(self, count: int, seed: int = 500) -> None:
        for i in range(count):
            name = f"empty-{seed + i}.jpg"
            self._event(self._image(name, [], seed + i), expect=self.code("no_face"), name=name)

    def add_unreachable(self, count: int, seed: int = 700) -> None:
        """URLs whose image does not exist yet (HTTP 404: v1 -1308, IAI ImageDownloadError); :meth:`fix_unreachable`
        writes them."""
        for i in range(count):
            person = self.enrolled[i % len(self.enrolled)]
            name = f"late-{seed + i}.jpg"
            data, _ = synth.scene_with_faces([person], (480, 360), seed=seed + i)
            self.missing_images[name] = data
            self._event(self.images_url + name, expect=self.code("unreachable"), people=[person], name=name)

    @property
    def image_url_template(self) -> str:
        """The ``image_url_template`` that turns :data:`BUCKET` and a key into the URL the images are served at."""
        root = self.images_url.rstrip("/").removesuffix(f"/{BUCKET}")
        return root + "/{bucket}/{key}"

    def add_camera_events(self, topic: str, *, seed: int = 900) -> None:
        """Two CloudEvents for ``topic`` (format ``cloudevents``), written as ``produce --cloudevents`` writes them:
        one in structured mode (one enrolled person), one in binary mode (another beside a stranger)."""
        for i, mode in enumerate(("structured", "binary")):
            person = self.enrolled[(i + 1) % len(self.enrolled)]
            people: list[str] = [person] if i == 0 else [person, f"stranger-{seed + i}"]
            name = f"gate-{i + 1}.jpg"
            url = self._image(name, people, seed + i)
            event = {"image_url": url, "metadata": {"camera": f"gate-{i + 1}"}}
            rec = produce.as_cloudevent(
                produce.prepare(event, key_field="event_id"), mode, source=f"/cameras/gate-{i + 1}"
            )
            assert rec.key is not None  # prepare gave the event an id, and keyed the record by it
            self.events.append(
                ScenarioEvent(
                    event_id=rec.key.decode(),
                    value=rec.value,
                    key=rec.key,
                    expect="result",
                    people=(person,) if i == 0 else (person, None),
                    image_name=name,
                    topic=topic,
                    headers=rec.headers,
                    label=f"{mode} CloudEvent",
                )
            )

    def add_bucket_notifications(self, topic: str, *, seed: int = 950) -> None:
        """MinIO notifications for ``topic`` (format ``s3``, :attr:`image_url_template`): two uploads of images with
        an enrolled person each, written into the served folder under keys that need escaping in a URL; then the
        delete of the first (``not_object_created``) and the upload of a video (``not_an_image``)."""
        uploads: list[str] = []
        for i, person in enumerate((self.enrolled[0], self.enrolled[3 % len(self.enrolled)])):
            key = f"lobby/{person} {i + 1}.jpg"
            self._image(key, [person], seed + i)
            data = (self.images_dir / key).read_bytes()
            value = minio_notification(BUCKET, key, data=data, content_type="image/jpeg")
            self._notification(topic, value, key, OBJECT_CREATED, "result", (person,))
            uploads.append(key)
        value = minio_notification(BUCKET, uploads[0], event_name=OBJECT_REMOVED)
        self._notification(topic, value, uploads[0], OBJECT_REMOVED, objects.NOT_OBJECT_CREATED)
        clip = "lobby/clip.mp4"
        value = minio_notification(BUCKET, clip, data=bytes(4096), content_type="video/mp4")
        self._notification(topic, value, clip, OBJECT_CREATED, objects.NOT_AN_IMAGE)

    def _notification(
        self, topic: str, value: bytes, key: str, event_name: str, expect: str, people: tuple[str, ...] = ()
    ) -> None:
        # MinIO keys its records by bucket/key; the worker derives the event id from the coordinates.
        self.events.append(
            ScenarioEvent(
                event_id=uuid.uuid4().hex,
                value=value,
                key=f"{BUCKET}/{key}".encode(),
                expect=expect,
                people=people,
                image_name=key,
                topic=topic,
                label=event_name,
            )
        )

    def place(self, event_id: str, topic: str, partition: int, offset: int) -> None:
        """Where the event ``event_id`` was published: its outputs name these coordinates (``source`` of a result,
        ``original`` of a dead letter), which is how a record without an id of its own is found."""
        self.placed[(topic, partition, offset)] = event_id

    def add_malformed(self) -> None:
        """Events the worker must dead-letter without calling the API."""
        bad: list[tuple[bytes, str]] = [
            (b"this is not json", "invalid_json"),
            (b'{"event_id": "e-no-url"}', "invalid_event"),
            (orjson.dumps({"event_id": "e-ftp", "image_url": "ftp://example.invalid/a.jpg"}), "invalid_url"),
            (b"\xff\xfe\x00garbage", "invalid_utf8"),
            (
                orjson.dumps({"event_id": "e-groups", "image_url": "http://x.invalid/a.jpg", "group_ids": "g"}),
                "invalid_event",
            ),
        ]
        for value, code in bad:
            self.events.append(ScenarioEvent(uuid.uuid4().hex, value, None, code))

    def fix_unreachable(self) -> int:
        """Publish the images that were missing: their events now succeed when replayed."""
        for name, data in self.missing_images.items():
            (self.images_dir / name).write_bytes(data)
        return len(self.missing_images)

    def outputs_of(self, outputs: Iterable[Output]) -> dict[str, list[Output]]:
        """Each event's id → its outputs. Outputs of other events are left out.

        An output names its event by the input coordinates it carries, when :meth:`place` recorded them (a replayed
        record has others); else by ``event_id``; a dead letter of a malformed event (which has no id the worker
        could read) by the original value it carries."""
        ids = {e.event_id for e in self.events}
        by_value = {e.value: e.event_id for e in self.events}
        found: dict[str, list[Output]] = {e.event_id: [] for e in self.events}
        for o in outputs:
            event_id = self._placed_event(o)
            if event_id is None and o.event_id in ids:
                event_id = o.event_id
            if event_id is None and o.kind == "dlq" and o.message is not None:
                original = o.doc.get("original", {}).get("value_base64")
                event_id = by_value.get(base64.b64decode(original)) if original else None
            if event_id is not None:
                found[event_id].append(o)
        return found

    def _placed_event(self, o: Output) -> str | None:
        if not self.placed or o.message is None:
            return None
        topic = (o.doc.get("source" if o.kind == "result" else "original") or {}).get("topic")
        return self.placed.get((str(topic), o.partition, o.offset))

    def outcomes(self, outputs: Iterable[Output]) -> dict[str, set[str]]:
        """Each event's id → the codes of its outputs (``"result"`` or a dead-letter key); see :meth:`outputs_of`."""
        return {event_id: {o.code for o in found} for event_id, found in self.outputs_of(outputs).items()}

    def unexpected(self, outputs: Iterable[Output]) -> list[tuple[ScenarioEvent, set[str]]]:
        """The events whose outputs are not what they expect (none, or another code), with what they got.
        Duplicates of the expected output are fine: delivery is at-least-once."""
        found = self.outcomes(outputs)
        return [(e, found[e.event_id]) for e in self.events if found[e.event_id] != {e.expect}]

    def expected_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.events:
            counts[e.expect] = counts.get(e.expect, 0) + 1
        return counts
