"""A tripwire on this process's sockets: any connect or name lookup that is not loopback fails the test.

Tests of address refusals must prove that nothing was sent anywhere else, not just that an error came back.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest


def is_loopback(host: Any) -> bool:
    if str(host) == "localhost":
        return True  # resolved from /etc/hosts: no traffic
    try:
        addr = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@dataclass
class Tripwire:
    connects: list[str] = field(default_factory=list)  # every connect target, in order
    violations: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.violations, f"non-loopback network use: {self.violations}"


def install_tripwire(monkeypatch: pytest.MonkeyPatch) -> Tripwire:
    """Patch connect/connect_ex/create_connection/getaddrinfo for the test; undone by ``monkeypatch``."""
    wire = Tripwire()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create, real_gai = socket.create_connection, socket.getaddrinfo

    def check(what: str, host: Any) -> None:
        if not is_loopback(host):
            wire.violations.append(f"{what} {host!r}")
            raise OSError(f"tripwire: {what} to non-loopback {host!r}")

    def connect(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        wire.connects.append(str(host))
        check("connect", host)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        host = address[0] if isinstance(address, tuple) else address
        wire.connects.append(str(host))
        check("connect_ex", host)
        return real_connect_ex(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        check("create_connection", address[0])
        return real_create(address, *args, **kwargs)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not is_loopback(host):
            wire.violations.append(f"getaddrinfo {host!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"tripwire: system lookup of {host!r}")
        return real_gai(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return wire
