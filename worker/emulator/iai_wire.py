"""IAI (API 3.0, version 2020-03-03) wire format at the emulator: answers, codes, request fields, scores. No I/O.

* Answers are ``{"Response": {…, "RequestId": id}}`` or ``{"Response": {"Error": {"Code", "Message"},
  "RequestId": id}}`` (:func:`answer`, :func:`error_answer`); the server always sends them with HTTP 200 and
  ``Content-Type: application/json`` (Tencent's SDK reads the body only for that exact type).
* Error codes are Tencent's strings; :class:`IaiError` carries one to the answer. :func:`iai_code` maps a v1
  code (an injected fault, an engine or gallery failure) to its IAI counterpart, so one fault model serves
  both APIs.
* :class:`Params` reads a request's JSON object the way the API 3.0 front end checks it: a missing required
  field is ``MissingParameter``, a wrong type ``InvalidParameter``, a field the action does not have
  ``UnknownParameter``.
* :func:`iai_score` turns the engine's confidence (v1's 0–100 scale, ≈ 90 for a match) into IAI's Score
  (≈ 80 for a match): ``100 · (c / 100) ^ k`` with ``k = ln 0.8 / ln 0.9`` maps 90 → 80, keeps 0 and 100
  and the order, so another photo of an enrolled person (c ≈ 93–98) scores ≈ 86–96 and a stranger
  (c ≈ 20–40) below 15.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Collection, Mapping
from typing import Any

import orjson

VERSION = "2020-03-03"
SERVICE = "iai"
FACE_MODEL_VERSION = "3.0"
MAX_REQUEST_BYTES = 10 * 1024 * 1024  # a TC3-signed POST (RequestSizeLimitExceeded beyond)
MAX_IMAGE_BASE64 = 5 * 1024 * 1024  # an image, base64-encoded (FailedOperation.ImageSizeExceed beyond)
MAX_ID_BYTES = 64  # GroupId, PersonId
MAX_NAME_CHARS = 60  # GroupName, PersonName
MAX_TAG_CHARS = 40  # a group's Tag
DEFAULT_MIN_FACE_SIZE = 34  # px; smaller faces cannot be recognised, whatever MinFaceSize asks for
MAX_FACES_PER_PERSON = 5
MAX_IMAGES_PER_CREATE_FACE = 4
MAX_GROUP_IDS = 100
MAX_FACE_NUM = 10
MAX_PERSON_NUM = 100
MAX_PERSON_NUM_ERROR = "InvalidParameterValue.SearchPersonsExceed"  # uncertain: no code is documented for it
MAX_LIST_LIMIT = 1000
MAX_PERSON_GROUP_LIMIT = 100  # GetPersonGroupInfo's Limit
MAX_DETECT_FACE_NUM = 120  # DetectFace's MaxFaceNum

#: The emulator's quality check (RetCode -1601): a face passes ``QualityControl`` q when its shorter side is
#: at least this many pixels. Synthetic faces are sharp, so size is the one thing that degrades them.
QUALITY_MIN_SIDE = {0: 0, 1: 40, 2: 48, 3: 56, 4: 64}
#: CreatePerson's ``UniquePersonControl`` level → the Score at which an enrolled person counts as the same one
#: (Tencent's calibration for a 10,000-face library: 70, 80, 90 for 1 %, 0.1 %, 0.01 % false matches; 100 beyond).
UNIQUE_PERSON_SCORE = {1: 70.0, 2: 80.0, 3: 90.0, 4: 100.0}
SCORE_EXPONENT = math.log(0.8) / math.log(0.9)
RET_OK, RET_NO_FACE, RET_UNDECODABLE, RET_FACE_SIZE, RET_QUALITY, RET_NOT_SIMILAR = 0, -1101, -1102, -1109, -1601, -1604

MESSAGES: dict[str, str] = {
    "AuthFailure.InvalidAuthorization": "Authorization in the request header is invalid.",
    "AuthFailure.SecretIdNotFound": "The SecretId is not found, please ensure that your SecretId is correct.",
    "AuthFailure.SignatureExpire": "Signature expired. Timestamp and server time cannot differ by more than five "
    "minutes.",
    "AuthFailure.SignatureFailure": "The provided credentials could not be validated. Please check your signature "
    "is correct.",
    "InvalidAction": "The action does not exist.",
    "NoSuchVersion": "The API version does not exist.",
    "MissingParameter": "A required parameter is missing.",
    "InvalidParameter": "A parameter is not valid (format or type).",
    "UnknownParameter": "The request has a parameter this action does not have.",
    "RequestSizeLimitExceeded": "The request body is larger than 10 MB.",
    "RequestLimitExceeded": "Your request frequency exceeds the limit.",
    "InternalError": "Internal error.",
    "FailedOperation.ServerError": "Algorithm service error, please retry.",
    "FailedOperation.RequestTimeout": "Backend service timeout.",
    "FailedOperation.RpcFail": "RPC call failed.",
    "FailedOperation.UnKnowError": "Internal error.",
    "FailedOperation.ImageDownloadError": "Image download failed.",
    "FailedOperation.ImageDecodeFailed": "Image decode failed.",
    "FailedOperation.ImageSizeExceed": "The base64-encoded image is larger than 5 MB.",
    "FailedOperation.SearchFacesExceed": "MaxFaceNum exceeds the limit (10).",
    "FailedOperation.FaceSizeTooSmall": "Every face is smaller than MinFaceSize and was filtered out.",
    "FailedOperation.FaceQualityNotQualified": "The face does not meet the quality requirement.",
    "InvalidParameterValue.NoFaceInPhoto": "There is no face in the image.",
    "InvalidParameterValue.NoFaceInGroups": "The groups hold no face.",
    "InvalidParameterValue.ImageEmpty": "The image is empty.",
    "InvalidParameterValue.UrlIllegal": "The URL format is illegal.",
    "InvalidParameterValue.GroupIdNotExist": "The group ID does not exist.",
    "InvalidParameterValue.PersonIdNotExist": "The person ID does not exist.",
    "InvalidParameterValue.PersonFaceNumExceed": "A person holds at most five faces.",
    "InvalidParameterValue.UploadFaceNumExceed": "At most four faces per upload.",
    "InvalidParameterValue.DeleteFaceNumExceed": "A person must keep at least one face.",
    "ResourceUnavailable.InArrears": "The account is in arrears.",
}

#: v1 code → IAI code, for injected faults (``error_rates``) and for engine and gallery failures. Chosen by
#: meaning; Tencent documents no such table. Codes not listed become ``FailedOperation.UnKnowError``.
V1_TO_IAI: dict[int, str] = {
    3: "ResourceUnavailable.InArrears",  # v1 answers 3 for an account suspended for arrears
    4: "AuthFailure.InvalidAuthorization",
    5: "AuthFailure.InvalidAuthorization",
    6: "AuthFailure.SignatureFailure",
    7: "InternalError",
    8: "InternalError",
    9: "AuthFailure.SignatureExpire",
    10: "AuthFailure.SecretIdNotFound",
    11: "AuthFailure.SecretIdNotFound",
    12: "AuthFailure.UnauthorizedOperation",
    13: "AuthFailure.SignatureExpire",
    14: "AuthFailure.SignatureFailure",
    15: "RequestLimitExceeded",
    21: "InvalidParameter",
    23: "RequestSizeLimitExceeded",
    107: "InternalError",
    108: "InternalError",
    200: "FailedOperation.RpcFail",
    201: "FailedOperation.RpcFail",
    202: "FailedOperation.RpcFail",
    203: "FailedOperation.RequestTimeout",
    213: "InternalError",
    -1101: "InvalidParameterValue.NoFaceInPhoto",
    -1102: "FailedOperation.ImageDecodeFailed",
    -1103: "FailedOperation.ServerError",
    -1200: "FailedOperation.ServerError",
    -1300: "InvalidParameterValue.ImageEmpty",
    -1301: "MissingParameter",
    -1302: "InvalidParameterValue.PersonIdAlreadyExist",
    -1303: "InvalidParameterValue.PersonIdNotExist",
    -1306: "InvalidParameterValue.GroupIdNotExist",
    -1307: "InvalidParameterValue.GroupIdNotExist",
    -1308: "FailedOperation.ImageDownloadError",
    -1309: "InvalidParameterValue.PersonFaceNumExceed",
    -1310: "InvalidParameterValue.GroupFaceNumExceed",
    -1311: "InvalidParameterValue.GroupNumExceed",
    -1400: "FailedOperation.ImageDecodeFailed",
    -1403: "FailedOperation.ImageDownloadError",
    -1404: "FailedOperation.ImageDecodeFailed",
    -1505: "InvalidParameterValue.UrlIllegal",
    -1506: "FailedOperation.ImageDownloadError",
    -1507: "FailedOperation.ImageDownloadError",
}

_ID = re.compile(r"[A-Za-z0-9\-%@#&_]+")  # GroupId and PersonId: "英文、数字、-%@#&_"
_NAME = re.compile(r"[\w\-]+")  # GroupName and PersonName: Chinese and Latin letters, digits, - and _


class IaiError(Exception):
    """Answer this IAI error code (``message`` defaults to the code's text)."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message or MESSAGES.get(code, code)


def iai_code(v1_code: int) -> str:
    return V1_TO_IAI.get(v1_code, "FailedOperation.UnKnowError")


def iai_score(confidence: float) -> float:
    """IAI's Score for an engine confidence on v1's scale (see the module docstring), two decimals."""
    c = min(max(confidence, 0.0), 100.0)
    return round(100.0 * float((c / 100.0) ** SCORE_EXPONENT), 2)


def answer(payload: Mapping[str, Any], request_id: str) -> bytes:
    return orjson.dumps({"Response": {**payload, "RequestId": request_id}})


def error_answer(error: IaiError, request_id: str) -> bytes:
    return orjson.dumps(
        {"Response": {"Error": {"Code": error.code, "Message": error.message}, "RequestId": request_id}}
    )


def face_rect(x: int, y: int, width: int, height: int) -> dict[str, int]:
    return {"X": x, "Y": y, "Width": width, "Height": height}


def base64_length(raw_bytes: int) -> int:
    return 4 * ((raw_bytes + 2) // 3)


def decode_image(value: str) -> bytes:
    """An ``Image`` field: empty → ImageEmpty, over 5 MB → ImageSizeExceed, not base64 → ImageDecodeFailed."""
    if not value:
        raise IaiError("InvalidParameterValue.ImageEmpty")
    if len(value) > MAX_IMAGE_BASE64:
        raise IaiError("FailedOperation.ImageSizeExceed")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IaiError("FailedOperation.ImageDecodeFailed", "the Image field is not base64") from exc


def check_id(value: str, kind: str) -> str:
    """A GroupId or PersonId (``kind`` "Group" or "Person"): ``…IdIllegal`` / ``…IdTooLong`` when it is not one."""
    if len(value.encode()) > MAX_ID_BYTES:
        raise IaiError(f"InvalidParameterValue.{kind}IdTooLong")
    if not _ID.fullmatch(value):
        raise IaiError(f"InvalidParameterValue.{kind}IdIllegal")
    return value


def check_name(value: str, kind: str) -> str:
    """A GroupName or PersonName: 1–60 characters of letters, digits, ``-`` and ``_``."""
    if len(value) > MAX_NAME_CHARS:
        raise IaiError(f"InvalidParameterValue.{kind}NameTooLong")
    if not _NAME.fullmatch(value):
        raise IaiError(f"InvalidParameterValue.{kind}NameIllegal")
    return value


class Params:
    """The fields of one request body, read with API 3.0's checks (see the module docstring)."""

    def __init__(self, data: Mapping[str, Any], allowed: Collection[str]) -> None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise IaiError("UnknownParameter", f"The parameter `{unknown[0]}` is not recognized.")
        self._data = data

    @classmethod
    def parse(cls, body: bytes, allowed: Collection[str]) -> Params:
        try:
            data = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise IaiError("InvalidParameter", "The request body is not valid JSON.") from exc
        if not isinstance(data, dict):
            raise IaiError("InvalidParameter", "The request body is not a JSON object.")
        return cls(data, allowed)

    def _get(self, name: str, required: bool) -> Any:
        value = self._data.get(name)
        if value is None and required:
            raise IaiError("MissingParameter", f"The request is missing a required parameter `{name}`.")
        return value

    @staticmethod
    def _wrong_type(name: str) -> IaiError:
        return IaiError("InvalidParameter", f"The value type of parameter `{name}` is not valid.")

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self._get(name, required)
        if value is not None and not isinstance(value, str):
            raise self._wrong_type(name)
        return value

    def required_text(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None
        return value

    def texts(self, name: str, *, required: bool = False) -> list[str]:
        value = self._get(name, required)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._wrong_type(name)
        if required and not value:
            raise IaiError("MissingParameter", f"The parameter `{name}` is empty.")
        return value

    def integer(self, name: str, default: int) -> int:
        value = self._get(name, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
            raise self._wrong_type(name)
        return int(value)

    def number(self, name: str, default: float) -> float:
        value = self._get(name, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong_type(name)
        return float(value)

    def bounded(self, name: str, default: int, low: int, high: int, code: str = "InvalidParameterValue") -> int:
        """An integer field within [low, high]; outside it answers ``code``."""
        value = self.integer(name, default)
        if not low <= value <= high:
            raise IaiError(code, f"`{name}` must be within [{low}, {high}], got {value}.")
        return value
