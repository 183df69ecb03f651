"""Loopback helpers: a port the OS hands out now, and a GET on 127.0.0.1 that never goes through a proxy.

Everything the harness starts listens on 127.0.0.1; ``http_get`` ignores the environment's proxy settings
(``HTTP_PROXY`` and friends), so a probe of a local ``/readyz`` never leaves the machine.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS hands out now (for programs that cannot bind port 0 themselves, or report it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET; (0, the reason) when nothing answers. An HTTP error status is an answer."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError as exc:  # URLError is an OSError: refused, reset, timed out
        return 0, str(exc).encode()
