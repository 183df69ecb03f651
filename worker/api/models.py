"""Typed identification results, one shape for both APIs, and the pure parsers of v1's response bodies (no I/O).

An :class:`IdentifyResult` says which API answered (``api``): v1's ``multidentify`` (parsed here) or IAI's
``SearchFaces`` (parsed by :mod:`worker.api.iai_answers`). The two differ in what they can say, and the types say it
with optional fields: IAI reports a face that failed its quality check (``Face.ret_code`` -1601, no candidates) and,
when asked, a person's name (``Candidate.person_name``); only v1 has a per-face ``tag``. A candidate's score is
``confidence`` for both: v1's ``confidence`` and IAI's ``Score`` are both 0–100 but come from different models and
are not comparable, so a reader must look at ``api`` before comparing a score with a threshold.

v1 envelope (docs/api-notes.md#transport-and-envelope): ``{"code": int, "message": str, "data": ...}``.
A body whose JSON carries an integer ``code`` is classified by that code whatever the HTTP status;
a body without one is classified by the HTTP status (``http_<status>``) or, on a 2xx, is a
``bad_response``. Every parser here either returns a typed value or raises :class:`ApiError`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from worker.api.codes import Api
from worker.api.errors import ApiError

__all__ = [
    "Api",
    "Candidate",
    "Face",
    "FaceRect",
    "IdentifyResult",
    "parse_data_object",
    "parse_envelope",
    "parse_id_list",
    "parse_multidentify",
]

_MAX_MESSAGE = 300  # service messages end up in dead-letter records and logs; keep them short


@dataclass(frozen=True, slots=True)
class FaceRect:
    """Top-left corner and size of one face, in pixels of the submitted image. IAI's ``x`` and ``y`` are negative
    when the box extends past the image's edge."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """One identity guess for a face.

    ``confidence`` is the service's score on its 0–100 scale: v1's ``confidence`` or IAI's ``Score``, which are
    not comparable (different models; ``IdentifyResult.api`` says which). ``tag`` is v1's face remark (IAI has
    none: ``""``); ``person_name`` is IAI's ``PersonName``, given only when ``NeedPersonInfo`` asked for it.
    """

    person_id: str
    face_id: str
    confidence: float
    tag: str = ""
    person_name: str | None = None


@dataclass(frozen=True, slots=True)
class Face:
    """A detected face and its candidates, best first (as the service orders them).

    ``ret_code`` is IAI's per-face ``RetCode``: 0, or -1601 when the face failed the quality check (it is kept,
    with no candidates). None on v1, which has no per-face code.
    """

    rect: FaceRect
    candidates: tuple[Candidate, ...]
    ret_code: int | None = None


@dataclass(frozen=True, slots=True)
class IdentifyResult:
    """Every face the service found in one image, in response order.

    ``request_id`` identifies the call as the service answered it: v1's ``data.session_id`` (the caller's own
    session id echoed, ``""`` when none was sent) or IAI's ``RequestId``. ``face_model_version`` is IAI's
    ``FaceModelVersion`` (scores are calibrated per model); None on v1.
    """

    faces: tuple[Face, ...]
    request_id: str
    http_status: int
    api: Api = Api.V1
    face_model_version: str | None = None

    @property
    def session_id(self) -> str:
        """v1's name for :attr:`request_id`, for readers written before IAI."""
        return self.request_id


class _Malformed(Exception):
    """Internal: the envelope is fine but ``data`` does not have the documented shape."""


def parse_envelope(body: bytes, http_status: int) -> Any:
    """Return the ``data`` member of a ``code == 0`` answer; raise :class:`ApiError` otherwise.

    - JSON object with an integer ``code`` != 0 → ``ApiError.from_service(code, message, http_status)``;
    - ``code == 0`` on a 2xx without ``data`` → ``bad_response``;
    - no integer ``code`` (or ``code == 0`` on a non-2xx) → ``http_<status>`` when the status is not 2xx,
      else ``bad_response``.
    """
    doc: Any = None
    with contextlib.suppress(orjson.JSONDecodeError):
        doc = orjson.loads(body)
    code = doc.get("code") if isinstance(doc, dict) else None
    ok_status = 200 <= http_status < 300
    if _is_int(code) and code != 0:
        message = doc.get("message")
        text = message[:_MAX_MESSAGE] if isinstance(message, str) else ""
        raise ApiError.from_service(code, text, http_status)
    if not ok_status:
        # code 0 on an error status cannot be trusted as a success (a proxy, a half-written answer).
        raise ApiError.local(
            f"http_{http_status}", f"HTTP {http_status} without a service error code", http_status=http_status
        )
    if not _is_int(code):
        raise _bad_response("no integer 'code' in the body" if isinstance(doc, dict) else _describe(body), http_status)
    if "data" not in doc:
        raise _bad_response("code 0 without 'data'", http_status)
    return doc["data"]


def parse_multidentify(body: bytes, http_status: int) -> IdentifyResult:
    """Parse a ``/face/multidentify`` answer into typed values; pure, raises only :class:`ApiError`.

    ``data.results`` must be an array (one element per face) whose elements carry ``face_rect``
    (integers x, y, width, height); ``candidates`` may be absent (faces past the fifth carry only a
    position) and ``tag`` and ``data.session_id`` default to ``""``.
    """
    data = parse_envelope(body, http_status)
    try:
        return _identify_result(data, http_status)
    except _Malformed as exc:
        raise _bad_response(f"multidentify data: {exc}", http_status) from None


def parse_data_object(body: bytes, http_status: int) -> dict[str, Any]:
    """``data`` of a management answer (newperson, addface, getinfo …), which must be a JSON object."""
    data = parse_envelope(body, http_status)
    if not isinstance(data, dict):
        raise _bad_response("'data' is not an object", http_status)
    return data


def parse_id_list(body: bytes, http_status: int, field: str) -> list[str]:
    """``data[field]`` as a list of strings (getgroupids → ``group_ids``, getpersonids → ``person_ids``)."""
    value = parse_data_object(body, http_status).get(field)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad_response(f"'data.{field}' is not an array of strings", http_status)
    return value


def _identify_result(data: Any, http_status: int) -> IdentifyResult:
    obj = _object(data, "data")
    results = obj.get("results")
    if not isinstance(results, list):
        raise _Malformed("'results' is not an array")
    faces = tuple(_face(item, f"results[{i}]") for i, item in enumerate(results))
    session_id = _str(obj, "session_id", "data", default="")
    return IdentifyResult(faces=faces, request_id=session_id, http_status=http_status, api=Api.V1)


def _face(value: Any, where: str) -> Face:
    obj = _object(value, where)
    rect_obj = _object(obj.get("face_rect"), f"{where}.face_rect")
    rect = FaceRect(*(_int(rect_obj, key, f"{where}.face_rect") for key in ("x", "y", "width", "height")))
    raw_candidates = obj.get("candidates", [])
    if not isinstance(raw_candidates, list):
        raise _Malformed(f"{where}.candidates is not an array")
    candidates = tuple(_candidate(c, f"{where}.candidates[{j}]") for j, c in enumerate(raw_candidates))
    return Face(rect=rect, candidates=candidates)


def _candidate(value: Any, where: str) -> Candidate:
    obj = _object(value, where)
    confidence = obj.get("confidence")
    if not _is_number(confidence) or not math.isfinite(confidence):
        raise _Malformed(f"{where}.confidence is not a finite number")
    return Candidate(
        person_id=_str(obj, "person_id", where),
        face_id=_str(obj, "face_id", where),
        confidence=float(confidence),
        tag=_str(obj, "tag", where, default=""),
    )


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed(f"{where} is not an object")
    return value


def _str(obj: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise _Malformed(f"{where}.{key} is not a string")
    return value


def _int(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if _is_int(value):
        return int(value)
    # Int32 on the wire, but tolerate 60.0 from a server that serialises floats.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Malformed(f"{where}.{key} is not an integer")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _describe(body: bytes) -> str:
    return f"body is not a JSON object ({len(body)} bytes, starts {body[:40]!r})"


def _bad_response(detail: str, http_status: int) -> ApiError:
    return ApiError.local("bad_response", detail, http_status=http_status)
