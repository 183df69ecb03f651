"""Running an aiohttp app three ways: in a daemon thread, as a blocking CLI server, as a subprocess.

* :class:`AppThread` — its own event loop in a daemon thread; ``start()`` returns the base URL once bound.
* :func:`serve_forever` — for ``python -m …``: prints ``BANNER http://HOST:PORT`` (and writes it to a
  ready file, atomically) once listening; SIGTERM/SIGINT stop it cleanly; returns the exit code.
* :class:`ServerProcess` — runs such a module in a subprocess, waits for its ready file (deadline), and
  stops it by its own PID: SIGTERM, then SIGKILL after a timeout; also registered with atexit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from worker.dev.harness.processes import stop_process

T = TypeVar("T")
AppFactory = Callable[[], web.Application]

PARSE_ERROR_RESPONSE = web.AppKey("parse_error_response", object)
"""An app may set this to a function ``() -> web.Response``: the answer to a request aiohttp cannot parse
(request line, headers, or a broken body framing that arrives with them). Without it aiohttp answers with
its own plain-text 400."""


class _Runner(web.AppRunner):
    """An AppRunner whose connections answer unparseable requests with the app's ``PARSE_ERROR_RESPONSE``.

    aiohttp has no public hook for this: its protocol object answers them itself, before any handler or
    middleware runs. The server and each connection get subclasses that differ only in ``handle_error``
    for parse errors (400); they add no state, so ``__class__`` can be reassigned.
    """

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        respond = self.app.get(PARSE_ERROR_RESPONSE)
        if callable(respond) and type(server) is web.Server:
            server.__class__ = _server_class(respond)
        return server


def _server_class(respond: Callable[[], web.StreamResponse]) -> type[web.Server]:
    class _Handler(RequestHandler):
        __slots__ = ()

        def handle_error(
            self,
            request: BaseRequest,
            status: int = 500,
            exc: BaseException | None = None,
            message: str | None = None,
        ) -> web.StreamResponse:
            if status != 400 or request.writer.output_size > 0:  # a handler's failure, or an answer under way
                return super().handle_error(request, status, exc, message)
            self.logger.debug("unparseable request from %s: %s", request.remote, message)
            response = respond()
            response.force_close()  # where the next request would start is unknown
            return response

    class _Server(web.Server):
        def __call__(self) -> RequestHandler:
            handler = super().__call__()
            handler.__class__ = _Handler
            return handler

    return _Server


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (about twice the request rate), else asyncio's."""
    try:
        import uvloop

        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.new_event_loop()


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _start_site(
    app: web.Application, host: str, port: int, *, sock: socket.socket | None = None, reuse_port: bool = False
) -> tuple[web.AppRunner, str]:
    # A short shutdown grace: requests held by injected latency must not delay a stop for a minute.
    runner = _Runner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site: web.BaseSite
    if sock is not None:
        site = web.SockSite(runner, sock)
    else:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=1024)
    await site.start()
    bound = runner.addresses[0]
    return runner, url_of(host, int(bound[1]))


class AppThread:
    """An aiohttp app on a private event loop in a daemon thread."""

    def __init__(self, factory: AppFactory, host: str = "127.0.0.1", port: int = 0, *, name: str = "app") -> None:
        self._factory = factory
        self._host = host
        self._port = port
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"{name}-loop", daemon=True)
        self._runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.base_url = ""

    def start(self, timeout_s: float = 30.0) -> str:
        self._thread.start()

        async def boot() -> str:
            self.app = self._factory()
            self._runner, url = await _start_site(self.app, self._host, self._port)
            return url

        try:
            self.base_url = self.call(boot(), timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.base_url

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run a coroutine on the app's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout_s)

    def call_soon(self, fn: Callable[[], T], timeout_s: float = 30.0) -> T:
        """Run a plain function on the app's loop (its state is loop-confined) and wait for its result."""

        async def wrapper() -> T:
            return fn()

        return self.call(wrapper(), timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            with contextlib.suppress(Exception):
                self.call(self._runner.cleanup(), timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._loop.close()


def write_ready_file(path: str | Path, line: str) -> None:
    target = Path(path)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    tmp.write_text(line + "\n")
    tmp.replace(target)


def serve_forever(
    factory: AppFactory,
    host: str,
    port: int,
    banner: str,
    ready_file: str | None = None,
    *,
    sock: socket.socket | None = None,
    reuse_port: bool = False,
    announce: bool = True,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; prints (and writes to ``ready_file``) ``BANNER URL`` when listening."""

    async def main() -> None:
        runner, url = await _start_site(factory(), host, port, sock=sock, reuse_port=reuse_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if announce:
            line = f"{banner} {url}"
            print(line, flush=True)
            if ready_file:
                write_ready_file(ready_file, line)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            if on_stop is not None:
                await on_stop()

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 0


class ServerProcess:
    """A ``python <args>`` server subprocess that announces itself through ``--ready-file``."""

    def __init__(
        self, args: list[str], *, banner: str, timeout_s: float = 30.0, env: dict[str, str] | None = None
    ) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="emu-"))
        ready = self._tmp / "ready"
        self.log_path = self._tmp / "server.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *args, "--ready-file", str(ready)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=env,
            start_new_session=True,  # a Ctrl-C in the parent's terminal does not hit it; we stop it ourselves
        )
        self.pid = self.proc.pid
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"server exited with {self.proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise TimeoutError(f"server not ready within {timeout_s} s: {tail}")
            time.sleep(0.02)
        line = ready.read_text().strip()
        prefix = banner + " "
        if not line.startswith(prefix):
            self.stop()
            raise RuntimeError(f"unexpected ready line {line!r}")
        self.base_url = line[len(prefix) :]

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM to our own PID, SIGKILL after ``timeout_s``; returns the exit code. Idempotent."""
        stop_process(self.proc, timeout_s)
        if not self._log.closed:
            self._log.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
        atexit.unregister(self.stop)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
