"""The librdkafka configuration of every client the worker and its tools build (worker/runtime/kafka.py): the
operator's properties over the worker's tuning, what the contract and the settings own applied last, static
membership for the worker's consumer only; and, on the real broker, that the properties reach a running worker's
consumer and producer, and its group.instance.id the broker."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from tests.support.kafkatest import produce_all, wait_until
from tests.support.pipeline import settings_env
from worker import config
from worker.dev.harness.outputs import OutputReader
from worker.dev.harness.processes import WorkerProcess
from worker.dev.harness.topics import Topics
from worker.runtime import kafka
from worker.tools import _kafka as tools_kafka

PROPERTIES = {
    "MDW_KAFKA_COMMON_CLIENT_ID": "mdw-eu",
    "MDW_KAFKA_COMMON_SOCKET_KEEPALIVE_ENABLE": "true",
    "MDW_KAFKA_CONSUMER_CLIENT_RACK": "eu-west-1a",
    "MDW_KAFKA_CONSUMER_FETCH_MAX_BYTES": "33554432",
    "MDW_KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS": "700",
    "MDW_KAFKA_PRODUCER_LINGER_MS": "20",
    "MDW_KAFKA_PRODUCER_COMPRESSION_TYPE": "zstd",
}


def test_the_worker_clients_take_the_properties_over_its_tuning() -> None:
    s = config.load(environ=PROPERTIES)
    consumer = kafka.consumer_config(s)
    assert consumer["client.id"] == "mdw-eu"  # over the worker's multidentify-worker-<version>-<host>
    assert consumer["client.rack"] == "eu-west-1a"
    assert consumer["fetch.max.bytes"] == "33554432"  # over the worker's 16 MiB
    assert consumer["heartbeat.interval.ms"] == "700"  # over the one derived from session_timeout_ms
    assert "linger.ms" not in consumer and "compression.type" not in consumer
    producer = kafka.producer_config(s)
    assert (producer["client.id"], producer["linger.ms"], producer["compression.type"]) == ("mdw-eu", "20", "zstd")
    assert "client.rack" not in producer and "fetch.max.bytes" not in producer
    # librdkafka takes them as they are (a client on a closed loopback port connects nowhere useful).
    for conf, make in ((consumer, Consumer), (producer, Producer)):
        client = make({**conf, "bootstrap.servers": "127.0.0.1:9"})
        if isinstance(client, Consumer):
            client.close()


def test_without_properties_the_clients_are_what_they_were() -> None:
    s = config.load(environ={})
    consumer = kafka.consumer_config(s)
    assert consumer["fetch.max.bytes"] == 16 * 1024 * 1024
    assert consumer["heartbeat.interval.ms"] == 3000
    assert consumer["client.id"].startswith("multidentify-worker-")
    assert "group.instance.id" not in consumer
    producer = kafka.producer_config(s)
    assert (producer["linger.ms"], producer["compression.type"]) == (5, "lz4")


def test_what_the_contract_and_the_settings_own_is_applied_last() -> None:
    """Refused in the properties at load; applied last all the same, so a Settings built around load cannot
    override them either."""
    s = config.load(environ={"MDW_AUTO_OFFSET_RESET": "latest", "MDW_GROUP_ID": "g"})
    smuggled = {"enable.auto.commit": "true", "acks": "1", "enable.idempotence": "false", "group.id": "other"}
    object.__setattr__(s, "kafka_common", tuple(smuggled.items()))  # what load() would have refused
    consumer = kafka.consumer_config(s)
    assert (consumer["enable.auto.commit"], consumer["enable.auto.offset.store"]) == (False, False)
    assert (consumer["group.id"], consumer["auto.offset.reset"]) == ("g", "latest")
    producer = kafka.producer_config(s)
    assert (producer["enable.idempotence"], producer["acks"]) == (True, "all")
    tool_consumer = tools_kafka.consumer_config(s, "tool-group")
    assert (tool_consumer["enable.auto.commit"], tool_consumer["group.id"]) == (False, "tool-group")
    tool_producer = tools_kafka.producer_config(s)
    assert (tool_producer["enable.idempotence"], tool_producer["acks"]) == (True, "all")


def test_every_consumer_reads_committed_events_only() -> None:
    """Explicit (librdkafka's default is the same): events of aborted transactions are never processed nor replayed."""
    s = config.load(environ={})
    assert kafka.consumer_config(s)["isolation.level"] == "read_committed"
    assert tools_kafka.consumer_config(s, "tool-group")["isolation.level"] == "read_committed"


def test_the_reset_policy_is_the_workers_setting_and_the_tools_own() -> None:
    """auto_offset_reset places the worker's group; the tools read from explicit offsets, and earliest only applies
    when one of those is gone (retention)."""
    s = config.load(environ={"MDW_AUTO_OFFSET_RESET": "latest", "MDW_KAFKA_CONSUMER_CLIENT_RACK": "a"})
    assert kafka.consumer_config(s)["auto.offset.reset"] == "latest"
    tool = tools_kafka.consumer_config(s, "replay-group")
    assert (tool["auto.offset.reset"], tool["group.id"]) == ("earliest", "replay-group")
    assert tool["enable.partition.eof"] is True


def test_the_tools_clients_take_the_properties_too() -> None:
    s = config.load(environ={**PROPERTIES, "MDW_GROUP_INSTANCE_ID": "worker-0"})
    consumer = tools_kafka.consumer_config(s)
    assert (consumer["client.id"], consumer["client.rack"], consumer["fetch.max.bytes"]) == (
        "mdw-eu",
        "eu-west-1a",
        "33554432",
    )
    # A tool is no member of the worker's group: it must not take a replica's static identity.
    assert "group.instance.id" not in consumer
    assert consumer["group.id"].startswith("multidentify-tool-")
    producer = tools_kafka.producer_config(s)
    assert (producer["linger.ms"], producer["compression.type"], producer["acks"]) == ("20", "zstd", "all")


def test_group_instance_id_reaches_the_workers_consumer_only() -> None:
    s = config.load(environ={"MDW_GROUP_INSTANCE_ID": "worker-0"})
    assert kafka.consumer_config(s)["group.instance.id"] == "worker-0"
    assert "group.instance.id" not in kafka.producer_config(s)


def test_oauthbearer_takes_no_user_name_or_password() -> None:
    s = config.load(
        environ={
            "MDW_SECURITY_PROTOCOL": "SASL_SSL",
            "MDW_SASL_MECHANISM": "OAUTHBEARER",
            "MDW_KAFKA_COMMON_SASL_OAUTHBEARER_METHOD": "oidc",
            "MDW_KAFKA_COMMON_SASL_OAUTHBEARER_CLIENT_ID": "mdw",
            "MDW_KAFKA_COMMON_SASL_OAUTHBEARER_CLIENT_SECRET": "oidc-s3cr3t",
            "MDW_KAFKA_COMMON_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://idp.example/oauth2/token",
            "MDW_KAFKA_COMMON_SASL_OAUTHBEARER_SCOPE": "kafka",
        }
    )
    conf = kafka.consumer_config(s)
    assert conf["sasl.mechanism"] == "OAUTHBEARER" and conf["sasl.oauthbearer.method"] == "oidc"
    assert "sasl.username" not in conf and "sasl.password" not in conf
    plain = kafka.consumer_config(config.load(environ={"MDW_SECURITY_PROTOCOL": "SASL_SSL", "MDW_SASL_USERNAME": "u"}))
    assert (plain["sasl.mechanism"], plain["sasl.username"]) == ("PLAIN", "u")


# --- on the real broker -------------------------------------------------------------------------------------------


@pytest.fixture
def topics(make_topics: Callable[..., Topics]) -> Topics:
    return make_topics(2, results=1, dlq=1)


def _librdkafka_names(log: str) -> set[str]:
    """The client names of librdkafka's own log lines (``%7|<time>|<facility>|<client.id>#consumer-1| …``)."""
    return set(re.findall(r"^%\d\|[\d.]+\|[A-Z_]+\|([^|]+)\|", log, re.M))


@pytest.mark.broker
def test_a_running_worker_uses_the_properties_and_joins_with_its_instance_id(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    """The real ``multidentify-worker run``: librdkafka's own debug lines (asked for by a property) carry the client
    ids the properties set, the consumer's and the producer's apart, and the member id the broker hands out starts
    with the group.instance.id (the broker received it in JoinGroup; Tansu does not implement static membership
    beyond that, see docs/kafka.md)."""
    env = {
        **settings_env(kafka_bootstrap, "http://127.0.0.1:9", topics, group_instance_id="mdw-replica-0"),
        "MDW_KAFKA_CONSUMER_CLIENT_ID": "mdw-in",
        "MDW_KAFKA_CONSUMER_DEBUG": "cgrp",
        "MDW_KAFKA_PRODUCER_CLIENT_ID": "mdw-out",
        "MDW_KAFKA_PRODUCER_DEBUG": "eos",
    }
    worker = WorkerProcess(env, log_path=tmp_path / "worker.log")
    try:
        # An invalid event is dead-lettered without an API call: the worker consumed and produced with them.
        produce_all(kafka_bootstrap, topics.input, [(b"k", b"not JSON")])
        with OutputReader(kafka_bootstrap, topics) as outputs:
            outputs.wait_for(lambda r: r.count() >= 1, 60, "the invalid event's dead letter")
        wait_until(
            lambda: re.search(r"member id \S* -> \"mdw-replica-0-", worker.output()),
            timeout=30,
            what="the broker's member id for the static instance",
        )
        assert worker.terminate(60) == 0, worker.tail()
    finally:
        worker.stop()
    log = worker.output()
    names = _librdkafka_names(log)
    assert any(n.startswith("mdw-in#consumer-") for n in names), sorted(names)
    assert any(n.startswith("mdw-out#producer-") for n in names), sorted(names)
    # Each role got its own properties, and nothing of the other's.
    assert not any(n.startswith(("mdw-in#producer-", "mdw-out#consumer-")) for n in names), sorted(names)


def test_the_tools_take_properties_as_flags_too(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("MDW_")]:
        monkeypatch.delenv(name)
    parser = argparse.ArgumentParser()
    tools_kafka.add_connection_flags(parser)
    flags = ["--kafka-consumer", "client.rack=eu-west-1a", "--kafka-consumer", "debug=cgrp,fetch"]
    args = parser.parse_args([*flags, "--kafka-producer", "linger.ms=3"])
    s = tools_kafka.load_settings(args)
    assert tools_kafka.consumer_config(s)["debug"] == "cgrp,fetch"
    assert tools_kafka.consumer_config(s)["client.rack"] == "eu-west-1a"
    assert tools_kafka.producer_config(s)["linger.ms"] == "3"
    with pytest.raises(config.ConfigError, match="a secret is never given on the command line"):
        tools_kafka.load_settings(parser.parse_args(["--kafka-common", "ssl.key.password=pw"]))
