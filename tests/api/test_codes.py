"""The registry of dead-letter keys (worker.api.codes): every key complete, errors carrying their origin, no cycle."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from worker.api import codes
from worker.api.codes import CODES, IAI_CODES, REGISTRY, Api, ErrorClass, Origin, lookup
from worker.api.errors import ApiError, config_error_reason, meaning
from worker.core import records
from worker.core.formats import cloudevent, objects
from worker.fetch import FETCH_CODES, ImageFetcher

# Every key the worker can dead-letter under, spelled out here (not read from the registry): a key added in
# code but not here, or dropped from the registry, fails below.
LOCAL = [
    "timeout",
    "connection",
    "bad_response",
    "invalid_request",
    "internal_error",
    "result_too_large",
    "http_404",
    "http_503",
]
FETCH = [
    "fetch_refused",
    "fetch_timeout",
    "fetch_connection",
    "fetch_tls",
    "fetch_too_large",
    "fetch_not_image",
    "fetch_too_many_redirects",
    "fetch_http_404",
    "fetch_http_503",
]
EVENT = sorted(records.INVALID_CODES)
SERVICE = [str(code) for code in CODES] + sorted(IAI_CODES)


@pytest.mark.parametrize(
    ("key", "origin"),
    [(k, Origin.SERVICE) for k in SERVICE]
    + [(k, Origin.CLIENT) for k in LOCAL]
    + [(k, Origin.FETCH) for k in FETCH]
    + [(k, Origin.EVENT) for k in EVENT],
)
def test_every_dead_letter_key_has_a_meaning_a_class_and_an_origin(key: str, origin: Origin) -> None:
    info = lookup(key)
    assert info is not None, key
    assert info.key == key
    assert info.meaning and info.meaning == meaning(key)
    assert info.meaning != key.replace("_", " ")  # a real text, not the fallback spelling of the key
    assert isinstance(info.error_class, ErrorClass)
    assert info.origin is origin


def test_the_invalid_event_codes_are_the_registry_s_event_keys() -> None:
    assert (
        {k for k, info in REGISTRY.items() if info.origin is Origin.EVENT}
        == set(records.INVALID_CODES)
        == {
            records.EMPTY_VALUE,
            records.EVENT_TOO_LARGE,
            records.INVALID_UTF8,
            records.INVALID_JSON,
            records.UNSUPPORTED_VERSION,
            records.INVALID_URL,
            records.INVALID_EVENT,
            # the other input formats (worker.core.formats)
            cloudevent.NOT_A_CLOUDEVENT,
            cloudevent.UNSUPPORTED_SPECVERSION,
            cloudevent.INVALID_CLOUDEVENT,
            cloudevent.UNSUPPORTED_CONTENT_TYPE,
            cloudevent.CLOUDEVENT_WITHOUT_DATA,
            objects.INVALID_NOTIFICATION,
            objects.S3_TEST_EVENT,
            objects.NOT_OBJECT_CREATED,
            objects.NOT_AN_IMAGE,
            objects.OBJECT_TOO_LARGE,
            objects.SEVERAL_RECORDS,
            objects.UNSAFE_OBJECT_KEY,
        }
    )


def test_fetch_codes_are_the_registry_s_fetch_keys() -> None:
    assert {k for k, info in REGISTRY.items() if info.origin is Origin.FETCH} == set(FETCH_CODES)


@pytest.mark.parametrize("key", [*REGISTRY, "http_401", "http_403"])
def test_every_configuration_key_names_the_setting_to_look_at(key: str) -> None:
    info = lookup(key)
    assert info is not None
    if info.error_class is ErrorClass.CONFIG:
        assert info.check, f"{key}: a configuration code must say what to look at"
        if key.startswith("http_"):
            error = ApiError.local(key, "m", http_status=int(key[5:]))
        elif info.api is Api.IAI:
            error = ApiError.from_iai(key, "m")
        else:
            error = ApiError.from_service(int(key), "m")
        assert config_error_reason(error).endswith(f"; check {info.check}")
    else:
        assert info.check is None, f"{key}: only configuration codes stop the worker with a setting to check"


def test_the_group_codes_are_the_configured_group_codes() -> None:
    v1 = {k for k in codes.GROUP_CODES if REGISTRY[k].api is Api.V1}
    assert {"-1306", "-1307"} == v1  # IAI's: tests/api/test_iai_codes.py
    assert all(REGISTRY[k].error_class is ErrorClass.CONFIG for k in codes.GROUP_CODES)


def test_the_http_families_are_classified_by_status() -> None:
    classes = {k: lookup(k).error_class for k in ("http_401", "http_429", "http_404", "fetch_http_401")}  # type: ignore[union-attr]
    assert classes == {
        "http_401": ErrorClass.CONFIG,
        "http_429": ErrorClass.TRANSIENT,
        "http_404": ErrorClass.PERMANENT,
        "fetch_http_401": ErrorClass.PERMANENT,  # a forbidden image is the event's problem
    }
    assert lookup("fetch_http_408").error_class is ErrorClass.TRANSIENT  # type: ignore[union-attr]
    assert lookup("unknown_key") is None and lookup("987654") is None


def test_the_registry_and_the_errors_module_do_not_import_the_fetcher() -> None:
    # worker.fetch imports the registry; the registry must not need worker.fetch back (that was a cycle).
    script = (
        "import sys\n"
        "import worker.api.errors as e\n"
        "assert e.meaning('fetch_timeout') == 'the image server did not answer or finish in time'\n"
        "assert e.meaning('fetch_http_404') == 'the image server answered HTTP 404'\n"
        "print('worker.fetch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_constructors_set_the_origin() -> None:
    assert ApiError.from_service(15, "").origin is Origin.SERVICE
    assert ApiError.refused(-1313, "bad id").origin is Origin.SERVICE
    assert ApiError.local("timeout", "slow").origin is Origin.CLIENT
    assert ApiError.local("http_503", "busy", http_status=503).origin is Origin.CLIENT
    assert ApiError.fetch("fetch_timeout", "slow").origin is Origin.FETCH
    assert ApiError.fetch("fetch_http_503", "busy", retry_after=2.0).error_class is ErrorClass.TRANSIENT
    # Built by hand: the origin follows the key unless given.
    assert ApiError("internal_error", ErrorClass.PERMANENT, "bug").origin is Origin.CLIENT
    assert ApiError("-1306", ErrorClass.PERMANENT, "x").origin is Origin.SERVICE


def test_a_fetch_error_is_recognised_by_its_origin() -> None:
    fetcher = ImageFetcher()  # refuses before any connection: no traffic
    with pytest.raises(ApiError) as info:
        fetcher.fetch("ftp://images.example/a.jpg")
    assert (info.value.code, info.value.origin) == ("fetch_refused", Origin.FETCH)


def test_the_origin_survives_pickling() -> None:
    error = ApiError.fetch("fetch_http_503", "busy", retry_after=2.5)
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.code, clone.origin, clone.error_class, clone.retry_after) == (
        "fetch_http_503",
        Origin.FETCH,
        ErrorClass.TRANSIENT,
        2.5,
    )
    assert pickle.loads(pickle.dumps(ApiError("timeout", ErrorClass.TRANSIENT, "m", origin=Origin.FETCH))).origin is (
        Origin.FETCH
    )
