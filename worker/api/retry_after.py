"""``Retry-After``: how long a server asks us to wait, in seconds (pure, no I/O; RFC 9110 §10.2.3).

Contract of :func:`parse_retry_after`, one parser for the face API's answers (``worker.api.client``) and the
image servers' (``worker.fetch``):

* delta-seconds, a non-negative decimal number (``"7"``; a fraction such as ``"1.5"`` is read too) → that
  many seconds;
* an HTTP-date (``"Sun, 06 Nov 1994 08:49:37 GMT"``, also the obsolete RFC 850 and asctime forms, read as
  GMT) → the seconds from ``now``, the caller's Unix time, until then; 0 when it has passed;
* anything else — missing, empty, negative, a date that does not exist, garbage → None: no hint, the
  caller's own backoff applies;
* every answer is at most ``MAX_RETRY_AFTER_S`` (a day), however large the value: it is bounded, not
  dropped. What the worker then honours is capped further (``RetryPolicy.retry_after_cap_s``, the rate
  limiter's hold).
"""

from __future__ import annotations

import email.utils
import re
from datetime import UTC

__all__ = ["MAX_RETRY_AFTER_S", "parse_retry_after"]

MAX_RETRY_AFTER_S = 86_400.0

_DELTA = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait by the ``Retry-After`` header ``value`` at Unix time ``now`` (see the module docstring)."""
    if value is None:
        return None
    text = value.strip()
    if _DELTA.fullmatch(text):
        return min(float(text), MAX_RETRY_AFTER_S)  # a string of 400 digits is inf as a float: bounded too
    if not text or len(text) > 64:  # the longest HTTP-date form has 33 characters
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime and "-0000" dates carry no zone: HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER_S)
