"""Configuration: precedence, validation messages that name the setting, secrets from files, masking."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from worker import config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid() -> None:
    s = config.load(environ={})
    assert s.max_in_flight == 64
    assert s.ordering == "unordered"
    assert s.group_ids == ()


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('max_in_flight = 10\nordering = "key"\ninput_topic = "from-file"\n')
    s = config.load(
        environ={"MDW_MAX_IN_FLIGHT": "20", "MDW_ORDERING": "partition"},
        config_file=cfg,
        overrides={"max_in_flight": "30"},
    )
    assert s.max_in_flight == 30 and s.sources["max_in_flight"] == "flag"
    assert s.ordering == "partition" and s.sources["ordering"] == "env"
    assert s.input_topic == "from-file" and s.sources["input_topic"] == "file"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MDW_MAX_IN_FLIGHT": "-3"}, "max_in_flight (MDW_MAX_IN_FLIGHT): -3 is too small"),
        ({"MDW_MAX_IN_FLIGHT": "many"}, "max_in_flight (MDW_MAX_IN_FLIGHT): 'many' is not valid"),
        ({"MDW_ORDERING": "random"}, "ordering (MDW_ORDERING): 'random' is not valid; expected one of unordered"),
        ({"MDW_API_BASE_URL": "ftp://x"}, "api_base_url (MDW_API_BASE_URL): must be an http"),
        ({"MDW_GROUP_IDS": "ok,has space"}, "group_ids (MDW_GROUP_IDS): group ids must be"),
        ({"MDW_TLS_VERIFY": "maybe"}, "tls_verify (MDW_TLS_VERIFY): 'maybe' is not valid; expected true or false"),
        ({"MDW_INPUT_TOPIC": "bad topic"}, "input_topic (MDW_INPUT_TOPIC): topic names"),
    ],
)
def test_invalid_values_name_the_setting(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(environ=env)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"MDW_INPUT_TOPIC": "images,face-dlq"},
            "input_topic (images,face-dlq) lists dlq_topic (face-dlq): every dead letter would be consumed and "
            "dead-lettered again, without end",
        ),
        (
            {"MDW_INPUT_TOPIC": "in", "MDW_DLQ_TOPIC": "in"},
            "input_topic (in) lists dlq_topic (in): every dead letter would be consumed",
        ),
        (
            {"MDW_INPUT_TOPIC": "images, out", "MDW_RESULTS_TOPIC": "out"},
            "input_topic (images, out) lists results_topic (out): every result record would be consumed",
        ),
    ],
)
def test_an_output_topic_is_never_an_input_topic(env: dict[str, str], message: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(environ=env)
    assert str(err.value).startswith(message)


def test_secret_from_file_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("s3cr3t-VALUE\n")
    s = config.load(environ={"MDW_SECRET_KEY_FILE": str(secret), "MDW_SECRET_ID": "AKIDxyz"})
    assert s.secret_key == "s3cr3t-VALUE"
    assert "s3cr3t" not in repr(s) and "AKIDxyz" not in repr(s)
    assert s.masked()["secret_key"] == "***"


def test_bad_secret_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"secret_key \(MDW_SECRET_KEY_FILE\): cannot read"):
        config.load(environ={"MDW_SECRET_KEY_FILE": str(tmp_path / "missing")})


def test_run_requires_credentials() -> None:
    with pytest.raises(config.ConfigError, match=r"appid \(MDW_APPID\).*secret_id.*secret_key.*group_ids"):
        config.load(environ={}, require_credentials=True)


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text("max_inflight = 3\n")
    with pytest.raises(config.ConfigError, match="unknown settings \\['max_inflight'\\]"):
        config.load(environ={}, config_file=cfg)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=60
    )


def test_check_command_exits_nonzero_naming_the_setting() -> None:
    proc = _cli("check", env={"MDW_MAX_IN_FLIGHT": "-3"})
    assert proc.returncode != 0
    assert "MDW_MAX_IN_FLIGHT" in proc.stderr and "max_in_flight" in proc.stderr


def test_check_command_refuses_tracing_variables_the_worker_cannot_honour() -> None:
    # `check` is what an init container or CI runs before `run`: it must stop where `run` would (docs/tracing.md).
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}
    proc = _cli("check", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in proc.stderr and "carrier-pigeon" in proc.stderr
    assert _cli("check", env={**env, "OTEL_SDK_DISABLED": "true"}).returncode == 0


def test_check_command_masks_secrets() -> None:
    proc = _cli("check", "--json", env={"MDW_SECRET_KEY": "topsecret-123", "MDW_APPID": "125"})
    assert proc.returncode == 0, proc.stderr
    assert "topsecret-123" not in proc.stdout + proc.stderr
    assert '"secret_key": "***"' in proc.stdout


def test_readme_configuration_table_matches_the_settings() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- config-table:start -->\n(.*?)\n<!-- config-table:end -->", readme, re.S)
    assert block, "README.md lacks the generated configuration table markers"
    assert block.group(1).strip() == config.markdown_table().strip(), (
        "README configuration table is stale: regenerate with `multidentify-worker config-table`"
    )


# --- settings that users trip on: TLS for image downloads, where a new group starts, poll-interval budget -------


def test_image_downloads_have_their_own_tls_setting() -> None:
    """Turning off the API's certificate check must not turn it off for arbitrary image hosts too."""
    s = config.load(environ={"MDW_TLS_VERIFY": "false"})
    assert s.tls_verify is False
    assert s.fetch_tls_verify is True
    assert config.load(environ={"MDW_FETCH_TLS_VERIFY": "false"}).fetch_tls_verify is False
    assert config.load(environ={"MDW_FETCH_TLS_VERIFY": "false"}).tls_verify is True


def test_auto_offset_reset_defaults_to_earliest_and_accepts_latest() -> None:
    assert config.load(environ={}).auto_offset_reset == "earliest"
    assert config.load(environ={"MDW_AUTO_OFFSET_RESET": "latest"}).auto_offset_reset == "latest"
    with pytest.raises(config.ConfigError, match=r"auto_offset_reset \(MDW_AUTO_OFFSET_RESET\): 'none' is not valid"):
        config.load(environ={"MDW_AUTO_OFFSET_RESET": "none"})
    # The trade-off of `latest` is part of the setting's documented meaning (README table, --help).
    meaning = config.BY_NAME["auto_offset_reset"].help
    assert "rebalance" in meaning and "retention" in meaning


def test_max_poll_interval_is_a_bounded_setting() -> None:
    assert config.load(environ={}).max_poll_interval_ms == 300_000  # librdkafka's default, now explicit
    too_small = r"max_poll_interval_ms \(MDW_MAX_POLL_INTERVAL_MS\): 999 is too small"
    with pytest.raises(config.ConfigError, match=too_small):
        config.load(environ={"MDW_MAX_POLL_INTERVAL_MS": "999"})


@pytest.mark.parametrize(
    ("env", "names"),
    [
        # 250 + 3 + 10 = 263 s is fine against 300 s; 290 + 13 is not.
        ({"MDW_REVOKE_TIMEOUT_S": "290"}, ["revoke_timeout_s", "connect_timeout_s", "read_timeout_s"]),
        # A slow API alone can push the revoke wait past the interval.
        (
            {"MDW_REVOKE_TIMEOUT_S": "5", "MDW_READ_TIMEOUT_S": "120", "MDW_MAX_POLL_INTERVAL_MS": "120000"},
            ["revoke_timeout_s", "read_timeout_s", "MDW_MAX_POLL_INTERVAL_MS"],
        ),
        ({"MDW_DRAIN_TIMEOUT_S": "600"}, ["drain_timeout_s", "connect_timeout_s", "read_timeout_s"]),
        (
            {"MDW_MAX_POLL_INTERVAL_MS": "10000", "MDW_SESSION_TIMEOUT_MS": "20000"},
            ["max_poll_interval_ms", "session_timeout_ms"],
        ),
    ],
)
def test_waits_longer_than_the_poll_interval_are_refused_at_start(env: dict[str, str], names: list[str]) -> None:
    """The consumer is not polled while a revoke or the drain waits; past max.poll.interval.ms it leaves the group
    and the commit that follows fails, so every event of the wait is processed again."""
    with pytest.raises(config.ConfigError) as err:
        config.load(environ=env)
    message = str(err.value)
    assert all(name in message for name in names), message
    assert "max_poll_interval_ms" in message


def test_waits_inside_the_poll_interval_are_accepted() -> None:
    s = config.load(environ={"MDW_REVOKE_TIMEOUT_S": "250", "MDW_DRAIN_TIMEOUT_S": "280"})
    assert (s.revoke_timeout_s, s.drain_timeout_s) == (250.0, 280.0)
    s = config.load(environ={"MDW_DRAIN_TIMEOUT_S": "600", "MDW_MAX_POLL_INTERVAL_MS": "700000"})
    assert s.max_poll_interval_ms == 700_000


def test_check_command_refuses_a_revoke_wait_beyond_the_poll_interval() -> None:
    proc = _cli("check", env={"MDW_REVOKE_TIMEOUT_S": "600"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "revoke_timeout_s" in proc.stderr and "max_poll_interval_ms" in proc.stderr


# --- one declaration per setting: typed fields of Settings, whose metadata the flags, env and table derive from ----


def test_a_misspelt_setting_is_an_attribute_error() -> None:
    """No catch-all lookup: a typo fails here at run time and under mypy before it (`Settings` has no `__getattr__`)."""
    s = config.load(environ={})
    with pytest.raises(AttributeError):
        s.max_inflight  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(config.Settings, "__getattr__")


def test_every_settings_field_is_a_declared_setting() -> None:
    """A field added without `setting(...)` would have no flag, variable or table row; each field must carry one."""
    fields = [f for f in dataclasses.fields(config.Settings) if f.name != "sources"]
    bare = [f.name for f in fields if not isinstance(f.metadata.get(config.SETTING_META), config.SettingMeta)]
    assert not bare, f"Settings fields without setting(...) metadata: {bare}"
    assert [f.name for f in fields] == [s.name for s in config.SETTINGS] == list(config.BY_NAME)


def test_a_plain_field_is_refused_where_the_settings_are_derived() -> None:
    @dataclasses.dataclass(frozen=True)
    class Sloppy:
        fine: int = config.setting(1, "declared", "ops")
        plain: int = 2

    with pytest.raises(TypeError, match=r"Sloppy\.plain"):
        config.settings_of(Sloppy)


def test_the_kind_and_choices_come_from_the_field_type() -> None:
    hints = typing.get_type_hints(config.Settings)
    expected_kind = {
        str: "str",
        int: "int",
        float: "float",
        bool: "bool",
        tuple[str, ...]: "list",
        tuple[tuple[str, str], ...]: "properties",
    }
    for s in config.SETTINGS:
        hint = hints[s.name]
        if typing.get_origin(hint) is typing.Literal:
            assert (s.kind, s.choices) == ("choice", typing.get_args(hint)), s.name
        else:
            assert (s.kind, s.choices) == (expected_kind[hint], ()), s.name


def test_loaded_values_have_their_declared_types() -> None:
    """What `load` returns matches the annotations, so `int(settings.x)`-style casts are never needed."""
    hints = typing.get_type_hints(config.Settings)
    env = {
        "MDW_MAX_IN_FLIGHT": "7",
        "MDW_RATE_LIMIT_QPS": "5",
        "MDW_TLS_VERIFY": "no",
        "MDW_GROUP_IDS": "a, b",
        "MDW_KAFKA_CONSUMER_CLIENT_RACK": "a",
    }
    for s in (config.load(environ={}), config.load(environ=env)):
        for name, hint in hints.items():
            if name == "sources":
                continue
            value = getattr(s, name)
            if typing.get_origin(hint) is typing.Literal:
                assert value in typing.get_args(hint), name
            elif hint == tuple[str, ...]:
                assert isinstance(value, tuple) and all(isinstance(v, str) for v in value), name
            elif hint == tuple[tuple[str, str], ...]:
                assert isinstance(value, tuple) and all(isinstance(n, str) and isinstance(v, str) for n, v in value)
            else:
                assert type(value) is hint, (name, value)
    assert (s.max_in_flight, s.rate_limit_qps, s.tls_verify, s.group_ids) == (7, 5.0, False, ("a", "b"))


def test_replace_validates_and_keeps_the_other_values() -> None:
    s = config.load(environ={"MDW_ORDERING": "key"})
    t = s.replace(max_in_flight=3)
    assert (t.max_in_flight, t.ordering) == (3, "key")
    with pytest.raises(config.ConfigError, match="max_in_flight"):
        s.replace(max_in_flight=0)
    with pytest.raises(config.ConfigError, match="unknown settings"):
        s.replace(max_inflight=3)


# -- choosing the API -------------------------------------------------------------------------------------

_RUN = {"MDW_SECRET_ID": "AKIDx", "MDW_SECRET_KEY": "k", "MDW_GROUP_IDS": "g1"}


def test_v1_is_the_default_api_and_needs_an_appid_to_run() -> None:
    assert config.load(environ={}).api == "v1"
    with pytest.raises(config.ConfigError, match=r"appid \(MDW_APPID\)"):
        config.load(environ=_RUN, require_credentials=True)


def test_iai_runs_without_an_appid_and_searches_ten_faces_by_default() -> None:
    s = config.load(environ={**_RUN, "MDW_API": "iai"}, require_credentials=True)
    assert (s.api, s.iai_endpoint, s.iai_region) == ("iai", "iai.tencentcloudapi.com", "ap-guangzhou")
    assert (s.iai_max_face_num, s.iai_max_person_num, s.iai_min_face_size) == (10, 5, 34)
    assert (s.iai_face_match_threshold, s.iai_quality_control, s.iai_need_person_info) == (0.0, 0, False)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MDW_API": "v3"}, "api (MDW_API): 'v3' is not valid; expected one of v1, iai"),
        ({"MDW_IAI_MAX_FACE_NUM": "11"}, "iai_max_face_num (MDW_IAI_MAX_FACE_NUM): 11 is too large"),
        ({"MDW_IAI_MAX_PERSON_NUM": "0"}, "iai_max_person_num (MDW_IAI_MAX_PERSON_NUM): 0 is too small"),
        ({"MDW_IAI_MIN_FACE_SIZE": "20"}, "iai_min_face_size (MDW_IAI_MIN_FACE_SIZE): 20 is too small"),
        ({"MDW_IAI_FACE_MATCH_THRESHOLD": "101"}, "iai_face_match_threshold (MDW_IAI_FACE_MATCH_THRESHOLD)"),
        ({"MDW_IAI_QUALITY_CONTROL": "5"}, "iai_quality_control (MDW_IAI_QUALITY_CONTROL): 5 is too large"),
        ({"MDW_IAI_REGION": "Guangzhou"}, "iai_region (MDW_IAI_REGION): a Tencent Cloud region"),
        ({"MDW_IAI_ENDPOINT": "ftp://iai.tencentcloudapi.com"}, "iai_endpoint (MDW_IAI_ENDPOINT): must be a host or"),
        ({"MDW_IAI_ENDPOINT": "https://iai.example/v3"}, "iai_endpoint (MDW_IAI_ENDPOINT): must not have a"),
    ],
)
def test_bad_iai_settings_name_the_setting(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(environ={"MDW_API": "iai", **env})
    assert fragment in str(err.value)


def test_the_iai_token_is_a_secret_never_a_flag(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("temporary-token\n")
    s = config.load(environ={"MDW_API": "iai", "MDW_IAI_TOKEN_FILE": str(token)})
    assert s.iai_token == "temporary-token"
    assert "temporary-token" not in repr(s)
    assert "--iai-token" not in {x.flag for x in config.SETTINGS if not x.secret}


def test_images_beyond_v1s_body_limit_are_refused_for_v1_and_accepted_for_iai() -> None:
    with pytest.raises(config.ConfigError, match=r"fetch_max_bytes \(2,000,000\).*api v1.*MDW_API"):
        config.load(environ={"MDW_FETCH_MAX_BYTES": "2000000"})
    assert config.load(environ={"MDW_API": "iai", "MDW_FETCH_MAX_BYTES": "2000000"}).fetch_max_bytes == 2_000_000
    with pytest.raises(config.ConfigError, match="fetch_max_bytes"):
        config.load(environ={"MDW_API": "iai", "MDW_FETCH_MAX_BYTES": "4000000"})
