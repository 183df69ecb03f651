"""Tencent's face APIs, v1 (multidentify) and IAI (SearchFaces): signatures, error registry, typed results, clients.

- client       ``MultidentifyClient`` (v1) and its ``ClientOptions``: the calls, the wire format, the multipart body
- signature    the v1 signature (``sign``, ``parse``, ``CachedSigner``)
- tc3          IAI's TC3-HMAC-SHA256 signature
- iai_wire     IAI request bodies and signed headers (pure)
- iai_answers  IAI answers parsed into typed results (pure)
- iai_client   ``IaiClient`` and its ``IaiOptions``: SearchFaces, the configuration check, enrolment
- transport    the one HTTP stack both clients use: pool, deadlines, body reading
- codes        every dead-letter key: meaning, class, origin, the setting to check
- errors       ``ApiError``, the one failure type
- models       typed results and pure body parsers
- images       which image format a body is, from its magic bytes (also fetch mode's and the emulator's)
- retry_after  the ``Retry-After`` header, in seconds (also fetch mode's)
"""

from __future__ import annotations

from worker.api.client import DEFAULT_BASE_URL, MAX_BODY_BYTES, MULTIDENTIFY_PATH, ClientOptions, MultidentifyClient
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
from worker.api.images import sniff_image_type
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
from worker.api.retry_after import parse_retry_after
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
    "ClientOptions",
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
    "parse_retry_after",
    "sign",
    "sign_plain",
    "sniff_image_type",
]
