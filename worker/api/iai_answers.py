"""IAI (API 3.0, 2020-03-03) answers, parsed: SearchFaces into the one :class:`IdentifyResult`, the management
calls into small typed values, and the configuration check's verdict on the groups; no I/O.

The requests are built by :mod:`worker.api.iai_wire`. Every parser returns a typed value or raises
:class:`ApiError`, nothing else: ``Response.Error`` → its code (:meth:`ApiError.from_iai`, with the ``RequestId``),
classified by the code whatever the HTTP status (the rule v1's ``parse_envelope`` follows); otherwise a status other
than 2xx → ``http_<status>`` (v1's local keys and classes); a 2xx body that is not the documented shape →
``bad_response`` (transient).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from worker.api.codes import Api, is_iai_code
from worker.api.errors import ApiError
from worker.api.iai_wire import MAX_REQUEST_ID
from worker.api.models import (  # the v1 parsers' checks, shared so both APIs validate alike
    _MAX_MESSAGE,
    Candidate,
    Face,
    FaceRect,
    IdentifyResult,
    _bad_response,
    _describe,
    _int,
    _is_number,
    _Malformed,
    _object,
    _str,
)

# -- answers ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _reading(action: str, http_status: int) -> Iterator[None]:
    """A malformed member of ``action``'s answer becomes ``bad_response`` (transient), naming the action."""
    try:
        yield
    except _Malformed as exc:
        raise _bad_response(f"{action} answer: {exc}", http_status) from None


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
    with _reading("SearchFaces", http_status):
        results = response.get("Results")
        if not isinstance(results, list):
            raise _Malformed("'Results' is not an array")
        faces = tuple(_iai_face(item, f"Results[{i}]") for i, item in enumerate(results))
        version = _optional_str(response, "FaceModelVersion", "Response")
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
    with _reading("GetGroupList", http_status):
        groups = [
            GroupInfo(
                group_id=_str(obj, "GroupId", where),
                group_name=_str(obj, "GroupName", where, default=""),
                face_model_version=_optional_str(obj, "FaceModelVersion", where),
            )
            for where, obj in _objects(response, "GroupInfos")  # absent: an account without groups
        ]
        total = _optional_int(response, "GroupNum", "Response")
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
    with _reading("CreateGroup", http_status):
        version = _optional_str(response, "FaceModelVersion", "Response")
    return CreatedGroup(face_model_version=version, request_id=response["RequestId"])


def parse_create_person(body: bytes, http_status: int) -> CreatedPerson:
    response = parse_response(body, http_status)
    with _reading("CreatePerson", http_status):
        raw_rect = response.get("FaceRect")
        created = CreatedPerson(
            face_id=_str(response, "FaceId", "Response"),
            face_rect=None if raw_rect is None else _rect(raw_rect, "Response.FaceRect"),
            similar_person_id=_optional_str(response, "SimilarPersonId", "Response") or None,
            face_model_version=_optional_str(response, "FaceModelVersion", "Response"),
            request_id=response["RequestId"],
        )
    return created


def parse_create_face(body: bytes, http_status: int) -> CreatedFaces:
    response = parse_response(body, http_status)
    with _reading("CreateFace", http_status):
        created = CreatedFaces(
            suc_face_num=_int(response, "SucFaceNum", "Response"),
            suc_face_ids=_str_list(response, "SucFaceIds", "Response"),
            ret_codes=_int_list(response, "RetCode", "Response"),
            suc_indexes=_int_list(response, "SucIndexes", "Response"),
            face_model_version=_optional_str(response, "FaceModelVersion", "Response"),
            request_id=response["RequestId"],
        )
    return created


def parse_person_list(body: bytes, http_status: int) -> PersonPage:
    response = parse_response(body, http_status)
    with _reading("GetPersonList", http_status):
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
    return page


@dataclass(frozen=True)
class PersonBaseInfo:
    """GetPersonBaseInfo's answer: the person's name, gender (0 unset, 1 male, 2 female) and face ids."""

    person_name: str
    gender: int | None
    face_ids: tuple[str, ...]
    request_id: str


@dataclass(frozen=True)
class PersonGroupPage:
    """One page of GetPersonGroupInfo: the groups a person is in; ``total`` is ``GroupNum`` (None when not given)."""

    group_ids: tuple[str, ...]
    total: int | None
    request_id: str


@dataclass(frozen=True)
class DeletedFaces:
    """DeleteFace's answer: how many of the given faces were deleted, and their ids."""

    deleted: int
    face_ids: tuple[str, ...]
    request_id: str


def parse_person_base_info(body: bytes, http_status: int) -> PersonBaseInfo:
    response = parse_response(body, http_status)
    with _reading("GetPersonBaseInfo", http_status):
        info = PersonBaseInfo(
            person_name=_str(response, "PersonName", "Response", default=""),
            gender=_optional_int(response, "Gender", "Response"),
            face_ids=_str_list(response, "FaceIds", "Response"),
            request_id=response["RequestId"],
        )
    return info


def parse_person_group_info(body: bytes, http_status: int) -> PersonGroupPage:
    response = parse_response(body, http_status)
    with _reading("GetPersonGroupInfo", http_status):
        groups = tuple(_str(obj, "GroupId", where) for where, obj in _objects(response, "PersonGroupInfos"))
        page = PersonGroupPage(
            group_ids=groups, total=_optional_int(response, "GroupNum", "Response"), request_id=response["RequestId"]
        )
    return page


def parse_empty(body: bytes, http_status: int) -> str:
    """An answer with nothing but its ``RequestId`` (DeletePerson, DeleteGroup): the RequestId."""
    return str(parse_response(body, http_status)["RequestId"])


def parse_delete_face(body: bytes, http_status: int) -> DeletedFaces:
    response = parse_response(body, http_status)
    with _reading("DeleteFace", http_status):
        deleted = DeletedFaces(
            deleted=_int(response, "SucDeletedNum", "Response"),
            face_ids=_str_list(response, "SucFaceIds", "Response"),
            request_id=response["RequestId"],
        )
    return deleted


@dataclass(frozen=True)
class DetectedFaces:
    """DetectFace's answer: the faces found (largest first, at most the MaxFaceNum asked) and the image's size."""

    faces: tuple[FaceRect, ...]
    image_width: int | None
    image_height: int | None
    request_id: str


def parse_detect_face(body: bytes, http_status: int) -> DetectedFaces:
    response = parse_response(body, http_status)
    with _reading("DetectFace", http_status):
        detected = DetectedFaces(
            faces=tuple(_rect(obj, where) for where, obj in _objects(response, "FaceInfos")),
            image_width=_optional_int(response, "ImageWidth", "Response"),
            image_height=_optional_int(response, "ImageHeight", "Response"),
            request_id=response["RequestId"],
        )
    return detected
