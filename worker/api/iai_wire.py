"""IAI (Tencent Cloud API 3.0, version 2020-03-03) on the wire: request bodies, headers and answer parsers; no I/O.

An HTTP client sends one call as ``POST <endpoint.url>`` with the body of a ``*_body`` function and the headers
of :func:`request_headers` (signed with TC3-HMAC-SHA256, :mod:`worker.api.tc3`), then hands the answer's bytes and
status to the matching ``parse_*`` function (docs/api-notes.md#iai-the-current-api-searchfaces)::

    body = search_faces_body(groups, options, url=url)
    headers = request_headers(Action.SEARCH_FACES, body, host=endpoint.host, region=region,
                              credentials=credentials, timestamp=int(time.time()))
    result = parse_search_faces(answer.content, answer.status_code)      # IdentifyResult, api=Api.IAI

Contracts:

- bodies are the JSON Tencent's Python SDK sends for the same request (``json.dumps`` of the fields in the SDK
  model's order, absent fields omitted), byte for byte, so that a signature can be compared with the SDK's;
- a request the service would refuse is refused here with the service's own code and nothing is built
  (``ApiError.refused``): an empty group list or url, an empty image, an ``Image`` over 5 MB base64-encoded;
  settings out of range never get this far (:class:`SearchOptions` refuses them, naming the setting);
- every parser returns a typed value or raises :class:`ApiError`, nothing else: ``Response.Error`` → its code
  (:meth:`ApiError.from_iai`, with the ``RequestId``), classified by the code whatever the HTTP status (the rule
  v1's ``parse_envelope`` follows); otherwise a status other than 2xx → ``http_<status>`` (v1's local keys and
  classes); a 2xx body that is not the documented shape → ``bad_response`` (transient).
"""

from __future__ import annotations

import base64
import contextlib
import enum
import json
import math
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.api import tc3
from worker.api.codes import Api, is_iai_code
from worker.api.errors import ApiError
from worker.api.models import (  # the v1 parsers' checks, shared so both APIs validate alike
    _MAX_MESSAGE,
    Candidate,
    Face,
    FaceRect,
    IdentifyResult,
    _bad_response,
    _describe,
    _int,
    _is_int,
    _is_number,
    _Malformed,
    _object,
    _str,
)

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_ENDPOINT",
    "MAX_IMAGE_BASE64_BYTES",
    "PAGE_LIMIT",
    "QUALITY_FAILED",
    "SERVICE",
    "VERSION",
    "Action",
    "CreatedFaces",
    "CreatedGroup",
    "CreatedPerson",
    "Credentials",
    "Endpoint",
    "GroupInfo",
    "GroupPage",
    "Image",
    "PersonInfo",
    "PersonPage",
    "SearchOptions",
    "check_groups",
    "create_face_body",
    "create_group_body",
    "create_person_body",
    "get_group_list_body",
    "get_person_list_body",
    "parse_create_face",
    "parse_create_group",
    "parse_create_person",
    "parse_endpoint",
    "parse_group_list",
    "parse_person_list",
    "parse_response",
    "parse_search_faces",
    "request_headers",
    "search_faces_body",
]

SERVICE = "iai"  # the TC3 credential scope's service
VERSION = "2020-03-03"
DEFAULT_ENDPOINT = "iai.tencentcloudapi.com"  # the nearest region; regional hosts are iai.<region>.tencentcloudapi.com
CONTENT_TYPE = "application/json"  # what the SDK sends and signs for a POST with a JSON body
MAX_IMAGE_BASE64_BYTES = 5 * 1024 * 1024  # "base64 编码后大小不可超过5M" → FailedOperation.ImageSizeExceed
PAGE_LIMIT = 1000  # the largest Limit of GetGroupList and GetPersonList
QUALITY_FAILED = -1601  # a face's RetCode when it failed the quality check: kept, with no candidates

MAX_FACE_NUM = 10  # SearchFaces' MaxFaceNum: default 1 (the largest face only), at most 10
MAX_PERSON_NUM = 100  # MaxPersonNum: default 5, at most 100
MIN_FACE_SIZE = 34  # MinFaceSize's default and floor: smaller faces cannot be recognised
MAX_REQUEST_ID = 128  # a RequestId is a UUID; anything much longer is not one

Image = bytes | bytearray | memoryview  # an image as the caller holds it; base64-encoded into the body


class Action(enum.StrEnum):
    """The IAI actions the worker and the demo call (``X-TC-Action``)."""

    SEARCH_FACES = "SearchFaces"
    GET_GROUP_LIST = "GetGroupList"  # the configuration check: the credentials work, the groups exist
    CREATE_GROUP = "CreateGroup"
    CREATE_PERSON = "CreatePerson"
    CREATE_FACE = "CreateFace"
    GET_PERSON_LIST = "GetPersonList"


# -- settings ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchOptions:
    """The SearchFaces knobs the worker sets, one per ``iai_*`` setting; checked on construction.

    ``max_face_num`` is always sent: left out, IAI searches only the largest face. ``None`` leaves a knob to the
    service's default (``MinFaceSize`` 34, ``FaceMatchThreshold`` 0, ``QualityControl`` 0) and is not sent;
    ``need_person_info`` is sent only when true (0 is the default).

    Raises ValueError naming the setting (``iai_max_face_num must be …``) so that a bad configuration stops the
    worker at start instead of dead-lettering every event with the service's answer.
    """

    max_face_num: int = MAX_FACE_NUM
    max_person_num: int = 5
    min_face_size: int | None = None
    face_match_threshold: float | None = None
    quality_control: int | None = None
    need_person_info: bool = False

    def __post_init__(self) -> None:
        _check_int("iai_max_face_num", self.max_face_num, 1, MAX_FACE_NUM)
        _check_int("iai_max_person_num", self.max_person_num, 1, MAX_PERSON_NUM)
        if self.min_face_size is not None:
            _check_int("iai_min_face_size", self.min_face_size, MIN_FACE_SIZE, None)
        if self.quality_control is not None:
            _check_int("iai_quality_control", self.quality_control, 0, 4)
        threshold = self.face_match_threshold
        if threshold is not None:
            # Only candidates scoring above it are returned, and scores end at 100: [0, 100) is every useful value.
            if not _is_number(threshold) or not math.isfinite(threshold) or not 0 <= threshold < 100:
                raise ValueError(f"iai_face_match_threshold must be a number from 0 to below 100, not {threshold!r}")
            object.__setattr__(self, "face_match_threshold", float(threshold))
        if not isinstance(self.need_person_info, bool):
            raise ValueError(f"iai_need_person_info must be true or false, not {self.need_person_info!r}")


def _check_int(setting: str, value: object, low: int, high: int | None) -> None:
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"{setting} must be an integer {bound}, not {value!r}")


@dataclass(frozen=True)
class Credentials:
    """An API key (SecretId/SecretKey) and, for temporary credentials, their token (``X-TC-Token``)."""

    secret_id: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Endpoint:
    """Where to POST (``url``, always ending in ``/``) and the ``Host`` header that is sent and signed."""

    url: str
    host: str


def parse_endpoint(value: str) -> Endpoint:
    """``iai_endpoint``: a host (``iai.tencentcloudapi.com``, HTTPS) or a URL with a scheme and optional port
    (``http://127.0.0.1:8080`` for the emulator). Raises ValueError naming the setting."""
    text = value.strip()
    parts = urllib.parse.urlsplit(text if "://" in text else f"https://{text}")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"iai_endpoint must be a host or an http(s) URL, not {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"iai_endpoint must not have a path, a query or a fragment: {value!r}")
    try:
        _ = parts.port  # raises ValueError on a port that is not a number in range
    except ValueError:
        raise ValueError(f"iai_endpoint has an invalid port: {value!r}") from None
    return Endpoint(url=f"{parts.scheme}://{parts.netloc}/", host=parts.netloc)


# -- requests ---------------------------------------------------------------------------------------------------------


def request_headers(
    action: str,
    body: bytes,
    *,
    host: str,
    region: str,
    credentials: Credentials,
    timestamp: int,
    language: str | None = None,
) -> dict[str, str]:
    """The headers of one call: the action and version, the region (when set), the timestamp, the token (only with
    temporary credentials), ``Content-Type``, ``Host`` and the TC3 ``Authorization`` over ``host`` and ``body``.

    ``host`` must be what the request carries in ``Host`` (:attr:`Endpoint.host`): it is signed. ``language``
    (``en-US`` or ``zh-CN``) chooses the language of error messages. ``timestamp`` is UNIX seconds of now: the
    service refuses one more than five minutes off its clock (``AuthFailure.SignatureExpire``).
    """
    headers = {
        "Content-Type": CONTENT_TYPE,
        "Host": host,
        "X-TC-Action": str(action),
        "X-TC-Timestamp": str(timestamp),
        "X-TC-Version": VERSION,
    }
    if region:
        headers["X-TC-Region"] = region
    if credentials.token:
        headers["X-TC-Token"] = credentials.token
    if language:
        headers["X-TC-Language"] = language
    for name, value in headers.items():
        if "\r" in value or "\n" in value:  # a header value from configuration must not start another header
            raise ValueError(f"the {name} header would contain a line break")
    headers["Authorization"] = tc3.authorization(
        credentials.secret_id,
        credentials.secret_key,
        service=SERVICE,
        host=host,
        content_type=CONTENT_TYPE,
        body=body,
        timestamp=timestamp,
    )
    return headers


def search_faces_body(
    group_ids: Sequence[str], options: SearchOptions, *, url: str | None = None, image: Image | None = None
) -> bytes:
    """The SearchFaces request: the groups, the image by ``url`` or as bytes (base64 ``Image``), the options.

    ``url`` wins when both are given, as it does at the service, and the image is then not encoded at all.
    Refused locally (``ApiError.refused``, nothing sent): an empty group list or group id, an empty url, neither
    url nor image (``MissingParameter.ErrorParameterEmpty``), an empty image (``InvalidParameterValue.ImageEmpty``),
    an image over 5 MB once base64-encoded (``FailedOperation.ImageSizeExceed``).
    """
    groups = _group_list(group_ids)
    fields: dict[str, Any] = {"GroupIds": groups}
    fields.update(_image_fields(url, image))
    fields["MaxFaceNum"] = options.max_face_num
    if options.min_face_size is not None:
        fields["MinFaceSize"] = options.min_face_size
    fields["MaxPersonNum"] = options.max_person_num
    if options.need_person_info:
        fields["NeedPersonInfo"] = 1
    if options.quality_control is not None:
        fields["QualityControl"] = options.quality_control
    if options.face_match_threshold is not None:
        fields["FaceMatchThreshold"] = options.face_match_threshold
    return _json(fields)


def get_group_list_body(offset: int = 0, limit: int = PAGE_LIMIT) -> bytes:
    """One page of the account's groups (the configuration check pages through them all: :func:`check_groups`)."""
    return _json({"Offset": _page_int("offset", offset, 0), "Limit": _page_int("limit", limit, 1, PAGE_LIMIT)})


def get_person_list_body(group_id: str, offset: int = 0, limit: int = PAGE_LIMIT) -> bytes:
    return _json(
        {
            "GroupId": _id("group id", group_id),
            "Offset": _page_int("offset", offset, 0),
            "Limit": _page_int("limit", limit, 1, PAGE_LIMIT),
        }
    )


def create_group_body(
    group_id: str, group_name: str, *, tag: str | None = None, face_model_version: str | None = None
) -> bytes:
    """A new group (IAI creates groups explicitly; ``face_model_version`` None: the service's default, 3.0)."""
    fields: dict[str, Any] = {"GroupName": _id("group name", group_name), "GroupId": _id("group id", group_id)}
    if tag is not None:
        fields["Tag"] = tag
    if face_model_version is not None:
        fields["FaceModelVersion"] = face_model_version
    return _json(fields)


def create_person_body(
    group_id: str,
    person_id: str,
    person_name: str,
    *,
    url: str | None = None,
    image: Image | None = None,
    quality_control: int | None = None,
) -> bytes:
    """A new person in a group, with their first face (by ``url`` or as bytes, refused like SearchFaces')."""
    fields: dict[str, Any] = {
        "GroupId": _id("group id", group_id),
        "PersonName": _id("person name", person_name),
        "PersonId": _id("person id", person_id),
    }
    fields.update(_image_fields(url, image))
    if quality_control is not None:
        _check_int("quality_control", quality_control, 0, 4)
        fields["QualityControl"] = quality_control
    return _json(fields)


def create_face_body(
    person_id: str, *, urls: Sequence[str] = (), images: Sequence[Image] = (), quality_control: int | None = None
) -> bytes:
    """More faces for a person: at most 4 per call (``InvalidParameterValue.UploadFaceNumExceed``), 5 per person.
    ``urls`` win over ``images`` when both are given; each image is refused like SearchFaces' ``Image``."""
    fields: dict[str, Any] = {"PersonId": _id("person id", person_id)}
    if isinstance(urls, str):  # a str is a Sequence[str] too
        raise TypeError("urls must be a sequence of strings, not a string")
    count = len(urls) or len(images)
    if count == 0:
        raise ApiError.refused("MissingParameter.ErrorParameterEmpty", "neither urls nor images given")
    if count > 4:
        raise ApiError.refused("InvalidParameterValue.UploadFaceNumExceed", f"{count} faces in one call (at most 4)")
    if urls:
        fields["Urls"] = [_url(u) for u in urls]
    else:
        fields["Images"] = [_base64_image(image) for image in images]
    if quality_control is not None:
        _check_int("quality_control", quality_control, 0, 4)
        fields["QualityControl"] = quality_control
    return _json(fields)


def _json(fields: dict[str, Any]) -> bytes:
    # json.dumps with its defaults (", " and ": ", ASCII escapes) is what Tencent's SDK sends: the same bytes, so
    # the same signature for the same request.
    return json.dumps(fields).encode("ascii")


def _group_list(group_ids: Sequence[str]) -> list[str]:
    if isinstance(group_ids, str):  # "abc" would become three groups
        raise TypeError("group_ids must be a sequence of strings, not a string")
    if not group_ids:
        raise ApiError.refused("MissingParameter.ErrorParameterEmpty", "empty group list")
    return [_id("group id", g) for g in group_ids]


def _id(kind: str, value: str) -> str:
    if not value:
        raise ApiError.refused("MissingParameter.ErrorParameterEmpty", f"empty {kind}")
    return value


def _url(url: str) -> str:
    if not url or not url.strip():
        raise ApiError.refused("MissingParameter.ErrorParameterEmpty", "empty url")
    return url


def _image_fields(url: str | None, image: Image | None) -> dict[str, str]:
    if url is not None:
        return {"Url": _url(url)}  # Url wins: the image is not even encoded
    if image is None:
        raise ApiError.refused("MissingParameter.ErrorParameterEmpty", "neither url nor image given")
    return {"Image": _base64_image(image)}


def _base64_image(image: Image) -> str:
    size = len(image) if not isinstance(image, memoryview) else image.nbytes
    if size == 0:
        raise ApiError.refused("InvalidParameterValue.ImageEmpty", "empty image")
    encoded = 4 * ((size + 2) // 3)  # checked before encoding: an oversize image is never copied
    if encoded > MAX_IMAGE_BASE64_BYTES:
        raise ApiError.refused(
            "FailedOperation.ImageSizeExceed",
            f"image of {size} bytes is {encoded} bytes base64-encoded, over {MAX_IMAGE_BASE64_BYTES} (5 MB)",
        )
    return base64.b64encode(image).decode("ascii")


def _page_int(name: str, value: int, low: int, high: int | None = None) -> int:
    if not _is_int(value) or value < low or (high is not None and value > high):
        raise ValueError(f"{name} out of range: {value!r}")
    return value


# -- answers ----------------------------------------------------------------------------------------------------------


def parse_response(body: bytes, http_status: int) -> dict[str, Any]:
    """The ``Response`` object of a successful answer (with a string ``RequestId``); raises :class:`ApiError`.

    - ``Response.Error`` with a code spelt like an IAI code → that code, whatever the status (Tencent answers
      errors with HTTP 200; a proxy that adds a status does not make the code less specific);
    - otherwise a status other than 2xx → ``http_<status>`` (429 and 5xx transient, 401/403 config, else
      permanent), even with a success body: a success on an error status is not trusted;
    - otherwise anything but ``{"Response": {..., "RequestId": str}}`` → ``bad_response``.
    """
    doc: Any = None
    with contextlib.suppress(orjson.JSONDecodeError):
        doc = orjson.loads(body)
    raw = doc.get("Response") if isinstance(doc, dict) else None
    response: dict[str, Any] | None = raw if isinstance(raw, dict) else None
    error = response.get("Error") if response is not None else None
    if response is not None and isinstance(error, dict):
        code = error.get("Code")
        if isinstance(code, str) and is_iai_code(code):
            message = error.get("Message")
            text = message[:_MAX_MESSAGE] if isinstance(message, str) else ""
            raise ApiError.from_iai(code, text, _request_id(response), http_status)
    ok_status = 200 <= http_status < 300
    if not ok_status:
        raise ApiError.local(
            f"http_{http_status}", f"HTTP {http_status} without an IAI error code", http_status=http_status
        )
    if response is None:
        raise _bad_response("no 'Response' object" if isinstance(doc, dict) else _describe(body), http_status)
    if error is not None:
        raise _bad_response("'Response.Error' without a valid 'Code'", http_status)
    if _request_id(response) is None:
        raise _bad_response("'Response.RequestId' is not a string", http_status)
    return response


def parse_search_faces(body: bytes, http_status: int) -> IdentifyResult:
    """A SearchFaces answer as an :class:`IdentifyResult` (``api`` IAI, ``request_id`` the RequestId).

    ``Results`` must be an array, one element per face, each with a ``FaceRect`` of integers (X and Y may be
    negative); ``Candidates`` may be absent or null (a face that failed the quality check, ``RetCode`` -1601, has
    none) and ``RetCode`` absent reads as 0; a candidate needs ``PersonId``, ``FaceId`` and a finite ``Score``,
    and ``PersonName`` (``NeedPersonInfo``) may be absent or null. Other members are ignored.
    """
    response = parse_response(body, http_status)
    try:
        results = response.get("Results")
        if not isinstance(results, list):
            raise _Malformed("'Results' is not an array")
        faces = tuple(_iai_face(item, f"Results[{i}]") for i, item in enumerate(results))
        version = _optional_str(response, "FaceModelVersion", "Response")
    except _Malformed as exc:
        raise _bad_response(f"SearchFaces answer: {exc}", http_status) from None
    return IdentifyResult(
        faces=faces,
        request_id=response["RequestId"],
        http_status=http_status,
        api=Api.IAI,
        face_model_version=version,
    )


def _iai_face(value: Any, where: str) -> Face:
    obj = _object(value, where)
    rect = _rect(obj.get("FaceRect"), f"{where}.FaceRect")
    raw = obj.get("Candidates")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise _Malformed(f"{where}.Candidates is not an array")
    ret_code = 0 if obj.get("RetCode") is None else _int(obj, "RetCode", where)
    return Face(
        rect=rect,
        candidates=tuple(_iai_candidate(c, f"{where}.Candidates[{j}]") for j, c in enumerate(raw)),
        ret_code=ret_code,
    )


def _iai_candidate(value: Any, where: str) -> Candidate:
    obj = _object(value, where)
    score = obj.get("Score")
    if not _is_number(score) or not math.isfinite(score):
        raise _Malformed(f"{where}.Score is not a finite number")
    return Candidate(
        person_id=_str(obj, "PersonId", where),
        face_id=_str(obj, "FaceId", where),
        confidence=float(score),
        person_name=_optional_str(obj, "PersonName", where),
    )


def _rect(value: Any, where: str) -> FaceRect:
    obj = _object(value, where)
    return FaceRect(*(_int(obj, key, where) for key in ("X", "Y", "Width", "Height")))


def _optional_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _Malformed(f"{where}.{key} is not a string")
    return value


def _optional_int(obj: dict[str, Any], key: str, where: str) -> int | None:
    return None if obj.get(key) is None else _int(obj, key, where)


def _str_list(obj: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Malformed(f"{where}.{key} is not an array of strings")
    return tuple(value)


def _int_list(obj: dict[str, Any], key: str, where: str) -> tuple[int, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Malformed(f"{where}.{key} is not an array of integers")
    return tuple(_int({"v": item}, "v", f"{where}.{key}") for item in value)


def _request_id(response: dict[str, Any]) -> str | None:
    value = response.get("RequestId")
    return value if isinstance(value, str) and len(value) <= MAX_REQUEST_ID else None


# -- management answers -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupInfo:
    group_id: str
    group_name: str
    face_model_version: str | None


@dataclass(frozen=True)
class GroupPage:
    """One page of GetGroupList; ``total`` is ``GroupNum``, the account's group count (None when not given)."""

    groups: tuple[GroupInfo, ...]
    total: int | None
    request_id: str


@dataclass(frozen=True)
class CreatedGroup:
    face_model_version: str | None
    request_id: str


@dataclass(frozen=True)
class CreatedPerson:
    """CreatePerson's answer: the first face's id and box, and ``similar_person_id`` when the service found the
    same person enrolled already (``UniquePersonControl``)."""

    face_id: str
    face_rect: FaceRect | None
    similar_person_id: str | None
    face_model_version: str | None
    request_id: str


@dataclass(frozen=True)
class CreatedFaces:
    """CreateFace's answer: the call succeeds while single images fail, one ``ret_codes`` entry per image given
    (0 added); ``suc_indexes`` are the positions of the added ones, ``suc_face_ids`` their ids."""

    suc_face_num: int
    suc_face_ids: tuple[str, ...]
    ret_codes: tuple[int, ...]
    suc_indexes: tuple[int, ...]
    face_model_version: str | None
    request_id: str


@dataclass(frozen=True)
class PersonInfo:
    person_id: str
    person_name: str
    face_ids: tuple[str, ...]


@dataclass(frozen=True)
class PersonPage:
    """One page of GetPersonList; ``person_num``/``face_num`` count the whole group (None when not given)."""

    persons: tuple[PersonInfo, ...]
    person_num: int | None
    face_num: int | None
    face_model_version: str | None
    request_id: str


def _objects(response: dict[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
    """The objects of the array ``key`` (absent: none), each with where it sits for error messages."""
    items = response.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise _Malformed(f"'{key}' is not an array")
    return [(f"{key}[{i}]", _object(item, f"{key}[{i}]")) for i, item in enumerate(items)]


def parse_group_list(body: bytes, http_status: int) -> GroupPage:
    response = parse_response(body, http_status)
    try:
        groups = [
            GroupInfo(
                group_id=_str(obj, "GroupId", where),
                group_name=_str(obj, "GroupName", where, default=""),
                face_model_version=_optional_str(obj, "FaceModelVersion", where),
            )
            for where, obj in _objects(response, "GroupInfos")  # absent: an account without groups
        ]
        total = _optional_int(response, "GroupNum", "Response")
    except _Malformed as exc:
        raise _bad_response(f"GetGroupList answer: {exc}", http_status) from None
    return GroupPage(groups=tuple(groups), total=total, request_id=response["RequestId"])


def check_groups(configured: Sequence[str], groups: Iterable[GroupInfo]) -> None:
    """The configuration check's verdict on the groups (the IAI twin of v1's getgroupids check), given every
    group of the account (all pages of GetGroupList). Raises ``InvalidParameterValue.GroupIdNotExist`` when a
    configured group is missing, ``FailedOperation.AcrossVersionsError`` when the configured groups use different
    face model versions (SearchFaces refuses to mix them); returns None when both are fine."""
    known = {g.group_id: g for g in groups}
    missing = [g for g in configured if g not in known]
    if missing:
        raise ApiError.from_iai(
            "InvalidParameterValue.GroupIdNotExist", f"configured groups do not exist: {', '.join(missing)}"
        )
    versions = {g: known[g].face_model_version for g in configured}
    if len({v for v in versions.values() if v is not None}) > 1:
        listed = ", ".join(f"{g}={v}" for g, v in versions.items())
        raise ApiError.from_iai(
            "FailedOperation.AcrossVersionsError", f"configured groups use different face model versions: {listed}"
        )


def parse_create_group(body: bytes, http_status: int) -> CreatedGroup:
    response = parse_response(body, http_status)
    try:
        version = _optional_str(response, "FaceModelVersion", "Response")
    except _Malformed as exc:
        raise _bad_response(f"CreateGroup answer: {exc}", http_status) from None
    return CreatedGroup(face_model_version=version, request_id=response["RequestId"])


def parse_create_person(body: bytes, http_status: int) -> CreatedPerson:
    response = parse_response(body, http_status)
    try:
        raw_rect = response.get("FaceRect")
        created = CreatedPerson(
            face_id=_str(response, "FaceId", "Response"),
            face_rect=None if raw_rect is None else _rect(raw_rect, "Response.FaceRect"),
            similar_person_id=_optional_str(response, "SimilarPersonId", "Response") or None,
            face_model_version=_optional_str(response, "FaceModelVersion", "Response"),
            request_id=response["RequestId"],
        )
    except _Malformed as exc:
        raise _bad_response(f"CreatePerson answer: {exc}", http_status) from None
    return created


def parse_create_face(body: bytes, http_status: int) -> CreatedFaces:
    response = parse_response(body, http_status)
    try:
        created = CreatedFaces(
            suc_face_num=_int(response, "SucFaceNum", "Response"),
            suc_face_ids=_str_list(response, "SucFaceIds", "Response"),
            ret_codes=_int_list(response, "RetCode", "Response"),
            suc_indexes=_int_list(response, "SucIndexes", "Response"),
            face_model_version=_optional_str(response, "FaceModelVersion", "Response"),
            request_id=response["RequestId"],
        )
    except _Malformed as exc:
        raise _bad_response(f"CreateFace answer: {exc}", http_status) from None
    return created


def parse_person_list(body: bytes, http_status: int) -> PersonPage:
    response = parse_response(body, http_status)
    try:
        persons = [
            PersonInfo(
                person_id=_str(obj, "PersonId", where),
                person_name=_str(obj, "PersonName", where, default=""),
                face_ids=_str_list(obj, "FaceIds", where),
            )
            for where, obj in _objects(response, "PersonInfos")  # absent: an empty group
        ]
        page = PersonPage(
            persons=tuple(persons),
            person_num=_optional_int(response, "PersonNum", "Response"),
            face_num=_optional_int(response, "FaceNum", "Response"),
            face_model_version=_optional_str(response, "FaceModelVersion", "Response"),
            request_id=response["RequestId"],
        )
    except _Malformed as exc:
        raise _bad_response(f"GetPersonList answer: {exc}", http_status) from None
    return page
