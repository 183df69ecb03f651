"""The documented error classes (docs/api-notes.md), written out independently of the registry, row by row."""

from __future__ import annotations

import pickle

import pytest

from worker.api.codes import CODES, ErrorClass, Origin, class_of_code, class_of_http_status, meaning
from worker.api.errors import ApiError

T, P, C = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.CONFIG

# code → class, as docs/api-notes.md#error-codes-and-classes lists them (-1104 … -1109 expanded).
DOCUMENTED_CLASSES: dict[int, ErrorClass] = {
    3: C,
    4: C,
    5: C,
    6: C,
    9: C,
    10: C,
    11: C,
    12: C,
    13: C,
    14: C,
    15: T,
    16: C,
    21: P,
    23: P,
    24: C,
    107: T,
    108: T,
    213: T,
    -1101: P,
    -1102: P,
    -1103: P,
    -1104: P,
    -1105: P,
    -1106: P,
    -1107: P,
    -1108: P,
    -1109: P,
    -1200: T,
    -1300: P,
    -1301: P,
    -1302: P,
    -1303: P,
    -1304: P,
    -1305: P,
    -1306: C,  # for identify/multidentify, the only calls the worker makes
    -1307: C,
    -1308: P,
    -1309: P,
    -1310: C,
    -1311: C,
    -1312: P,
    -1313: P,
    -1400: P,
    -1403: P,
}
RESIGN = {9, 13}


@pytest.mark.parametrize(("code", "expected"), sorted(DOCUMENTED_CLASSES.items()))
def test_code_class_follows_the_documented_table(code: int, expected: ErrorClass) -> None:
    assert class_of_code(code) is expected
    error = ApiError.from_service(code, "msg", 200)
    assert error.code == str(code)
    assert error.error_class is expected
    assert error.resign is (code in RESIGN)
    assert error.http_status == 200


def test_every_table_row_is_in_the_code_table() -> None:
    assert set(DOCUMENTED_CLASSES) <= set(CODES)


def test_unknown_code_is_transient_and_not_resigned() -> None:
    error = ApiError.from_service(987654, "")
    assert error.error_class is T
    assert not error.resign
    assert error.message == "unknown service code"


def test_from_service_falls_back_to_the_meaning_without_a_message() -> None:
    assert ApiError.from_service(-1308, "").message == "url image download failed"
    assert ApiError.from_service(-1308, "下载失败").message == "下载失败"


@pytest.mark.parametrize(
    ("status", "expected"),
    [(429, T), (500, T), (502, T), (503, T), (504, T), (401, C), (403, C), (400, P), (404, P), (413, P), (302, P)],
)
def test_http_status_classification(status: int, expected: ErrorClass) -> None:
    assert class_of_http_status(status) is expected
    error = ApiError.local(f"http_{status}", "no code", http_status=status)
    assert error.error_class is expected
    assert error.code == f"http_{status}"
    assert error.http_status == status


@pytest.mark.parametrize(
    ("code", "expected"), [("timeout", T), ("connection", T), ("bad_response", T), ("invalid_request", P)]
)
def test_local_codes(code: str, expected: ErrorClass) -> None:
    assert ApiError.local(code, "m").error_class is expected


def test_refused_keeps_the_service_code_and_class() -> None:
    error = ApiError.refused(-1313, "bad id")
    assert (error.code, error.error_class, error.http_status) == ("-1313", P, None)
    assert "refused locally" in error.message
    assert ApiError.refused(23, "too big").error_class is P


def test_rate_limited_by_code_15_or_http_429() -> None:
    assert ApiError.from_service(15, "").rate_limited
    assert ApiError.local("http_429", "", http_status=429).rate_limited
    assert not ApiError.from_service(213, "").rate_limited


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("-1308", "url image download failed"),
        ("15", "rate limited"),
        ("9", "signature expired"),
        ("timeout", "the API did not answer in time"),
        ("connection", "could not connect to the API"),
        ("http_503", "the API answered HTTP 503 without a JSON code"),
        ("invalid_event", "the event does not match schemas/event.schema.json"),
        ("fetch_http_404", "the image server answered HTTP 404"),
        ("fetch_timeout", "the image server did not answer or finish in time"),
        ("internal_error", "the worker failed on this event (a bug): see the message"),
        ("invalid_request", "the request was refused locally before sending"),
        ("+15", "rate limited"),
        ("some_new_code", "some new code"),
    ],
)
def test_meaning(code: str, expected: str) -> None:
    assert meaning(code) == expected


def test_api_error_pickles_with_all_fields() -> None:
    error = ApiError("15", T, "slow down", http_status=200, resign=False, retry_after=2.5)
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.code, clone.error_class, clone.message, clone.http_status, clone.retry_after, clone.origin) == (
        "15",
        T,
        "slow down",
        200,
        2.5,
        Origin.SERVICE,
    )
    assert str(clone) == "[15] slow down"
