"""Tencent face API v1 adapter: signature, error table, typed results and the HTTP client."""

from __future__ import annotations

from worker.api.client import DEFAULT_BASE_URL, MAX_BODY_BYTES, MULTIDENTIFY_PATH, MultidentifyClient
from worker.api.codes import IAI_CODES, Api, IaiCodeInfo, class_of_iai_code
from worker.api.errors import (
    CODES,
    LOCAL_CODES,
    ApiError,
    CodeInfo,
    ErrorClass,
    class_of_code,
    class_of_http_status,
    meaning,
)
from worker.api.models import (
    Candidate,
    Face,
    FaceRect,
    IdentifyResult,
    parse_data_object,
    parse_envelope,
    parse_id_list,
    parse_multidentify,
)
from worker.api.signature import CachedSigner, ParsedSignature, SignatureFormatError, parse, sign, sign_plain

__all__ = [
    "CODES",
    "DEFAULT_BASE_URL",
    "IAI_CODES",
    "LOCAL_CODES",
    "MAX_BODY_BYTES",
    "MULTIDENTIFY_PATH",
    "Api",
    "ApiError",
    "CachedSigner",
    "Candidate",
    "CodeInfo",
    "ErrorClass",
    "Face",
    "FaceRect",
    "IaiCodeInfo",
    "IdentifyResult",
    "MultidentifyClient",
    "ParsedSignature",
    "SignatureFormatError",
    "class_of_code",
    "class_of_http_status",
    "class_of_iai_code",
    "meaning",
    "parse",
    "parse_data_object",
    "parse_envelope",
    "parse_id_list",
    "parse_multidentify",
    "sign",
    "sign_plain",
]
