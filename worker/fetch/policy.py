"""Which resolved addresses fetch mode may connect to: the SSRF rules (pure, no I/O).

Contract of :meth:`AddressPolicy.refusal`:

* Refused: loopback, RFC 1918, CGNAT 100.64/10, link-local, unique-local, site-local, multicast,
  unspecified, documentation, benchmarking, reserved and non-global IPv6 space, the same behind
  IPv4-mapped / NAT64 / IPv4-compatible IPv6 forms, scoped IPv6 addresses, and the cloud metadata
  addresses (:data:`METADATA`).
* ``allow_private`` re-admits only the private kinds (loopback, RFC 1918, CGNAT, link-local, ULA,
  site-local). ``allowed_networks`` re-admits anything inside the listed networks, except metadata
  addresses: those pass only when listed as a single host (``"169.254.169.254/32"``), never via a wider
  network that happens to contain them.
* The answer names the kind that refuses an address (``"private"``, ``"metadata"``…), for the message.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from worker.fetch.hosts import IPAddress

__all__ = ["METADATA", "AddressPolicy", "embedded_v4"]

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


def embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
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
        inner = embedded_v4(ip)
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
        if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_v4(ip)) is not None:
            forms.append(inner)
        if kind == "metadata":
            listed = any(net.num_addresses == 1 and f in net for net in self.allowed_networks for f in forms)
            return None if listed else kind
        if kind == "public" or (self.allow_private and kind in _PRIVATE_KINDS):
            return None
        if any(f in net for net in self.allowed_networks for f in forms):
            return None
        return kind
