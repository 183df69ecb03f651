"""IAI on the wire (worker.api.iai_wire): request bodies and headers, checked against Tencent's own SDK with its
transport stubbed; answers, errors and malformed bodies, with a fuzz that only ApiError escapes."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, ClassVar

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tencentcloud.common import abstract_client, credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.iai.v20200303 import iai_client
from tencentcloud.iai.v20200303 import models as sdk

from tests.support.jsonfuzz import JSON, STATUSES, corrupted
from worker.api import iai_answers, iai_wire, tc3
from worker.api.codes import Api, ErrorClass, Origin
from worker.api.errors import ApiError
from worker.api.iai_answers import GroupInfo, check_groups, parse_search_faces
from worker.api.iai_wire import (
    Action,
    Credentials,
    SearchOptions,
    parse_endpoint,
    request_headers,
    search_faces_body,
)
from worker.api.models import Candidate, Face, FaceRect, IdentifyResult

T, P, C = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.CONFIG
TS = 1795703247  # the timestamp of the IAI vector in tests/api/test_tc3.py
CREDS = Credentials("AKIDEXAMPLE", "SECRETEXAMPLE")
URL = "https://example.invalid/a.jpg"

# The output example of Tencent's SearchFaces page, verbatim.
DOC_EXAMPLE = b"""{
  "Response": {
    "Results": [
      {
        "RetCode": 0,
        "Candidates": [
          {
            "PersonId": "1001",
            "FaceId": "2875093635484912302",
            "PersonName": "Jerry",
            "Gender": 0,
            "Score": 100,
            "PersonGroupInfos": [
              {
                "GroupId": "abc",
                "PersonExDescriptions": ["description1", "description2"]
              }
            ]
          }
        ],
        "FaceRect": {"X": 370, "Y": 46, "Width": 75, "Height": 75}
      }
    ],
    "FaceNum": 1,
    "FaceModelVersion": "3.0",
    "RequestId": "57b42b73-b978-45b9-8095-8f50e9642d35"
  }
}"""


def _ok(**members: Any) -> bytes:
    return orjson.dumps({"Response": {"RequestId": "req-1", **members}})


def _error(code: Any, message: Any = "msg", request_id: Any = "req-e") -> bytes:
    return orjson.dumps({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id}})


def _face(x: int = 1, candidates: Any = None, ret_code: Any = 0) -> dict[str, Any]:
    face: dict[str, Any] = {"FaceRect": {"X": x, "Y": 2, "Width": 3, "Height": 4}, "RetCode": ret_code}
    if candidates is not None:
        face["Candidates"] = candidates
    return face


# -- Tencent's SDK with its transport stubbed: what it would send for the same request ---------------------------


class _Answer:
    status_code = 200
    headers: ClassVar[dict[str, str]] = {"Content-Type": "application/json"}

    def __init__(self, body: bytes) -> None:
        self.content = body


def sdk_request(
    monkeypatch: pytest.MonkeyPatch,
    call: Callable[[iai_client.IaiClient], Any],
    *,
    endpoint: str = "iai.tencentcloudapi.com",
    protocol: str = "https",
    region: str = "ap-guangzhou",
    creds: Credentials = CREDS,
    answer: bytes = b'{"Response": {"RequestId": "r"}}',
) -> tuple[dict[str, str], bytes, str, Any]:
    """Run one SDK call with its clock fixed at ``TS`` and its connection replaced; return the headers, body and
    URL it sent, and what it made of ``answer``. Nothing leaves the process."""
    sent: dict[str, Any] = {}

    def capture(method: str, url: str, body: Any = None, headers: Any = None) -> _Answer:
        sent.update(method=method, url=url, body=body, headers=dict(headers))
        return _Answer(answer)

    # Only the SDK module's view of the clock: time.time stays untouched for everything else in the process.
    monkeypatch.setattr(abstract_client, "time", SimpleNamespace(time=lambda: TS + 0.7))
    client = iai_client.IaiClient(
        credential.Credential(creds.secret_id, creds.secret_key, creds.token),
        region,
        ClientProfile(httpProfile=HttpProfile(endpoint=endpoint, protocol=protocol)),
    )
    monkeypatch.setattr(client.request.conn, "request", capture)
    result = call(client)
    assert sent["method"] == "POST"
    body = sent["body"]
    return sent["headers"], body.encode() if isinstance(body, str) else body, sent["url"], result


def _ours(action: Action, body: bytes, *, host: str = "iai.tencentcloudapi.com", creds: Credentials = CREDS) -> Any:
    return request_headers(action, body, host=host, region="ap-guangzhou", credentials=creds, timestamp=TS)


def _assert_same_request(ours: dict[str, str], body: bytes, theirs: dict[str, str], their_body: bytes) -> None:
    assert body == their_body
    # Every header we send is the SDK's, value for value; the SDK adds only unsigned extras (trace id, client
    # name, message language).
    assert {k: theirs.get(k) for k in ours} == ours
    assert set(theirs) - set(ours) <= {"X-TC-TraceId", "X-TC-RequestClient", "X-TC-Language"}


def test_the_tc3_vector_request_is_the_sdk_s(monkeypatch: pytest.MonkeyPatch) -> None:
    options = SearchOptions(max_face_num=5, max_person_num=5, min_face_size=34)
    body = search_faces_body(["g1", "g2"], options, url=URL)

    def call(client: iai_client.IaiClient) -> Any:
        req = sdk.SearchFacesRequest()
        req.GroupIds, req.Url, req.MaxFaceNum, req.MinFaceSize, req.MaxPersonNum = ["g1", "g2"], URL, 5, 34, 5
        return client.SearchFaces(req)

    theirs, their_body, url, _ = sdk_request(monkeypatch, call)
    ours = _ours(Action.SEARCH_FACES, body)
    _assert_same_request(ours, body, theirs, their_body)
    assert ours["Authorization"].endswith("Signature=88a6f2dbb13274efd8fd4a15499007feff44be606d979173d906ea2a9ac90423")
    assert url == parse_endpoint("iai.tencentcloudapi.com").url.rstrip("/")  # the SDK posts to the bare host


@st.composite
def _search_inputs(draw: st.DrawFn) -> tuple[list[str], SearchOptions, str | None, bytes | None]:
    groups = draw(st.lists(st.text(alphabet="abcXYZ019-_@#&%", min_size=1, max_size=12), min_size=1, max_size=4))
    options = SearchOptions(
        max_face_num=draw(st.integers(1, 10)),
        max_person_num=draw(st.integers(1, 100)),
        min_face_size=draw(st.none() | st.integers(34, 400)),
        face_match_threshold=draw(st.none() | st.floats(0, 99.99) | st.integers(0, 99)),
        quality_control=draw(st.none() | st.integers(0, 4)),
        need_person_info=draw(st.booleans()),
    )
    by_url = draw(st.booleans())
    url = draw(st.text(min_size=1, max_size=40).filter(str.strip)) if by_url else None
    image = None if by_url else draw(st.binary(min_size=1, max_size=64))
    return groups, options, url, image


@settings(max_examples=60, deadline=None)
@given(inputs=_search_inputs(), token=st.none() | st.just("tmp-token-1"))
def test_searchfaces_requests_are_the_sdk_s(
    inputs: tuple[list[str], SearchOptions, str | None, bytes | None], token: str | None
) -> None:
    groups, options, url, image = inputs
    creds = Credentials("AKIDEXAMPLE", "SECRETEXAMPLE", token)
    body = search_faces_body(groups, options, url=url, image=image)

    def call(client: iai_client.IaiClient) -> Any:
        req = sdk.SearchFacesRequest()
        req.GroupIds = groups
        req.Url = url
        req.Image = base64.b64encode(image).decode() if image is not None else None
        req.MaxFaceNum = options.max_face_num
        req.MinFaceSize = options.min_face_size
        req.MaxPersonNum = options.max_person_num
        req.NeedPersonInfo = 1 if options.need_person_info else None
        req.QualityControl = options.quality_control
        req.FaceMatchThreshold = None if options.face_match_threshold is None else float(options.face_match_threshold)
        return client.SearchFaces(req)

    with pytest.MonkeyPatch.context() as patch:  # one per example: the fixture would be shared by all of them
        theirs, their_body, _, _ = sdk_request(patch, call, creds=creds)
    _assert_same_request(_ours(Action.SEARCH_FACES, body, creds=creds), body, theirs, their_body)
    assert ("X-TC-Token" in theirs) is (token is not None)


def test_against_the_emulator_the_host_with_its_port_is_signed_as_the_sdk_does(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = parse_endpoint("http://127.0.0.1:8080")
    assert (endpoint.url, endpoint.host) == ("http://127.0.0.1:8080/", "127.0.0.1:8080")
    body = search_faces_body(["g"], SearchOptions(), url=URL)

    def call(client: iai_client.IaiClient) -> Any:
        req = sdk.SearchFacesRequest()
        req.GroupIds, req.Url, req.MaxFaceNum, req.MaxPersonNum = ["g"], URL, 10, 5
        return client.SearchFaces(req)

    theirs, their_body, url, _ = sdk_request(monkeypatch, call, endpoint=endpoint.host, protocol="http")
    _assert_same_request(_ours(Action.SEARCH_FACES, body, host=endpoint.host), body, theirs, their_body)
    assert url == "http://127.0.0.1:8080"


def _sdk_call(action: Action, fields: dict[str, Any]) -> Callable[[iai_client.IaiClient], Any]:
    def call(client: iai_client.IaiClient) -> Any:
        req = getattr(sdk, f"{action}Request")()
        for name, value in fields.items():
            setattr(req, name, value)
        return getattr(client, str(action))(req)

    return call


@pytest.mark.parametrize(
    ("action", "body", "fields"),
    [
        (Action.GET_GROUP_LIST, iai_wire.get_group_list_body(offset=1000), {"Offset": 1000, "Limit": 1000}),
        (
            Action.GET_PERSON_LIST,
            iai_wire.get_person_list_body("demo", limit=10),
            {"GroupId": "demo", "Offset": 0, "Limit": 10},
        ),
        (
            Action.CREATE_GROUP,
            iai_wire.create_group_body("demo", "演示", tag="t"),
            {"GroupName": "演示", "GroupId": "demo", "Tag": "t"},
        ),
        (
            Action.CREATE_PERSON,
            iai_wire.create_person_body("demo", "alice", "Alice", url=URL, quality_control=2),
            {"GroupId": "demo", "PersonName": "Alice", "PersonId": "alice", "Url": URL, "QualityControl": 2},
        ),
        (
            Action.CREATE_FACE,
            iai_wire.create_face_body("alice", images=[b"\xff\xd8\xff1", b"\xff\xd8\xff2"]),
            {"PersonId": "alice", "Images": [base64.b64encode(b"\xff\xd8\xff1").decode(), "/9j/Mg=="]},
        ),
        (
            Action.CREATE_FACE,
            iai_wire.create_face_body("alice", urls=[URL], images=[b"ignored"]),
            {"PersonId": "alice", "Urls": [URL]},
        ),
        (Action.GET_PERSON_BASE_INFO, iai_wire.get_person_base_info_body("alice"), {"PersonId": "alice"}),
        (
            Action.GET_PERSON_GROUP_INFO,
            iai_wire.get_person_group_info_body("alice", offset=100),
            {"PersonId": "alice", "Offset": 100, "Limit": 100},
        ),
        (Action.DELETE_PERSON, iai_wire.delete_person_body("alice"), {"PersonId": "alice"}),
        (
            Action.DETECT_FACE,
            iai_wire.detect_face_body(url=URL, max_face_num=2),
            {"MaxFaceNum": 2, "Url": URL},
        ),
        (
            Action.DELETE_FACE,
            iai_wire.delete_face_body("alice", ["f1", "f2"]),
            {"PersonId": "alice", "FaceIds": ["f1", "f2"]},
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_management_requests_are_the_sdk_s(
    monkeypatch: pytest.MonkeyPatch, action: Action, body: bytes, fields: dict[str, Any]
) -> None:
    theirs, their_body, _, _ = sdk_request(monkeypatch, _sdk_call(action, fields))
    _assert_same_request(_ours(action, body), body, theirs, their_body)


def test_the_sdk_and_we_read_the_documented_answer_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    call = _sdk_call(Action.SEARCH_FACES, {"GroupIds": ["abc"], "Url": URL, "MaxFaceNum": 10})
    _, _, _, theirs = sdk_request(monkeypatch, call, answer=DOC_EXAMPLE)
    ours = parse_search_faces(DOC_EXAMPLE, 200)
    assert ours.request_id == theirs.RequestId and ours.face_model_version == theirs.FaceModelVersion
    assert [(f.rect.x, f.rect.y, f.rect.width, f.rect.height, f.ret_code) for f in ours.faces] == [
        (r.FaceRect.X, r.FaceRect.Y, r.FaceRect.Width, r.FaceRect.Height, r.RetCode) for r in theirs.Results
    ]
    assert [(c.person_id, c.face_id, c.confidence, c.person_name) for c in ours.faces[0].candidates] == [
        (c.PersonId, c.FaceId, c.Score, c.PersonName) for c in theirs.Results[0].Candidates
    ]


def test_headers_without_region_token_or_language_leave_them_out() -> None:
    headers = request_headers(Action.GET_GROUP_LIST, b"{}", host="h", region="", credentials=CREDS, timestamp=TS)
    assert set(headers) == {"Content-Type", "Host", "X-TC-Action", "X-TC-Timestamp", "X-TC-Version", "Authorization"}
    assert (headers["X-TC-Action"], headers["X-TC-Version"], headers["Content-Type"]) == (
        "GetGroupList",
        "2020-03-03",
        "application/json",
    )
    with_all = request_headers(
        Action.SEARCH_FACES,
        b"{}",
        host="h",
        region="ap-beijing",
        credentials=Credentials("id", "key", "tok"),
        timestamp=TS,
        language="en-US",
    )
    assert (with_all["X-TC-Region"], with_all["X-TC-Token"], with_all["X-TC-Language"]) == (
        "ap-beijing",
        "tok",
        "en-US",
    )
    assert with_all["Authorization"] == tc3.authorization(
        "id", "key", service="iai", host="h", content_type="application/json", body=b"{}", timestamp=TS
    )


def test_a_line_break_in_a_header_value_is_refused() -> None:
    with pytest.raises(ValueError, match="X-TC-Region"):
        request_headers("SearchFaces", b"{}", host="h", region="ap\r\nX: y", credentials=CREDS, timestamp=TS)


def test_credentials_never_show_the_key_or_token() -> None:
    text = repr(Credentials("AKIDx", "very-secret", "token-secret"))
    assert "AKIDx" in text and "very-secret" not in text and "token-secret" not in text


# -- bodies: what is sent, what is refused -------------------------------------------------------------------------


def test_max_face_num_is_always_sent_and_absent_options_are_omitted() -> None:
    body = json.loads(search_faces_body(["g"], SearchOptions(), url=URL))
    # MaxFaceNum defaults to 1 at the service (the largest face only): it must be sent.
    assert body == {"GroupIds": ["g"], "Url": URL, "MaxFaceNum": 10, "MaxPersonNum": 5}
    full = SearchOptions(
        max_face_num=3,
        max_person_num=8,
        min_face_size=80,
        face_match_threshold=80,
        quality_control=2,
        need_person_info=True,
    )
    assert json.loads(search_faces_body(["g1", "g2"], full, url=URL)) == {
        "GroupIds": ["g1", "g2"],
        "Url": URL,
        "MaxFaceNum": 3,
        "MinFaceSize": 80,
        "MaxPersonNum": 8,
        "NeedPersonInfo": 1,
        "QualityControl": 2,
        "FaceMatchThreshold": 80.0,
    }
    assert b"null" not in search_faces_body(["g"], SearchOptions(), url=URL)


def test_a_single_group_is_still_a_list() -> None:
    assert json.loads(search_faces_body(["only"], SearchOptions(), url=URL))["GroupIds"] == ["only"]


def test_the_image_is_sent_base64_encoded() -> None:
    image = b"\xff\xd8\xff\xe0 jpeg bytes"
    body = json.loads(search_faces_body(["g"], SearchOptions(), image=memoryview(image)))
    assert base64.b64decode(body["Image"]) == image and "Url" not in body


def test_url_wins_over_the_image_which_is_then_not_even_checked() -> None:
    huge = bytearray(iai_wire.MAX_IMAGE_BASE64_BYTES)  # over the limit once encoded: ignored, not refused
    body = json.loads(search_faces_body(["g"], SearchOptions(), url=URL, image=huge))
    assert body["Url"] == URL and "Image" not in body


def _refused(call: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    assert info.value.origin is Origin.SERVICE and "refused locally" in info.value.message
    return info.value


def test_the_5_mb_limit_is_on_the_encoded_image() -> None:
    limit = iai_wire.MAX_IMAGE_BASE64_BYTES
    largest = limit // 4 * 3  # encodes to exactly the limit
    assert len(json.loads(search_faces_body(["g"], SearchOptions(), image=bytes(largest)))["Image"]) == limit
    error = _refused(lambda: search_faces_body(["g"], SearchOptions(), image=bytes(largest + 1)))
    assert (error.code, error.error_class) == ("FailedOperation.ImageSizeExceed", P)
    # 3,932,161 bytes are under 5 MB raw but over it encoded: the limit is Tencent's, on the base64 text.
    assert largest + 1 < limit


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"group_ids": [], "url": URL}, "MissingParameter.ErrorParameterEmpty"),
        ({"group_ids": [""], "url": URL}, "MissingParameter.ErrorParameterEmpty"),
        ({"group_ids": ["g"], "url": "  "}, "MissingParameter.ErrorParameterEmpty"),
        ({"group_ids": ["g"]}, "MissingParameter.ErrorParameterEmpty"),
        ({"group_ids": ["g"], "image": b""}, "InvalidParameterValue.ImageEmpty"),
        ({"group_ids": ["g"], "image": memoryview(b"")}, "InvalidParameterValue.ImageEmpty"),
    ],
)
def test_requests_the_service_would_refuse_are_refused_with_its_code(kwargs: dict[str, Any], code: str) -> None:
    groups = kwargs.pop("group_ids")
    error = _refused(lambda: search_faces_body(groups, SearchOptions(), **kwargs))
    assert (error.code, error.error_class) == (code, P)


def test_a_string_is_not_a_group_list() -> None:
    with pytest.raises(TypeError):
        search_faces_body("abc", SearchOptions(), url=URL)


def test_create_face_takes_at_most_four_images() -> None:
    error = _refused(lambda: iai_wire.create_face_body("p", urls=[URL] * 5))
    assert error.code == "InvalidParameterValue.UploadFaceNumExceed"
    assert _refused(lambda: iai_wire.create_face_body("p")).code == "MissingParameter.ErrorParameterEmpty"


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"max_face_num": 0}, "iai_max_face_num"),
        ({"max_face_num": 11}, "iai_max_face_num"),
        ({"max_face_num": True}, "iai_max_face_num"),
        ({"max_person_num": 101}, "iai_max_person_num"),
        ({"max_person_num": 0}, "iai_max_person_num"),
        ({"min_face_size": 33}, "iai_min_face_size"),
        ({"quality_control": 5}, "iai_quality_control"),
        ({"quality_control": -1}, "iai_quality_control"),
        ({"face_match_threshold": 100}, "iai_face_match_threshold"),
        ({"face_match_threshold": -0.5}, "iai_face_match_threshold"),
        ({"face_match_threshold": float("nan")}, "iai_face_match_threshold"),
        ({"face_match_threshold": "80"}, "iai_face_match_threshold"),
        ({"need_person_info": 1}, "iai_need_person_info"),
    ],
)
def test_search_options_out_of_range_name_the_setting(kwargs: dict[str, Any], setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        SearchOptions(**kwargs)


@pytest.mark.parametrize(
    ("value", "url", "host"),
    [
        ("iai.tencentcloudapi.com", "https://iai.tencentcloudapi.com/", "iai.tencentcloudapi.com"),
        ("iai.ap-guangzhou.tencentcloudapi.com", "https://iai.ap-guangzhou.tencentcloudapi.com/", None),
        ("https://iai.tencentcloudapi.com/", "https://iai.tencentcloudapi.com/", "iai.tencentcloudapi.com"),
        ("http://127.0.0.1:40607", "http://127.0.0.1:40607/", "127.0.0.1:40607"),
    ],
)
def test_endpoints(value: str, url: str, host: str | None) -> None:
    endpoint = parse_endpoint(value)
    assert endpoint.url == url
    assert endpoint.host == (host or value)


@pytest.mark.parametrize(
    "value",
    ["", "ftp://iai.example", "https://user:pw@iai.example", "https://iai.example/v3", "http://h:99999", "x?y=1"],
)
def test_bad_endpoints_name_the_setting(value: str) -> None:
    with pytest.raises(ValueError, match="iai_endpoint"):
        parse_endpoint(value)


# -- answers ---------------------------------------------------------------------------------------------------------


def test_the_documented_answer_parses_into_typed_values() -> None:
    assert parse_search_faces(DOC_EXAMPLE, 200) == IdentifyResult(
        faces=(
            Face(
                rect=FaceRect(370, 46, 75, 75),
                candidates=(
                    Candidate(person_id="1001", face_id="2875093635484912302", confidence=100.0, person_name="Jerry"),
                ),
                ret_code=0,
            ),
        ),
        request_id="57b42b73-b978-45b9-8095-8f50e9642d35",
        http_status=200,
        api=Api.IAI,
        face_model_version="3.0",
    )


def test_negative_boxes_and_faces_that_failed_the_quality_check_are_kept() -> None:
    doc = json.loads(DOC_EXAMPLE)
    results = doc["Response"]["Results"]
    results[0]["FaceRect"].update(X=-12, Y=-3)
    results.append({"RetCode": -1601, "Candidates": [], "FaceRect": {"X": 500, "Y": -8, "Width": 40, "Height": 41}})
    results.append({"RetCode": -1601, "Candidates": None, "FaceRect": {"X": 1, "Y": 1, "Width": 1, "Height": 1}})
    result = parse_search_faces(orjson.dumps(doc), 200)
    assert [(f.rect.x, f.rect.y, f.ret_code, len(f.candidates)) for f in result.faces] == [
        (-12, -3, 0, 1),
        (500, -8, iai_wire.QUALITY_FAILED, 0),
        (1, 1, -1601, 0),
    ]


def test_optional_members_may_be_absent_or_null() -> None:
    cand = {"PersonId": "p", "FaceId": "f", "Score": 54.9, "PersonName": None}
    result = parse_search_faces(
        _ok(Results=[{"FaceRect": {"X": 1, "Y": 2, "Width": 3, "Height": 4}, "Candidates": [cand]}]), 200
    )
    face = result.faces[0]
    assert face.ret_code == 0  # absent RetCode: a face that passed
    assert face.candidates == (Candidate("p", "f", 54.9),)
    assert (face.candidates[0].tag, face.candidates[0].person_name) == ("", None)
    assert result.face_model_version is None
    assert parse_search_faces(_ok(Results=[]), 200).faces == ()


@pytest.mark.parametrize(
    "response",
    [
        {"RequestId": "r"},
        {"RequestId": "r", "Results": {"FaceRect": {"X": 1, "Y": 1, "Width": 1, "Height": 1}}},
        {"RequestId": "r", "Results": [{"Candidates": []}]},
        {"RequestId": "r", "Results": [_face(1, {"PersonId": "p"})]},
        {"RequestId": "r", "Results": [{"FaceRect": {"X": "1", "Y": 1, "Width": 1, "Height": 1}}]},
        {"RequestId": "r", "Results": [{"FaceRect": {"X": 1.5, "Y": 1, "Width": 1, "Height": 1}}]},
        {"RequestId": "r", "Results": [{"FaceRect": {"x": 1, "y": 1, "width": 1, "height": 1}}]},
        {"RequestId": "r", "Results": [_face(1, [{"PersonId": "p", "FaceId": "f", "Score": "90"}])]},
        {"RequestId": "r", "Results": [_face(1, [{"PersonId": "p", "FaceId": "f", "Score": True}])]},
        {"RequestId": "r", "Results": [_face(1, [{"PersonId": 1, "FaceId": "f", "Score": 90}])]},
        {"RequestId": "r", "Results": [_face(1, [{"PersonId": "p", "Score": 90}])]},
        {"RequestId": "r", "Results": [_face(1, [{"PersonId": "p", "FaceId": "f", "Score": 9, "PersonName": 7}])]},
        {"RequestId": "r", "Results": [_face(1, [], ret_code="-1601")]},
        {"RequestId": "r", "Results": [], "FaceModelVersion": 3.0},
        {"Results": []},
        {"RequestId": 7, "Results": []},
        {"RequestId": "r" * 129, "Results": []},
        {"RequestId": "r", "Error": {"Message": "no code"}},
        {"RequestId": "r", "Error": {"Code": "timeout", "Message": "not an IAI code"}},
        {"RequestId": "r", "Error": {"Code": "x" * 80}},
        {"RequestId": "r", "Error": "InternalError"},
    ],
    ids=lambda d: orjson.dumps(d).decode()[:70],
)
def test_wrong_shapes_are_bad_response(response: Any) -> None:
    with pytest.raises(ApiError) as info:
        parse_search_faces(orjson.dumps({"Response": response}), 200)
    assert (info.value.code, info.value.error_class, info.value.http_status) == ("bad_response", T, 200)


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>502</html>", b"[1]", b'"ok"', b"{}", b'{"response":{"RequestId":"r","Results":[]}}', b"\xff\xfe"],
)
def test_non_envelopes_on_200_are_bad_response(body: bytes) -> None:
    with pytest.raises(ApiError) as info:
        parse_search_faces(body, 200)
    assert info.value.code == "bad_response"


@pytest.mark.parametrize(
    ("code", "expected", "rate_limited"),
    [
        ("FailedOperation.ImageDownloadError", P, False),
        ("AuthFailure.SignatureFailure", C, False),
        ("InvalidParameterValue.GroupIdNotExist", C, False),
        ("RequestLimitExceeded", T, True),
        ("InternalError", T, False),
        ("FailedOperation.BrandNew", T, False),
    ],
)
@pytest.mark.parametrize("status", [200, 400, 503])
def test_an_error_answer_is_its_code_whatever_the_status(
    code: str, expected: ErrorClass, rate_limited: bool, status: int
) -> None:
    with pytest.raises(ApiError) as info:
        parse_search_faces(_error(code, "服务消息", "57b42b73"), status)
    error = info.value
    assert (error.code, error.error_class, error.message, error.http_status, error.request_id, error.origin) == (
        code,
        expected,
        "服务消息",
        status,
        "57b42b73",
        Origin.SERVICE,
    )
    assert error.rate_limited is rate_limited


def test_an_error_without_message_or_request_id_gets_the_registry_s_words() -> None:
    with pytest.raises(ApiError) as info:
        parse_search_faces(orjson.dumps({"Response": {"Error": {"Code": "FailedOperation.ImageDownloadError"}}}), 200)
    assert (info.value.message, info.value.request_id) == ("url image download failed", None)


def test_a_long_message_is_truncated() -> None:
    with pytest.raises(ApiError) as info:
        parse_search_faces(_error("InternalError", "x" * 10_000), 200)
    assert len(info.value.message) <= 300


@pytest.mark.parametrize(
    ("status", "expected"), [(503, T), (502, T), (429, T), (404, P), (413, P), (401, C), (403, C), (302, P)]
)
@pytest.mark.parametrize("body", [b"Bad Gateway", b"", b'{"Response":{"Error":{"Code":7}}}', DOC_EXAMPLE])
def test_non_2xx_without_an_error_code_is_http_status(status: int, expected: ErrorClass, body: bytes) -> None:
    # DOC_EXAMPLE is a success: on an error status it is not trusted (the rule v1 follows).
    with pytest.raises(ApiError) as info:
        parse_search_faces(body, status)
    error = info.value
    assert (error.code, error.error_class, error.http_status, error.origin) == (
        f"http_{status}",
        expected,
        status,
        Origin.CLIENT,
    )
    assert error.rate_limited is (status == 429)


# -- management answers ------------------------------------------------------------------------------------------


def test_group_list_and_the_configuration_check() -> None:
    page = iai_answers.parse_group_list(
        _ok(
            GroupInfos=[
                {"GroupId": "a", "GroupName": "A", "FaceModelVersion": "3.0", "Tag": "", "CreationTimestamp": 1},
                {"GroupId": "b", "GroupName": "B", "FaceModelVersion": "3.0"},
                {"GroupId": "old", "GroupName": "Old", "FaceModelVersion": "2.0"},
            ],
            GroupNum=3,
        ),
        200,
    )
    assert page.total == 3 and page.request_id == "req-1"
    assert [g.group_id for g in page.groups] == ["a", "b", "old"]
    check_groups(["a", "b"], page.groups)  # fine: exist, one model version
    with pytest.raises(ApiError) as info:
        check_groups(["a", "missing", "gone"], page.groups)
    assert (info.value.code, info.value.error_class) == ("InvalidParameterValue.GroupIdNotExist", C)
    assert "missing, gone" in info.value.message
    with pytest.raises(ApiError) as info:
        check_groups(["a", "old"], page.groups)
    assert (info.value.code, info.value.error_class) == ("FailedOperation.AcrossVersionsError", C)
    empty = iai_answers.parse_group_list(_ok(GroupInfos=None, GroupNum=0), 200)
    assert empty.groups == () and empty.total == 0
    with pytest.raises(ApiError):
        check_groups(["a"], empty.groups)
    check_groups([], [GroupInfo("x", "X", None)])


def test_person_list() -> None:
    page = iai_answers.parse_person_list(
        _ok(
            PersonInfos=[{"PersonName": "Alice", "PersonId": "alice", "Gender": 0, "FaceIds": ["f1", "f2"]}],
            PersonNum=1,
            FaceNum=2,
            FaceModelVersion="3.0",
        ),
        200,
    )
    assert page.persons == (iai_answers.PersonInfo("alice", "Alice", ("f1", "f2")),)
    assert (page.person_num, page.face_num, page.face_model_version) == (1, 2, "3.0")
    nulls = iai_answers.parse_person_list(_ok(PersonInfos=[], PersonNum=None, FaceNum=None), 200)
    assert (nulls.persons, nulls.person_num, nulls.face_num) == ((), None, None)


def test_create_answers() -> None:
    assert iai_answers.parse_create_group(_ok(FaceModelVersion="3.0"), 200) == iai_answers.CreatedGroup("3.0", "req-1")
    person = iai_answers.parse_create_person(
        _ok(
            FaceId="f1",
            FaceRect={"X": -2, "Y": 5, "Width": 80, "Height": 90},
            SimilarPersonId="",
            FaceModelVersion="3.0",
        ),
        200,
    )
    assert person == iai_answers.CreatedPerson("f1", FaceRect(-2, 5, 80, 90), None, "3.0", "req-1")
    faces = iai_answers.parse_create_face(
        _ok(
            SucFaceNum=1, SucFaceIds=["f9"], RetCode=[0, -1101], SucIndexes=[0], SucFaceRects=[], FaceModelVersion="3.0"
        ),
        200,
    )
    assert (faces.suc_face_num, faces.suc_face_ids, faces.ret_codes, faces.suc_indexes) == (
        1,
        ("f9",),
        (0, -1101),
        (0,),
    )


@pytest.mark.parametrize(
    ("parse", "response"),
    [
        (iai_answers.parse_group_list, {"GroupInfos": {"GroupId": "a"}}),
        (iai_answers.parse_group_list, {"GroupInfos": [{"GroupName": "A"}]}),
        (iai_answers.parse_group_list, {"GroupInfos": [], "GroupNum": "3"}),
        (iai_answers.parse_person_list, {"PersonInfos": [{"PersonId": "p", "FaceIds": "f1"}]}),
        (iai_answers.parse_create_person, {"FaceRect": None}),
        (iai_answers.parse_create_person, {"FaceId": "f", "FaceRect": [1, 2, 3, 4]}),
        (iai_answers.parse_create_face, {"SucFaceNum": 1, "RetCode": ["0"]}),
        (iai_answers.parse_create_face, {"SucFaceIds": []}),
        (iai_answers.parse_create_group, {"FaceModelVersion": 3}),
    ],
)
def test_management_answers_of_the_wrong_shape_are_bad_response(parse: Callable[..., Any], response: Any) -> None:
    with pytest.raises(ApiError) as info:
        parse(orjson.dumps({"Response": {"RequestId": "r", **response}}), 200)
    assert info.value.code == "bad_response"


def test_management_errors_are_their_codes() -> None:
    with pytest.raises(ApiError) as info:
        iai_answers.parse_create_group(_error("InvalidParameterValue.GroupIdAlreadyExist"), 200)
    assert (info.value.code, info.value.error_class) == ("InvalidParameterValue.GroupIdAlreadyExist", P)


# -- fuzz: whatever the bytes, a parser returns a typed value or raises ApiError --------------------------------

_valid_candidate = st.fixed_dictionaries(
    {"PersonId": st.text(max_size=8), "FaceId": st.text(max_size=8), "Score": st.floats(0, 100)},
    optional={"PersonName": st.none() | st.text(max_size=8), "Gender": st.integers(0, 2)},
)
_valid_face = st.fixed_dictionaries(
    {
        "FaceRect": st.fixed_dictionaries({k: st.integers(-50, 5000) for k in ("X", "Y", "Width", "Height")}),
        "Candidates": st.lists(_valid_candidate, max_size=3),
        "RetCode": st.sampled_from([0, -1601]),
    }
)
_valid_doc = st.fixed_dictionaries(
    {
        "Response": st.fixed_dictionaries(
            {
                "Results": st.lists(_valid_face, min_size=1, max_size=3),
                "FaceNum": st.integers(0, 10**6),
                "FaceModelVersion": st.sampled_from(["2.0", "3.0"]),
                "RequestId": st.uuids().map(str),
            }
        )
    }
)
_error_doc = st.fixed_dictionaries(
    {
        "Response": st.fixed_dictionaries(
            {
                "Error": st.fixed_dictionaries(
                    {"Code": st.sampled_from(["InternalError", "AuthFailure.X", "Foo", "timeout", ""]) | JSON},
                    optional={"Message": JSON},
                ),
            },
            optional={"RequestId": JSON},
        )
    }
)


_PARSERS = [
    parse_search_faces,
    iai_answers.parse_group_list,
    iai_answers.parse_person_list,
    iai_answers.parse_create_group,
    iai_answers.parse_create_person,
    iai_answers.parse_create_face,
]


def _parse_or_api_error(body: bytes, status: int) -> None:
    for parse in _PARSERS:
        try:
            result = parse(body, status)
        except ApiError as error:
            assert error.code and 0 < len(error.code) <= 64  # a dead-letter key's limits
            assert isinstance(error.error_class, ErrorClass)
            continue
        assert 200 <= status < 300
        if isinstance(result, IdentifyResult):
            assert result.api is Api.IAI
            assert all(isinstance(c.confidence, float) for f in result.faces for c in f.candidates)


@settings(max_examples=300)
@given(body=st.binary(max_size=300), status=STATUSES)
def test_fuzz_bytes(body: bytes, status: int) -> None:
    _parse_or_api_error(body, status)


@settings(max_examples=300)
@given(doc=JSON | _error_doc, status=STATUSES)
def test_fuzz_json(doc: Any, status: int) -> None:
    _parse_or_api_error(orjson.dumps(doc), status)


@settings(max_examples=400)
@given(doc=corrupted(_valid_doc))
def test_fuzz_corrupted_answers(doc: Any) -> None:
    _parse_or_api_error(orjson.dumps(doc), 200)


@given(doc=_valid_doc)
def test_valid_answers_parse_completely(doc: Any) -> None:
    result = parse_search_faces(orjson.dumps(doc), 200)
    raw = doc["Response"]["Results"]
    assert len(result.faces) == len(raw)
    for face, item in zip(result.faces, raw, strict=True):
        assert face.rect == FaceRect(*(item["FaceRect"][k] for k in ("X", "Y", "Width", "Height")))
        assert face.ret_code == item["RetCode"]
        assert [(c.person_id, c.face_id, c.confidence, c.person_name) for c in face.candidates] == [
            (c["PersonId"], c["FaceId"], c["Score"], c.get("PersonName")) for c in item["Candidates"]
        ]
