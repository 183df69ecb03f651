"""Tencent face API v1 authorization signature (multi-use form).

Plain text ``a=<appid>&b=<bucket>&k=<secret id>&e=<expiry>&t=<now>&r=<rand>&f=`` is signed with
HMAC-SHA1 (raw 20-byte digest), and the header value is standard base64 of digest + plain text.
The server parses ``k=v`` pairs in any order, so :func:`parse` does too (the emulator uses it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

DIGEST_SIZE = 20
REQUIRED_FIELDS = ("a", "k", "e", "t")


def plain_text(
    appid: str,
    secret_id: str,
    *,
    now: int,
    expires_at: int,
    rand: int,
    bucket: str = "",
    fileid: str = "",
    with_u: bool = False,
) -> bytes:
    """The documented field order a,b,k,e,t,r[,u],f."""
    parts = [f"a={appid}", f"b={bucket}", f"k={secret_id}", f"e={expires_at}", f"t={now}", f"r={rand}"]
    if with_u:
        parts.append("u=0")
    parts.append(f"f={fileid}")
    return "&".join(parts).encode()


def sign_plain(secret_key: str, plain: bytes) -> str:
    mac = hmac.new(secret_key.encode(), plain, hashlib.sha1).digest()
    return base64.b64encode(mac + plain).decode("ascii")


def sign(
    appid: str,
    secret_id: str,
    secret_key: str,
    *,
    now: int,
    lifetime: int,
    rand: int | None = None,
    bucket: str = "",
    fileid: str = "",
    with_u: bool = False,
) -> str:
    """A signature valid from ``now`` for ``lifetime`` seconds (``lifetime=0`` → single-use, ``e=0``)."""
    r = secrets.randbelow(10**10) if rand is None else rand
    expires_at = now + lifetime if lifetime else 0
    plain = plain_text(
        appid, secret_id, now=now, expires_at=expires_at, rand=r, bucket=bucket, fileid=fileid, with_u=with_u
    )
    return sign_plain(secret_key, plain)


class SignatureFormatError(ValueError):
    """The header is not base64 of a 20-byte digest followed by ``k=v`` pairs with a, k, e, t."""


@dataclass(frozen=True)
class ParsedSignature:
    fields: dict[str, str]
    digest: bytes
    plain: bytes

    @property
    def appid(self) -> str:
        return self.fields["a"]

    @property
    def secret_id(self) -> str:
        return self.fields["k"]

    @property
    def expires_at(self) -> int:
        return int(self.fields["e"])

    @property
    def signed_at(self) -> int:
        return int(self.fields["t"])

    def verify(self, secret_key: str) -> bool:
        expected = hmac.new(secret_key.encode(), self.plain, hashlib.sha1).digest()
        return hmac.compare_digest(expected, self.digest)


def parse(header: str | bytes) -> ParsedSignature:
    """Split an Authorization header into digest and fields; raises SignatureFormatError."""
    try:
        raw = base64.b64decode(header, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureFormatError("not base64") from exc
    if len(raw) <= DIGEST_SIZE:
        raise SignatureFormatError("too short")
    digest, plain = raw[:DIGEST_SIZE], raw[DIGEST_SIZE:]
    try:
        text = plain.decode("ascii")
    except UnicodeDecodeError as exc:
        raise SignatureFormatError("plain text is not ascii") from exc
    fields: dict[str, str] = {}
    for pair in text.split("&"):
        key, sep, value = pair.partition("=")
        if not sep:
            raise SignatureFormatError(f"field without '=': {pair[:20]!r}")
        fields[key] = value
    missing = [f for f in REQUIRED_FIELDS if f not in fields]
    if missing:
        raise SignatureFormatError(f"missing fields: {','.join(missing)}")
    for numeric in ("e", "t"):
        # Unix seconds: ten digits today; a longer run is no time at all (and int() would refuse it).
        if not fields[numeric].isdigit() or len(fields[numeric]) > 12:
            raise SignatureFormatError(f"field {numeric} is not a time in seconds")
    return ParsedSignature(fields=fields, digest=digest, plain=plain)


class CachedSigner:
    """Keeps one multi-use signature and renews it when less than ``renew_before`` seconds remain.

    Thread-safe: many HTTP threads ask for the header at once, only one renews.
    """

    def __init__(
        self,
        appid: str,
        secret_id: str,
        secret_key: str,
        *,
        lifetime: int = 3600,
        renew_before: int | None = None,
        clock: Callable[[], float] = time.time,
        bucket: str = "",
    ) -> None:
        if lifetime <= 0:
            raise ValueError("lifetime must be positive for a multi-use signature")
        self._appid = appid
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._lifetime = lifetime
        # Renew with a quarter of the lifetime left (at least 5 s) so in-flight requests never carry
        # a signature that expires on the way.
        self._renew_before = renew_before if renew_before is not None else max(5, lifetime // 4)
        self._clock = clock
        self._bucket = bucket
        self._lock = threading.Lock()
        self._header = ""
        self._expires_at = 0

    def header(self) -> str:
        now = int(self._clock())
        if now < self._expires_at - self._renew_before:
            return self._header
        with self._lock:
            if now >= self._expires_at - self._renew_before:
                self._renew(now)
            return self._header

    def invalidate(self) -> None:
        """Force a fresh signature on the next call (after code 9 or 13)."""
        with self._lock:
            self._expires_at = 0

    def _renew(self, now: int) -> None:
        self._header = sign(
            self._appid, self._secret_id, self._secret_key, now=now, lifetime=self._lifetime, bucket=self._bucket
        )
        self._expires_at = now + self._lifetime

    def __repr__(self) -> str:  # never show the key
        return f"CachedSigner(appid={self._appid!r}, secret_id={self._secret_id[:4]}…, lifetime={self._lifetime})"
