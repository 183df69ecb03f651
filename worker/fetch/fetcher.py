"""The fetcher: download an event's image ourselves (private buckets) without becoming an SSRF proxy.

Contract of :meth:`ImageFetcher.fetch`:

* Only ``http``/``https`` URLs without userinfo. Every hop (the first URL and each redirect target) is
  checked again, scheme included; redirects are followed here, at most ``max_redirects`` of them.
* Every connection goes through the guarded transport (``worker.fetch.guarded``): the destination is
  checked after name resolution against the address policy (``worker.fetch.policy``), and the connection
  is made to the address just checked.
* Limits: connect and read timeouts per socket operation, plus ``total_timeout`` for the whole fetch
  (``worker.fetch.deadline``). The body is capped at ``max_bytes`` (declared Content-Length first, then
  counted while streaming) and held as the byte budget allows (``worker.fetch.buffers``).
* The type comes from the magic bytes (JPEG, PNG, BMP, WEBP, TIFF: ``worker.api.images``); the declared
  Content-Type is ignored.
* No environment proxies, no ``.netrc``, no session headers, cookies or auth are ever sent.
* Every failure is an ApiError whose code is a dead-letter key (``worker.fetch.failures``).
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from worker.api.errors import ApiError
from worker.api.images import GIF, sniff_image_type
from worker.core.budget import ByteBudget
from worker.fetch.buffers import FetchedImage, ImageBuffer, ImageMemory, Slot
from worker.fetch.deadline import Deadline, fetch_deadline
from worker.fetch.failures import deadline_error, fail, gif_error, http_error, transport_error
from worker.fetch.guarded import ConnectGuard, GuardedAdapter, GuardError
from worker.fetch.hosts import Resolver, redact_url, system_resolver
from worker.fetch.policy import AddressPolicy

__all__ = ["FetchOptions", "ImageFetcher"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {
    "Accept": "image/jpeg, image/png, image/bmp, image/webp, image/tiff",
    "Accept-Encoding": "identity",  # images are compressed already; keeps the byte cap about real bytes
}
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchOptions:
    """What an :class:`ImageFetcher` is configured with (built from the settings by
    ``worker.runtime.app.fetch_options``). Raises ValueError for a limit that cannot work or an allowed
    network that is not a valid CIDR/address (naming the entry).

    ``total_timeout`` bounds one whole fetch, redirects included. ``verify`` (True, False or a CA bundle
    path) is passed on every request: REQUESTS_CA_BUNDLE must not override it. ``pool_size``: connections
    kept per image host (size it to the number of threads fetching).
    """

    max_bytes: int = 1_400_000
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    total_timeout: float = 15.0
    max_redirects: int = 3
    allow_private: bool = False
    allowed_networks: tuple[str, ...] = ()
    verify: bool | str = True
    pool_size: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.allowed_networks, str):
            raise TypeError("allowed_networks is a sequence of networks, not one string")
        object.__setattr__(self, "allowed_networks", tuple(self.allowed_networks))  # a list given stays frozen
        if self.max_bytes <= 0 or self.max_redirects < 0 or self.pool_size <= 0:
            raise ValueError("max_bytes and pool_size must be positive, max_redirects not negative")
        if min(self.connect_timeout, self.read_timeout, self.total_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        self.policy()  # a network that does not parse is refused here, not at the first fetch

    def policy(self) -> AddressPolicy:
        return AddressPolicy(allow_private=self.allow_private, allowed_networks=self.allowed_networks)


class ImageFetcher:
    """Downloads images for fetch mode; thread-safe (one instance serves the whole worker pool)."""

    def __init__(
        self,
        options: FetchOptions | None = None,
        *,
        session: requests.Session | None = None,
        resolver: Resolver = system_resolver,
        budget: ByteBudget | None = None,
    ) -> None:
        """``session`` must be dedicated to fetching: the guarded adapter is mounted on it for http:// and
        https://, and a session with any other adapter mounted is refused (ValueError), since that adapter
        would bypass the address checks. ``resolver`` looks host names up (numeric hosts never reach it).
        ``budget`` bounds the bytes of images held at once by everyone sharing it; it must hold at least
        ``options.max_bytes``. Without ``options``, the defaults of :class:`FetchOptions`."""
        self.options = options = options if options is not None else FetchOptions()
        self._memory = ImageMemory(options.max_bytes, budget)
        self.policy = options.policy()
        self._own_session = session is None
        self._session = session if session is not None else requests.Session()
        self._session.trust_env = False  # no env proxies, no .netrc credentials
        adapter = GuardedAdapter(ConnectGuard(self.policy, resolver), options.pool_size)
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, adapter)
        others = [p for p in self._session.adapters if p not in ("http://", "https://")]
        if others:
            raise ValueError(f"the fetch session has other adapters mounted ({others}); give it its own session")

    @property
    def idle_bytes(self) -> int:
        """Budget bytes held by idle buffers kept for the next downloads (reclaimed when anyone needs room)."""
        return self._memory.idle_bytes

    def close(self) -> None:
        """Close pooled connections (and the session, if this fetcher created it); unmap idle buffers."""
        self._memory.close()
        if self._own_session:
            self._session.close()
        else:
            for adapter in self._session.adapters.values():
                adapter.close()

    def __enter__(self) -> ImageFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, url: str, *, cancelled: Callable[[], bool] | None = None) -> FetchedImage:
        """Download ``url`` under the rules of the module docstring; every failure is an ApiError.

        With a budget, waits for room first: ``cancelled()`` ends that wait with ``WaitCancelled``.
        """
        slot = self._memory.slot(cancelled or _never)
        try:
            # The deadline starts once there is room: waiting for memory is not the image server's time.
            with fetch_deadline(self.options.total_timeout) as deadline:
                return self._fetch(url, deadline, slot)
        except BaseException:
            slot.drop()
            raise

    def _fetch(self, url: str, deadline: Deadline, slot: Slot) -> FetchedImage:
        current = url
        for hop in range(self.options.max_redirects + 1):
            where = redact_url(current) if hop == 0 else f"{redact_url(current)} (redirected from {redact_url(url)})"
            response = self._send(current, where, deadline)
            try:
                status = response.status_code
                location = response.headers.get("Location")
                if status in _REDIRECTS and location:
                    if hop == self.options.max_redirects:
                        raise fail(
                            "fetch_too_many_redirects",
                            f"{where} redirects again after {self.options.max_redirects} hops",
                        )
                    current = urljoin(current, _decode_location(location))
                    continue
                if not 200 <= status < 300:
                    raise http_error(status, where, response.headers.get("Retry-After"), now=time.time())
                buffer = self._read_body(response, where, deadline, slot)
            finally:
                response.close()
            kind = sniff_image_type(buffer.head())
            if kind == GIF:
                raise gif_error(where)
            if kind is None:
                size = buffer.length
                what = f"{size} bytes that are not an accepted image format" if size else "an empty body"
                raise fail("fetch_not_image", f"{where} returned {what}")
            return FetchedImage(
                data=buffer.data(), content_type=kind, final_url=current, lease=self._memory.lease(slot)
            )
        raise AssertionError("unreachable: the loop returns or raises")

    def _send(self, url: str, where: str, deadline: Deadline) -> requests.Response:
        try:
            parts = urlsplit(url)
            scheme, host = parts.scheme.lower(), parts.hostname
        except ValueError:
            raise fail("fetch_refused", f"malformed URL {where}") from None
        if scheme not in ("http", "https"):
            raise fail("fetch_refused", f"scheme {scheme or '(none)'!r} is not http or https")
        if "@" in parts.netloc:
            raise fail("fetch_refused", f"URL with userinfo refused: {where}")
        if not host:
            raise fail("fetch_refused", f"URL without a host: {where}")
        try:
            # Prepared by hand, not by the session: no session headers, auth or cookies reach image servers.
            prepared = requests.Request("GET", url, headers=_HEADERS).prepare()
        except (requests.exceptions.RequestException, ValueError, UnicodeError):
            raise fail("fetch_refused", f"malformed URL {where}") from None
        try:
            return self._session.send(
                prepared,
                stream=True,
                allow_redirects=False,
                timeout=(self.options.connect_timeout, self.options.read_timeout),
                verify=self.options.verify,
                proxies={},
            )
        except (GuardError, requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._transport_error(exc, where, deadline) from None

    def _read_body(self, response: requests.Response, where: str, deadline: Deadline, slot: Slot) -> ImageBuffer:
        max_bytes = self.options.max_bytes
        raw = response.raw
        # urllib3's own reading of the framing: None when chunked, close-delimited or Content-Length invalid.
        length = raw.length_remaining if isinstance(raw.length_remaining, int) else None
        declared = response.headers.get("Content-Length")
        claimed = int(declared) if declared is not None and declared.strip().isdigit() else length
        if claimed is not None and claimed > max_bytes:
            raise fail("fetch_too_large", f"{where} declares {claimed} bytes (limit {max_bytes})")
        encoded = response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
        buffer = self._memory.buffer_for(slot, length if not encoded else None)
        # http.client's response under urllib3's (requests reads it too, for cookies): its readinto() lets the
        # socket fill the buffer directly, where urllib3's own readinto() would read into a temporary first.
        direct = getattr(raw, "_original_response", None) if length is not None and not encoded else None
        try:
            if direct is not None and length is not None:
                buffer.fill_from(direct, length)
            else:
                for chunk in response.iter_content(chunk_size=_CHUNK):
                    if not buffer.append(chunk) or buffer.length > max_bytes:
                        raise fail("fetch_too_large", f"{where} sent more than {max_bytes} bytes")
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            raise self._transport_error(exc, where, deadline) from None
        if deadline.expired:  # the watchdog cut the body short
            raise deadline_error(where, self.options.total_timeout)
        if direct is not None:
            if buffer.length != length:
                raise fail("fetch_connection", f"{where} sent {buffer.length} of the {length} bytes it declared")
            raw.release_conn()  # read to the end behind urllib3's back: the connection may be pooled again
        slot.settle()
        return buffer

    def _transport_error(self, exc: BaseException, where: str, deadline: Deadline) -> ApiError:
        return transport_error(exc, where, expired=deadline.expired, total=self.options.total_timeout)


def _never() -> bool:
    return False


def _decode_location(location: str) -> str:
    # http.client decodes headers as latin-1; servers send UTF-8 (the same repair requests applies).
    try:
        return location.encode("latin1").decode("utf8")
    except UnicodeError:
        return location
