"""``multidentify-worker demo``: the whole system, end to end, in well under a minute.

Starts the embedded stack (Tansu broker, API emulator serving an image folder), enrolls a small
gallery, publishes a mixed batch (known people, strangers, images without faces, URLs that do not
exist yet, malformed events), runs two worker processes in one consumer group with a live progress
line, prints a summary. The workers also read two topics in other formats (docs/event-formats.md): a camera topic
of CloudEvents (one structured, one binary) and a MinIO topic of bucket notifications (uploads of images the
emulator serves, found through ``image_url_template``; a delete and a video, dead-lettered with their codes); the
demo prints what came of each record. Then it "fixes" the missing images, replays only that dead-letter code and
shows those events identified. Every process it starts is stopped by its PID before it returns.

``api`` picks the face API the workers call (the worker's ``api`` setting): ``v1`` (multidentify, the default) or
``iai`` (SearchFaces, on the emulator's ``POST /``). On IAI the gallery is enrolled through IAI itself
(CreateGroup, then CreatePerson per person), as a real IAI account must, and the dead letters carry IAI's codes;
the scenario says which code each event expects (:data:`worker.dev.scenario.EXPECTED_CODES`).
"""

from __future__ import annotations

import collections
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from worker import config
from worker.api.errors import meaning
from worker.config import BY_NAME, ApiName
from worker.dev import devstack
from worker.dev.harness.env import SettingValue, setting_env, worker_env
from worker.dev.harness.loopback import free_port
from worker.dev.harness.outputs import Output, OutputReader
from worker.dev.harness.processes import WorkerProcess, stop_all, wait_all_ready
from worker.dev.harness.topics import Topics
from worker.dev.scenario import Scenario, ScenarioEvent

if TYPE_CHECKING:
    from confluent_kafka import Producer

PEOPLE = ["alice", "bob", "carol", "dave"]
# The worker's own default group: the demo names only its topics.
TOPICS = Topics("images", "face-results", "face-dlq", group=str(BY_NAME["group_id"].default))
#: Topics in the other input formats, read by the same workers (input_formats).
CAMERA_TOPIC, BUCKET_TOPIC = "camera.events", "minio.images"
FORMATS = {CAMERA_TOPIC: "cloudevents", BUCKET_TOPIC: "s3"}
PARTITIONS = 4
WORKERS = 2
# The v1 FAQ suggests ~90 for production, Tencent ≈ 80 for IAI's Score. The emulator scores another photo of an
# enrolled person ≥ 90 on v1 and ≈ 86–96 on IAI, a stranger far below: one threshold serves both here.
MATCH_THRESHOLD = 80.0
WORKER_SETTINGS: dict[str, SettingValue] = {
    "session_timeout_ms": 2000,
    "max_in_flight": 16,
    "log_level": "WARNING",
    "commit_interval_s": 0.2,
}


def _start_workers(env: dict[str, str], log_dir: Path) -> list[WorkerProcess]:
    """Two ``multidentify-worker run`` processes in one group, each with /readyz on its own loopback port.

    They start with SIGTERM/SIGINT blocked until their handlers are installed (see
    :func:`worker.runtime.stopping.spawn_with_stop_signals_blocked`): a stop that comes while one is still
    starting makes it exit 0 rather than die of the signal. Logs are kept in files for failures.
    """
    return [
        WorkerProcess(
            {**env, **setting_env({"metrics_host": "127.0.0.1", "metrics_port": free_port()})},
            name=f"worker-{i}",
            log_path=log_dir / f"worker-{i}.log",
            cwd=None,
            block_stop_signals=True,
            new_session=True,  # Ctrl-C reaches the demo, which stops them in order
            stop_timeout=30,
        )
        for i in range(WORKERS)
    ]


def _tail(workers: list[WorkerProcess], lines: int = 15) -> str:
    return "\n".join(f"--- {w.log_path.name}\n" + "\n".join(w.output().splitlines()[-lines:]) for w in workers)


def _progress(done: int, total: int, started: float, out: IO[str]) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    line = f"  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} events  {time.monotonic() - started:4.1f}s"
    if out.isatty():
        out.write("\r" + line)
    else:
        out.write(line + "\n")
    out.flush()


def _wait_for(reader: OutputReader, target: int, timeout: float, out: IO[str], workers: list[WorkerProcess]) -> bool:
    started = time.monotonic()
    last_print = 0.0
    while time.monotonic() - started < timeout:
        reader.poll(0.25)
        now = time.monotonic()
        done = _done(reader.snapshot())
        if now - last_print >= (0.25 if out.isatty() else 2.0) or done >= target:
            _progress(done, target, started, out)
            last_print = now
        if done >= target:
            if out.isatty():
                out.write("\n")
            return True
        if not all(w.alive() for w in workers):
            break
    if out.isatty():
        out.write("\n")
    return False


def _done(outputs: list[Output]) -> int:
    """Events with a result (a duplicate counts once) plus dead letters: what the progress line counts."""
    results = {o.event_id for o in outputs if o.kind == "result"}
    return len(results) + sum(1 for o in outputs if o.kind == "dlq")


def _faces_line(doc: dict[str, Any]) -> str:
    names = []
    for face in doc["faces"]:
        best = face["candidates"][0] if face["candidates"] else None
        if best and best["confidence"] >= MATCH_THRESHOLD:
            names.append(f"{best['person_id']} ({best['confidence']:.0f})")
        else:
            names.append("unknown")
    return ", ".join(names) or "no faces"


def _summary(sc: Scenario, outputs: list[Output], out: IO[str]) -> None:
    results = list({o.event_id: o.doc for o in outputs if o.kind == "result"}.values())
    codes = collections.Counter(o.code for o in outputs if o.kind == "dlq")
    faces = sum(len(r["faces"]) for r in results)
    best = [f["candidates"][0]["confidence"] for r in results for f in r["faces"] if f["candidates"]]
    identified = sum(1 for confidence in best if confidence >= MATCH_THRESHOLD)
    print(
        f"\nSummary: {len(sc.events)} events → {len(results)} results, {codes.total()} dead letters",
        file=out,
    )
    print(
        f"  faces found: {faces}; identified (confidence ≥ {MATCH_THRESHOLD:.0f}): {identified}; "
        f"strangers: {faces - identified}",
        file=out,
    )
    print("  dead letters by code (the DLQ record key):", file=out)
    width = max((len(code) for code in codes), default=0)  # IAI's codes are long: FailedOperation.ImageDownloadError
    for code, n in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"    {code:>{max(width, 14)}}  ×{n:<3} {meaning(code)}", file=out)
    shown = 0
    print("  a few results:", file=out)
    for r in results:
        if len(r["faces"]) > 1 and shown < 4:
            print(f"    {r['event_id'][:8]}  {r['image_url'].rsplit('/', 1)[-1]:<16} → {_faces_line(r)}", file=out)
            shown += 1


#: Where the emulator serves each API, and how each API's enrolment reads in the demo's step 2.
API_AT: dict[ApiName, str] = {"v1": "v1 under /face/", "iai": "IAI on POST /"}
ENROLLED_THROUGH: dict[ApiName, str] = {
    "v1": "v1's newperson",
    "iai": "IAI's CreateGroup, then CreatePerson per person",
}


def run_demo(out: IO[str] = sys.stdout, *, events_per_kind: int = 8, api: ApiName = "v1") -> int:
    started = time.monotonic()
    print(f"multidentify-worker demo: embedded Kafka (Tansu) + API emulator + 2 workers, API {api}\n", file=out)
    with (
        tempfile.TemporaryDirectory(prefix="mdw-demo-") as tmp,
        devstack.stack((*TOPICS.all, *FORMATS), PARTITIONS, images_dir=tmp) as st,
    ):
        images = Path(tmp)
        print(f"1. stack up: broker {st.bootstrap}, emulator {st.api_url} ({API_AT[api]})", file=out)
        sc = Scenario(images, st.images_url, api=api)
        sc.enroll_at(st.api_url, PEOPLE)
        print(
            f"2. enrolled {len(PEOPLE)} people in group '{sc.group}' through {ENROLLED_THROUGH[api]}: "
            f"{', '.join(PEOPLE)}",
            file=out,
        )

        sc.add_known(events_per_kind * 4, seed=100)
        sc.add_strangers(events_per_kind // 2, seed=300)
        sc.add_no_face(events_per_kind // 2, seed=500)
        sc.add_unreachable(events_per_kind // 2, seed=700)
        sc.add_malformed()
        inputs: dict[str, SettingValue] = {
            "input_topic": [TOPICS.input, *FORMATS],
            "input_formats": [f"{topic}={fmt}" for topic, fmt in FORMATS.items()],
            "image_url_template": sc.image_url_template,
        }
        env = worker_env(
            st.bootstrap, st.api_url, TOPICS, group_ids=sc.group, api=api, settings={**WORKER_SETTINGS, **inputs}
        )
        spawned = time.monotonic()
        workers = _start_workers(env, images)
        reader = OutputReader(st.bootstrap, TOPICS)
        producer = _producer(st.bootstrap)  # one for every step: it connects while the workers start
        try:
            # Publish only once both have joined the group and hold partitions: a worker that is still
            # importing when the events are done would otherwise be stopped in the middle of its start-up.
            if not wait_all_ready(workers, 60):
                print("the workers did not become ready; their last log lines:\n" + _tail(workers), file=out)
                return 1
            print(
                f"3. two workers joined one consumer group and are ready (/readyz 200) "
                f"after {time.monotonic() - spawned:.1f}s",
                file=out,
            )
            _publish(producer, sc, sc.events)
            kinds = sc.expected_counts()
            no_face, unreachable = sc.code("no_face"), sc.code("unreachable")
            print(
                f"4. published {len(sc.events)} events: {kinds.get('result', 0)} with people or strangers, "
                f"{kinds.get(no_face, 0)} without faces, {kinds.get(unreachable, 0)} with images not there yet, "
                f"{sum(v for k, v in kinds.items() if k not in ('result', no_face, unreachable))} malformed; "
                "the workers are identifying:",
                file=out,
            )
            if not _wait_for(reader, len(sc.events), 60, out, workers):
                print("the workers did not finish; their last log lines:\n" + _tail(workers), file=out)
                return 1
            _summary(sc, reader.outputs, out)
            wrong = sc.unexpected(reader.outputs)
            for event, got in wrong:
                print(f"    {event.event_id[:8]} expected {event.expect}, got {sorted(got) or 'nothing'}", file=out)
            if wrong:
                print(f"  {len(wrong)} events did not get the output the scenario expects", file=out)
                return 1
            print("  every event got the output the scenario expects", file=out)

            if not _other_formats(producer, sc, reader, out, workers):
                return 1

            fixed = sc.fix_unreachable()
            print(
                f"\n6. the {fixed} missing images are now published; "
                f"replaying dead letters with code {unreachable} only",
                file=out,
            )
            replayed = _replay(env, unreachable, out)
            late = {e.event_id for e in sc.events if e.expect == unreachable}
            if not _wait_for(reader, len(sc.events) + replayed, 30, out, workers):
                print("the replayed events did not come back; worker logs:\n" + _tail(workers), file=out)
                return 1
            results = {o.event_id: o.doc for o in reader.results()}
            for event_id in sorted(late):
                doc = results.get(event_id)
                if doc:
                    print(
                        f"    {event_id[:8]}  {doc['image_url'].rsplit('/', 1)[-1]:<16} → {_faces_line(doc)}", file=out
                    )
            missing = late - set(results)
            if missing:
                print(f"    {len(missing)} replayed events have no result", file=out)
                return 1
        finally:
            reader.close()
            producer.close()  # before the broker stops: a live client would hold its connection open
            codes = list(stop_all(workers, 30).values())
        print(f"\n7. workers stopped (exit codes {codes}); broker and emulator stopped next", file=out)
    print(f"demo finished in {time.monotonic() - started:.1f}s; every process it started has exited", file=out)
    return 0 if all(c == 0 for c in codes) else 1


def _other_formats(
    producer: Producer, sc: Scenario, reader: OutputReader, out: IO[str], workers: list[WorkerProcess]
) -> bool:
    """Step 5: CloudEvents on the camera topic and MinIO notifications on the bucket topic, and what came of each.

    The wait is by count, as step 4's; then every event of the scenario, old and new, is checked again."""
    before = len(sc.events)
    sc.add_camera_events(CAMERA_TOPIC)
    sc.add_bucket_notifications(BUCKET_TOPIC)
    others = sc.events[before:]
    _publish(producer, sc, others)
    sent = collections.Counter(e.topic for e in others)
    print(
        f"\n5. the workers also read {CAMERA_TOPIC} (cloudevents) and {BUCKET_TOPIC} (s3, image URLs "
        f"{sc.image_url_template}); published {sent[CAMERA_TOPIC]} CloudEvents from cameras and "
        f"{sent[BUCKET_TOPIC]} MinIO notifications:",
        file=out,
    )
    if not _wait_for(reader, len(sc.events), 30, out, workers):
        print("the workers did not finish; their last log lines:\n" + _tail(workers), file=out)
        return False
    found = sc.outputs_of(reader.outputs)
    for e in others:
        print(
            f"    {e.topic or TOPICS.input:<14} {e.label:<24} {e.image_name or '':<18} → {_outcome(e, found)}", file=out
        )
    wrong = sc.unexpected(reader.outputs)
    for event, got in wrong:
        print(f"    {event.event_id[:8]} expected {event.expect}, got {sorted(got) or 'nothing'}", file=out)
    if wrong:
        print(f"  {len(wrong)} events did not get the output the scenario expects", file=out)
        return False
    print("  every record of the three topics got the output the scenario expects", file=out)
    return True


def _outcome(event: ScenarioEvent, found: dict[str, list[Output]]) -> str:
    """Who was found in the record's image, or the dead letter's code and the worker's reason."""
    outputs = found.get(event.event_id) or []
    if not outputs:
        return "no output"
    o = outputs[0]
    if o.kind == "result":
        return _faces_line(o.doc)
    return f"dead letter {o.code}: {o.doc['error']['message']}"


def _producer(bootstrap: str) -> Producer:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.poll(0)  # starts connecting
    return producer


def _publish(producer: Producer, sc: Scenario, events: list[ScenarioEvent]) -> None:
    """Each event to its topic (the event topic unless it names another), with a trace context; the scenario
    learns where each landed (:meth:`Scenario.place`), which is how outputs that carry no id of ours are found."""
    from confluent_kafka import KafkaError, Message

    failed: list[str] = []

    def placed(event_id: str) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failed.append(str(err))
            else:
                sc.place(event_id, str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0))

        return on_delivery

    for e in events:
        producer.produce(
            e.topic or TOPICS.input,
            key=e.key,
            value=e.value,
            headers=[("traceparent", _traceparent()), *e.headers],
            on_delivery=placed(e.event_id),
        )
    if producer.flush(30) or failed:
        raise RuntimeError(f"could not publish the demo events: {failed[:3]}")


def _traceparent() -> bytes:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01".encode()


def _replay(env: dict[str, str], code: str, out: IO[str]) -> int:
    from worker.tools.replay import ReplayOptions, replay
    from worker.tools.replay_plan import Selection

    settings = config.load(environ=env)
    summary = replay(settings, ReplayOptions(selection=Selection(codes=frozenset({code})), timeout_s=30))
    replayed = sum(summary.replayed.values())
    print(
        f"   replayed {replayed} records (selected {sum(summary.selected.values())}, "
        f"skipped {sum(summary.skipped.values())}); waiting for their results:",
        file=out,
    )
    return replayed
