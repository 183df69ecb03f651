"""Pure parts of the emulator's IAI: the TC3 check as a function of headers, body and clock; field reading;
the v1 → IAI code map; and that every code the emulator can answer is one Tencent has (the SDK's
``errorcodes`` module, or API 3.0's common codes), so a typo cannot hide in a rarely taken branch."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from tencentcloud.iai.v20200303 import errorcodes

from worker.api import tc3
from worker.emulator import DEV_ACCOUNT, Account, cli
from worker.emulator.accounts import AccountBook
from worker.emulator.iai_auth import verify
from worker.emulator.iai_wire import V1_TO_IAI, IaiError, Params, decode_image, iai_code

EMULATOR = Path(__file__).resolve().parents[2] / "worker" / "emulator"
# API 3.0's common error codes (Tencent's "公共错误码" table) that the emulator answers.
COMMON = {
    "AuthFailure.InvalidAuthorization", "AuthFailure.SecretIdNotFound", "AuthFailure.SignatureExpire",
    "AuthFailure.SignatureFailure", "AuthFailure.UnauthorizedOperation", "InternalError", "InvalidAction",
    "InvalidParameter", "InvalidParameterValue", "MissingParameter", "NoSuchVersion", "RequestLimitExceeded",
    "RequestSizeLimitExceeded", "UnknownParameter",
}  # fmt: skip
SDK_CODES = {v for k, v in vars(errorcodes).items() if k.isupper() and isinstance(v, str)}
_CODE = re.compile(
    r'"((?:AuthFailure|FailedOperation|InvalidParameterValue|InvalidParameter|LimitExceeded|MissingParameter|'
    r"ResourceUnavailable|RequestLimitExceeded|RequestSizeLimitExceeded|InternalError|InvalidAction|NoSuchVersion|"
    r'UnknownParameter)[\w.{}]*)"'
)

BOOK = AccountBook([DEV_ACCOUNT, Account("1250000001", "AKIDother", "other-key")])
BODY = b'{"GroupIds": ["g"]}'
NOW = 1_795_703_247


def request(**change: object) -> dict[str, object]:
    """verify()'s arguments for a valid request signed by DEV_ACCOUNT at NOW, with ``change`` applied."""
    host, body = "127.0.0.1:8080", BODY
    auth = tc3.authorization(
        DEV_ACCOUNT.secret_id, DEV_ACCOUNT.secret_key, service="iai", host=host, content_type="application/json",
        body=body, timestamp=NOW,
    )  # fmt: skip
    args: dict[str, object] = {"authorization": auth, "timestamp": str(NOW), "host": host,
                               "content_type": "application/json", "body": body, "now": NOW}  # fmt: skip
    return args | change


def code_of(**change: object) -> str | None:
    try:
        verify(BOOK, **request(**change))  # type: ignore[arg-type]
    except IaiError as error:
        return error.code
    return None


def test_every_code_the_emulator_can_answer_is_tencents() -> None:
    found: set[str] = set()
    for path in EMULATOR.glob("iai*.py"):
        for code in _CODE.findall(path.read_text()):
            found |= {code.replace("{kind}", kind) for kind in ("Group", "Person")} if "{kind}" in code else {code}
    found |= set(V1_TO_IAI.values()) | {iai_code(-9999)}
    assert len(found) > 40
    assert found - SDK_CODES - COMMON == set()


def test_verify_accepts_its_own_signature_and_names_the_account() -> None:
    assert verify(BOOK, **request()) == DEV_ACCOUNT  # type: ignore[arg-type]
    assert code_of(now=NOW + 300) is None and code_of(now=NOW - 300) is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"authorization": None}, "AuthFailure.InvalidAuthorization"),
        ({"authorization": "TC3-HMAC-SHA256 Credential=x"}, "AuthFailure.InvalidAuthorization"),
        ({"timestamp": None}, "MissingParameter"),
        ({"timestamp": "-5"}, "InvalidParameter"),
        ({"host": "127.0.0.1"}, "AuthFailure.SignatureFailure"),
        ({"content_type": "application/json; charset=utf-8"}, "AuthFailure.SignatureFailure"),
        ({"body": BODY + b" "}, "AuthFailure.SignatureFailure"),
        ({"timestamp": str(NOW + 1)}, "AuthFailure.SignatureFailure"),
        ({"now": NOW + 301}, "AuthFailure.SignatureExpire"),
        ({"now": NOW - 301}, "AuthFailure.SignatureExpire"),
    ],
)
def test_verify_refuses(change: dict[str, object], expected: str) -> None:
    assert code_of(**change) == expected


def test_another_accounts_key_does_not_sign_for_this_id() -> None:
    forged = tc3.authorization(
        DEV_ACCOUNT.secret_id, "other-key", service="iai", host="127.0.0.1:8080", content_type="application/json",
        body=BODY, timestamp=NOW,
    )  # fmt: skip
    assert code_of(authorization=forged) == "AuthFailure.SignatureFailure"


def test_params_reading() -> None:
    params = Params.parse(b'{"A": "x", "N": 5, "F": 2.5, "L": ["a"], "I": 3.0}', {"A", "N", "F", "L", "I", "Z"})
    assert (params.text("A"), params.integer("N", 0), params.number("F", 0), params.texts("L")) == ("x", 5, 2.5, ["a"])
    assert params.integer("I", 0) == 3 and params.integer("Z", 7) == 7 and params.texts("Z") == []
    for call, code in [
        (lambda: params.integer("F", 0), "InvalidParameter"),
        (lambda: params.text("N"), "InvalidParameter"),
        (lambda: params.required_text("Z"), "MissingParameter"),
        (lambda: params.bounded("N", 0, 0, 4, "X.Illegal"), "X.Illegal"),
        (lambda: Params.parse(b'{"B": 1}', {"A"}), "UnknownParameter"),
    ]:
        with pytest.raises(IaiError) as caught:
            call()
        assert caught.value.code == code and caught.value.message


def test_decode_image() -> None:
    assert decode_image("aGVsbG8=") == b"hello"
    for value, code in [
        ("", "InvalidParameterValue.ImageEmpty"),
        ("aGVsbG8", "FailedOperation.ImageDecodeFailed"),
        ("A" * (5 * 1024 * 1024 + 4), "FailedOperation.ImageSizeExceed"),
    ]:
        with pytest.raises(IaiError) as caught:
            decode_image(value)
        assert caught.value.code == code


def test_the_shared_gallery_flag() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.config_from_args(parser.parse_args(["--iai-shared-gallery"])).iai_shared_gallery is True
    assert cli.config_from_args(parser.parse_args([])).iai_shared_gallery is False


def test_unmapped_v1_codes_are_an_unknown_error() -> None:
    assert iai_code(15) == "RequestLimitExceeded" and iai_code(-1104) == "FailedOperation.UnKnowError"
