"""Fetch mode: download an event's image ourselves (private buckets) without becoming an SSRF proxy.

Contract of :meth:`ImageFetcher.fetch`:

* Only ``http``/``https`` URLs without userinfo. Every hop (the first URL and each redirect target) is
  checked again, scheme included; redirects are followed here, at most ``max_redirects`` of them.
* The destination is checked **after** name resolution, inside the connection step: the guarded urllib3
  connection resolves the host with the injected resolver, refuses the whole host if *any* address is
  refused, and connects only to an address it has just checked (no second lookup, so no DNS rebinding
  between check and connect). TLS SNI and certificate hostname checks still use the URL's host name.
  Numeric hosts in any spelling (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``, ``[::ffff:7f00:1]``)
  are parsed here like a browser would and never reach the resolver.
* Refused destinations: loopback, RFC 1918, CGNAT 100.64/10, link-local, unique-local, site-local,
  multicast, unspecified, documentation, benchmarking, reserved and non-global IPv6 space, the same
  behind IPv4-mapped / NAT64 / IPv4-compatible IPv6 forms, and the cloud metadata addresses (``METADATA``).
  ``allow_private`` re-admits only the private kinds (loopback, RFC 1918, CGNAT, link-local, ULA,
  site-local). ``allowed_networks`` re-admits anything inside the listed networks, except metadata
  addresses: those pass only when listed as a single host (``"169.254.169.254/32"``), never via a wider
  network that happens to contain them.
* Limits: connect and read timeouts per socket operation, plus ``total_timeout`` for the whole fetch
  (redirects, TLS handshake, headers and body): a watchdog shuts the socket down at the deadline, so a
  trickling server cannot hold a thread. The body is capped at ``max_bytes`` (declared Content-Length
  first, then counted while streaming).
* The type comes from magic bytes (JPEG, PNG, BMP, WEBP, TIFF); the declared Content-Type is ignored.
* No environment proxies, no ``.netrc``, no session cookies or auth are ever sent.
* Memory: the body goes into one buffer of its own, an anonymous memory mapping. With a declared length
  (and no content encoding) it is a mapping of that size, faulted in at once, and the socket reads
  straight into it: no chunks, no copy. Otherwise it has room for ``max_bytes`` + 1 (pages never written
  are never resident) and the chunks are copied in as they arrive. ``data`` is a read-only view of it.
  With a ``budget`` (:class:`~worker.core.budget.ByteBudget`) every resident byte of every buffer is
  reserved in it: ``fetch`` first reserves ``max_bytes`` — waiting
  for room *before* it connects or starts its deadline, and ending the wait with
  :class:`~worker.core.budget.WaitCancelled` when the caller's ``cancelled()`` says so — then keeps only
  what the declared length and then the body need. A failed fetch unmaps its buffer and gives everything
  back; a successful one holds the image until :meth:`FetchedImage.release`, after which the buffer is
  kept for the next download (still reserved: up to 16, never while a download waits for room, reclaimed
  by one that does) or unmapped. malloc'd bodies would not keep this bound: arenas kept the pages of
  released images resident (measured: 40–60 MB above the budget at in-flight 256); fresh mappings keep it
  but cost page faults (about 1 ms per 1.3 MB event), which reusing them avoids. Without a budget each
  buffer is unmapped on release.

Every failure is an :class:`~worker.api.errors.ApiError` whose code is a dead-letter key (``FETCH_CODES``):

    fetch_refused             permanent  scheme, userinfo, malformed URL/host, or a refused address
    fetch_http_<status>       408/429/5xx transient, every other status permanent (401/403 included:
                                         a forbidden image is this event's problem, not the pipeline's)
    fetch_timeout             transient  connect/read timeout or the total deadline
    fetch_connection          transient  DNS failure, refused/reset connection, broken transfer
    fetch_tls                 permanent  the server's certificate failed verification
    fetch_too_large           permanent  more than max_bytes
    fetch_not_image           permanent  empty body or not one of the accepted formats
    fetch_too_many_redirects  permanent  more than max_redirects hops
    -1400                     permanent  a GIF: the service code the API itself answers for GIF, so url
                                         and fetch mode dead-letter the same image under the same key

Fetch errors leave ``http_status`` unset: it describes the face API's answers (the rate limiter reads 429
from it), not the image server's. Messages name the host and path only (``redact_url``): query strings
carry signatures and are never included, and the transport exception is not chained.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import ipaddress
import itertools
import mmap
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.ssl_match_hostname import CertificateError as HostnameMismatch

from worker.api.codes import FETCH_CODES, ErrorClass, class_of_fetch_status
from worker.api.errors import ApiError
from worker.core.budget import ByteBudget, Reservation

__all__ = [
    "FETCH_CODES",
    "METADATA",
    "AddressPolicy",
    "FetchedImage",
    "ImageFetcher",
    "Resolver",
    "parse_numeric_host",
    "redact_url",
    "sniff_image_type",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Cloud instance-metadata endpoints: credentials live behind them. Refused even when allow_private is set.
METADATA: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean, Hetzner, Huawei
        "169.254.170.2",  # AWS ECS task metadata / credentials
        "169.254.170.23",  # AWS EKS Pod Identity agent
        "169.254.0.23",  # Tencent Cloud (metadata.tencentyun.com)
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer (a public address, so only this list catches it)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity over IPv6
        "fd20:ce::254",  # GCP metadata over IPv6
    )
)

_PRIVATE_KINDS = frozenset({"loopback", "private", "shared (CGNAT)", "link-local", "unique-local", "site-local"})


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(net), kind) for net, kind in pairs)


# IANA special-purpose registries, most specific first where ranges nest.
_V4_KINDS = _nets(
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes 255.255.255.255
)
_V6_KINDS = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "reserved"),  # deprecated IPv4-compatible form
    ("64:ff9b:1::/48", "private"),  # local-use NAT64
    ("100::/64", "reserved"),  # discard-only
    ("2001::/23", "reserved"),  # IETF protocol assignments, Teredo
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "reserved"),  # 6to4 embeds an IPv4 address
    ("3fff::/20", "documentation"),
    ("5f00::/16", "reserved"),  # SRv6 SIDs
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 socket would really reach (IPv4-mapped or well-known NAT64 prefix)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _kind(ip: IPAddress) -> str:
    """``"public"`` or the name of the special-purpose range ``ip`` belongs to."""
    if ip in METADATA:
        return "metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            return _kind(inner)
        for net, kind in _V6_KINDS:
            if ip in net:
                return kind
        return "public" if ip in _V6_GLOBAL_UNICAST else "reserved"
    for net, kind in _V4_KINDS:
        if ip in net:
            return kind
    return "public" if ip.is_global else "reserved"


class AddressPolicy:
    """Which resolved addresses a fetch may connect to (pure; see the module docstring for the rules)."""

    def __init__(self, *, allow_private: bool = False, allowed_networks: Sequence[str] = ()) -> None:
        """Raises ValueError naming the entry when an allowed network is not a valid CIDR/address."""
        self.allow_private = allow_private
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allowed_networks:
            try:
                nets.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"allowed_networks: {entry!r} is not a network: {exc}") from None
        self.allowed_networks = tuple(nets)

    def refusal(self, ip: IPAddress) -> str | None:
        """None when ``ip`` may be connected to, else the kind that refuses it (``"private"``, ``"metadata"``…)."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            return "scoped IPv6"
        kind = _kind(ip)
        forms: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_v4(ip)) is not None:
            forms.append(inner)
        if kind == "metadata":
            listed = any(net.num_addresses == 1 and f in net for net in self.allowed_networks for f in forms)
            return None if listed else kind
        if kind == "public" or (self.allow_private and kind in _PRIVATE_KINDS):
            return None
        if any(f in net for net in self.allowed_networks for f in forms):
            return None
        return kind


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    if last.isascii() and last.isdigit():
        return True
    return last[:2].lower() == "0x" and all(c in "0123456789abcdefABCDEF" for c in last[2:])


def _ipv4_part(text: str) -> int | None:
    if text[:2].lower() == "0x":
        digits, base = text[2:] or "0", 16
    elif len(text) > 1 and text.startswith("0"):
        digits, base = text[1:], 8
    else:
        digits, base = text, 10
    if not digits.isascii() or not digits.isalnum():
        return None
    try:
        return int(digits, base)
    except ValueError:
        return None


def parse_numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host denotes (WHATWG URL rules, which is what inet_aton accepts too).

    ``"2130706433"``, ``"0x7f.1"``, ``"0177.0.0.1"`` and ``"127.1"`` all give 127.0.0.1; ``"[::1]"`` gives ::1.
    Returns None for a host name. Raises ValueError for a host that looks numeric but is not a valid address
    (such a host must not be handed to a resolver, which might read it differently).
    """
    host = host.strip("[]") if host.startswith("[") else host
    if ":" in host:
        return ipaddress.IPv6Address(host)  # ValueError when malformed
    labels = host.split(".")
    if labels and labels[-1] == "" and len(labels) > 1:
        labels.pop()
    if not labels or not _ends_in_number(labels):
        return None
    parts = [_ipv4_part(label) if label else None for label in labels]
    if len(parts) > 4 or any(p is None for p in parts):
        raise ValueError(f"malformed numeric host {host!r}")
    nums = [p for p in parts if p is not None]
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        raise ValueError(f"numeric host {host!r} is out of range")
    value = nums[-1]
    for i, n in enumerate(nums[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def system_resolver(host: str, port: int) -> list[str]:
    """Default resolver: every TCP address ``socket.getaddrinfo`` returns, in order, without duplicates."""
    out: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        addr = str(sockaddr[0])
        if addr not in out:
            out.append(addr)
    return out


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` for messages and logs: no userinfo, query or fragment (they carry tokens)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<malformed url>"
    if ":" in host:
        host = f"[{host}]"
    path = parts.path if len(parts.path) <= 200 else parts.path[:200] + "…"
    return f"{parts.scheme}://{host}{f':{port}' if port is not None else ''}{path}"


def sniff_image_type(data: bytes | bytearray | memoryview) -> str | None:
    """The MIME type the magic bytes show (``image/gif`` included, so callers can refuse it), else None."""
    data = bytes(data[:26])  # every check below looks at the first 26 bytes at most
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data.startswith(b"BM") and len(data) >= 26:
        return "image/bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    return None


# Pre-faulting a mapping in the call that creates it costs about half of taking its page faults one by one
# as the body comes in (0.7 vs 1.2 ms for 1.3 MB, measured on the 2-core benchmark VM).
_POPULATE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)


class _ImageBuffer:
    """Room for one image: an anonymous mapping of ``capacity`` bytes, filled as the body streams in.

    Pages are resident once written (or all at once when ``populate``) and stay so while the mapping is
    reused: ``resident`` is how many bytes that is, what the mapping costs in memory (its reservation never
    holds less). Views are made on demand and never kept here, so "is any view of it alive?" has a precise
    answer.
    """

    __slots__ = ("_map", "length", "resident")

    def __init__(self, capacity: int, *, populate: bool = False) -> None:
        capacity = max(capacity, 1)  # a zero-length mapping is not allowed
        self._map = mmap.mmap(-1, capacity, flags=_POPULATE) if populate else mmap.mmap(-1, capacity)
        self.length = 0
        self.resident = capacity if populate else 0

    @property
    def capacity(self) -> int:
        return len(self._map)

    def append(self, chunk: bytes) -> bool:
        """Copy ``chunk`` in after what is there; False (nothing copied) when it does not fit."""
        end = self.length + len(chunk)
        if end > len(self._map):
            return False
        with memoryview(self._map) as view:
            view[self.length : end] = chunk
        self._wrote(end)
        return True

    def fill_from(self, source: Any, limit: int) -> None:
        """``source.readinto`` straight into the mapping until ``limit`` bytes are in or the source ends."""
        with memoryview(self._map) as view:
            while self.length < limit:
                n = source.readinto(view[self.length : limit])
                if not n:
                    break
                self._wrote(self.length + n)

    def _wrote(self, end: int) -> None:
        self.length = end
        self.resident = max(self.resident, end)

    def head(self) -> bytes:
        """The first bytes (where every format's signature is), copied."""
        return self._map[: min(self.length, 32)]

    def data(self) -> memoryview:
        """A read-only view of the bytes in; release it before the buffer is reused or closed."""
        with memoryview(self._map) as view:
            return view[: self.length].toreadonly()

    def unused(self) -> bool:
        """True when no view of the mapping is alive anywhere (resizing is refused while one is)."""
        try:
            self._map.resize(len(self._map))  # same size: a no-op, but checked against live views
        except BufferError:
            return False
        return True

    def close(self) -> None:
        """Unmap now; if a view is still alive somewhere (an exception's traceback), once the last one goes."""
        with contextlib.suppress(BufferError):
            self._map.close()


class _BufferPool:
    """Idle mappings kept for the next download, each holding a reservation of its ``resident`` bytes.

    A fresh mapping costs its page faults and its unmapping: for 1.3 MB images about 1 ms of worker CPU
    per event (measured: a fifth of it in fetch mode). Reusing a mapping costs neither, and since an idle
    mapping keeps its reservation, memory stays within the budget. At most ``size`` are kept, none while a
    download waits for room (it would be waiting for them), and a waiting download reclaims them: when the
    budget binds, every download maps afresh.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._idle: list[tuple[_ImageBuffer, Reservation]] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[_ImageBuffer, Reservation] | None:
        with self._lock:
            return self._idle.pop() if self._idle else None  # the most recently used: its pages are warm

    def put(self, buffer: _ImageBuffer, hold: Reservation, *, keep: bool) -> None:
        """Keep ``buffer`` for reuse when ``keep`` and there is space, else unmap it and give its bytes back."""
        buffer.length = 0
        if keep and buffer.unused():
            hold.shrink(min(hold.size, buffer.resident))
            with self._lock:
                if len(self._idle) < self._size:
                    self._idle.append((buffer, hold))
                    return
        buffer.close()
        hold.release()

    def shut(self) -> None:
        """Keep nothing from now on (images still out are unmapped when released) and unmap the idle."""
        with self._lock:
            self._size = 0
        self.clear()

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for buffer, hold in idle:
            buffer.close()
            hold.release()

    @property
    def idle_bytes(self) -> int:
        with self._lock:
            return sum(hold.size for _, hold in self._idle)


_GiveBack = Callable[[_ImageBuffer, Reservation | None], None]


class _Slot:
    """What one download holds: a reservation (with a budget) and a buffer, chosen once the headers are in
    (an idle one taken at the start is kept if it is large enough)."""

    __slots__ = ("buffer", "hold")

    def __init__(self, buffer: _ImageBuffer | None, hold: Reservation | None) -> None:
        self.buffer = buffer
        self.hold = hold

    def drop(self) -> None:
        if self.buffer is not None:
            self.buffer.close()
        if self.hold is not None:
            self.hold.release()


class _Lease:
    """A fetched image's buffer and reservation, handed back to the fetcher exactly once."""

    __slots__ = ("_done", "_give_back", "buffer", "hold")

    def __init__(self, buffer: _ImageBuffer, hold: Reservation | None, give_back: _GiveBack) -> None:
        self.buffer = buffer
        self.hold = hold
        self._give_back = give_back
        self._done = False

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._give_back(self.buffer, self.hold)


@dataclass(frozen=True)
class FetchedImage:
    """A downloaded image. ``final_url`` is the last hop, query included: redact it before logging.

    ``data`` is a read-only view of the one buffer the body went into (see the module docstring). Call
    :meth:`release` once done with the image: ``data`` becomes unusable, and the buffer goes back to the
    fetcher (kept for the next download, or unmapped) with its bytes counted in, or given back to, the
    budget. Idempotent.
    """

    data: bytes | memoryview = field(repr=False)
    content_type: str  # from the magic bytes, never from the server's header
    final_url: str
    lease: _Lease | None = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        if isinstance(self.data, memoryview):
            with contextlib.suppress(BufferError):  # being read right now: the buffer will not be reused
                self.data.release()
        if self.lease is not None:
            self.lease.release()


# --- deadline: one watchdog thread shuts down the sockets of fetches that ran out of time ---------------


class _Deadline:
    """The time budget of one fetch and the sockets (kill switches) of the connections it used."""

    __slots__ = ("_adopted", "_lock", "_socks", "at", "done", "expired")

    def __init__(self, at: float) -> None:
        self.at = at
        self.expired = False
        self.done = False
        self._socks: list[socket.socket] = []
        self._adopted: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                _shutdown(sock)
            elif not self.done and all(s is not sock for s in self._socks):
                self._socks.append(sock)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            socks, self._socks = self._socks, []
        for sock in socks:
            _shutdown(sock)

    def adopt(self, sock: socket.socket) -> bool:
        """Close ``sock`` when this fetch ends; False (caller closes it) if the fetch has ended already."""
        with self._lock:
            if not self.done:
                self._adopted.append(sock)
            return not self.done

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self._socks = []
            adopted, self._adopted = self._adopted, []
        for sock in adopted:
            sock.close()


def _shutdown(sock: socket.socket) -> None:
    # shutdown() acts on the connection, so it also wakes a thread blocked in TLS on the wrapped socket.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """A single daemon thread firing deadlines in time order (lazy deletion of finished ones)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, deadline: _Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.at, next(self._seq), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        due = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(delay)
            due.fire()


_WATCHDOG = _Watchdog()
_current = threading.local()  # .deadline: the _Deadline of the fetch running on this thread


def _current_deadline() -> _Deadline | None:
    return getattr(_current, "deadline", None)


# --- the guarded connection: resolve, check, connect to the checked address -------------------------------


class _GuardError(Exception):
    """Raised inside the connection step; deliberately not an OSError so urllib3/requests let it through."""


class _Refused(_GuardError):
    pass


class _Unresolvable(_GuardError):
    pass


class _ConnectGuard:
    def __init__(self, policy: AddressPolicy, resolver: Resolver) -> None:
        self.policy = policy
        self.resolver = resolver

    def checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        """Every address of ``host``, all of them allowed; raises _Refused if any one is not."""
        try:
            literal = parse_numeric_host(host)
        except ValueError as exc:
            raise _Refused(str(exc)) from None
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            try:
                found = self.resolver(host, port)
            except Exception as exc:  # the injected resolver's failure is a DNS failure, whatever its type
                raise _Unresolvable(f"cannot resolve {host} ({type(exc).__name__})") from None
            if not found:
                raise _Unresolvable(f"cannot resolve {host} (no addresses)")
            try:
                addresses = [ipaddress.ip_address(a) for a in found]
            except ValueError:
                raise _Refused(f"{host} resolves to something that is not an IP address") from None
        for ip in addresses:
            reason = self.policy.refusal(ip)
            if reason is not None:
                shown = str(ip)
                if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_v4(ip)) is not None:
                    shown += f" = {inner}"
                if literal is None:
                    raise _Refused(f"{host} resolves to {shown}, which is {reason}")
                raise _Refused(f"{host} is {reason}" if host == shown else f"{host} ({shown}) is {reason}")
        return addresses


if TYPE_CHECKING:
    _ConnBase = HTTPConnection
else:
    _ConnBase = object


class _GuardedMixin(_ConnBase):
    _guard: ClassVar[_ConnectGuard]
    _kill_switch: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        host = self._dns_host.strip("[]")
        addresses = self._guard.checked_addresses(host, self.port)
        deadline = _current_deadline()
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        if deadline is not None:
            left = deadline.remaining()
            if left <= 0:
                raise urllib3.exceptions.ConnectTimeoutError(self, f"Connection to {self.host} timed out (deadline)")
            timeout = left if timeout is None else min(timeout, left)
        error: Exception | None = None
        for ip in addresses:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect((str(ip), self.port))
            except TimeoutError as exc:
                sock.close()
                error = urllib3.exceptions.ConnectTimeoutError(self, f"Connection to {self.host} timed out")
                error.__cause__ = exc
                continue
            except OSError as exc:
                sock.close()
                error = urllib3.exceptions.NewConnectionError(self, f"Failed to establish a new connection: {exc}")
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            # A duplicate descriptor lets the watchdog shut the connection down even once TLS has wrapped
            # (and detached) the original socket object.
            self._kill_switch = sock.dup()
            if deadline is not None:
                deadline.attach(self._kill_switch)
            return sock
        assert error is not None
        raise error

    def request(self, *args: Any, **kwargs: Any) -> None:
        # A pooled connection is reused by a later fetch: put it under that fetch's deadline.
        deadline = _current_deadline()
        if deadline is not None and self._kill_switch is not None:
            deadline.attach(self._kill_switch)
        super().request(*args, **kwargs)

    def close(self) -> None:
        try:
            super().close()
        finally:
            # http.client "closes" the connection as soon as a response says Connection: close, while that
            # response is still being read: the running fetch keeps the kill switch until it ends.
            kill, self._kill_switch = self._kill_switch, None
            if kill is not None:
                deadline = _current_deadline()
                if deadline is None or not deadline.adopt(kill):
                    kill.close()


class _GuardedHTTPConnection(_GuardedMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedMixin, HTTPSConnection):
    pass


def _pool_classes(guard: _ConnectGuard) -> dict[str, type[HTTPConnectionPool]]:
    class Conn(_GuardedHTTPConnection):
        _guard = guard

    class TLSConn(_GuardedHTTPSConnection):
        _guard = guard

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConn

    return {"http": Pool, "https": TLSPool}


class _GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools only make guarded connections and which never uses a proxy."""

    def __init__(self, guard: _ConnectGuard, pool_size: int) -> None:
        self._guard = guard
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._guard)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        # A proxy would make the checked address the proxy's, not the image server's.
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=None)


# --- the fetcher ---------------------------------------------------------------------------------------------

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {
    "Accept": "image/jpeg, image/png, image/bmp, image/webp, image/tiff",
    "Accept-Encoding": "identity",  # images are compressed already; keeps the byte cap about real bytes
}
_CHUNK = 64 * 1024
_POOL_SIZE = 16  # idle buffers kept at most (fewer when the budget holds fewer images of max_bytes)


def _never() -> bool:
    return False


def _fail(code: str, message: str, *, retry_after: float | None = None) -> ApiError:
    assert code in FETCH_CODES, code  # the registry (worker.api.codes) lists every fetch key
    return ApiError.fetch(code, message, retry_after=retry_after)


def _http_error(status: int, where: str, retry_after: str | None) -> ApiError:
    transient = class_of_fetch_status(status) is ErrorClass.TRANSIENT
    delay: float | None = None
    if transient and retry_after and retry_after.strip().isdigit():
        delay = float(retry_after.strip())
    return ApiError.fetch(f"fetch_http_{status}", f"{where} answered HTTP {status}", retry_after=delay)


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """The exception and what it wraps (args, urllib3's .reason, __cause__), bounded."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        todo.extend(a for a in e.args if isinstance(a, BaseException))
        for attr in ("reason", "__cause__"):
            inner = getattr(e, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
    return seen


def _certificate_problem(exc: BaseException) -> str | None:
    for e in _chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return str(e.verify_message or "certificate verify failed")
        if isinstance(e, HostnameMismatch):
            return "hostname mismatch"
    return None


class ImageFetcher:
    """Downloads images for fetch mode; thread-safe (one instance serves the whole worker pool)."""

    def __init__(
        self,
        *,
        session: requests.Session | None = None,
        max_bytes: int = 1_400_000,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        total_timeout: float = 15.0,
        max_redirects: int = 3,
        allow_private: bool = False,
        allowed_networks: Sequence[str] = (),
        resolver: Resolver = system_resolver,
        verify: bool | str = True,
        pool_size: int = 64,
        budget: ByteBudget | None = None,
    ) -> None:
        """``session`` must be dedicated to fetching: the guarded adapter is mounted on it for http:// and
        https://, and a session with any other adapter mounted is refused (ValueError), since that adapter
        would bypass the address checks. ``total_timeout`` bounds one whole fetch, redirects included.
        ``verify`` is passed on every request (REQUESTS_CA_BUNDLE must not override it). ``budget`` bounds
        the bytes of images held at once by everyone sharing it; it must hold at least ``max_bytes``."""
        if max_bytes <= 0 or max_redirects < 0 or pool_size <= 0:
            raise ValueError("max_bytes and pool_size must be positive, max_redirects not negative")
        if min(connect_timeout, read_timeout, total_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if budget is not None and budget.capacity < max_bytes:
            raise ValueError(f"a budget of {budget.capacity} bytes cannot hold one image of max_bytes {max_bytes}")
        self._budget = budget
        # Only with a budget: idle mappings are memory, and the budget is what counts and reclaims it.
        self._pool = _BufferPool(min(_POOL_SIZE, budget.capacity // max_bytes)) if budget is not None else None
        if budget is not None and self._pool is not None:
            budget.add_reclaimer(self._pool.clear)  # a download waiting for room takes it from idle buffers
        self.policy = AddressPolicy(allow_private=allow_private, allowed_networks=allowed_networks)
        self._max_bytes = max_bytes
        self._timeout = (connect_timeout, read_timeout)
        self._total = total_timeout
        self._max_redirects = max_redirects
        self._verify = verify
        self._own_session = session is None
        self._session = session if session is not None else requests.Session()
        self._session.trust_env = False  # no env proxies, no .netrc credentials
        adapter = _GuardedAdapter(_ConnectGuard(self.policy, resolver), pool_size)
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, adapter)
        others = [p for p in self._session.adapters if p not in ("http://", "https://")]
        if others:
            raise ValueError(f"the fetch session has other adapters mounted ({others}); give it its own session")

    @property
    def idle_bytes(self) -> int:
        """Budget bytes held by idle buffers kept for the next downloads (reclaimed when anyone needs room)."""
        return self._pool.idle_bytes if self._pool is not None else 0

    def close(self) -> None:
        """Close pooled connections (and the session, if this fetcher created it); unmap idle buffers."""
        if self._pool is not None:
            if self._budget is not None:
                self._budget.remove_reclaimer(self._pool.clear)
            self._pool.shut()
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
        slot = self._lease(cancelled or _never)
        try:
            # The deadline starts once there is room: waiting for memory is not the image server's time.
            deadline = _Deadline(time.monotonic() + self._total)
            outer = _current_deadline()
            _current.deadline = deadline
            _WATCHDOG.schedule(deadline)
            try:
                return self._fetch(url, deadline, slot)
            finally:
                deadline.finish()
                _current.deadline = outer
        except BaseException:
            slot.drop()  # failures are rare: nothing of theirs is kept
            raise

    def _lease(self, cancelled: Callable[[], bool]) -> _Slot:
        """With a budget, a reservation of ``max_bytes`` (and an idle buffer when one is kept)."""
        if self._budget is None or self._pool is None:
            return _Slot(None, None)
        idle = self._pool.take()
        if idle is not None:
            buffer, hold = idle
            if hold.try_grow(self._max_bytes):  # its pages are counted in this reservation from now on
                return _Slot(buffer, hold)
            self._pool.put(buffer, hold, keep=False)  # others are waiting for room: theirs first
        return _Slot(None, self._budget.acquire(self._max_bytes, cancelled=cancelled))

    def _fit(self, slot: _Slot, length: int | None) -> _ImageBuffer:
        """The slot's buffer for a body of ``length`` bytes (None: not known, up to ``max_bytes``)."""
        need = length if length is not None else self._max_bytes + 1
        buffer = slot.buffer
        if buffer is None or buffer.capacity < need:
            if buffer is not None:
                buffer.close()
            # A known length fills the whole mapping: fault it in at once. An unknown one may use little of it.
            buffer = slot.buffer = _ImageBuffer(need, populate=length is not None)
        if slot.hold is not None and length is not None:
            slot.hold.shrink(max(length, buffer.resident))  # the reservation always covers the resident pages
        return buffer

    def _give_back(self, buffer: _ImageBuffer, hold: Reservation | None) -> None:
        if hold is None or self._pool is None or self._budget is None:
            buffer.close()
            if hold is not None:
                hold.release()
            return
        self._pool.put(buffer, hold, keep=self._budget.waiting == 0)

    def _fetch(self, url: str, deadline: _Deadline, slot: _Slot) -> FetchedImage:
        current = url
        for hop in range(self._max_redirects + 1):
            where = redact_url(current) if hop == 0 else f"{redact_url(current)} (redirected from {redact_url(url)})"
            response = self._send(current, where, deadline)
            try:
                status = response.status_code
                location = response.headers.get("Location")
                if status in _REDIRECTS and location:
                    if hop == self._max_redirects:
                        raise _fail(
                            "fetch_too_many_redirects", f"{where} redirects again after {self._max_redirects} hops"
                        )
                    current = urljoin(current, _decode_location(location))
                    continue
                if not 200 <= status < 300:
                    raise _http_error(status, where, response.headers.get("Retry-After"))
                buffer = self._read_body(response, where, deadline, slot)
            finally:
                response.close()
            kind = sniff_image_type(buffer.head())
            if kind == "image/gif":
                raise ApiError.from_service(-1400, f"{where} is a GIF, which the API refuses (-1400)")
            if kind is None:
                size = buffer.length
                what = f"{size} bytes that are not an accepted image format" if size else "an empty body"
                raise _fail("fetch_not_image", f"{where} returned {what}")
            lease = _Lease(buffer, slot.hold, self._give_back)
            return FetchedImage(data=buffer.data(), content_type=kind, final_url=current, lease=lease)
        raise AssertionError("unreachable: the loop returns or raises")

    def _send(self, url: str, where: str, deadline: _Deadline) -> requests.Response:
        try:
            parts = urlsplit(url)
            scheme, host = parts.scheme.lower(), parts.hostname
        except ValueError:
            raise _fail("fetch_refused", f"malformed URL {where}") from None
        if scheme not in ("http", "https"):
            raise _fail("fetch_refused", f"scheme {scheme or '(none)'!r} is not http or https")
        if "@" in parts.netloc:
            raise _fail("fetch_refused", f"URL with userinfo refused: {where}")
        if not host:
            raise _fail("fetch_refused", f"URL without a host: {where}")
        try:
            # Prepared by hand, not by the session: no session headers, auth or cookies reach image servers.
            prepared = requests.Request("GET", url, headers=_HEADERS).prepare()
        except (requests.exceptions.RequestException, ValueError, UnicodeError):
            raise _fail("fetch_refused", f"malformed URL {where}") from None
        try:
            return self._session.send(
                prepared,
                stream=True,
                allow_redirects=False,
                timeout=self._timeout,
                verify=self._verify,
                proxies={},
            )
        except (_GuardError, requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._transport_error(exc, where, deadline) from None

    def _read_body(
        self,
        response: requests.Response,
        where: str,
        deadline: _Deadline,
        slot: _Slot,
    ) -> _ImageBuffer:
        raw = response.raw
        # urllib3's own reading of the framing: None when chunked, close-delimited or Content-Length invalid.
        length = raw.length_remaining if isinstance(raw.length_remaining, int) else None
        declared = response.headers.get("Content-Length")
        claimed = int(declared) if declared is not None and declared.strip().isdigit() else length
        if claimed is not None and claimed > self._max_bytes:
            raise _fail("fetch_too_large", f"{where} declares {claimed} bytes (limit {self._max_bytes})")
        encoded = response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
        buffer = self._fit(slot, length if not encoded else None)
        # http.client's response under urllib3's (requests reads it too, for cookies): its readinto() lets the
        # socket fill the buffer directly, where urllib3's own readinto() would read into a temporary first.
        direct = getattr(raw, "_original_response", None) if length is not None and not encoded else None
        try:
            if direct is not None and length is not None:
                buffer.fill_from(direct, length)
            else:
                for chunk in response.iter_content(chunk_size=_CHUNK):
                    if not buffer.append(chunk) or buffer.length > self._max_bytes:
                        raise _fail("fetch_too_large", f"{where} sent more than {self._max_bytes} bytes")
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            raise self._transport_error(exc, where, deadline) from None
        if deadline.expired:  # the watchdog cut the body short
            raise self._deadline_error(where)
        if direct is not None:
            if buffer.length != length:
                raise _fail("fetch_connection", f"{where} sent {buffer.length} of the {length} bytes it declared")
            raw.release_conn()  # read to the end behind urllib3's back: the connection may be pooled again
        if slot.hold is not None:
            slot.hold.shrink(max(buffer.length, buffer.resident))
        return buffer

    def _deadline_error(self, where: str) -> ApiError:
        return _fail("fetch_timeout", f"{where} did not finish within {self._total:g} s")

    def _transport_error(self, exc: BaseException, where: str, deadline: _Deadline) -> ApiError:
        """Map a transport failure to a code; never uses str(exc), which may contain the full URL."""
        if deadline.expired:
            return self._deadline_error(where)
        if isinstance(exc, _Refused):
            return _fail("fetch_refused", f"{where} refused: {exc}")
        if isinstance(exc, _Unresolvable):
            return _fail("fetch_connection", f"{where}: {exc}")
        if isinstance(exc, requests.exceptions.SSLError):
            problem = _certificate_problem(exc)
            if problem is not None:
                return _fail("fetch_tls", f"{where}: TLS certificate verification failed ({problem})")
            return _fail("fetch_connection", f"{where}: TLS handshake failed")
        if any(
            isinstance(e, requests.exceptions.Timeout | urllib3.exceptions.TimeoutError | TimeoutError)
            # urllib3's NewConnectionError subclasses ConnectTimeoutError for history's sake: a refusal is not a timeout
            and not isinstance(e, urllib3.exceptions.NewConnectionError)
            for e in _chain(exc)
        ):
            return _fail("fetch_timeout", f"{where}: connect or read timed out")
        return _fail("fetch_connection", f"{where}: transfer failed ({type(exc).__name__})")


def _decode_location(location: str) -> str:
    # http.client decodes headers as latin-1; servers send UTF-8 (the same repair requests applies).
    try:
        return location.encode("latin1").decode("utf8")
    except UnicodeError:
        return location
