"""Pure parts of the emulator: multipart/JSON fields, id rules, signature codes, fault decisions."""

from __future__ import annotations

import base64

import orjson
import pytest

from worker.api.signature import sign, sign_plain
from worker.emulator.accounts import DEV_ACCOUNT, Account, AccountBook, load_accounts_file, parse_account
from worker.emulator.auth import SignatureChecker
from worker.emulator.faults import FaultConfig, FaultInjector, Latency, TokenBucket
from worker.emulator.wire import BodyError, Fields, check_id, envelope, parse_multipart

# --- wire ------------------------------------------------------------------------------------------------------


def _multipart(parts: list[tuple[str, bytes, str | None]], boundary: str = "XyZ", eol: bytes = b"\r\n") -> bytes:
    out = b""
    for name, value, filename in parts:
        out += b"--" + boundary.encode() + eol
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += disposition.encode() + eol + eol + value + eol
    return out + b"--" + boundary.encode() + b"--" + eol


def test_multipart_text_parts_with_filename_and_indexed_arrays() -> None:
    body = _multipart(
        [
            ("appid", b"1250000000", "appid"),  # the official Python SDK's style
            ("group_ids[1]", b"qq", "group_ids[1]"),
            ("group_ids[0]", b"tencent", None),
            ("image", b"\x00\x01binary\r\n--not-a-boundary", "a.jpg"),
            ("extra", b"ignored", None),
        ]
    )
    fields = Fields.parse(body, "multipart/form-data; boundary=XyZ")
    assert fields.text("appid") == "1250000000"
    assert fields.texts("group_ids") == ["tencent", "qq"]
    assert fields.blob("image") == b"\x00\x01binary\r\n--not-a-boundary"
    assert fields.text("missing") is None


def test_multipart_tolerates_lf_line_ends_and_quoted_boundary() -> None:
    body = _multipart([("appid", b"1", None), ("group_id", b"g", None)], boundary="b-1", eol=b"\n")
    fields = Fields.parse(body, 'multipart/form-data; boundary="b-1"')
    assert fields.text("group_id") == "g"


def test_multipart_repeated_names_are_arrays() -> None:
    body = _multipart([("urls", b"http://a/1", None), ("urls", b"http://a/2", None)])
    assert Fields.parse(body, "multipart/form-data; boundary=XyZ").texts("urls") == ["http://a/1", "http://a/2"]


def test_bad_bodies_raise_body_error() -> None:
    with pytest.raises(BodyError):
        Fields.parse(b"{not json", "application/json")
    with pytest.raises(BodyError):
        Fields.parse(b"[1, 2]", "application/json")
    with pytest.raises(BodyError):
        parse_multipart(b"whatever", "multipart/form-data")


def test_json_fields_numbers_arrays_and_base64_image() -> None:
    fields = Fields.parse(
        orjson.dumps({"appid": 1250000000, "group_ids": ["a", "b"], "image": base64.b64encode(b"img").decode()}),
        "application/json; charset=utf-8",
    )
    assert fields.text("appid") == "1250000000"
    assert fields.texts("group_ids") == ["a", "b"]
    assert fields.blob("image") == b"img"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("ok_id-1.x", 0),
        ("", -1301),
        (None, -1301),
        ("a b", -1313),
        ("a/b", -1313),
        ("a\tb", -1313),
        ("a\nb", -1313),
        ("x" * 129, -1304),
    ],
)
def test_id_rules(value: str | None, code: int) -> None:
    assert check_id(value) == code


def test_envelope_shapes() -> None:
    assert orjson.loads(envelope(0, {"a": 1})) == {"data": {"a": 1}, "code": 0, "message": "OK"}
    error = orjson.loads(envelope(-1306))
    assert error["code"] == -1306 and error["message"] == "组不存在" and error["data"] == {}


# --- accounts and signature ----------------------------------------------------------------------------------------

OTHER = Account("1250000001", "AKIDother", "other-key")


def _checker(now: float = 1_700_000_000) -> SignatureChecker:
    return SignatureChecker(AccountBook([DEV_ACCOUNT, OTHER]), clock=lambda: now)


def _dev_sign(now: int = 1_700_000_000, lifetime: int = 300, **kwargs: str) -> str:
    return sign(DEV_ACCOUNT.appid, DEV_ACCOUNT.secret_id, DEV_ACCOUNT.secret_key, now=now, lifetime=lifetime, **kwargs)


def _check(header: str | None, appid: str = DEV_ACCOUNT.appid, checker: SignatureChecker | None = None) -> int:
    checker = checker or _checker()
    parsed = checker.parse_header(header)
    if isinstance(parsed, int):
        return parsed
    return checker.check(header or "", parsed, appid)


def test_signature_codes_in_documented_order() -> None:
    assert _check(None) == 4
    assert _check("  ") == 4
    assert _check("%%%not base64") == 5
    assert _check(base64.b64encode(b"x" * 20 + b"a=1&k=2").decode()) == 5  # e, t missing
    assert _check(_dev_sign(), appid="999") == 6
    unknown_appid = sign("1259999999", DEV_ACCOUNT.secret_id, DEV_ACCOUNT.secret_key, now=1_700_000_000, lifetime=60)
    assert _check(unknown_appid, appid="1259999999") == 10
    unknown_id = sign(DEV_ACCOUNT.appid, "AKIDnobody", "k", now=1_700_000_000, lifetime=60)
    assert _check(unknown_id) == 11
    foreign_id = sign(DEV_ACCOUNT.appid, OTHER.secret_id, OTHER.secret_key, now=1_700_000_000, lifetime=60)
    assert _check(foreign_id) == 12
    wrong_key = sign(DEV_ACCOUNT.appid, DEV_ACCOUNT.secret_id, "wrong", now=1_700_000_000, lifetime=60)
    assert _check(wrong_key) == 14
    assert _check(_dev_sign(now=1_699_000_000, lifetime=60)) == 9
    assert _check(_dev_sign()) == 0


def test_single_use_signature_is_accepted_once() -> None:
    checker = _checker()
    header = _dev_sign(lifetime=0, fileid="x")
    assert _check(header, checker=checker) == 0
    assert _check(header, checker=checker) == 13


def test_field_order_does_not_matter_and_cached_signatures_still_expire() -> None:
    plain = f"a={DEV_ACCOUNT.appid}&k={DEV_ACCOUNT.secret_id}&t=1700000000&e=1700000100".encode()
    header = sign_plain(DEV_ACCOUNT.secret_key, plain)
    now = [1_700_000_050.0]
    checker = SignatureChecker(AccountBook([DEV_ACCOUNT]), clock=lambda: now[0])
    assert _check(header, checker=checker) == 0
    now[0] = 1_700_000_101.0
    assert _check(header, checker=checker) == 9  # remembered HMAC, expiry still checked


def test_account_parsing_and_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert parse_account("1:AKID:key:with:colons") == Account("1", "AKID", "key:with:colons")
    with pytest.raises(ValueError):
        parse_account("1:AKID")
    path = tmp_path / "accounts.json"
    path.write_bytes(orjson.dumps({"accounts": [{"appid": "1", "secret_id": "s", "secret_key": "k"}]}))
    assert load_accounts_file(path) == [Account("1", "s", "k")]
    assert "devstack-secret" not in repr(DEV_ACCOUNT)


# --- faults ----------------------------------------------------------------------------------------------------


def test_fault_config_round_trips_and_validates() -> None:
    config = FaultConfig.from_json(
        {
            "latency": {"kind": "lognormal", "median_ms": 100, "sigma": 0.3},
            "error_rates": {"213": 0.1},
            "http_error_rates": {"503": 0.2},
            "qps_limit": 5,
            "seed": 1,
            "late_answer_rate": 0.1,
            "late_answer_ms": 500,
            "applied_error_rates": {"203": 0.1},
            "actions": ["addface", "CreateFace"],
        }
    )
    assert FaultConfig.from_json(config.to_json()) == config
    assert FaultConfig.from_json({"latency_ms": 50}).latency == Latency(kind="fixed", ms=50)
    for bad in (
        {"error_rates": {"213": 1.5}},
        {"drop_rate": 0.6, "error_rates": {"15": 0.6}},
        {"http_error_rates": {"200": 0.1}},
        {"nonsense": 1},
        {"latency": {"kind": "weird"}},
        {"qps_limit": 0},
        {"late_answer_rate": 0.5, "drop_rate": 0.6},
        {"late_answer_ms": -1},
        {"applied_error_rates": {"0": 0.1}},
        {"applied_error_rates": {"213": 0.6}, "late_answer_rate": 0.5},
        {"actions": "addface"},
    ):
        with pytest.raises(ValueError):
            FaultConfig.from_json(bad)


def _plans(config: dict[str, object], n: int) -> list[tuple[str, int, int, float]]:
    injector = FaultInjector(FaultConfig.from_json(config), clock=lambda: 0.0)
    return [(p.action, p.code, p.http_status, p.latency_s) for p in (injector.plan() for _ in range(n))]


def test_seeded_decisions_are_reproducible_and_rates_honoured() -> None:
    config = {
        "error_rates": {"213": 0.1},
        "http_error_rates": {"503": 0.05},
        "drop_rate": 0.05,
        "latency": {"kind": "uniform", "min_ms": 10, "max_ms": 20},
        "seed": 42,
    }
    first, second = _plans(config, 2000), _plans(config, 2000)
    assert first == second
    assert first != _plans({**config, "seed": 43}, 2000)
    actions = [p[0] for p in first]
    assert 150 <= actions.count("code") <= 250
    assert 60 <= actions.count("http") <= 140
    assert 60 <= actions.count("drop") <= 140
    assert all(0.010 <= p[3] <= 0.020 for p in first)


def test_lognormal_latency_median_and_cap() -> None:
    lat = Latency(kind="lognormal", median_ms=200, sigma=0.5, max_ms=400)
    assert lat.sample_ms(0.5) == pytest.approx(200)
    assert lat.sample_ms(0.9999) == 400
    assert lat.sample_ms(0.1) < 200


def test_token_bucket_limits_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=10, clock=lambda: now[0])
    assert sum(bucket.take() for _ in range(30)) == 10
    now[0] = 0.5
    assert sum(bucket.take() for _ in range(30)) == 5


def test_management_calls_are_not_faulted_unless_asked() -> None:
    injector = FaultInjector(FaultConfig.from_json({"error_rates": {"213": 1.0}}))
    assert injector.applies_to(management=False)
    assert not injector.applies_to(management=True)
    injector.configure(FaultConfig.from_json({"error_rates": {"213": 1.0}, "apply_to_management": True}))
    assert injector.applies_to(management=True)
    injector.configure(FaultConfig())
    assert not injector.applies_to(management=False)


def test_actions_narrow_the_faults_to_the_named_actions() -> None:
    injector = FaultInjector(FaultConfig.from_json({"late_answer_rate": 1.0, "actions": ["addface", "CreateFace"]}))
    assert injector.applies_to(management=True, action="addface")
    assert injector.applies_to(management=True, action="CreateFace")
    assert not injector.applies_to(management=True, action="getinfo")  # a read checking on the write is spared
    assert not injector.applies_to(management=False, action="multidentify")
    assert injector.plan().action == "late"


def test_an_applied_error_is_planned_with_its_code() -> None:
    injector = FaultInjector(FaultConfig.from_json({"applied_error_rates": {"213": 1.0}}))
    assert (injector.plan().action, injector.plan().code) == ("applied", 213)
    # Its slice comes last: a seeded configuration without it decides as before.
    base = {"error_rates": {"213": 0.2}, "drop_rate": 0.1, "seed": 5}
    assert [p[:3] for p in _plans(base, 200)] == [
        p[:3] for p in _plans({**base, "applied_error_rates": {"203": 0.0}}, 200)
    ]
