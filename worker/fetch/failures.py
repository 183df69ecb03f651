"""Every way a fetch fails, as the :class:`~worker.api.errors.ApiError` fetch mode dead-letters it under.

The code is a dead-letter key (``FETCH_CODES``, registered in ``worker.api.codes``):

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

A transient ``fetch_http_<status>`` carries the server's ``Retry-After`` (``worker.api.retry_after``). Fetch
errors leave ``http_status`` unset: it describes the face API's answers (the rate limiter reads 429 from
it), not the image server's. Messages name the host and path only (``redact_url``): query strings carry
signatures and are never included, and the transport exception is not chained (nor is ``str(exc)`` used,
which may contain the full URL).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

import requests
import urllib3.exceptions
from urllib3.util.ssl_match_hostname import CertificateError as HostnameMismatch

from worker.api.codes import FETCH_CODES, ErrorClass, class_of_fetch_status
from worker.api.errors import ApiError
from worker.api.retry_after import parse_retry_after
from worker.fetch.guarded import Refused, Unresolvable

__all__ = ["deadline_error", "fail", "gif_error", "http_error", "transport_error"]


def fail(code: str, message: str) -> ApiError:
    assert code in FETCH_CODES, code  # the registry (worker.api.codes) lists every fetch key
    return ApiError.fetch(code, message)


def http_error(status: int, where: str, retry_after: str | None, *, now: float) -> ApiError:
    """An image server's non-2xx answer; ``retry_after`` is its header, read at Unix time ``now``."""
    transient = class_of_fetch_status(status) is ErrorClass.TRANSIENT
    delay = parse_retry_after(retry_after, now=now) if transient else None
    return ApiError.fetch(f"fetch_http_{status}", f"{where} answered HTTP {status}", retry_after=delay)


def gif_error(where: str) -> ApiError:
    return ApiError.from_service(-1400, f"{where} is a GIF, which the API refuses (-1400)")


def deadline_error(where: str, total: float) -> ApiError:
    return fail("fetch_timeout", f"{where} did not finish within {total:g} s")


def transport_error(exc: BaseException, where: str, *, expired: bool, total: float) -> ApiError:
    """Map a transport failure to a code; ``expired``: the fetch's deadline fired (that is the cause)."""
    if expired:
        return deadline_error(where, total)
    if isinstance(exc, Refused):
        return fail("fetch_refused", f"{where} refused: {exc}")
    if isinstance(exc, Unresolvable):
        return fail("fetch_connection", f"{where}: {exc}")
    if isinstance(exc, requests.exceptions.SSLError):
        problem = _certificate_problem(exc)
        if problem is not None:
            return fail("fetch_tls", f"{where}: TLS certificate verification failed ({problem})")
        return fail("fetch_connection", f"{where}: TLS handshake failed")
    if any(
        isinstance(e, requests.exceptions.Timeout | urllib3.exceptions.TimeoutError | TimeoutError)
        # urllib3's NewConnectionError subclasses ConnectTimeoutError for history's sake: a refusal is not a timeout
        and not isinstance(e, urllib3.exceptions.NewConnectionError)
        for e in _chain(exc)
    ):
        return fail("fetch_timeout", f"{where}: connect or read timed out")
    return fail("fetch_connection", f"{where}: transfer failed ({type(exc).__name__})")


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
