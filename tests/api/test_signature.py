"""v1 signature: the published vectors byte for byte, sign → parse round trip, and the cached signer."""

from __future__ import annotations

import base64
import contextlib
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.api.signature import CachedSigner, SignatureFormatError, parse, plain_text, sign, sign_plain

# Vector set A (docs/api-notes.md#test-vectors): 2018 鉴权签名 page, with the legacy u=0 field.
A_APPID = "1252821871"
A_BUCKET = "tencentyun"
A_SECRET_ID = "AKIDgaoOYh2kOmJfWVdH4lpfxScG2zPLPGoK"
A_SECRET_KEY = "nwOKDouy5JctNOlnere4gkVoOUz5EYAb"
A_NOW = 1436077115
A_EXPIRES = 1438669115

A_MULTI_PLAIN = (
    b"a=1252821871&b=tencentyun&k=AKIDgaoOYh2kOmJfWVdH4lpfxScG2zPLPGoK&e=1438669115&t=1436077115&r=11162&u=0&f="
)
A_MULTI_SIGN = (
    "p2Y5iIYyBmQNfUvPe3e1sxEN/rZhPTEyNTI4MjE4NzEmYj10ZW5jZW50eXVuJms9QUtJRGdhb09ZaDJrT21KZldWZEg0bHBmeFNjRzJ6"
    "UExQR29LJmU9MTQzODY2OTExNSZ0PTE0MzYwNzcxMTUmcj0xMTE2MiZ1PTAmZj0="
)
A_FILE_SIGN = (
    "Tt9IYBG4j1TpO/9M6M9TokVJrKhhPTEyNTI4MjE4NzEmYj10ZW5jZW50eXVuJms9QUtJRGdhb09ZaDJrT21KZldWZEg0bHBmeFNjRzJ6"
    "UExQR29LJmU9MTQzODY2OTExNSZ0PTE0MzYwNzcxMTUmcj0xMTE2MiZ1PTAmZj10ZW5jZW50eXVuU2lnblRlc3Q="
)
A_SINGLE_SIGN = (
    "ewXflzgpQON2bmrX6uJ5Yr0zuOphPTEyNTI4MjE4NzEmYj10ZW5jZW50eXVuJms9QUtJRGdhb09ZaDJrT21KZldWZEg0bHBmeFNjRzJ6"
    "UExQR29LJmU9MCZ0PTE0MzYwNzcxMTUmcj0xMTE2MiZ1PTAmZj10ZW5jZW50eXVuU2lnblRlc3Q="
)

# Vector B: old 万象优图 doc, non-canonical order (t before e), no r/u/f.
B_SECRET_KEY = "oHL5srXW3Fkn8xtugG0BDhUfOOsC9DAd"
B_PLAIN = b"a=1000027&b=test333&k=AKIDnX91172Bs2NK4SP9Ad9JDVYpm7Lx2Nek&t=1466393489&e=1466393499"
B_SIGN = (
    "xBx0lpW/tdIr1vfksAt3GpfXo9phPTEwMDAwMjcmYj10ZXN0MzMzJms9QUtJRG5YOTExNzJCczJOSzRTUDlBZDlKRFZZcG03THgyTmVr"
    "JnQ9MTQ2NjM5MzQ4OSZlPTE0NjYzOTM0OTk="
)


def _sign_a(*, lifetime: int, fileid: str) -> str:
    return sign(
        A_APPID,
        A_SECRET_ID,
        A_SECRET_KEY,
        now=A_NOW,
        lifetime=lifetime,
        rand=11162,
        bucket=A_BUCKET,
        fileid=fileid,
        with_u=True,
    )


def test_vector_a_multi_use_without_file() -> None:
    assert _sign_a(lifetime=A_EXPIRES - A_NOW, fileid="") == A_MULTI_SIGN
    plain = plain_text(A_APPID, A_SECRET_ID, now=A_NOW, expires_at=A_EXPIRES, rand=11162, bucket=A_BUCKET, with_u=True)
    assert plain == A_MULTI_PLAIN
    assert parse(A_MULTI_SIGN).digest.hex() == "a7663988863206640d7d4bcf7b77b5b3110dfeb6"


def test_vector_a_multi_use_bound_to_file() -> None:
    assert _sign_a(lifetime=A_EXPIRES - A_NOW, fileid="tencentyunSignTest") == A_FILE_SIGN


def test_vector_a_single_use() -> None:
    signature = _sign_a(lifetime=0, fileid="tencentyunSignTest")
    assert signature == A_SINGLE_SIGN
    assert parse(signature).expires_at == 0


def test_vector_b_non_canonical_order() -> None:
    assert sign_plain(B_SECRET_KEY, B_PLAIN) == B_SIGN
    parsed = parse(B_SIGN)
    assert parsed.plain == B_PLAIN
    assert parsed.fields == {
        "a": "1000027",
        "b": "test333",
        "k": "AKIDnX91172Bs2NK4SP9Ad9JDVYpm7Lx2Nek",
        "t": "1466393489",
        "e": "1466393499",
    }
    assert (parsed.signed_at, parsed.expires_at) == (1466393489, 1466393499)
    assert parsed.verify(B_SECRET_KEY)
    assert not parsed.verify(B_SECRET_KEY[:-1] + "X")


# Field values never contain '&' or '=' (they would break the k=v plain text on the server too).
_field_text = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="&="), max_size=40
)


@given(
    appid=st.from_regex(r"\A[1-9][0-9]{0,11}\Z"),
    secret_id=_field_text.filter(bool),
    secret_key=st.text(min_size=1, max_size=64),
    now=st.integers(min_value=0, max_value=2**33),
    lifetime=st.integers(min_value=1, max_value=90 * 86400),
    rand=st.integers(min_value=0, max_value=10**10 - 1),
    bucket=_field_text,
)
def test_sign_parse_round_trip(
    appid: str, secret_id: str, secret_key: str, now: int, lifetime: int, rand: int, bucket: str
) -> None:
    signature = sign(appid, secret_id, secret_key, now=now, lifetime=lifetime, rand=rand, bucket=bucket)
    parsed = parse(signature)
    assert parsed.appid == appid
    assert parsed.secret_id == secret_id
    assert parsed.signed_at == now
    assert parsed.expires_at == now + lifetime
    assert parsed.fields["b"] == bucket
    assert parsed.fields["r"] == str(rand)
    assert parsed.fields["f"] == ""
    assert parsed.verify(secret_key)
    assert not parsed.verify(secret_key + "x")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "not base64 at all!",
        base64.b64encode(b"x" * 20).decode(),  # digest only
        base64.b64encode(b"x" * 20 + b"a=1&k=2&e=3").decode(),  # no t
        base64.b64encode(b"x" * 20 + b"a=1&k=2&e=3&t=now").decode(),  # t not a number
        base64.b64encode(b"x" * 20 + b"a=1&k=2&e=3&t=4&junk").decode(),  # pair without '='
        base64.b64encode(b"x" * 20 + "a=1&k=é&e=3&t=4".encode()).decode(),  # not ascii
    ],
)
def test_parse_rejects_malformed_headers(header: str) -> None:
    with pytest.raises(SignatureFormatError):
        parse(header)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parse_raises_only_signature_format_error(header: str | bytes) -> None:
    with contextlib.suppress(SignatureFormatError):
        parse(header)


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_cached_signer_renews_before_expiry() -> None:
    clock = _Clock(1_000_000)
    signer = CachedSigner("1", "sid", "key", lifetime=100, renew_before=25, clock=clock)
    first = signer.header()
    assert parse(first).signed_at == 1_000_000
    assert parse(first).expires_at == 1_000_100
    clock.now = 1_000_074  # 26 s left: still reused
    assert signer.header() == first
    clock.now = 1_000_075  # 25 s left: renewed while the old one is still valid
    renewed = signer.header()
    assert renewed != first
    assert parse(renewed).signed_at == 1_000_075
    assert parse(renewed).expires_at == 1_000_175
    assert parse(renewed).verify("key")


def test_cached_signer_invalidate_forces_a_fresh_signature() -> None:
    clock = _Clock(5_000)
    signer = CachedSigner("1", "sid", "key", lifetime=3600, clock=clock)
    first = signer.header()
    assert signer.header() == first
    signer.invalidate()
    second = signer.header()
    assert second != first  # new random r even within the same second
    assert parse(second).verify("key")


def test_cached_signer_default_renew_margin_is_a_quarter_of_the_lifetime() -> None:
    clock = _Clock(0)
    signer = CachedSigner("1", "sid", "key", lifetime=400, clock=clock)
    first = signer.header()
    clock.now = 299
    assert signer.header() == first
    clock.now = 300
    assert signer.header() != first


def test_cached_signer_shares_one_signature_between_threads() -> None:
    signer = CachedSigner("1", "sid", "key", lifetime=3600, clock=_Clock(10_000))
    seen: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16, timeout=10)

    def ask() -> None:
        barrier.wait()
        header = signer.header()
        with lock:
            seen.append(header)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(seen) == 16
    assert len(set(seen)) == 1


def test_cached_signer_refuses_single_use_lifetime() -> None:
    with pytest.raises(ValueError):
        CachedSigner("1", "sid", "key", lifetime=0)


def test_cached_signer_repr_hides_the_key() -> None:
    assert "key-secret" not in repr(CachedSigner("1", "sid-1234", "key-secret"))
