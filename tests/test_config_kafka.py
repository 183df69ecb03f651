"""librdkafka properties in the settings (kafka_common, kafka_consumer, kafka_producer) and static membership
(group_instance_id): how they are given, what is refused at start and why, and that secrets never show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from worker import config
from worker.config.properties import decode_name

ROOT = Path(__file__).resolve().parents[1]


def _refusal(**kwargs: object) -> str:
    with pytest.raises(config.ConfigError) as err:
        config.load(**kwargs)  # type: ignore[arg-type]
    return str(err.value)


# --- how properties are given -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "variable"),
    [
        ("client.rack", "MDW_KAFKA_CONSUMER_CLIENT_RACK"),
        ("fetch.min.bytes", "MDW_KAFKA_CONSUMER_FETCH_MIN_BYTES"),
        ("a_b.c", "MDW_KAFKA_CONSUMER_A__B_C"),
        ("a-b.c", "MDW_KAFKA_CONSUMER_A___B_C"),
        ("x_y-z.w", "MDW_KAFKA_CONSUMER_X__Y___Z_W"),
    ],
)
def test_one_variable_per_property_spells_dots_underscores_and_hyphens_apart(name: str, variable: str) -> None:
    assert config.property_env("kafka_consumer", name) == variable
    assert decode_name(variable.removeprefix("MDW_KAFKA_CONSUMER_")) == name


def test_properties_from_the_environment_reach_their_role_only() -> None:
    s = config.load(
        environ={
            "MDW_KAFKA_COMMON_CLIENT_ID": "mdw-eu",
            "MDW_KAFKA_CONSUMER_CLIENT_RACK": "eu-west-1a",
            "MDW_KAFKA_CONSUMER_DEBUG": "cgrp,fetch",  # commas inside a value are the value's
            "MDW_KAFKA_PRODUCER_LINGER_MS": "20",
            "MDW_KAFKA_PRODUCER_CLIENT_ID": "mdw-eu-out",  # the role's own wins over the common one
        }
    )
    assert s.properties("consumer") == {"client.id": "mdw-eu", "client.rack": "eu-west-1a", "debug": "cgrp,fetch"}
    assert s.properties("producer") == {"client.id": "mdw-eu-out", "linger.ms": "20"}
    assert (s.sources["kafka_consumer"], s.sources["kafka_producer"]) == ("env", "env")
    assert s.sources["kafka_common"] == "env" and config.load(environ={}).sources["kafka_common"] == "default"


def test_properties_from_a_toml_table_with_quoted_or_dotted_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text(
        "max_in_flight = 8\n"
        "[kafka_common]\n"
        '"ssl.certificate.location" = "/etc/tls/tls.crt"\n'
        'ssl.key.location = "/etc/tls/tls.key"\n'  # TOML reads this as nested tables: back to one dotted name
        "socket.keepalive.enable = true\n"
        "[kafka_consumer]\n"
        '"fetch.min.bytes" = 1024\n'
    )
    s = config.load(environ={}, config_file=cfg)
    assert dict(s.kafka_common) == {
        "ssl.certificate.location": "/etc/tls/tls.crt",
        "ssl.key.location": "/etc/tls/tls.key",
        "socket.keepalive.enable": "true",
    }
    assert dict(s.kafka_consumer) == {"fetch.min.bytes": "1024"}
    assert s.sources["kafka_common"] == "file" and s.max_in_flight == 8


def test_precedence_is_per_property_file_then_environment_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('[kafka_consumer]\n"client.rack" = "file"\n"fetch.min.bytes" = 10\n"fetch.wait.max.ms" = 100\n')
    s = config.load(
        environ={"MDW_KAFKA_CONSUMER_FETCH_MIN_BYTES": "20", "MDW_KAFKA_CONSUMER_FETCH_WAIT_MAX_MS": "200"},
        config_file=cfg,
        overrides={"kafka_consumer": ["fetch.wait.max.ms=300"]},
    )
    assert dict(s.kafka_consumer) == {"client.rack": "file", "fetch.min.bytes": "20", "fetch.wait.max.ms": "300"}
    assert s.sources["kafka_consumer"] == "flag"


def test_replace_keeps_and_revalidates_properties() -> None:
    s = config.load(environ={"MDW_KAFKA_CONSUMER_CLIENT_RACK": "a"})
    assert s.replace(max_in_flight=3).kafka_consumer == (("client.rack", "a"),)
    with pytest.raises(config.ConfigError, match=r"enable\.auto\.commit"):
        s.replace(kafka_consumer={"enable.auto.commit": "true"})


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ('kafka_consumer = "client.rack=a"\n', "kafka_consumer (config file): a table of librdkafka properties"),
        ('[kafka_consumer]\n"debug" = ["cgrp", "fetch"]\n', "kafka_consumer property debug (config file): ['cgrp'"),
    ],
)
def test_a_file_value_that_is_no_table_of_scalars_is_refused(tmp_path: Path, table: str, fragment: str) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text(table)
    assert fragment in _refusal(environ={}, config_file=cfg)


def test_a_secret_propertys_value_given_wrong_is_not_shown(tmp_path: Path) -> None:
    """The "not text" refusal names the property and the value's type, never a secret's value."""
    cfg = tmp_path / "w.toml"
    cfg.write_text('[kafka_common]\n"sasl.oauthbearer.client.secret" = ["hunter2"]\n')
    message = _refusal(environ={}, config_file=cfg)
    assert message.startswith("kafka_common property sasl.oauthbearer.client.secret (config file): *** (an array)")
    assert "hunter2" not in message
    message = _refusal(environ={}, overrides={"kafka_common": {"ssl.key.password": ["hunter2"]}})
    assert message.startswith("kafka_common property ssl.key.password (--kafka-common): *** (an array)")
    assert "hunter2" not in message
    # A flag entry without '=' may be NAME VALUE typed wrong: not shown when it names a secret.
    message = _refusal(environ={}, overrides={"kafka_common": ["ssl.key.password hunter2"]})
    assert "kafka_common (--kafka-common): *** is not NAME=VALUE" in message and "hunter2" not in message
    message = _refusal(environ={}, overrides={"kafka_common": ["=hunter2"]})
    assert "kafka_common (--kafka-common): *** is not NAME=VALUE" in message and "hunter2" not in message


def test_librdkafkas_refusal_never_quotes_a_secrets_value() -> None:
    """librdkafka quotes a value it refuses; a secret's value is masked in whatever it says (here a secret that is
    also the value it refuses, the one way to make it quote a secret today)."""
    message = _refusal(
        environ={"MDW_KAFKA_COMMON_SSL_KEY_PASSWORD": "hunter2", "MDW_KAFKA_PRODUCER_COMPRESSION_TYPE": "hunter2"}
    )
    assert 'Invalid value "***" for configuration property' in message and "hunter2" not in message


def test_check_does_not_print_a_secret_propertys_value_given_wrong(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('[kafka_common]\n"sasl.oauthbearer.client.secret" = ["hunter2"]\n')
    proc = _cli("check", "--config", str(cfg), env={})
    assert proc.returncode != 0 and "sasl.oauthbearer.client.secret (config file)" in proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr
    proc = _cli("check", "--kafka-common", "ssl.key.password hunter2", env={})
    assert proc.returncode != 0 and "hunter2" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("variable", "fragment"),
    [
        ("MDW_KAFKA_CONSUMER_", "kafka_consumer (MDW_KAFKA_CONSUMER_): not a property variable"),
        ("MDW_KAFKA_CONSUMER_client_rack", "kafka_consumer (MDW_KAFKA_CONSUMER_client_rack): not a property variable"),
        ("MDW_KAFKA_PRODUCER_LINGER____MS", "kafka_producer (MDW_KAFKA_PRODUCER_LINGER____MS): not a property"),
    ],
)
def test_a_variable_under_a_property_prefix_that_names_no_property_is_refused(variable: str, fragment: str) -> None:
    assert fragment in _refusal(environ={variable: "1"})


def test_a_flag_entry_without_a_value_is_refused() -> None:
    assert "kafka_consumer (--kafka-consumer): 'client.rack' is not NAME=VALUE" in _refusal(
        environ={}, overrides={"kafka_consumer": ["client.rack"]}
    )


# --- what is refused at start -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prop", ["enable.auto.commit", "enable.auto.offset.store", "auto.commit.enable", "auto.commit.interval.ms"]
)
@pytest.mark.parametrize("setting", ["kafka_common", "kafka_consumer", "kafka_producer"])
def test_the_commit_contracts_consumer_properties_are_refused(setting: str, prop: str) -> None:
    variable = config.property_env(setting, prop)
    message = _refusal(environ={variable: "true"})
    assert message.startswith(f"{setting} property {prop} ({variable}): the worker sets it and it cannot be changed")
    assert "only once the event's output is acknowledged" in message


@pytest.mark.parametrize("prop", ["enable.idempotence", "acks", "request.required.acks", "transactional.id"])
def test_the_commit_contracts_producer_properties_are_refused(prop: str) -> None:
    variable = config.property_env("kafka_producer", prop)
    message = _refusal(environ={variable: "1"})
    assert message.startswith(f"kafka_producer property {prop} ({variable}): the worker sets it")
    assert "every in-sync replica" in message


@pytest.mark.parametrize(
    ("prop", "instead"),
    [
        ("bootstrap.servers", "bootstrap_servers (MDW_BOOTSTRAP_SERVERS)"),
        ("metadata.broker.list", "bootstrap_servers (MDW_BOOTSTRAP_SERVERS)"),
        ("group.id", "group_id (MDW_GROUP_ID)"),
        ("group.instance.id", "group_instance_id (MDW_GROUP_INSTANCE_ID)"),
        ("partition.assignment.strategy", "assignment_strategy (MDW_ASSIGNMENT_STRATEGY)"),
        ("session.timeout.ms", "session_timeout_ms (MDW_SESSION_TIMEOUT_MS)"),
        ("max.poll.interval.ms", "max_poll_interval_ms (MDW_MAX_POLL_INTERVAL_MS)"),
        ("auto.offset.reset", "auto_offset_reset (MDW_AUTO_OFFSET_RESET)"),
        ("security.protocol", "security_protocol (MDW_SECURITY_PROTOCOL)"),
        ("sasl.mechanisms", "sasl_mechanism (MDW_SASL_MECHANISM)"),
        ("sasl.password", "sasl_password (MDW_SASL_PASSWORD)"),
        ("ssl.ca.location", "ssl_ca_location (MDW_SSL_CA_LOCATION)"),
    ],
)
def test_a_property_a_setting_holds_is_refused_naming_the_setting(prop: str, instead: str, tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[kafka_consumer]\n"{prop}" = "x"\n')
    message = _refusal(environ={}, config_file=cfg)
    name = instead.split()[0]
    assert (
        message == f"kafka_consumer property {prop} (config file): the setting {name} holds it; set {instead} instead"
    )


@pytest.mark.parametrize(
    ("prop", "reason"),
    [
        ("group.protocol", "classic consumer group protocol"),
        ("statistics.interval.ms", "librdkafka statistics"),
        ("error_cb", "a callback the worker installs in code"),
    ],
)
def test_properties_the_worker_itself_needs_are_refused(prop: str, reason: str) -> None:
    assert reason in _refusal(environ={config.property_env("kafka_consumer", prop): "x"})


@pytest.mark.parametrize(
    ("setting", "prop", "fragment"),
    [
        ("kafka_consumer", "topic.auto.offset.reset", "the setting auto_offset_reset holds it"),
        ("kafka_producer", "topic.acks", "the worker sets it and it cannot be changed"),
        ("kafka_producer", "topic.request.required.acks", "the worker sets it and it cannot be changed"),
        ("kafka_common", "topic.auto.commit.enable", "the worker sets it and it cannot be changed"),
    ],
)
def test_a_topic_prefix_does_not_get_around_a_refusal(setting: str, prop: str, fragment: str, tmp_path: Path) -> None:
    """librdkafka takes topic.<name> as <name> (a topic property set on the default topic configuration)."""
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[{setting}]\n"{prop}" = "1"\n')
    assert _refusal(environ={}, config_file=cfg).startswith(f"{setting} property {prop} (config file): {fragment}")
    variable = config.property_env(setting, prop)
    assert _refusal(environ={variable: "1"}).startswith(f"{setting} property {prop} ({variable}): {fragment}")


def test_a_global_property_named_topic_dot_something_is_not_refused() -> None:
    s = config.load(environ={"MDW_KAFKA_COMMON_TOPIC_METADATA_REFRESH_INTERVAL_MS": "60000"})
    assert s.properties("consumer") == {"topic.metadata.refresh.interval.ms": "60000"}
    # What makes stripping the prefix safe: no refused property's own name starts with it.
    assert not [n for n in {*config.OWNED_PROPERTIES, *config.SETTING_PROPERTIES} if n.startswith("topic.")]


@pytest.mark.parametrize("value", ["read_uncommitted", "read_committed"])
def test_the_isolation_level_is_the_contracts(value: str) -> None:
    """The worker processes committed events only: an event of an aborted transaction was never written."""
    for prop in ("isolation.level", "topic.isolation.level"):
        message = _refusal(environ={config.property_env("kafka_consumer", prop): value})
        assert "the worker sets it and it cannot be changed: the worker reads committed events only" in message


# --- property names are lower case --------------------------------------------------------------------------------


@pytest.mark.parametrize("prop", ["ssl.key.Password", "SASL.OAUTHBEARER.CLIENT.SECRET", "Client.Rack"])
def test_a_property_name_not_in_lower_case_is_refused(prop: str, tmp_path: Path) -> None:
    """librdkafka's names are lower case, and a variable's name is read back in lower case: a name in another case
    would reach the worker under another name than the one checked (the chart's ConfigMap)."""
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[kafka_common]\n"{prop}" = "hunter2"\n')
    message = _refusal(environ={}, config_file=cfg)
    assert message.startswith(f"kafka_common property {prop} (config file): librdkafka property names are lower case")
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        # A misspelt name stops the worker at start, naming the variable.
        (
            {"MDW_KAFKA_CONSUMER_FETCH_MAX_BYTS": "1"},
            "kafka_consumer property fetch.max.byts (MDW_KAFKA_CONSUMER_FETCH_MAX_BYTS): librdkafka refuses it in a "
            'consumer: No such configuration property: "fetch.max.byts"',
        ),
        (
            {"MDW_KAFKA_COMMON_SOCKET_TIMEOUT_MSS": "1"},
            "kafka_common property socket.timeout.mss (MDW_KAFKA_COMMON_SOCKET_TIMEOUT_MSS): librdkafka refuses it",
        ),
        (
            {"MDW_KAFKA_CONSUMER_FETCH_MIN_BYTES": "lots"},
            "kafka_consumer property fetch.min.bytes (MDW_KAFKA_CONSUMER_FETCH_MIN_BYTES): librdkafka refuses it in a "
            'consumer: Invalid value for configuration property "fetch.min.bytes"',
        ),
        # A property of the other role would be ignored silently by librdkafka: refused, saying where it belongs.
        (
            {"MDW_KAFKA_CONSUMER_LINGER_MS": "20"},
            "kafka_consumer property linger.ms (MDW_KAFKA_CONSUMER_LINGER_MS): librdkafka says it is a producer "
            "property, which a consumer ignores; set it in kafka_producer or kafka_common",
        ),
        (
            {"MDW_KAFKA_PRODUCER_FETCH_MIN_BYTES": "1"},
            "kafka_producer property fetch.min.bytes (MDW_KAFKA_PRODUCER_FETCH_MIN_BYTES): librdkafka says it is a "
            "consumer property",
        ),
        # A value that contradicts the contract (idempotence allows at most 5 requests in flight).
        (
            {"MDW_KAFKA_PRODUCER_MAX_IN_FLIGHT": "10"},
            "kafka_producer property max.in.flight (MDW_KAFKA_PRODUCER_MAX_IN_FLIGHT): librdkafka refuses it in a "
            "producer",
        ),
        # Common and role properties together.
        (
            {"MDW_KAFKA_COMMON_MESSAGE_MAX_BYTES": "40000000", "MDW_KAFKA_CONSUMER_FETCH_MAX_BYTES": "20000000"},
            "kafka_common with kafka_consumer: librdkafka refuses them in a consumer: Failed to create consumer: "
            "`fetch.max.bytes` must be >= `message.max.bytes`",
        ),
        # The properties with the worker's own tuning (its consumer fetches at most 16 MiB at once).
        (
            {"MDW_KAFKA_COMMON_MESSAGE_MAX_BYTES": "40000000"},
            "kafka_common: librdkafka refuses the worker's consumer with them: Failed to create consumer: "
            "`fetch.max.bytes` must be >= `message.max.bytes`",
        ),
        # OIDC needs its token endpoint (the SASL mechanism is a setting).
        (
            {
                "MDW_SECURITY_PROTOCOL": "SASL_SSL",
                "MDW_SASL_MECHANISM": "OAUTHBEARER",
                "MDW_KAFKA_COMMON_SASL_OAUTHBEARER_METHOD": "oidc",
            },
            "kafka_common: librdkafka refuses the worker's consumer with them: Failed to create consumer: "
            "`sasl.oauthbearer.token.endpoint.url` is mandatory when `sasl.oauthbearer.method=oidc` is set",
        ),
    ],
)
def test_librdkafka_checks_the_properties_at_start(env: dict[str, str], fragment: str) -> None:
    assert fragment in _refusal(environ=env)


def test_common_properties_of_one_role_are_fine() -> None:
    s = config.load(environ={"MDW_KAFKA_COMMON_LINGER_MS": "20", "MDW_KAFKA_COMMON_FETCH_MIN_BYTES": "1"})
    assert s.properties("consumer") == s.properties("producer") == {"linger.ms": "20", "fetch.min.bytes": "1"}


def test_no_setting_variable_falls_under_a_property_prefix() -> None:
    with pytest.raises(TypeError, match="falls under the property prefix MDW_KAFKA_CONSUMER_"):
        config._check_property_prefixes(
            [config.BY_NAME["kafka_consumer"], config.Setting("kafka_consumer_lag", "int", 0, "", "kafka")]
        )


# --- secrets ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prop", "secret"),
    [
        ("sasl.oauthbearer.client.secret", True),
        ("ssl.key.password", True),
        ("ssl.keystore.password", True),
        ("ssl.key.pem", True),
        ("sasl.oauthbearer.assertion.private.key.passphrase", True),
        ("sasl.oauthbearer.assertion.private.key.pem", True),
        ("sasl.oauthbearer.config", True),
        ("ssl_key", True),
        ("ssl.key.location", False),  # a path, not the key
        ("ssl.certificate.pem", False),  # a certificate is public
        ("sasl.oauthbearer.client.id", False),
        ("client.rack", False),
    ],
)
def test_which_properties_are_secret(prop: str, secret: bool) -> None:
    assert config.is_secret_property(prop) is secret
    # In any case, and with librdkafka's topic. prefix.
    assert config.is_secret_property(prop.upper()) is secret
    assert config.is_secret_property(prop.title()) is secret
    assert config.is_secret_property("topic." + prop) is secret


def test_secret_properties_are_masked_and_listed_for_redaction() -> None:
    s = config.load(
        environ={
            "MDW_KAFKA_COMMON_SASL_OAUTHBEARER_CLIENT_SECRET": "oidc-s3cr3t",
            "MDW_KAFKA_COMMON_SASL_OAUTHBEARER_CLIENT_ID": "mdw",
            "MDW_KAFKA_CONSUMER_SSL_KEY_PASSWORD": "key-s3cr3t",
        }
    )
    masked = s.masked()
    assert masked["kafka_common"] == {"sasl.oauthbearer.client.secret": "***", "sasl.oauthbearer.client.id": "mdw"}
    assert masked["kafka_consumer"] == {"ssl.key.password": "***"}
    assert "s3cr3t" not in repr(s)
    assert set(s.secret_values()) == {"oidc-s3cr3t", "key-s3cr3t"}
    # The worker's own secrets are listed too.
    assert "AKIDxyz" in config.load(environ={"MDW_SECRET_ID": "AKIDxyz"}).secret_values()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MDW_")}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        timeout=60,
    )


def test_check_shows_properties_with_secrets_masked() -> None:
    proc = _cli(
        "check",
        "--json",
        "--kafka-consumer",
        "client.rack=eu-west-1a",
        "--kafka-consumer",
        "fetch.min.bytes=1024",
        env={"MDW_KAFKA_COMMON_SASL_OAUTHBEARER_CLIENT_SECRET": "oidc-s3cr3t"},
    )
    assert proc.returncode == 0, proc.stderr
    shown = orjson.loads(proc.stdout)
    assert shown["kafka_consumer"] == {"client.rack": "eu-west-1a", "fetch.min.bytes": "1024"}
    assert shown["kafka_common"] == {"sasl.oauthbearer.client.secret": "***"}
    assert "oidc-s3cr3t" not in proc.stdout + proc.stderr
    text = _cli("check", env={"MDW_KAFKA_COMMON_SASL_OAUTHBEARER_CLIENT_SECRET": "oidc-s3cr3t"})
    assert text.returncode == 0 and "oidc-s3cr3t" not in text.stdout + text.stderr


def test_check_refuses_a_secret_property_on_the_command_line() -> None:
    proc = _cli("check", "--kafka-common", "sasl.oauthbearer.client.secret=oidc-s3cr3t", env={})
    assert proc.returncode != 0
    assert (
        "kafka_common property sasl.oauthbearer.client.secret (--kafka-common): a secret is never given on the "
        "command line (it would show in ps); use MDW_KAFKA_COMMON_SASL_OAUTHBEARER_CLIENT_SECRET or the config file"
    ) in proc.stderr
    assert "oidc-s3cr3t" not in proc.stderr


def test_check_refuses_a_secret_property_in_another_case_on_the_command_line() -> None:
    proc = _cli("check", "--kafka-common", "SASL.OAUTHBEARER.CLIENT.SECRET=oidc-s3cr3t", env={})
    assert proc.returncode != 0
    assert "a secret is never given on the command line" in proc.stderr and "oidc-s3cr3t" not in proc.stderr


def test_check_names_a_misspelt_property() -> None:
    proc = _cli("check", env={"MDW_KAFKA_CONSUMER_FETCH_MAX_BYTS": "1"})
    assert proc.returncode != 0
    assert "kafka_consumer property fetch.max.byts (MDW_KAFKA_CONSUMER_FETCH_MAX_BYTS)" in proc.stderr


# --- static membership ------------------------------------------------------------------------------------------------


def test_group_instance_id_is_empty_by_default_and_follows_kafkas_rule() -> None:
    assert config.load(environ={}).group_instance_id == ""
    pod = "mdw-multidentify-worker-7d9c5b-x2x4q"
    assert config.load(environ={"MDW_GROUP_INSTANCE_ID": pod}).group_instance_id == pod
    for bad in ("has space", "a/b", "x" * 250):
        assert "group_instance_id (MDW_GROUP_INSTANCE_ID): group.instance.id uses letters" in _refusal(
            environ={"MDW_GROUP_INSTANCE_ID": bad}
        )
