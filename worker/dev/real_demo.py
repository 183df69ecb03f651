"""``multidentify-worker demo --real-faces``: the demo on real photos of real people, with pictures to look at.

The emulator runs the real face engine (``engine="dlib"``, spawned as its own process: its pool of ``spawn``
processes re-imports that process's ``__main__``, never the demo's). People are enrolled from one photo each
(:data:`ENROL`: Barack Obama, Joe Biden, Eileen Collins), Grace Hopper stays a stranger. Then events are published for
*other* photos of them and for group pictures pasted together from face crops (:func:`worker.dev.photos.compose`),
the two workers identify them, and the demo prints who was found in which photo (name, confidence, box; strangers
marked), checks it against who is in each photo, and writes each photo annotated plus ``index.html`` to ``out_dir``
(:class:`worker.dev.gallery.Gallery`).

The photos come from :mod:`worker.dev.photos`: the committed two, and four fetched once by pip (``make install``
does it) into a cache, so that the demo needs no network. When they are missing it fetches them once; when that
fails it runs on the committed two (Collins enrolled, Hopper a stranger, a mirrored Collins as her other photo).
"""

from __future__ import annotations

import collections
import io
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from PIL import Image, ImageOps

from worker.api.client import ClientOptions, MultidentifyClient
from worker.api.iai_client import IaiClient, IaiOptions
from worker.config import ApiName
from worker.dev import devstack, photos
from worker.dev.gallery import Gallery, face_lines, faces_of, threshold_for
from worker.dev.harness.env import worker_env
from worker.dev.harness.outputs import Output, OutputReader
from worker.dev.harness.processes import stop_all, wait_all_ready
from worker.emulator import DEV_ACCOUNT
from worker.emulator.annotate import KNOWN, marks_for

GROUP = "people"
#: Who is enrolled, from which photo; everyone else in a photo is a stranger.
ENROL = {"obama": "obama.jpg", "biden": "biden.jpg", "collins": "astronaut.jpg"}
NAMES = {"obama": "Barack Obama", "biden": "Joe Biden", "collins": "Eileen Collins", "hopper": "Grace Hopper"}
#: Who is in each source photo.
IN_PHOTO = {
    "obama.jpg": "obama",
    "obama2.jpg": "obama",
    "obama3.jpg": "obama",
    "biden.jpg": "biden",
    "astronaut.jpg": "collins",
    "astronaut-mirrored.jpg": "collins",
    "grace_hopper.jpg": "hopper",
}
#: Photos published alone: other photos than the enrolled ones, and the stranger.
SINGLES = ("obama2.jpg", "obama3.jpg", "grace_hopper.jpg")
#: Group pictures: (file, [(source photo, face width in px)]), pasted in a row.
GROUPS: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (
    ("group-1.jpg", (("obama3.jpg", 140), ("biden.jpg", 130), ("astronaut.jpg", 120), ("grace_hopper.jpg", 110))),
    ("group-2.jpg", (("grace_hopper.jpg", 120), ("obama2.jpg", 130), ("biden.jpg", 110))),
)
FALLBACK_SINGLES = ("astronaut-mirrored.jpg", "grace_hopper.jpg")
FALLBACK_GROUPS = (("group-1.jpg", (("astronaut-mirrored.jpg", 130), ("grace_hopper.jpg", 120))),)


@dataclass(frozen=True)
class Picture:
    """One published photo: its file, bytes and who is in it (a person id, or ``None`` for a stranger)."""

    file: str
    data: bytes
    people: tuple[str | None, ...]


def load_photos(out: IO[str]) -> tuple[dict[str, bytes], bool]:
    """The photos by name, and whether the fetched four are among them (else the committed two only, said so)."""
    have = {name: photos.committed(name) for name in photos.COMMITTED}
    cached = all((photos.cache_dir() / name).is_file() for name in photos.FETCHED)
    if not cached:
        print(f"   the photos of Obama and Biden are not in {photos.cache_dir()}: fetching them once (pip)", file=out)
    got = photos.fetched()
    if isinstance(got, str):
        print(f"   {got}\n   running on the two committed photos only", file=out)
        mirrored = io.BytesIO()
        ImageOps.mirror(Image.open(io.BytesIO(have["astronaut.jpg"])).convert("RGB")).save(mirrored, "JPEG")
        return {**have, "astronaut-mirrored.jpg": mirrored.getvalue()}, False
    return {**have, **got}, True


def pictures(sources: dict[str, bytes], full: bool) -> list[Picture]:
    """The photos to publish: singles as they are, group pictures pasted from the face the engine finds in each
    source (computed here, in this process, once per source)."""
    from worker.emulator.dlib_engine import DlibEngine

    engine = DlibEngine()
    boxes: dict[str, tuple[int, int, int, int]] = {}
    for name in {n for _, parts in (GROUPS if full else FALLBACK_GROUPS) for n, _ in parts}:
        (face,) = engine.detect(sources[name])  # each source photo shows one face
        r = face.rect
        boxes[name] = (r.x, r.y, r.width, r.height)
    out = [Picture(name, sources[name], (_enrolled(name),)) for name in (SINGLES if full else FALLBACK_SINGLES)]
    for file, parts in GROUPS if full else FALLBACK_GROUPS:
        layout, x = [], 10
        for name, width in parts:
            scale = width / boxes[name][2]
            layout.append((name, sources[name], boxes[name], (x, 10), scale))
            x += 2 * width + 20  # the crop keeps half a face of margin each side
        height = 2 * max(w for _, w in parts) + 60
        data, _placed = photos.compose((x, height), layout)
        out.append(Picture(file, data, tuple(_enrolled(name) for name, _ in parts)))
    return out


def _enrolled(photo: str) -> str | None:
    who = IN_PHOTO[photo]
    return who if who in ENROL else None


def enrol(api_url: str, api: ApiName, sources: dict[str, bytes], people: Sequence[str]) -> None:
    """Each person from their photo, through ``api`` (IAI: CreateGroup, then CreatePerson; v1: newperson)."""
    account = DEV_ACCOUNT
    if api == "iai":
        with IaiClient(IaiOptions(secret_id=account.secret_id, secret_key=account.secret_key, endpoint=api_url)) as iai:
            iai.create_group(GROUP, GROUP)
            for person in people:
                # IAI's PersonName: letters, digits, - and _ only
                iai.create_person(GROUP, person, NAMES[person].replace(" ", "_"), image=sources[ENROL[person]])
        return
    options = ClientOptions(
        appid=account.appid, secret_id=account.secret_id, secret_key=account.secret_key, base_url=api_url
    )
    with MultidentifyClient(options) as v1:
        for person in people:
            v1.newperson(person, [GROUP], image=sources[ENROL[person]], person_name=NAMES[person])


def found(doc: dict[str, Any]) -> tuple[list[str | None], list[str]]:
    """Who a result found (person id per face, ``None`` for a stranger) and one printable line per face."""
    threshold = threshold_for(doc)
    faces = faces_of(doc)
    marks = marks_for(faces, threshold, NAMES)
    people: list[str | None] = []
    for face, mark in zip(faces, marks, strict=True):
        people.append(face.candidates[0].person_id if mark.colour == KNOWN else None)
    return people, list(face_lines(marks))


def run_real_demo(out: IO[str], *, api: ApiName = "v1", out_dir: Path | None = None) -> int:
    """The run of the module docstring; 0 when everyone was found where they are, 1 otherwise, 2 without dlib."""
    from worker.dev import demo

    started = time.monotonic()
    print(
        f"multidentify-worker demo --real-faces: embedded Kafka + API emulator (dlib engine) + 2 workers, API {api}\n",
        file=out,
    )
    missing = photos.dlib_missing()
    if missing:
        print(f"the real-face demo needs dlib: {missing}", file=out)
        return 2
    print("1. photos", file=out)
    sources, full = load_photos(out)
    people = [p for p, photo in ENROL.items() if photo in sources]
    published = pictures(sources, full)
    folder = out_dir or Path(tempfile.mkdtemp(prefix="mdw-real-faces-"))
    gallery = Gallery(folder, title=f"multidentify-worker demo --real-faces (API {api})")
    print(
        f"   {len(sources)} photos; {len(published)} to identify, {sum(len(p.people) > 1 for p in published)} of "
        "them group pictures pasted from face crops",
        file=out,
    )
    with (
        tempfile.TemporaryDirectory(prefix="mdw-real-demo-") as tmp,
        devstack.stack(
            demo.TOPICS.all, demo.PARTITIONS, images_dir=tmp, engine="dlib", engine_workers=2, timeout_s=120
        ) as st,
    ):
        images = Path(tmp)
        print(f"2. stack up: broker {st.bootstrap}, emulator {st.api_url} with the dlib engine", file=out)
        enrol(st.api_url, api, sources, people)
        print(
            f"3. enrolled in group '{GROUP}' through {demo.ENROLLED_THROUGH[api]}: "
            + ", ".join(f"{NAMES[p]} ({ENROL[p]})" for p in people)
            + "; Grace Hopper is not enrolled (a stranger)",
            file=out,
        )
        events: dict[str, Picture] = {}
        values = []
        for picture in published:
            (images / picture.file).write_bytes(picture.data)
            event_id = uuid.uuid4().hex
            events[event_id] = picture
            values.append(orjson.dumps({"event_id": event_id, "image_url": st.images_url + picture.file}))
        env = worker_env(st.bootstrap, st.api_url, demo.TOPICS, group_ids=GROUP, api=api, settings=demo.WORKER_SETTINGS)
        workers = demo._start_workers(env, images)
        reader = OutputReader(st.bootstrap, demo.TOPICS)
        try:
            if not wait_all_ready(workers, 60):
                print("the workers did not become ready; their last log lines:\n" + demo._tail(workers), file=out)
                return 1
            _publish(st.bootstrap, demo.TOPICS.input, values)
            print(f"4. two workers ready; published {len(values)} events, identifying:", file=out)
            if not demo._wait_for(reader, len(values), 120, out, workers):
                print("the workers did not finish; their last log lines:\n" + demo._tail(workers), file=out)
                return 1
            wrong = _report(events, reader.outputs, gallery, out)
        finally:
            reader.close()
            codes = list(stop_all(workers, 30).values())
        print(f"\n6. workers stopped (exit codes {codes}); broker and emulator stopped next", file=out)
    print(f"annotated photos and the page that shows them: {gallery.index}", file=out)
    print(f"demo finished in {time.monotonic() - started:.1f}s; every process it started has exited", file=out)
    return 0 if not wrong and all(c == 0 for c in codes) else 1


def _report(events: dict[str, Picture], outputs: list[Output], gallery: Gallery, out: IO[str]) -> int:
    """Print who was found in each photo, draw it into the gallery; the number of photos not as expected."""
    results = {o.event_id: o.doc for o in outputs if o.kind == "result"}
    dead = {o.event_id: o.code for o in outputs if o.kind == "dlq"}
    print("\n5. who was found where (confidence, box x, y, width×height):", file=out)
    wrong = 0
    for event_id, picture in sorted(events.items(), key=lambda kv: kv[1].file):
        doc = results.get(event_id)
        if doc is None:
            print(f"   {picture.file}: no result (dead letter {dead.get(event_id, '?')})", file=out)
            wrong += 1
            continue
        who, lines = found(doc)
        ok = collections.Counter(who) == collections.Counter(picture.people)
        wrong += not ok
        print(f"   {picture.file}{'' if ok else '  ← NOT who is in it: ' + _names(picture.people)}", file=out)
        for line in lines:
            print(f"      {line}", file=out)
        gallery.add(
            Path(picture.file).stem, picture.data, faces_of(doc), threshold_for(doc), names=NAMES, title=picture.file
        )
    print(
        f"   {len(events) - wrong} of {len(events)} photos: everyone found where they are, strangers marked", file=out
    )
    return wrong


def _names(people: Sequence[str | None]) -> str:
    return ", ".join(NAMES[p] if p else "a stranger" for p in people)


def _publish(bootstrap: str, topic: str, values: Sequence[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value=value)
    if producer.flush(30):
        raise RuntimeError("could not publish the demo events")
