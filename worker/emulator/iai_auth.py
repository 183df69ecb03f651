"""The TC3-HMAC-SHA256 check of an IAI request at the emulator, in the order of
docs/api-notes.md#iai-the-current-api-searchfaces. A pure function of the headers, the body and the clock.

    Authorization missing, not TC3-HMAC-SHA256 with a ``Credential``      AuthFailure.InvalidAuthorization
      ending in ``/iai/tc3_request``, or SignedHeaders not
      ``content-type;host``
    X-TC-Timestamp missing / not an integer                               MissingParameter / InvalidParameter
    the SecretId belongs to no account                                    AuthFailure.SecretIdNotFound
    the Credential's date is not the UTC date of X-TC-Timestamp,          AuthFailure.SignatureFailure
      or the signature does not verify
    X-TC-Timestamp more than 300 s from the emulator's clock              AuthFailure.SignatureExpire

The signature is recomputed over the ``Content-Type`` and ``Host`` headers as sent (the port included) and
the body's bytes as received (:func:`worker.api.tc3.signature`). The codes are API 3.0's common error codes;
Tencent does not document the order, nor the code for a missing or malformed ``X-TC-Timestamp`` (uncertain:
MissingParameter / InvalidParameter are our choice). The order answers the most specific fault a legitimate
client can fix: a wrong key before a wrong clock.
``X-TC-Token`` (temporary credentials) is not checked: the emulator's accounts are permanent keys.
"""

from __future__ import annotations

import hmac

from worker.api.tc3 import (
    MAX_SKEW_S,
    SIGNED_HEADERS,
    AuthorizationFormatError,
    parse_authorization,
    signature,
    utc_date,
)
from worker.emulator.accounts import Account, AccountBook
from worker.emulator.iai_wire import SERVICE, IaiError


def verify(
    book: AccountBook,
    *,
    authorization: str | None,
    timestamp: str | None,
    host: str,
    content_type: str,
    body: bytes,
    now: float,
) -> Account:
    """The account that signed this request, or IaiError with the first failed check's code."""
    if not authorization or not authorization.strip():
        raise IaiError("AuthFailure.InvalidAuthorization", "The Authorization header is missing.")
    try:
        parsed = parse_authorization(authorization)
    except AuthorizationFormatError as exc:
        raise IaiError("AuthFailure.InvalidAuthorization") from exc
    if parsed.service != SERVICE:
        raise IaiError("AuthFailure.InvalidAuthorization", f"The credential scope names service `{parsed.service}`.")
    if parsed.signed_headers != SIGNED_HEADERS:
        # Tencent allows more signed headers; every SDK signs exactly these two, and so does the emulator.
        raise IaiError("AuthFailure.InvalidAuthorization", f"The emulator verifies SignedHeaders={SIGNED_HEADERS}.")
    if not timestamp:
        raise IaiError("MissingParameter", "The request is missing a required parameter `Timestamp`.")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:  # gmtime() of more overflows
        raise IaiError("InvalidParameter", "The value of parameter `Timestamp` is not an integer.")
    signed_at = int(timestamp)
    account = book.by_secret_id.get(parsed.secret_id)
    if account is None:
        raise IaiError("AuthFailure.SecretIdNotFound")
    if parsed.date != utc_date(signed_at):
        raise IaiError("AuthFailure.SignatureFailure", "The credential date is not the UTC date of the timestamp.")
    expected = signature(
        account.secret_key, service=SERVICE, host=host, content_type=content_type, body=body, timestamp=signed_at
    )
    if not hmac.compare_digest(expected, parsed.signature):
        raise IaiError("AuthFailure.SignatureFailure")
    if abs(now - signed_at) > MAX_SKEW_S:
        raise IaiError("AuthFailure.SignatureExpire")
    return account
