"""IAI on the wire, hand-built: the order of the TC3 checks, the answer envelope, field checks, bodies, faults.

Each verification case breaks one thing in an otherwise valid request, and some break two, to pin which
check comes first (docs/api-notes.md#iai-the-current-api-searchfaces): routing, then the Authorization's form,
the timestamp's form, the SecretId, the signature, and last the clock.
"""

from __future__ import annotations

import http.client
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import requests

from tests.emulator.iai_support import JSON, IaiCaller, b64, photo
from worker.api import tc3
from worker.emulator import EmulatorHandle, start_in_thread

UNKNOWN_ID = "AKIDnobody0000000000000000000000000000"
BODY = b'{"Limit": 5}'


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    handle = start_in_thread(body_timeout_s=1.0)
    try:
        yield handle
    finally:
        handle.stop()


def enrol(iai: IaiCaller, names: tuple[str, ...] = ("alice", "bob")) -> None:
    iai.ok("CreateGroup", {"GroupId": "staff", "GroupName": "Staff"})
    for i, name in enumerate(names):
        iai.ok("CreatePerson", {"GroupId": "staff", "PersonId": name, "PersonName": name, "Image": b64(photo(name, i))})


# --- the order of the checks ------------------------------------------------------------------------------------

Change = Callable[[IaiCaller, dict[str, str]], None]


def _set(**values: str) -> Change:
    def change(_: IaiCaller, headers: dict[str, str]) -> None:
        headers.update({k.replace("_", "-"): v for k, v in values.items()})

    return change


def _drop(name: str) -> Change:
    return lambda _, headers: headers.pop(name) and None


def _resign(**sign: Any) -> Change:
    def change(iai: IaiCaller, headers: dict[str, str]) -> None:
        timestamp = sign.pop("timestamp", None)
        fresh = iai.headers("GetGroupList", sign.pop("body", BODY), timestamp=timestamp, **sign)
        headers["Authorization"] = fresh["Authorization"]
        headers["X-TC-Timestamp"] = fresh["X-TC-Timestamp"]

    return change


def _skewed(seconds: int, **sign: Any) -> Change:
    return lambda iai, headers: _resign(timestamp=int(time.time()) + seconds, **sign)(iai, headers)


def _scope(service: str) -> Change:
    def change(iai: IaiCaller, headers: dict[str, str]) -> None:
        headers["Authorization"] = headers["Authorization"].replace("/iai/tc3_request", f"/{service}/tc3_request")

    return change


def _another_day(iai: IaiCaller, headers: dict[str, str]) -> None:
    ts = int(headers["X-TC-Timestamp"])
    headers["Authorization"] = headers["Authorization"].replace(tc3.utc_date(ts), tc3.utc_date(ts - 86400))


VERIFICATION = [
    ("no action", _drop("X-TC-Action"), "MissingParameter"),
    ("unknown action", _set(X_TC_Action="SearchFace"), "InvalidAction"),
    ("routing before auth", lambda i, h: (_set(X_TC_Action="Nope")(i, h), h.pop("Authorization")), "InvalidAction"),
    ("no version", _drop("X-TC-Version"), "MissingParameter"),
    ("another version", _set(X_TC_Version="2018-03-01"), "NoSuchVersion"),
    ("no authorization", _drop("Authorization"), "AuthFailure.InvalidAuthorization"),
    ("empty authorization", _set(Authorization=""), "AuthFailure.InvalidAuthorization"),
    ("a v1 signature", _set(Authorization="p2Y5iIYyBmQNfUvPe3e1sxEN/rZhPTEy"), "AuthFailure.InvalidAuthorization"),
    ("another service", _scope("cvm"), "AuthFailure.InvalidAuthorization"),
    (
        "more signed headers",
        lambda i, h: h.update(Authorization=h["Authorization"].replace("=content-type;host,", "=content-type;host;x,")),
        "AuthFailure.InvalidAuthorization",
    ),
    ("form before clock", lambda i, h: (_skewed(3600)(i, h), _scope("cvm")(i, h)), "AuthFailure.InvalidAuthorization"),
    ("no timestamp", _drop("X-TC-Timestamp"), "MissingParameter"),
    ("timestamp not a number", _set(X_TC_Timestamp="soon"), "InvalidParameter"),
    ("timestamp out of range", _set(X_TC_Timestamp="9" * 30), "InvalidParameter"),
    ("unknown secret id", _resign(secret_id=UNKNOWN_ID), "AuthFailure.SecretIdNotFound"),
    (
        "secret id before signature",
        _skewed(-3600, secret_id=UNKNOWN_ID, secret_key="x"),
        "AuthFailure.SecretIdNotFound",
    ),
    ("wrong key", _resign(secret_key="not-the-key"), "AuthFailure.SignatureFailure"),
    ("signature before clock", _skewed(3600, secret_key="not-the-key"), "AuthFailure.SignatureFailure"),
    ("body changed after signing", _resign(body=b'{"Limit": 6}'), "AuthFailure.SignatureFailure"),
    ("host signed without port", lambda i, h: _resign(signed_host="127.0.0.1")(i, h), "AuthFailure.SignatureFailure"),
    ("credential of another day", _another_day, "AuthFailure.SignatureFailure"),
    ("signed for another time", _set(X_TC_Timestamp=str(int(time.time()) - 10)), "AuthFailure.SignatureFailure"),
    ("clock 301 s behind", _skewed(-301), "AuthFailure.SignatureExpire"),
    ("clock 301 s ahead", _skewed(301), "AuthFailure.SignatureExpire"),
    ("clock 240 s ahead", _skewed(240), None),
    ("clock 240 s behind", _skewed(-240), None),
]


@pytest.mark.parametrize(
    ("change", "expected"), [(c, e) for _, c, e in VERIFICATION], ids=[n for n, *_ in VERIFICATION]
)
def test_verification_order(iai: IaiCaller, change: Change, expected: str | None) -> None:
    headers = iai.headers("GetGroupList", BODY)
    change(iai, headers)
    answer = iai.send(BODY, headers)
    assert (answer.status, answer.content_type) == (200, JSON)
    assert answer.code == expected, answer.doc


def test_the_envelopes(iai: IaiCaller) -> None:
    ok = iai.call("GetGroupList")
    failed = iai.call("GetGroupList", secret_key="wrong")
    assert (ok.status, ok.content_type, failed.status, failed.content_type) == (200, JSON, 200, JSON)
    assert set(ok.response) == {"GroupInfos", "GroupNum", "RequestId"}
    assert set(failed.response) == {"Error", "RequestId"}
    assert set(failed.response["Error"]) == {"Code", "Message"} and failed.response["Error"]["Message"]
    ids = {ok.response["RequestId"], failed.response["RequestId"], iai.call("GetGroupList").response["RequestId"]}
    assert len(ids) == 3 and all(uuid.UUID(i) for i in ids)


# --- fields and bodies --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"GroupId": "staff", "Image": "x"}, "UnknownParameter"),  # SearchFaces has GroupIds, not GroupId
        ({"Image": "x"}, "MissingParameter"),
        ({"GroupIds": [], "Image": "x"}, "MissingParameter"),
        ({"GroupIds": "staff", "Image": "x"}, "InvalidParameter"),
        ({"GroupIds": ["staff"], "Image": "x", "MaxFaceNum": "5"}, "InvalidParameter"),
        ({"GroupIds": ["staff"], "Image": "x", "MaxFaceNum": True}, "InvalidParameter"),
        ({"GroupIds": ["staff"], "Image": 5}, "InvalidParameter"),
        ({"GroupIds": [f"g{i}" for i in range(101)], "Image": "x"}, "InvalidParameterValue.GroupIdsExceed"),
        ({"GroupIds": ["staff"], "Image": "x", "MaxFaceNum": 0}, "InvalidParameterValue"),
        ({"GroupIds": ["staff"], "Image": "x", "MaxPersonNum": 101}, "InvalidParameterValue.SearchPersonsExceed"),
        ({"GroupIds": ["staff"], "Image": "x", "QualityControl": 5}, "InvalidParameterValue.QualityControlIllegal"),
        (
            {"GroupIds": ["staff"], "Image": "x", "FaceMatchThreshold": 101},
            "InvalidParameterValue.FaceMatchThresholdIllegal",
        ),
        ({"GroupIds": ["staff"], "Image": "x", "MaxFaceNum": 11}, "FailedOperation.SearchFacesExceed"),
        ({"GroupIds": ["nobody"], "Image": "x", "MaxFaceNum": 10}, "InvalidParameterValue.GroupIdNotExist"),
    ],
)
def test_search_fields_are_checked_before_groups_and_images(
    iai: IaiCaller, fields: dict[str, Any], expected: str
) -> None:
    enrol(iai, ("alice",))
    assert iai.error("SearchFaces", fields) == expected


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"'])
def test_a_body_that_is_not_a_json_object(iai: IaiCaller, body: bytes) -> None:
    assert iai.send(body, iai.headers("GetGroupList", body)).code == "InvalidParameter"


def _raw(emu: EmulatorHandle, head: dict[str, str], body: bytes) -> dict[str, Any]:
    """One request on a fresh socket, its head sent as given (Content-Length included); the answer's JSON."""
    parts = urlsplit(emu.base_url)
    assert parts.hostname and parts.port
    lines = ["POST / HTTP/1.1", *(f"{k}: {v}" for k, v in head.items())]
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert (response.status, response.getheader("Content-Type")) == (200, JSON)
        return orjson.loads(response.read())  # type: ignore[no-any-return]


def test_a_body_over_10_mb_is_refused_before_it_is_read(emu: EmulatorHandle, iai: IaiCaller) -> None:
    head = iai.headers("GetGroupList", BODY)
    head["Content-Length"] = str(10 * 1024 * 1024 + 1)
    assert _raw(emu, head, b"{")["Response"]["Error"]["Code"] == "RequestSizeLimitExceeded"


def test_a_body_that_stops_short_is_an_invalid_parameter_after_the_body_timeout(
    emu: EmulatorHandle, iai: IaiCaller
) -> None:
    head = iai.headers("GetGroupList", BODY)
    head["Content-Length"] = str(len(BODY) + 10)  # 10 bytes never come
    started = time.monotonic()
    assert _raw(emu, head, BODY)["Response"]["Error"]["Code"] == "InvalidParameter"
    assert time.monotonic() - started >= 0.9  # body_timeout_s is 1 s here


# --- faults -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("v1_code", "iai_code"),
    [
        (15, "RequestLimitExceeded"),
        (213, "InternalError"),
        (-1200, "FailedOperation.ServerError"),
        (203, "FailedOperation.RequestTimeout"),
        (3, "ResourceUnavailable.InArrears"),
        (14, "AuthFailure.SignatureFailure"),
        (-1308, "FailedOperation.ImageDownloadError"),
        (-1306, "InvalidParameterValue.GroupIdNotExist"),
        (-1104, "FailedOperation.UnKnowError"),
    ],
)
def test_an_injected_code_is_answered_in_iai_words(
    emu: EmulatorHandle, iai: IaiCaller, v1_code: int, iai_code: str
) -> None:
    enrol(iai, ("alice",))
    emu.admin({"error_rates": {str(v1_code): 1.0}})
    assert iai.error("SearchFaces", {"GroupIds": ["staff"], "Image": b64(photo("alice"))}) == iai_code
    assert emu.stats()["codes"]["iai/SearchFaces"] == {iai_code: 1}


def test_management_calls_are_faulted_only_when_asked(emu: EmulatorHandle, iai: IaiCaller) -> None:
    emu.admin({"error_rates": {"213": 1.0}})
    assert iai.call("GetGroupList").code is None
    assert iai.error("SearchFaces", {"GroupIds": ["x"], "Image": "x"}) == "InternalError"
    emu.admin({"error_rates": {"213": 1.0}, "apply_to_management": True})
    assert iai.error("GetGroupList") == "InternalError"
    assert iai.error("GetGroupList", secret_key="wrong") == "InternalError", "faults come before the signature"
    assert iai.error("NoSuchAction") == "InvalidAction", "routing errors are never faulted"


def test_the_qps_limit(emu: EmulatorHandle, iai: IaiCaller) -> None:
    emu.admin({"qps_limit": 0.001, "qps_burst": 2})
    search = {"GroupIds": ["x"], "Image": "x"}
    codes = [iai.error("SearchFaces", search) for _ in range(4)]
    assert codes == ["InvalidParameterValue.GroupIdNotExist"] * 2 + ["RequestLimitExceeded"] * 2
    assert emu.stats()["faults"]["qps"] == 2


def test_latency_http_errors_drops_malformed_and_slow_bodies(emu: EmulatorHandle, iai: IaiCaller) -> None:
    body = orjson.dumps({"GroupIds": ["x"], "Image": "x"})
    session = iai.session

    def post() -> requests.Response:
        return session.post(emu.base_url + "/", data=body, headers=iai.headers("SearchFaces", body), timeout=30)

    emu.admin({"latency_ms": 300})
    started = time.monotonic()
    assert orjson.loads(post().content)["Response"]["Error"]["Code"] == "InvalidParameterValue.GroupIdNotExist"
    assert time.monotonic() - started >= 0.3
    emu.admin({"http_error_rates": {"503": 1.0}})
    response = post()
    assert response.status_code == 503 and not response.headers["Content-Type"].startswith(JSON)
    emu.admin({"drop_rate": 1.0})
    with pytest.raises(requests.ConnectionError):
        post()
    emu.admin({"malformed_json_rate": 1.0})
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(post().content)
    emu.admin({"slow_body_rate": 1.0, "slow_body_ms": 300})
    started = time.monotonic()
    assert orjson.loads(post().content)["Response"]["Error"]["Code"] == "InvalidParameterValue.GroupIdNotExist"
    assert time.monotonic() - started >= 0.25
    assert emu.stats()["faults"] == {"latency": 1, "http": 1, "drop": 1, "malformed": 1, "slow": 1}


def test_stats_count_iai_requests_by_action(emu: EmulatorHandle, iai: IaiCaller) -> None:
    emu.reset()
    iai.call("GetGroupList")
    iai.call("GetGroupList", secret_key="wrong")
    iai.call("Frobnicate")
    stats = emu.stats()
    assert stats["requests"] == {"iai/GetGroupList": 2, "iai/?": 1}
    assert stats["codes"]["iai/GetGroupList"] == {"0": 1, "AuthFailure.SignatureFailure": 1}
    assert stats["codes"]["iai/?"] == {"InvalidAction": 1}


def wait_for_in_flight(emu: EmulatorHandle, count: int, what: str) -> None:
    deadline = time.monotonic() + 10
    while emu.stats()["in_flight"] != count:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_client_gone_mid_body_gets_no_answer(emu: EmulatorHandle, iai: IaiCaller) -> None:
    wait_for_in_flight(emu, 0, "an earlier test's answers to finish")  # e.g. a trickled slow body
    emu.reset()
    parts = urlsplit(emu.base_url)
    assert parts.hostname and parts.port
    head = iai.headers("GetGroupList", BODY)
    head["Content-Length"] = str(len(BODY))
    lines = ["POST / HTTP/1.1", *(f"{k}: {v}" for k, v in head.items())]
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + BODY[:3])
        wait_for_in_flight(emu, 1, "the emulator to read the head")
    wait_for_in_flight(emu, 0, "the handler to finish")
    assert emu.stats()["codes"]["iai/GetGroupList"] == {"client_gone": 1}
    assert iai.call("GetGroupList").code is None  # and the next request is served as usual
