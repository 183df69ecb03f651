"""The one HTTP stack of both face API clients (v1 and IAI): a pooled ``requests.Session`` and one time model.

Contract:
- a call gets ``connect_timeout`` to connect and ``read_timeout`` per socket read, and the whole call —
  the body included, read under the same deadline — at most connect + read timeout: a body trickling in
  below the read timeout is cut there (``timeout``);
- every failure to get an answer is an :class:`ApiError` with a client key: ``timeout`` or ``connection``
  (a body over :data:`MAX_RESPONSE_BYTES` is ``bad_response``); an HTTP answer of any status is returned,
  its meaning is the caller's (the two APIs read statuses differently);
- a connection goes back to the pool only when its answer was read to the end;
- no state per call: one transport serves every HTTP thread of a worker.
"""

from __future__ import annotations

import dataclasses
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

import requests
import requests.auth
import urllib3
from requests.adapters import HTTPAdapter

from worker import __version__
from worker.api.errors import ApiError
from worker.api.retry_after import parse_retry_after

#: Any face API answer is a few KB; far more is not the API.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class TransportSettings(Protocol):
    """The part of a client's options the transport reads (``ClientOptions`` and ``IaiOptions`` both have it)."""

    @property
    def connect_timeout(self) -> float: ...
    @property
    def read_timeout(self) -> float: ...
    @property
    def pool_size(self) -> int: ...
    @property
    def verify(self) -> bool | str: ...
    @property
    def user_agent(self) -> str | None: ...


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    retry_after: float | None  # seconds, from a ``Retry-After`` header (delta or date), if any


class HttpTransport:
    """POSTs to one API host over one ``requests.Session`` with keep-alive; safe to share between threads.

    When ``session`` is None the transport creates one with an ``HTTPAdapter`` pool of ``pool_size``
    connections and closes it in :meth:`close`; an injected session is used as it is and left open.
    ``verify`` (True, False or a CA bundle path) is passed on every request, because ``REQUESTS_CA_BUNDLE``
    would override ``Session.verify``. Proxy and CA settings from the environment are read once, here.
    ``clock`` (Unix time) reads a ``Retry-After`` given as a date.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        pool_size: int,
        verify: bool | str,
        user_agent: str | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL with a host, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        #: The ``Host`` header as sent (port included when the URL has one): what a signature covers.
        self.host = parts.netloc.rpartition("@")[2]
        self._clock = clock
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self._session = session
        self._timeout = (connect_timeout, read_timeout)
        self._call_timeout = connect_timeout + read_timeout
        self.headers = {
            "Host": self.host,
            "User-Agent": user_agent if user_agent is not None else f"multidentify-worker/{__version__}",
        }
        for header in self.headers.items():
            requests.utils.check_header_validity(header)  # fail at start, not on every call
        # The environment lookup requests does on every call (proxies, CA bundle) is done once here;
        # an explicit verify=False or CA path survives it, verify=True becomes REQUESTS_CA_BUNDLE if set.
        self._send_settings: dict[str, Any] = dict(
            session.merge_environment_settings(self.base_url, {}, True, verify, None)
        )  # stream=True: the body is read under the call's deadline (_read_body)

    @classmethod
    def configured(
        cls,
        base_url: str,
        options: TransportSettings,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> HttpTransport:
        """A transport to ``base_url`` with a client's timeouts, pool, TLS and user agent."""
        return cls(
            base_url,
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            pool_size=options.pool_size,
            verify=options.verify,
            user_agent=options.user_agent,
            session=session,
            clock=clock,
        )

    def prepare(self, path: str, headers: dict[str, str], body: Any) -> requests.PreparedRequest:
        """A POST to ``path`` with the transport's ``Host`` and ``User-Agent`` and ``headers`` on top."""
        url = self.base_url + path
        request = requests.Request("POST", url, headers={**self.headers, **headers}, data=body, auth=_SIGNED)
        return self._session.prepare_request(request)

    def send(self, prepared: requests.PreparedRequest) -> Answer:
        deadline = time.monotonic() + self._call_timeout
        try:
            response = self._session.send(prepared, timeout=self._timeout, allow_redirects=False, **self._send_settings)
            body = _read_body(response, deadline)
            delay = parse_retry_after(response.headers.get("Retry-After"), now=self._clock())
            return Answer(response.status_code, body, delay)
        except requests.Timeout as exc:
            raise ApiError.local("timeout", f"no answer within {self._timeout} s (connect, read): {exc}") from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError.local("connection", f"{type(exc).__name__}: {exc}"[:500]) from exc

    def close(self) -> None:
        """Close the session if this transport created it (an injected session belongs to the caller)."""
        if self._owns_session:
            self._session.close()


class _Signed(requests.auth.AuthBase):
    """The request carries its own ``Authorization`` (a signature). Without an auth of its own, requests reads
    ``~/.netrc`` on every call and puts Basic auth over that header for any host listed there."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


_SIGNED = _Signed()


def _read_body(response: requests.Response, deadline: float) -> bytes:
    """The whole body by the call's deadline; the connection goes back to the pool only when read to the end."""
    raw = response.raw
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            if time.monotonic() > deadline:
                raise ApiError.local("timeout", "the answer's body did not arrive within the call's time budget")
            chunk = raw.read1(65536, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise ApiError.local("bad_response", f"answer larger than {MAX_RESPONSE_BYTES} bytes")
            chunks.append(chunk)
    except BaseException:
        response.close()  # half-read: the connection cannot be reused
        raise
    raw.release_conn()
    return b"".join(chunks)
