"""TC3-HMAC-SHA256: Tencent's published vector, the IAI vector made by Tencent's SDK, and the header round trip."""

from __future__ import annotations

import pytest

from worker.api import tc3

# The signing guide's vector (docs/api-notes.md#iai-tc3-signing): the asterisks are part of the keys.
DOC_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******"
DOC_KEY = "Gu5t9xGARNpq86cd98joQYCN3*******"
DOC_BODY = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
DOC_CT = "application/json; charset=utf-8"

# Made by tencentcloud-sdk-python 3.1.195 for a SearchFaces request, with the transport stubbed.
IAI_BODY = (
    b'{"GroupIds": ["g1", "g2"], "Url": "https://example.invalid/a.jpg", "MaxFaceNum": 5, "MinFaceSize": 34, '
    b'"MaxPersonNum": 5}'
)


def test_the_signing_guides_vector() -> None:
    canonical = tc3.canonical_request(DOC_CT, "cvm.tencentcloudapi.com", DOC_BODY)
    assert canonical.endswith("35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064")
    to_sign = tc3.string_to_sign(1551113065, "cvm", canonical)
    assert to_sign.endswith("5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031")
    assert to_sign.split("\n")[2] == "2019-02-25/cvm/tc3_request"
    sig = tc3.signature(
        DOC_KEY, service="cvm", host="cvm.tencentcloudapi.com", content_type=DOC_CT, body=DOC_BODY, timestamp=1551113065
    )
    assert sig == "2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c"


def test_the_iai_vector_from_tencents_sdk() -> None:
    header = tc3.authorization(
        "AKIDEXAMPLE",
        "SECRETEXAMPLE",
        service="iai",
        host="iai.tencentcloudapi.com",
        content_type="application/json",
        body=IAI_BODY,
        timestamp=1795703247,
    )
    assert header == (
        "TC3-HMAC-SHA256 Credential=AKIDEXAMPLE/2026-11-26/iai/tc3_request, SignedHeaders=content-type;host, "
        "Signature=88a6f2dbb13274efd8fd4a15499007feff44be606d979173d906ea2a9ac90423"
    )


def test_a_header_parses_back_to_what_was_signed() -> None:
    header = tc3.authorization(
        "AKIDx", "k", service="iai", host="127.0.0.1:8080", content_type="application/json", body=b"{}", timestamp=0
    )
    parsed = tc3.parse_authorization(header)
    assert (parsed.secret_id, parsed.date, parsed.service, parsed.signed_headers) == (
        "AKIDx",
        "1970-01-01",
        "iai",
        "content-type;host",
    )
    assert parsed.signature == tc3.signature(
        "k", service="iai", host="127.0.0.1:8080", content_type="application/json", body=b"{}", timestamp=0
    )


@pytest.mark.parametrize(
    "header",
    [
        "",
        "TC3-HMAC-SHA1 Credential=a/2020-01-01/iai/tc3_request, SignedHeaders=content-type;host, Signature=" + "0" * 64,
        "TC3-HMAC-SHA256 Credential=a/2020-01-01/iai, SignedHeaders=content-type;host, Signature=" + "0" * 64,
        "TC3-HMAC-SHA256 Credential=a/2020-01-01/iai/tc3_request, SignedHeaders=content-type;host, Signature=xyz",
        "q-sign-algorithm=sha1&q-ak=abc",
    ],
)
def test_anything_else_is_a_format_error(header: str) -> None:
    with pytest.raises(tc3.AuthorizationFormatError):
        tc3.parse_authorization(header)


def test_one_changed_byte_of_body_or_host_changes_the_signature() -> None:
    def sig(body: bytes, host: str = "iai.tencentcloudapi.com") -> str:
        return tc3.signature(
            "SECRETEXAMPLE", service="iai", host=host, content_type="application/json", body=body, timestamp=1795703247
        )

    assert sig(IAI_BODY.replace(b"5", b"6", 1)) != sig(IAI_BODY)
    assert sig(IAI_BODY, host="iai.ap-guangzhou.tencentcloudapi.com") != sig(IAI_BODY)
