"""IAI (Tencent Cloud API 3.0, version 2020-03-03) requests on the wire: bodies and signed headers; no I/O.

An HTTP client sends one call as ``POST <endpoint.url>`` with the body of a ``*_body`` function and the headers
of :func:`request_headers` (signed with TC3-HMAC-SHA256, :mod:`worker.api.tc3`), then hands the answer's bytes and
status to the matching ``parse_*`` function of :mod:`worker.api.iai_answers`
(docs/api-notes.md#iai-the-current-api-searchfaces)::

    body = search_faces_body(groups, options, url=url)
    headers = request_headers(Action.SEARCH_FACES, body, host=endpoint.host, region=region,
                              credentials=credentials, timestamp=int(time.time()))
    result = parse_search_faces(answer.content, answer.status_code)      # IdentifyResult, api=Api.IAI

Contracts:

- bodies are the JSON Tencent's Python SDK sends for the same request (``json.dumps`` of the fields in the SDK
  model's order, absent fields omitted), byte for byte, so that a signature can be compared with the SDK's;
- a request the service would refuse is refused here with the service's own code and nothing is built
  (``ApiError.refused``): an empty group list or url, an empty image, an ``Image`` over 5 MB base64-encoded;
  settings out of range never get this far (:class:`SearchOptions` refuses them, naming the setting).
"""

from __future__ import annotations

import base64
import enum
import json
import math
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.api import tc3
from worker.api.errors import ApiError
from worker.api.models import (  # the v1 parsers' checks, shared so both APIs validate alike
    _is_int,
    _is_number,
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
    "Credentials",
    "Endpoint",
    "Image",
    "SearchOptions",
    "create_face_body",
    "create_group_body",
    "create_person_body",
    "delete_face_body",
    "delete_person_body",
    "detect_face_body",
    "get_group_list_body",
    "get_person_base_info_body",
    "get_person_group_info_body",
    "get_person_list_body",
    "parse_endpoint",
    "request_headers",
    "search_faces_body",
]

SERVICE = "iai"  # the TC3 credential scope's service
VERSION = "2020-03-03"
DEFAULT_ENDPOINT = "iai.tencentcloudapi.com"  # the nearest region; regional hosts are iai.<region>.tencentcloudapi.com
CONTENT_TYPE = "application/json"  # what the SDK sends and signs for a POST with a JSON body
MAX_IMAGE_BASE64_BYTES = 5 * 1024 * 1024  # "base64 编码后大小不可超过5M" → FailedOperation.ImageSizeExceed
PAGE_LIMIT = 1000  # the largest Limit of GetGroupList and GetPersonList
PERSON_GROUP_PAGE_LIMIT = 100  # the largest Limit of GetPersonGroupInfo
QUALITY_FAILED = -1601  # a face's RetCode when it failed the quality check: kept, with no candidates

MAX_FACE_NUM = 10  # SearchFaces' MaxFaceNum: default 1 (the largest face only), at most 10
MAX_PERSON_NUM = 100  # MaxPersonNum: default 5, at most 100
MIN_FACE_SIZE = 34  # MinFaceSize's default and floor: smaller faces cannot be recognised
MAX_DETECT_FACE_NUM = 120  # DetectFace's MaxFaceNum: default 1, at most 120
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
    GET_PERSON_BASE_INFO = "GetPersonBaseInfo"  # the gallery's `show`: name and face ids
    GET_PERSON_GROUP_INFO = "GetPersonGroupInfo"  # the gallery's `show`: the groups a person is in
    DELETE_PERSON = "DeletePerson"
    DELETE_FACE = "DeleteFace"
    DETECT_FACE = "DetectFace"  # the gallery's --single-face: how many faces a photo holds


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


def get_person_base_info_body(person_id: str) -> bytes:
    """A person's name, gender and face ids (a PersonId is unique in the account, whatever its groups)."""
    return _json({"PersonId": _id("person id", person_id)})


def get_person_group_info_body(person_id: str, offset: int = 0, limit: int = PERSON_GROUP_PAGE_LIMIT) -> bytes:
    """One page of the groups a person is in."""
    return _json(
        {
            "PersonId": _id("person id", person_id),
            "Offset": _page_int("offset", offset, 0),
            "Limit": _page_int("limit", limit, 1, PERSON_GROUP_PAGE_LIMIT),
        }
    )


def delete_person_body(person_id: str) -> bytes:
    """Delete a person from every group, with their faces."""
    return _json({"PersonId": _id("person id", person_id)})


def delete_face_body(person_id: str, face_ids: Sequence[str]) -> bytes:
    """Delete faces of a person (the service keeps at least one: ``InvalidParameterValue.DeleteFaceNumExceed``)."""
    if isinstance(face_ids, str):  # a str is a Sequence[str] too
        raise TypeError("face_ids must be a sequence of strings, not a string")
    if not face_ids:
        raise ApiError.refused("MissingParameter.ErrorParameterEmpty", "empty face id list")
    return _json({"PersonId": _id("person id", person_id), "FaceIds": [_id("face id", f) for f in face_ids]})


def detect_face_body(*, url: str | None = None, image: Image | None = None, max_face_num: int = 1) -> bytes:
    """Find the faces of an image (by ``url`` or as bytes, refused like SearchFaces'), at most ``max_face_num``
    (1 to 120; ValueError otherwise), largest first."""
    fields: dict[str, Any] = {"MaxFaceNum": _page_int("max_face_num", max_face_num, 1, MAX_DETECT_FACE_NUM)}
    fields.update(_image_fields(url, image))
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
