"""Kafka plumbing shared by the operator tools: connection flags, client configs, partitions, end offsets."""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from worker import config
from worker.config import Settings
from worker.runtime import kafka

# The worker's own group settings mean nothing to the tools; `--group-id` would even clash with produce's flag.
_CONNECTION_SETTINGS = (
    "bootstrap_servers",
    "input_topic",
    "results_topic",
    "dlq_topic",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "ssl_ca_location",
    "kafka_common",
    "kafka_consumer",
    "kafka_producer",
)


class ToolError(Exception):
    """A tool cannot do its job (unknown topic, broker not answering); the message is for the operator."""


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap-servers``, the three topic flags, the security flags and ``--config`` (values from settings).

    Secrets (``sasl_password``) come only from the environment or the config file, as for ``run``.
    """
    group = parser.add_argument_group("kafka connection (defaults from MDW_* environment or --config)")
    for name in _CONNECTION_SETTINGS:
        config.add_flag(group, config.BY_NAME[name])
    group.add_argument("--config", dest="config_file", default=None, help="TOML config file [MDW_CONFIG_FILE]")


def load_settings(args: argparse.Namespace) -> Settings:
    """Settings from defaults < file < environment < the flags in ``args``; raises ``config.ConfigError``."""
    return config.load(overrides=config.overrides_from_args(args), config_file=getattr(args, "config_file", None))


def consumer_config(settings: Settings, group: str | None = None, **extra: Any) -> dict[str, Any]:
    """A manual consumer: no auto commit; ``group`` only names where offsets are committed (no group join)."""
    return kafka.tool_consumer_config(settings, group or f"multidentify-tool-{uuid.uuid4().hex[:12]}", **extra)


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Idempotent, acks=all: a record counts as delivered only when every in-sync replica has it."""
    return kafka.tool_producer_config(settings, **extra)


def message_headers(msg: Message) -> list[tuple[str, bytes | None]]:
    """A consumed record's headers as (name, bytes or None) pairs, in order."""
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(name, value.encode() if isinstance(value, str) else value) for name, value in pairs]


def partitions_of(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    """The partition ids of ``topic``; raises :class:`ToolError` when it does not exist or the broker is silent."""
    try:
        meta = consumer.list_topics(topic, timeout=max(0.1, timeout))
    except KafkaException as exc:
        raise ToolError(f"cannot read metadata of topic {topic!r}: {exc}") from None
    info = meta.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        why = info.error if info is not None and info.error is not None else "no such topic"
        raise ToolError(f"topic {topic!r} is not available: {why}")
    return sorted(info.partitions)


def end_offsets(
    conf: dict[str, Any], topic: str, partitions: Iterable[int], timeout: float
) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` watermarks, with a high watermark that is right on Tansu too.

    Tansu answers ListOffsets "latest" with the last batch's base offset + 1, which is too low when that
    batch holds several records; a fetch response carries the true high watermark. So: list, then fetch
    from the listed high − 1 (inside the last batch) and take max(listed, watermark cached by the fetch).
    A partition whose fetch does not answer within ``timeout`` keeps the listed value (never too high).
    """
    deadline = time.monotonic() + timeout
    probe = Consumer({**conf, "group.id": f"multidentify-probe-{uuid.uuid4().hex[:12]}", "enable.partition.eof": True})
    try:
        marks: dict[int, tuple[int, int]] = {}
        for p in partitions:
            try:
                low, high = probe.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=max(0.1, deadline - time.monotonic()), cached=False
                )
            except KafkaException as exc:
                raise ToolError(f"cannot list offsets of {topic}/{p}: {exc}") from None
            marks[p] = (int(low), int(high))
        pending = {p for p, (low, high) in marks.items() if high > low}
        if not pending:
            return marks
        probe.assign([TopicPartition(topic, p, marks[p][1] - 1) for p in sorted(pending)])
        while pending and time.monotonic() < deadline:
            msg = probe.poll(min(0.2, max(0.0, deadline - time.monotonic())))
            if msg is None:
                continue
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                continue
            part = msg.partition()
            if part is None or part not in pending:
                continue
            pending.discard(part)
            _, cached_high = probe.get_watermark_offsets(TopicPartition(topic, part), cached=True)
            low, high = marks[part]
            marks[part] = (low, max(high, int(cached_high)))
        return marks
    finally:
        probe.close()
