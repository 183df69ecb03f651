"""Mixed batches of synthetic image events with their expected outcomes (demo, tests, benchmarks).

A scenario enrolls a small gallery in the emulator, writes synthetic photos into the folder the
emulator serves under ``/images/``, and builds input events of every kind a camera fleet sends:
known people, strangers, images without faces, URLs that do not exist (yet), and malformed events.
Each event carries what the worker should make of it, so a caller can check every output.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from worker.api.client import ClientOptions, MultidentifyClient
from worker.emulator import DEV_ACCOUNT, Account, synth

DEFAULT_GROUP = "demo"


@dataclass(frozen=True)
class ScenarioEvent:
    """One input record and what should come out of it."""

    event_id: str
    value: bytes
    key: bytes | None
    expect: str  # "result" or the dead-letter code
    people: tuple[str | None, ...] = ()  # expected best match per face (None = a stranger)
    image_name: str | None = None


@dataclass
class Scenario:
    images_dir: Path
    images_url: str  # e.g. http://127.0.0.1:PORT/images/
    group: str = DEFAULT_GROUP
    enrolled: list[str] = field(default_factory=list)
    events: list[ScenarioEvent] = field(default_factory=list)
    missing_images: dict[str, bytes] = field(default_factory=dict)  # name → bytes to write on "fix"

    def enroll(self, client: MultidentifyClient, people: Sequence[str]) -> None:
        """One person per name in ``group``, enrolled from its own photo (seed 1)."""
        for name in people:
            image, _ = synth.scene_with_faces([name], (200, 200), seed=1)
            client.newperson(name, [self.group], image=image, person_name=name.title(), tag="demo")
            self.enrolled.append(name)

    def enroll_at(self, api_url: str, people: Sequence[str], account: Account = DEV_ACCOUNT) -> None:
        """:meth:`enroll` through a client of the API at ``api_url`` signing as ``account``."""
        options = ClientOptions(
            appid=account.appid, secret_id=account.secret_id, secret_key=account.secret_key, base_url=api_url
        )
        with MultidentifyClient(options) as client:
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
        (self.images_dir / name).write_bytes(data)
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
            self._event(self._image(name, [], seed + i), expect="-1101", name=name)

    def add_unreachable(self, count: int, seed: int = 700) -> None:
        """URLs whose image does not exist yet (HTTP 404 → -1308); :meth:`fix_unreachable` writes them."""
        for i in range(count):
            person = self.enrolled[i % len(self.enrolled)]
            name = f"late-{seed + i}.jpg"
            data, _ = synth.scene_with_faces([person], (480, 360), seed=seed + i)
            self.missing_images[name] = data
            self._event(self.images_url + name, expect="-1308", people=[person], name=name)

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

    def expected_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.events:
            counts[e.expect] = counts.get(e.expect, 0) + 1
        return counts
