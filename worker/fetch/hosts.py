"""Hosts and URLs in fetch mode: numeric hosts read as a browser reads them, the resolver seam, redaction.

* :func:`parse_numeric_host` gives the address a numeric host denotes in any spelling (``2130706433``,
  ``0x7f.1``, ``0177.0.0.1``, ``127.1``, ``[::ffff:7f00:1]``) by the WHATWG URL rules, which ``inet_aton``
  follows too. Such a host never reaches a resolver, which might read it differently; one that looks numeric
  but is not a valid address is a ValueError, never a name to look up.
* :data:`Resolver` is the seam for name resolution, ``(host, port) → addresses`` in order;
  :func:`system_resolver` asks ``getaddrinfo``, tests inject their own.
* :func:`redact_url` is how a URL appears in messages and logs: ``scheme://host[:port]/path``, never the
  userinfo, query or fragment (they carry signatures and tokens).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = ["IPAddress", "Resolver", "parse_numeric_host", "redact_url", "system_resolver"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


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
