"""``multidentify-worker demo``: the whole system, end to end, in well under a minute.

Starts the embedded stack (Tansu broker, API emulator serving an image folder), enrolls a small
gallery, publishes a mixed batch (known people, strangers, images without faces, URLs that do not
exist yet, malformed events), runs two worker processes in one consumer group with a live progress
line, prints a summary, then "fixes" the missing images, replays only that dead-letter code and
shows those events identified. Every process it starts is stopped by its PID before it returns.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from worker import config
from worker.api.client import ClientOptions, MultidentifyClient
from worker.api.errors import meaning
from worker.dev import devstack
from worker.dev.processes import stop_process
from worker.dev.scenario import Scenario
from worker.emulator import DEV_ACCOUNT
from worker.runtime.stopping import spawn_with_stop_signals_blocked

PEOPLE = ["alice", "bob", "carol", "dave"]
TOPICS = ("images", "face-results", "face-dlq")
PARTITIONS = 4
MATCH_THRESHOLD = 80.0  # the v1 FAQ suggests ~90 for production; the synthetic engine scores enrolled faces ≥ 90


@dataclass
class Tally:
    """Outputs read back from the results and dead-letter topics."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.results) + len(self.dead_letters)


class _Reader:
    """Reads both output topics by assignment (no group join), from the beginning."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"demo-reader-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign([TopicPartition(t, p, 0) for t in TOPICS[1:] for p in range(PARTITIONS)])
        self.tally = Tally()

    def poll(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for msg in self._consumer.consume(500, 0.05):
                if msg.error() is not None:
                    continue
                doc = orjson.loads(msg.value() or b"null")
                if msg.topic() == TOPICS[1]:
                    self.tally.results[doc["event_id"]] = doc
                else:
                    self.tally.dead_letters.append(((msg.key() or b"").decode(), doc))

    def close(self) -> None:
        self._consumer.close()


class _Workers:
    """Two ``multidentify-worker run`` processes in one group, each with /readyz on its own loopback port.

    They start with SIGTERM/SIGINT blocked until their handlers are installed (see
    :func:`worker.runtime.stopping.spawn_with_stop_signals_blocked`): a stop that comes while one is still
    starting makes it exit 0 rather than die of the signal. Logs are kept in files for failures.
    """

    def __init__(self, env: dict[str, str], log_dir: Path, count: int = 2) -> None:
        self.logs = [log_dir / f"worker-{i}.log" for i in range(count)]
        self.ports = [devstack.free_port() for _ in range(count)]
        base = {k: v for k, v in os.environ.items() if not k.startswith("MDW_")}
        self._handles: list[IO[bytes]] = [open(path, "wb") for path in self.logs]  # noqa: SIM115
        self.procs = [
            spawn_with_stop_signals_blocked(
                [sys.executable, "-m", "worker", "run"],
                env={**base, **env, "MDW_METRICS_HOST": "127.0.0.1", "MDW_METRICS_PORT": str(port)},
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops them in order
            )
            for fh, port in zip(self._handles, self.ports, strict=True)
        ]

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def ready(self) -> list[bool]:
        """Does each worker's /readyz answer 200 (joined the group, partitions assigned, broker reachable)?"""
        return [_http_status(f"http://127.0.0.1:{port}/readyz") == 200 for port in self.ports]

    def wait_ready(self, timeout: float) -> bool:
        """Until every worker is ready at the same moment; False after ``timeout`` or when one exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            if all(self.ready()):
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> list[int]:
        for p in self.procs:  # all at once, so they drain in parallel
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [stop_process(p, 30) for p in self.procs]
        for fh in self._handles:
            fh.close()
        return codes

    def tail(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in self.logs
        )


def _http_status(url: str, timeout: float = 2.0) -> int:
    """Status of a GET on loopback (never through a proxy); 0 when nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _progress(done: int, total: int, started: float, out: IO[str]) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    line = f"  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} events  {time.monotonic() - started:4.1f}s"
    if out.isatty():
        out.write("\r" + line)
    else:
        out.write(line + "\n")
    out.flush()


def _wait_for(reader: _Reader, target: int, timeout: float, out: IO[str], workers: _Workers) -> bool:
    started = time.monotonic()
    last_print = 0.0
    while time.monotonic() - started < timeout:
        reader.poll(0.25)
        now = time.monotonic()
        if now - last_print >= (0.25 if out.isatty() else 2.0) or reader.tally.total >= target:
            _progress(reader.tally.total, target, started, out)
            last_print = now
        if reader.tally.total >= target:
            if out.isatty():
                out.write("\n")
            return True
        if not workers.alive():
            break
    if out.isatty():
        out.write("\n")
    return False


def _faces_line(doc: dict[str, Any]) -> str:
    names = []
    for face in doc["faces"]:
        best = face["candidates"][0] if face["candidates"] else None
        if best and best["confidence"] >= MATCH_THRESHOLD:
            names.append(f"{best['person_id']} ({best['confidence']:.0f})")
        else:
            names.append("unknown")
    return ", ".join(names) or "no faces"


def _summary(sc: Scenario, tally: Tally, out: IO[str]) -> None:
    faces = sum(len(r["faces"]) for r in tally.results.values())
    identified = sum(
        1
        for r in tally.results.values()
        for f in r["faces"]
        if f["candidates"] and f["candidates"][0]["confidence"] >= MATCH_THRESHOLD
    )
    codes = collections.Counter(code for code, _ in tally.dead_letters)
    print(
        f"\nSummary: {len(sc.events)} events → {len(tally.results)} results, {len(tally.dead_letters)} dead letters",
        file=out,
    )
    print(
        f"  faces found: {faces}; identified (confidence ≥ {MATCH_THRESHOLD:.0f}): {identified}; "
        f"strangers: {faces - identified}",
        file=out,
    )
    print("  dead letters by code (the DLQ record key):", file=out)
    for code, n in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"    {code:>14}  ×{n:<3} {meaning(code)}", file=out)
    shown = 0
    print("  a few results:", file=out)
    for r in tally.results.values():
        if len(r["faces"]) > 1 and shown < 4:
            print(f"    {r['event_id'][:8]}  {r['image_url'].rsplit('/', 1)[-1]:<16} → {_faces_line(r)}", file=out)
            shown += 1


@contextlib.contextmanager
def _stack(images: Path) -> Iterator[devstack.Stack]:
    with devstack.stack(TOPICS, PARTITIONS, images_dir=images) as st:
        yield st


def run_demo(out: IO[str] = sys.stdout, *, events_per_kind: int = 8) -> int:
    started = time.monotonic()
    print("multidentify-worker demo: embedded Kafka (Tansu) + API emulator + 2 workers\n", file=out)
    with tempfile.TemporaryDirectory(prefix="mdw-demo-") as tmp, _stack(Path(tmp)) as st:
        images = Path(tmp)
        print(f"1. stack up: broker {st.bootstrap}, emulator {st.api_url}", file=out)
        sc = Scenario(images, st.images_url)
        with MultidentifyClient(
            ClientOptions(
                appid=DEV_ACCOUNT.appid,
                secret_id=DEV_ACCOUNT.secret_id,
                secret_key=DEV_ACCOUNT.secret_key,
                base_url=st.api_url,
            )
        ) as client:
            sc.enroll(client, PEOPLE)
        print(f"2. enrolled {len(PEOPLE)} people in group '{sc.group}': {', '.join(PEOPLE)}", file=out)

        sc.add_known(events_per_kind * 4, seed=100)
        sc.add_strangers(events_per_kind // 2, seed=300)
        sc.add_no_face(events_per_kind // 2, seed=500)
        sc.add_unreachable(events_per_kind // 2, seed=700)
        sc.add_malformed()
        env = {
            **st.env(),
            "MDW_GROUP_IDS": sc.group,
            "MDW_INPUT_TOPIC": TOPICS[0],
            "MDW_RESULTS_TOPIC": TOPICS[1],
            "MDW_DLQ_TOPIC": TOPICS[2],
            "MDW_SESSION_TIMEOUT_MS": "2000",
            "MDW_MAX_IN_FLIGHT": "16",
            "MDW_LOG_LEVEL": "WARNING",
            "MDW_COMMIT_INTERVAL_S": "0.2",
        }
        spawned = time.monotonic()
        workers = _Workers(env, images)
        reader = _Reader(st.bootstrap)
        try:
            # Publish only once both have joined the group and hold partitions: a worker that is still
            # importing when the events are done would otherwise be stopped in the middle of its start-up.
            if not workers.wait_ready(60):
                print("the workers did not become ready; their last log lines:\n" + workers.tail(), file=out)
                return 1
            print(
                f"3. two workers joined one consumer group and are ready (/readyz 200) "
                f"after {time.monotonic() - spawned:.1f}s",
                file=out,
            )
            _publish(st.bootstrap, sc)
            kinds = sc.expected_counts()
            print(
                f"4. published {len(sc.events)} events: {kinds.get('result', 0)} with people or strangers, "
                f"{kinds.get('-1101', 0)} without faces, {kinds.get('-1308', 0)} with images not there yet, "
                f"{sum(v for k, v in kinds.items() if k not in ('result', '-1101', '-1308'))} malformed; "
                "the workers are identifying:",
                file=out,
            )
            if not _wait_for(reader, len(sc.events), 60, out, workers):
                print("the workers did not finish; their last log lines:\n" + workers.tail(), file=out)
                return 1
            _summary(sc, reader.tally, out)

            fixed = sc.fix_unreachable()
            print(
                f"\n5. the {fixed} missing images are now published; replaying dead letters with code -1308 only",
                file=out,
            )
            replayed = _replay(env, "-1308", out)
            late = {e.event_id for e in sc.events if e.expect == "-1308"}
            if not _wait_for(reader, len(sc.events) + replayed, 30, out, workers):
                print("the replayed events did not come back; worker logs:\n" + workers.tail(), file=out)
                return 1
            for event_id in sorted(late):
                doc = reader.tally.results.get(event_id)
                if doc:
                    print(
                        f"    {event_id[:8]}  {doc['image_url'].rsplit('/', 1)[-1]:<16} → {_faces_line(doc)}", file=out
                    )
            missing = late - set(reader.tally.results)
            if missing:
                print(f"    {len(missing)} replayed events have no result", file=out)
                return 1
        finally:
            reader.close()
            codes = workers.stop()
        print(f"\n6. workers stopped (exit codes {codes}); broker and emulator stopped next", file=out)
    print(f"demo finished in {time.monotonic() - started:.1f}s; every process it started has exited", file=out)
    return 0 if all(c == 0 for c in codes) else 1


def _publish(bootstrap: str, sc: Scenario) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for e in sc.events:
        producer.produce(TOPICS[0], key=e.key, value=e.value, headers=[("traceparent", _traceparent())])
    if producer.flush(30):
        raise RuntimeError("could not publish the demo events")


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
