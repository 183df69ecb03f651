"""IAI's error codes in the registry: every code of Tencent's SDK, the API 3.0 common codes, the families of codes
the registry does not list, and what an ``ApiError`` made from one carries."""

from __future__ import annotations

import pickle

import pytest
from tencentcloud.iai.v20200303 import errorcodes

from worker.api import codes
from worker.api.codes import IAI_CODES, REGISTRY, Api, ErrorClass, Origin, class_of_iai_code, is_iai_code, lookup
from worker.api.errors import ApiError, config_error_reason, meaning

T, P, C = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.CONFIG

# Read from the installed SDK, not copied: a code that a newer SDK adds fails here until it is classified.
SDK_CODES = sorted(v for k, v in vars(errorcodes).items() if k.isupper() and isinstance(v, str))

# The API 3.0 common codes (Tencent's common error-code table), any action may answer them.
COMMON_CODES = [
    "ActionOffline",
    "AuthFailure.InvalidAuthorization",
    "AuthFailure.InvalidSecretId",
    "AuthFailure.MFAFailure",
    "AuthFailure.SecretIdNotFound",
    "AuthFailure.SignatureExpire",
    "AuthFailure.SignatureFailure",
    "AuthFailure.TokenFailure",
    "AuthFailure.UnauthorizedOperation",
    "DryRunOperation",
    "FailedOperation",
    "InternalError",
    "InvalidAction",
    "InvalidParameter",
    "InvalidParameterValue",
    "InvalidRequest",
    "IpInBlacklist",
    "IpNotInWhitelist",
    "LimitExceeded",
    "MissingParameter",
    "NoSuchProduct",
    "NoSuchVersion",
    "RequestLimitExceeded",
    "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
    "RequestLimitExceeded.IPLimitExceeded",
    "RequestLimitExceeded.UinLimitExceeded",
    "RequestSizeLimitExceeded",
    "ResourceInUse",
    "ResourceInsufficient",
    "ResourceNotFound",
    "ResourceUnavailable",
    "ResponseSizeLimitExceeded",
    "ServiceUnavailable",
    "UnauthorizedOperation",
    "UnknownParameter",
    "UnsupportedOperation",
    "UnsupportedProtocol",
    "UnsupportedRegion",
]

# The classes docs/api-notes.md gives the codes SearchFaces answers, written out here, not read from the registry.
SEARCH_CLASSES: dict[str, ErrorClass] = {
    "RequestLimitExceeded": T,
    "FailedOperation.RequestLimitExceeded": T,
    "FailedOperation.RequestTimeout": T,
    "FailedOperation.ServerError": T,
    "FailedOperation.RpcFail": T,
    "FailedOperation.UnKnowError": T,
    "InternalError": T,
    "FailedOperation.ImageDownloadError": P,
    "FailedOperation.ImageDecodeFailed": P,
    "FailedOperation.ImageFacedetectFailed": P,
    "InvalidParameterValue.NoFaceInPhoto": P,
    "FailedOperation.FaceSizeTooSmall": P,
    "FailedOperation.FaceQualityNotQualified": P,
    "FailedOperation.ImageResolutionExceed": P,
    "FailedOperation.ImageResolutionTooSmall": P,
    "FailedOperation.ImageSizeExceed": P,
    "InvalidParameterValue.ImageEmpty": P,
    "InvalidParameterValue.UrlIllegal": P,
    "LimitExceeded.ErrorFaceNumExceed": P,
    "InvalidParameter.InvalidParameter": P,  # not config: see the registry's comment
    "MissingParameter.ErrorParameterEmpty": P,  # likewise
    "AuthFailure.SignatureFailure": C,
    "AuthFailure.SignatureExpire": C,
    "AuthFailure.SecretIdNotFound": C,
    "InvalidParameterValue.GroupIdNotExist": C,
    "InvalidParameterValue.GroupIdNotExists": C,
    "InvalidParameterValue.GroupIdsExceed": C,
    "InvalidParameterValue.NoFaceInGroups": C,
    "FailedOperation.AcrossVersionsError": C,
    "FailedOperation.SearchFacesExceed": C,
    "InvalidParameterValue.SearchPersonsExceed": C,
    "InvalidParameterValue.UnsupportedGroupFaceModelVersion": C,
    "ResourceUnavailable.InArrears": C,
    "ResourceUnavailable.Freeze": C,
    "ResourceUnavailable.NotReady": C,
    "ResourceUnavailable.StopUsing": C,
    "ResourceUnavailable.LowBalance": C,
    "UnsupportedOperation.UnknowMethod": C,
}


def test_the_sdk_module_is_read() -> None:
    # Guards the reading above: an empty list would make the next test pass vacuously.
    assert len(SDK_CODES) >= 90
    assert "FailedOperation.ImageDownloadError" in SDK_CODES


@pytest.mark.parametrize("code", SDK_CODES + COMMON_CODES)
def test_every_sdk_and_common_code_is_in_the_registry(code: str) -> None:
    assert code in IAI_CODES, f"{code}: classify it in worker/api/codes.py (_IAI_TABLE)"
    info = REGISTRY[code]
    assert (info.key, info.origin, info.api) == (code, Origin.SERVICE, Api.IAI)
    assert info.meaning and meaning(code) == info.meaning
    assert IAI_CODES[code].zh  # the emulator answers with Tencent's text
    assert is_iai_code(code)


@pytest.mark.parametrize(("code", "expected"), sorted(SEARCH_CLASSES.items()))
def test_searchfaces_codes_have_their_documented_class(code: str, expected: ErrorClass) -> None:
    assert class_of_iai_code(code) is expected
    error = ApiError.from_iai(code, "msg", "req-1", 200)
    assert (error.code, error.error_class, error.origin, error.request_id, error.http_status) == (
        code,
        expected,
        Origin.SERVICE,
        "req-1",
        200,
    )


@pytest.mark.parametrize("code", sorted(IAI_CODES))
def test_every_iai_config_code_names_the_setting_to_look_at(code: str) -> None:
    info = IAI_CODES[code]
    if info.error_class is C:
        assert info.check, f"{code}: a configuration code must say what to look at"
        assert config_error_reason(ApiError.from_iai(code, "m")).endswith(f"; check {info.check}")
    else:
        assert info.check is None, code


def test_the_group_codes_mirror_v1_s() -> None:
    iai_group_codes = {k for k in codes.GROUP_CODES if REGISTRY[k].api is Api.IAI}
    assert {
        "InvalidParameterValue.GroupIdNotExist",
        "InvalidParameterValue.GroupIdNotExists",
        "InvalidParameterValue.GroupIdIllegal",
        "InvalidParameterValue.GroupIdTooLong",
        "InvalidParameterValue.GroupIdsExceed",
        "InvalidParameterValue.NoFaceInGroups",
        "FailedOperation.AcrossVersionsError",
        "InvalidParameterValue.UnsupportedGroupFaceModelVersion",
        "FailedOperation.GroupInDeletedState",
        "FailedOperation.SearchFacesExceed",
    } == iai_group_codes
    # Config for the configured groups (worker.runtime.identify makes them the event's fault for its own groups).
    assert all(IAI_CODES[k].error_class is C for k in iai_group_codes)


@pytest.mark.parametrize(
    "code",
    [
        "RequestLimitExceeded",
        "RequestLimitExceeded.UinLimitExceeded",
        "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
        "RequestLimitExceeded.IPLimitExceeded",
        "FailedOperation.RequestLimitExceeded",
        "RequestLimitExceeded.SomethingNew",  # a family member the registry does not list
    ],
)
def test_rate_limit_codes_are_transient_and_rate_limited(code: str) -> None:
    error = ApiError.from_iai(code, "")
    assert error.transient and error.rate_limited
    assert error.http_status is None


@pytest.mark.parametrize(
    "code",
    [
        "InternalError",
        "FailedOperation.ServerError",
        "ServiceUnavailable",
        "AuthFailure.SignatureFailure",
        "LimitExceeded",
    ],
)
def test_other_codes_are_not_rate_limited(code: str) -> None:
    assert not ApiError.from_iai(code, "").rate_limited
    assert ApiError.from_iai(code, "", http_status=429).rate_limited  # a 429 is a rate limit whatever the code


@pytest.mark.parametrize(
    ("code", "expected", "check_mentions"),
    [
        ("AuthFailure.SomethingNew", C, "secret_id"),
        ("AuthFailure", C, "secret_id"),
        ("ResourceUnavailable.SomethingNew", C, "account"),
        ("ResourceInsufficient.SomethingNew", C, "account"),
        ("UnauthorizedOperation.SomethingNew", C, "CAM"),
        ("RequestLimitExceeded.SomethingNew", T, None),
        ("FailedOperation.SomethingNew", T, None),
        ("InvalidParameterValue.SomethingNew", T, None),
        ("SomethingNew", T, None),
        ("AuthFailureX", T, None),  # not of the family: the family is "AuthFailure" and "AuthFailure.*"
    ],
)
def test_codes_the_registry_does_not_list_are_classified_by_family(
    code: str, expected: ErrorClass, check_mentions: str | None
) -> None:
    assert code not in REGISTRY
    info = lookup(code)
    assert info is not None, "lookup answers every IAI-spelt code"
    assert (info.key, info.error_class, info.origin, info.api) == (code, expected, Origin.SERVICE, Api.IAI)
    assert class_of_iai_code(code) is expected
    if check_mentions is None:
        assert info.check is None
    else:
        assert info.check and check_mentions in info.check
    error = ApiError.from_iai(code, "")
    assert error.error_class is expected
    assert error.message == info.meaning == meaning(code)  # no message: the registry's words


@pytest.mark.parametrize(
    "key", ["timeout", "http_503", "15", "-1308", "", "a.b", "Auth Failure", "AuthFailure.", ".X", "A" * 65, "Ä"]
)
def test_strings_not_spelt_like_an_iai_code_are_refused(key: str) -> None:
    assert not is_iai_code(key)
    with pytest.raises(ValueError, match="not an IAI error code"):
        ApiError.from_iai(key, "m")


def test_lookup_still_answers_none_for_unknown_lower_case_and_numeric_keys() -> None:
    assert lookup("unknown_key") is None and lookup("987654") is None


def test_the_iai_codes_do_not_collide_with_other_keys() -> None:
    v1_and_local = {k for k, i in REGISTRY.items() if i.api is not Api.IAI}
    assert not v1_and_local & set(IAI_CODES)
    assert not any(is_iai_code(k) for k in v1_and_local)


def test_signature_expire_is_re_signed_once_like_v1_s_9() -> None:
    assert ApiError.from_iai("AuthFailure.SignatureExpire", "").resign
    assert not ApiError.from_iai("AuthFailure.SignatureFailure", "").resign


def test_refused_takes_an_iai_code() -> None:
    error = ApiError.refused("FailedOperation.ImageSizeExceed", "image over 5 MB")
    assert (error.code, error.error_class, error.origin) == ("FailedOperation.ImageSizeExceed", P, Origin.SERVICE)
    assert error.message == "refused locally, not sent: image over 5 MB"
    assert ApiError.refused(23, "too big").code == "23"  # v1's integers as before


def test_the_request_id_survives_pickling() -> None:
    error = ApiError.from_iai("InternalError", "boom", "57b42b73", 200)
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.code, clone.error_class, clone.request_id, clone.http_status, clone.origin) == (
        "InternalError",
        T,
        "57b42b73",
        200,
        Origin.SERVICE,
    )


def test_v1_codes_carry_their_api() -> None:
    assert lookup("-1308").api is Api.V1  # type: ignore[union-attr]
    assert lookup("timeout").api is None  # type: ignore[union-attr]
    assert lookup("15").rate_limited  # type: ignore[union-attr]
