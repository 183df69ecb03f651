"""Fetch mode, the pure parts: which addresses may be fetched, numeric host spellings, URL redaction.

Sniffing the image type is ``worker.api.images`` (tests/api/test_images.py).
"""

from __future__ import annotations

import ipaddress

import pytest

from worker.fetch import (
    FETCH_CODES,
    METADATA,
    AddressPolicy,
    FetchOptions,
    parse_numeric_host,
    redact_url,
)

ip = ipaddress.ip_address

REFUSED_BY_DEFAULT = {
    # address: kind named in the refusal
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "10.0.0.5": "private",
    "172.16.0.1": "private",
    "172.31.255.255": "private",
    "192.168.1.1": "private",
    "100.64.0.1": "shared (CGNAT)",
    "100.127.255.254": "shared (CGNAT)",
    "169.254.1.1": "link-local",
    "0.0.0.0": "unspecified",
    "0.1.2.3": "unspecified",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.0.8": "reserved",
    "192.0.2.1": "documentation",
    "198.18.0.1": "benchmarking",
    "::": "unspecified",
    "::1": "loopback",
    "fe80::1": "link-local",
    "fc00::1": "unique-local",
    "fd12:3456::1": "unique-local",
    "fec0::1": "site-local",
    "ff02::1": "multicast",
    "2001:db8::1": "documentation",
    "2001::1": "reserved",  # Teredo
    "2002:7f00:1::1": "reserved",  # 6to4 around 127.0.0.1
    "::127.0.0.1": "reserved",  # deprecated IPv4-compatible
    "4000::1": "reserved",  # outside global unicast
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.1.1": "link-local",
    "64:ff9b::a00:1": "private",  # NAT64 of 10.0.0.1
    "64:ff9b:1::1": "private",  # local-use NAT64
    "169.254.169.254": "metadata",
    "169.254.170.2": "metadata",
    "169.254.0.23": "metadata",
    "100.100.100.200": "metadata",
    "168.63.129.16": "metadata",
    "fd00:ec2::254": "metadata",
    "fd20:ce::254": "metadata",
    "::ffff:169.254.169.254": "metadata",
    "::ffff:100.100.100.200": "metadata",
}


@pytest.mark.parametrize(("address", "kind"), sorted(REFUSED_BY_DEFAULT.items()))
def test_default_policy_refuses_non_public_addresses(address: str, kind: str) -> None:
    assert AddressPolicy().refusal(ip(address)) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_default_policy_allows_public_addresses(address: str) -> None:
    assert AddressPolicy().refusal(ip(address)) is None


def test_scoped_ipv6_is_refused() -> None:
    assert AddressPolicy(allow_private=True).refusal(ip("fe80::1%eth0")) == "scoped IPv6"


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "172.20.0.1", "192.168.0.10", "100.64.0.9", "169.254.3.3", "fd00::5", "::1"]
)
def test_allow_private_admits_private_kinds(address: str) -> None:
    assert AddressPolicy(allow_private=True).refusal(ip(address)) is None


@pytest.mark.parametrize("address", ["0.0.0.0", "224.0.0.1", "240.0.0.1", "ff02::1", "192.0.2.1", "::"])
def test_allow_private_keeps_refusing_non_unicast_and_reserved(address: str) -> None:
    assert AddressPolicy(allow_private=True).refusal(ip(address)) is not None


@pytest.mark.parametrize("address", sorted(str(a) for a in METADATA))
def test_metadata_stays_refused_with_allow_private_and_wide_networks(address: str) -> None:
    wide = ["0.0.0.0/0", "::/0", "169.254.0.0/16", "100.64.0.0/10", "fd00::/8"]
    policy = AddressPolicy(allow_private=True, allowed_networks=wide)
    assert policy.refusal(ip(address)) == "metadata"


def test_metadata_passes_only_when_listed_as_a_single_host() -> None:
    policy = AddressPolicy(allowed_networks=["169.254.169.254/32", "fd00:ec2::254"])
    assert policy.refusal(ip("169.254.169.254")) is None
    assert policy.refusal(ip("::ffff:169.254.169.254")) is None  # the same endpoint, mapped
    assert policy.refusal(ip("fd00:ec2::254")) is None
    assert policy.refusal(ip("169.254.0.23")) == "metadata"


def test_allowed_networks_admit_exactly_their_range() -> None:
    policy = AddressPolicy(allowed_networks=["127.0.0.0/8", "10.20.0.0/16"])
    assert policy.refusal(ip("127.0.0.1")) is None
    assert policy.refusal(ip("::ffff:127.0.0.1")) is None
    assert policy.refusal(ip("10.20.255.1")) is None
    assert policy.refusal(ip("10.21.0.1")) == "private"
    assert policy.refusal(ip("::1")) == "loopback"


def test_bad_allowed_network_names_the_entry() -> None:
    with pytest.raises(ValueError, match="not-a-net"):
        AddressPolicy(allowed_networks=["127.0.0.0/8", "not-a-net"])
    with pytest.raises(ValueError, match="not-a-net"):
        FetchOptions(allowed_networks=("not-a-net",))


@pytest.mark.parametrize(
    "limits",
    [
        {"max_bytes": 0},
        {"pool_size": 0},
        {"max_redirects": -1},
        {"connect_timeout": 0.0},
        {"read_timeout": -1.0},
        {"total_timeout": 0.0},
    ],
)
def test_options_refuse_limits_that_cannot_work(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FetchOptions(**limits)  # type: ignore[arg-type]


def test_options_hold_the_allowed_networks_as_a_tuple() -> None:
    given = ["127.0.0.0/8"]
    options = FetchOptions(allowed_networks=given)  # type: ignore[arg-type]
    given.append("0.0.0.0/0")  # the caller's list changing later changes nothing
    assert options.allowed_networks == ("127.0.0.0/8",)
    assert hash(options) == hash(FetchOptions(allowed_networks=("127.0.0.0/8",)))
    with pytest.raises(TypeError):
        FetchOptions(allowed_networks="127.0.0.0/8")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0xA9.0xFE.0xA9.0xFE", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("[::1]", "::1"),
        ("[::ffff:7f00:1]", "::ffff:7f00:1"),
        ("example.com", None),
        ("img.test", None),
        ("1.2.3.example", None),
        ("0x7f.example", None),
    ],
)
def test_numeric_host_spellings(host: str, expected: str | None) -> None:
    parsed = parse_numeric_host(host)
    assert (str(parsed) if parsed is not None else None) == expected


@pytest.mark.parametrize(
    "host", ["1.2.3.4.5", "256.1.1.1", "1.2.3.256", "09.1.1.1", "1.2.3.0x100", "4294967296", "[::1::]"]
)
def test_malformed_numeric_hosts_are_errors_not_names(host: str) -> None:
    with pytest.raises(ValueError):
        parse_numeric_host(host)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://bucket.example/a/b.jpg?X-Amz-Signature=SECRET&t=1", "https://bucket.example/a/b.jpg"),
        ("http://user:SECRET@img.example:8080/x.png#frag", "http://img.example:8080/x.png"),
        ("http://[fd00::1]:81/p", "http://[fd00::1]:81/p"),
        ("http://[::1", "<malformed url>"),
    ],
)
def test_redact_url_keeps_host_and_path_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_fetch_codes_are_stable_keys() -> None:
    # These strings are dead-letter keys; renaming one splits the DLQ history.
    assert set(FETCH_CODES) == {
        "fetch_refused",
        "fetch_timeout",
        "fetch_connection",
        "fetch_tls",
        "fetch_too_large",
        "fetch_not_image",
        "fetch_too_many_redirects",
    }
    assert {code for code, (_, cls) in FETCH_CODES.items() if cls == "transient"} == {
        "fetch_timeout",
        "fetch_connection",
    }
