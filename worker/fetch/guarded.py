"""The guarded transport: urllib3 connections that resolve, check and connect to the address they checked.

Contract of the session adapter :class:`GuardedAdapter` (mounted by the fetcher for ``http://`` and
``https://``):

* The destination is checked **after** name resolution, inside the connection step:
  :meth:`ConnectGuard.checked_addresses` resolves the host with the injected resolver (a numeric host is
  parsed, never resolved: ``worker.fetch.hosts``), refuses the whole host if *any* address is refused by the
  :class:`~worker.fetch.policy.AddressPolicy`, and the connection connects only to an address it has just
  checked — no second lookup, so no DNS rebinding between check and connect. TLS SNI and certificate
  hostname checks still use the URL's host name.
* Every connection puts a kill switch under the deadline of the fetch using it (``worker.fetch.deadline``),
  and its connect timeout never outlasts that deadline.
* Never a proxy: one would make the checked address the proxy's, not the image server's. No retries.
* A refusal is :class:`Refused`, a name that does not resolve :class:`Unresolvable`: both are
  :class:`GuardError`, deliberately not an OSError, so that urllib3 and requests let them through.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import TYPE_CHECKING, Any, ClassVar

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from worker.fetch.deadline import current_deadline
from worker.fetch.hosts import IPAddress, Resolver, parse_numeric_host
from worker.fetch.policy import AddressPolicy, embedded_v4

__all__ = ["ConnectGuard", "GuardError", "GuardedAdapter", "Refused", "Unresolvable"]


class GuardError(Exception):
    """Raised inside the connection step; deliberately not an OSError so urllib3/requests let it through."""


class Refused(GuardError):
    """The host is malformed, or one of its addresses is refused by the policy (``fetch_refused``)."""


class Unresolvable(GuardError):
    """The resolver failed or found nothing (``fetch_connection``: DNS may answer next time)."""


class ConnectGuard:
    """The policy and the resolver, as the connections of one fetcher apply them."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver) -> None:
        self.policy = policy
        self.resolver = resolver

    def checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        """Every address of ``host``, all of them allowed; raises Refused if any one is not."""
        try:
            literal = parse_numeric_host(host)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            try:
                found = self.resolver(host, port)
            except Exception as exc:  # the injected resolver's failure is a DNS failure, whatever its type
                raise Unresolvable(f"cannot resolve {host} ({type(exc).__name__})") from None
            if not found:
                raise Unresolvable(f"cannot resolve {host} (no addresses)")
            try:
                addresses = [ipaddress.ip_address(a) for a in found]
            except ValueError:
                raise Refused(f"{host} resolves to something that is not an IP address") from None
        for ip in addresses:
            reason = self.policy.refusal(ip)
            if reason is not None:
                shown = str(ip)
                if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_v4(ip)) is not None:
                    shown += f" = {inner}"
                if literal is None:
                    raise Refused(f"{host} resolves to {shown}, which is {reason}")
                raise Refused(f"{host} is {reason}" if host == shown else f"{host} ({shown}) is {reason}")
        return addresses


if TYPE_CHECKING:
    _ConnBase = HTTPConnection
else:
    _ConnBase = object


class _GuardedMixin(_ConnBase):
    _guard: ClassVar[ConnectGuard]
    _kill_switch: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        host = self._dns_host.strip("[]")
        addresses = self._guard.checked_addresses(host, self.port)
        deadline = current_deadline()
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
        deadline = current_deadline()
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
                deadline = current_deadline()
                if deadline is None or not deadline.adopt(kill):
                    kill.close()


class _GuardedHTTPConnection(_GuardedMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedMixin, HTTPSConnection):
    pass


def _pool_classes(guard: ConnectGuard) -> dict[str, type[HTTPConnectionPool]]:
    class Conn(_GuardedHTTPConnection):
        _guard = guard

    class TLSConn(_GuardedHTTPSConnection):
        _guard = guard

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConn

    return {"http": Pool, "https": TLSPool}


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools only make guarded connections and which never uses a proxy."""

    def __init__(self, guard: ConnectGuard, pool_size: int) -> None:
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
