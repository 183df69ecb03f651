"""TC3-HMAC-SHA256: how Tencent Cloud API 3.0 (IAI among them) signs a request, and how a server checks it.

For a ``POST /`` with a JSON body, the signed text is built from the content type, the ``Host`` header
and the body's SHA-256 (docs/api-notes.md#iai-tc3-signing)::

    canonical = "POST\\n/\\n\\ncontent-type:<ct>\\nhost:<host>\\n\\ncontent-type;host\\n" + hex(sha256(body))
    to_sign   = "TC3-HMAC-SHA256\\n<timestamp>\\n<date>/<service>/tc3_request\\n" + hex(sha256(canonical))
    key       = HMAC(HMAC(HMAC("TC3" + secret_key, date), service), "tc3_request")
    header    = "TC3-HMAC-SHA256 Credential=<id>/<date>/<service>/tc3_request, "
                "SignedHeaders=content-type;host, Signature=" + hex(HMAC(key, to_sign))

``date`` is the UTC day of ``timestamp`` (``YYYY-MM-DD``); a server refuses a timestamp more than five minutes
from its clock. The host is signed as sent, port included (``127.0.0.1:8080`` against the emulator).
Pure functions: the client signs with :func:`authorization`, the emulator re-derives with
:func:`signature` after :func:`parse_authorization`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass

ALGORITHM = "TC3-HMAC-SHA256"
SIGNED_HEADERS = "content-type;host"
#: How far a request's ``X-TC-Timestamp`` may be from the server's clock (``AuthFailure.SignatureExpire``).
MAX_SKEW_S = 300


def utc_date(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def canonical_request(content_type: str, host: str, body: bytes) -> str:
    payload_hash = hashlib.sha256(body).hexdigest()
    return f"POST\n/\n\ncontent-type:{content_type}\nhost:{host}\n\n{SIGNED_HEADERS}\n{payload_hash}"


def string_to_sign(timestamp: int, service: str, canonical: str) -> str:
    scope = f"{utc_date(timestamp)}/{service}/tc3_request"
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def signing_key(secret_key: str, date: str, service: str) -> bytes:
    k_date = hmac.new(("TC3" + secret_key).encode(), date.encode(), hashlib.sha256).digest()
    k_service = hmac.new(k_date, service.encode(), hashlib.sha256).digest()
    return hmac.new(k_service, b"tc3_request", hashlib.sha256).digest()


def signature(secret_key: str, *, service: str, host: str, content_type: str, body: bytes, timestamp: int) -> str:
    """The hex signature of one POST: what the ``Signature=`` part of the header carries."""
    to_sign = string_to_sign(timestamp, service, canonical_request(content_type, host, body))
    key = signing_key(secret_key, utc_date(timestamp), service)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def authorization(
    secret_id: str, secret_key: str, *, service: str, host: str, content_type: str, body: bytes, timestamp: int
) -> str:
    """The ``Authorization`` header value for one POST."""
    sig = signature(secret_key, service=service, host=host, content_type=content_type, body=body, timestamp=timestamp)
    credential = f"{secret_id}/{utc_date(timestamp)}/{service}/tc3_request"
    return f"{ALGORITHM} Credential={credential}, SignedHeaders={SIGNED_HEADERS}, Signature={sig}"


class AuthorizationFormatError(ValueError):
    """The header is not a TC3 authorization (the server answers ``AuthFailure.InvalidAuthorization``)."""


@dataclass(frozen=True)
class ParsedAuthorization:
    secret_id: str
    date: str
    service: str
    signed_headers: str
    signature: str


_HEADER = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/\s,]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[^/\s,]+)/tc3_request,"
    r"\s*SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*Signature=(?P<sig>[0-9a-f]{64})$"
)


def parse_authorization(header: str) -> ParsedAuthorization:
    match = _HEADER.match(header.strip())
    if match is None:
        raise AuthorizationFormatError("not a TC3-HMAC-SHA256 authorization header")
    return ParsedAuthorization(
        secret_id=match["id"],
        date=match["date"],
        service=match["service"],
        signed_headers=match["headers"],
        signature=match["sig"],
    )
