"""Child processes the harness starts: logged to a file, stopped by their own PID, never by name.

- :func:`stop_process`: SIGTERM, wait, then SIGKILL; the exit code. Idempotent.
- :class:`ChildProcess`: one command with its output in a log file (a temporary one unless given), an
  environment without the parent's ``MDW_*`` variables plus the ones given, optionally started with
  SIGTERM/SIGINT blocked (:func:`worker.runtime.stopping.spawn_with_stop_signals_blocked`: a stop that
  comes while it is still starting ends it with exit 0) or in a session of its own (Ctrl-C in a terminal
  reaches the parent only, which stops its children in order). Every live child is stopped at
  interpreter exit at the latest.
- :class:`WorkerProcess`: ``python -m worker run``, with ``/readyz`` and ``/metrics`` on its metrics port.
- :func:`wait_all_ready`, :func:`stop_all`: a group of workers, ready together, stopped side by side.

This module stays light (no Kafka client, no emulator): the emulator stops its own child with
:func:`stop_process`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from worker.dev.harness.loopback import http_get
from worker.runtime.stopping import spawn_with_stop_signals_blocked

# The folder the ``worker`` package is in: a child started there imports the same code as this process.
ROOT = Path(__file__).resolve().parents[3]

_LIVE: weakref.WeakSet[ChildProcess] = weakref.WeakSet()


def stop_process(popen: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL; returns the exit code. Idempotent."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
            popen.wait(timeout_s)
    return int(popen.returncode)


def child_environ(env: Mapping[str, str] | None, drop: Sequence[str] = ("MDW_",)) -> dict[str, str]:
    """This process's environment without variables starting with ``drop``, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop))}
    return {**base, **(env or {})}


class ChildProcess:
    """A child we own: started at once, its output in :attr:`log_path`, stopped by its PID."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str = "child",
        env: Mapping[str, str] | None = None,
        drop_env: Sequence[str] = ("MDW_",),
        log_path: Path | None = None,
        keep_log: bool = True,
        append_log: bool = False,
        cwd: Path | None = ROOT,
        block_stop_signals: bool = False,
        new_session: bool = False,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.stop_timeout = stop_timeout
        self._logdir: tempfile.TemporaryDirectory[str] | None = None
        if not keep_log:
            log_path = Path(os.devnull)
        elif log_path is None:
            self._logdir = tempfile.TemporaryDirectory(prefix=f"mdw-{name}-")
            log_path = Path(self._logdir.name) / "log.txt"
        self.log_path = log_path
        mode = "ab" if append_log else "wb"
        self._log: IO[bytes] | None = open(log_path, mode) if keep_log else None  # noqa: SIM115 - closed in stop()
        spawn = spawn_with_stop_signals_blocked if block_stop_signals else subprocess.Popen
        try:
            self.popen: subprocess.Popen[bytes] = spawn(
                list(argv),
                env=child_environ(env, drop_env),
                stdin=subprocess.DEVNULL,
                stdout=self._log if self._log is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=new_session,
            )
        except BaseException:
            if self._log is not None:
                self._log.close()
            raise
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this child (only while it runs: its PID may be reused once it is reaped)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def wait(self, timeout: float) -> int:
        """Its exit code; ``subprocess.TimeoutExpired`` when it still runs after ``timeout``."""
        return self.popen.wait(timeout)

    def kill(self) -> int:
        """SIGKILL (a crash, as far as the rest of the system can tell); the exit code."""
        self.signal(signal.SIGKILL)
        return self.popen.wait(10)

    def stop(self, timeout: float | None = None, *, term: bool = True) -> int:
        """SIGTERM (unless sent already: ``term=False``), wait ``timeout`` (default: ``stop_timeout``), then
        SIGKILL; closes the log and returns the exit code. Idempotent."""
        if self.alive():
            if term:
                self.signal(signal.SIGTERM)
            try:
                self.popen.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(10)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
        return int(self.popen.returncode)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the exit (SIGKILL after ``timeout``): the exit code."""
        return self.stop(timeout)

    def output(self) -> str:
        """Everything it has written so far (stdout and stderr)."""
        if self._log is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, chars: int = 1500) -> str:
        return self.output()[-chars:]

    def cleanup(self) -> None:
        """Stop it (5 s for a drain) and remove a temporary log."""
        self.stop(5)
        if self._logdir is not None:
            self._logdir.cleanup()

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WorkerProcess(ChildProcess):
    """``python -m worker run`` configured by ``env`` (``MDW_*``); its metrics port serves /readyz and /metrics."""

    def __init__(self, env: Mapping[str, str], *, name: str = "worker", **options: Any) -> None:
        super().__init__([sys.executable, "-m", "worker", "run"], name=name, env=env, **options)
        port = int(env.get("MDW_METRICS_PORT", "0"))
        host = env.get("MDW_METRICS_HOST", "127.0.0.1")
        self.metrics_base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}" if port else None

    def _url(self, path: str) -> str:
        if self.metrics_base is None:
            raise ValueError(f"{self.name} has no fixed metrics port (set MDW_METRICS_PORT)")
        return self.metrics_base + path

    @property
    def metrics_url(self) -> str:
        return self._url("/metrics")

    def readyz(self, timeout: float = 2.0) -> tuple[int, bytes]:
        """/readyz: (status, the reason in the body); (0, why) when nothing answers."""
        return http_get(self._url("/readyz"), timeout)

    def ready(self) -> bool:
        """Does /readyz answer 200 (joined the group, partitions assigned, broker reachable)?"""
        return self.readyz()[0] == 200

    def metrics(self, timeout: float = 2.0) -> str:
        """The /metrics text; "" when it does not answer."""
        status, body = http_get(self.metrics_url, timeout)
        return body.decode("utf-8", "replace") if status == 200 else ""


def wait_all_ready(workers: Sequence[WorkerProcess], timeout: float) -> bool:
    """Until every worker is ready at the same moment; False after ``timeout`` or once one has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(w.alive() for w in workers):
        if all([w.ready() for w in workers]):
            return True
        time.sleep(0.1)
    return False


def stop_all(children: Sequence[ChildProcess], timeout: float = 30.0) -> dict[str, int]:
    """SIGTERM every child at once (workers drain side by side), then wait for each (SIGKILL after ``timeout``);
    exit codes by name."""
    for child in children:
        child.signal(signal.SIGTERM)
    return {child.name: child.stop(timeout, term=False) for child in children}


@atexit.register
def _stop_all_left() -> None:
    for child in list(_LIVE):
        with contextlib.suppress(Exception):
            child.stop(5)
