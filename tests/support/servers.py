"""Small HTTP(S) servers for tests: on 127.0.0.1 with a port the OS picks, served from a daemon thread.

``serving(server)`` runs a ``ThreadingHTTPServer`` for the block and shuts it down (the thread joined within
5 s) however the block ends; with ``certfile`` (a PEM with the certificate and its key) it speaks TLS.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

S = TypeVar("S", bound=ThreadingHTTPServer)


@contextlib.contextmanager
def serving(server: S, certfile: Path | None = None) -> Iterator[S]:
    """Serve ``server`` in a daemon thread for the block (TLS with ``certfile``); yields it."""
    server.daemon_threads = True
    if certfile is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def loopback_server(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A server for ``handler`` on 127.0.0.1, port chosen by the OS (not serving yet: see :func:`serving`)."""
    return ThreadingHTTPServer(("127.0.0.1", 0), handler)
