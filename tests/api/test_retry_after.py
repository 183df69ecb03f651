"""The one ``Retry-After`` parser: delta-seconds, the three HTTP-date forms, garbage, negatives, huge values."""

from __future__ import annotations

import email.utils

import pytest

from worker.api.retry_after import MAX_RETRY_AFTER_S, parse_retry_after

NOW = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example date


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("7", 7.0),
        (" 120 ", 120.0),  # surrounding white space is not part of the value
        ("1.5", 1.5),
        ("007", 7.0),
        ("86400", MAX_RETRY_AFTER_S),
    ],
)
def test_delta_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:51:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:51:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:51:37 1994",  # obsolete asctime: no zone, read as GMT
    ],
)
def test_http_dates_are_seconds_from_now(value: str) -> None:
    assert parse_retry_after(value, now=NOW) == 120.0


def test_a_date_in_the_past_means_now() -> None:
    assert parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now=NOW) == 0.0


def test_a_date_follows_the_clock_it_is_given() -> None:
    when = email.utils.formatdate(NOW + 3600, usegmt=True)
    assert parse_retry_after(when, now=NOW) == 3600.0
    assert parse_retry_after(when, now=NOW + 3000) == 600.0


@pytest.mark.parametrize(
    "value",
    [
        "99999999",
        "9" * 400,  # inf as a float
        "1" + "0" * 30 + ".5",
    ],
)
def test_huge_delays_are_bounded(value: str) -> None:
    assert parse_retry_after(value, now=NOW) == MAX_RETRY_AFTER_S


def test_a_far_date_is_bounded() -> None:
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=NOW) == MAX_RETRY_AFTER_S


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "-1",
        "-0.5",
        "+5",
        "1e3",
        "0x10",
        "nan",
        "inf",
        "1.",
        ".5",
        "5 s",
        "soon",
        "٣",  # a digit, but not an ASCII one
        "Sun, 32 Nov 1994 08:49:37 GMT",  # no such day
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 06 Nov 99999 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT" + " " * 40 + "x",
    ],
)
def test_garbage_is_no_hint(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None
