"""librdkafka's own check of the librdkafka properties, at load: clients built and closed in well under a
millisecond, which connect nowhere (no bootstrap.servers) and read no file.

A misspelt name, a bad value, a contradiction, or a property of the other role stops the worker at start, naming
the setting and the property, not at the first connection. Each check returns the problem (a message) or None;
:mod:`worker.config` raises it as its ``ConfigError``. Imports only :mod:`worker.config.properties`, and
confluent-kafka when a check runs (loading the settings imports nothing else).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from worker.config.properties import CONSUMER_CONTRACT, PRODUCER_CONTRACT, PROPERTY_ROLES, Role


class _LogSink:
    """The log lines of a probe client (librdkafka's configuration warnings), kept instead of printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, level: int, fmt: str, *args: Any) -> None:
        self.lines.append(fmt % args)


# Left out of a probe client: it must connect nowhere, and read no file (ssl.* is read only with an SSL protocol).
_NOT_PROBED = ("bootstrap.servers", "security.protocol", "ssl.ca.location")


def verdict(role: Role, props: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """What librdkafka makes of ``props`` in a ``role`` client with the contract's properties: its refusal (unknown
    name, bad value, contradiction) or None, and the properties it would ignore as the other role's.

    The client has no bootstrap.servers, so it connects nowhere; it lives for well under a millisecond.
    """
    from confluent_kafka import Consumer, KafkaException, Producer  # here: the settings import nothing to load

    sink = _LogSink()
    conf = {k: v for k, v in props.items() if k not in _NOT_PROBED}
    try:
        if role == "consumer":
            consumer = Consumer({"group.id": "mdw-config-check", **conf, **CONSUMER_CONTRACT, "logger": sink})
            consumer.poll(0)  # hands over the log lines
            consumer.close()
        else:
            producer = Producer({**conf, **PRODUCER_CONTRACT, "logger": sink})
            producer.poll(0)
    except KafkaException as exc:
        return str(exc.args[0].str()), []
    except (TypeError, ValueError) as exc:
        return str(exc), []
    other = "producer" if role == "consumer" else "consumer"
    ignored = re.compile(rf"Configuration property (\S+) is an? {other} property and will be ignored")
    return None, [m.group(1) for line in sink.lines if (m := ignored.search(line))]


def given_problem(given: Mapping[str, Mapping[str, str]], origins: Mapping[str, Mapping[str, str]]) -> str | None:
    """The properties as given, each setting in the clients it reaches (alone, then over kafka_common).

    ``given`` maps each properties setting to its properties, ``origins`` each to where each property came from.
    """
    common = dict(given["kafka_common"])
    for name, roles in PROPERTY_ROLES.items():
        own = dict(given[name])
        if not own:
            continue
        for role in roles:
            refusal, misplaced = verdict(role, own)
            if refusal is not None:
                named = [p for p in own if f'"{p}"' in refusal or f"`{p}`" in refusal]
                where = f"{name} property {named[0]} ({origins[name][named[0]]})" if named else name
                return f"{where}: librdkafka refuses it in a {role}: {refusal}"
            if name == "kafka_common":
                continue  # common properties of one role only are expected: the other role ignores them
            if misplaced:
                other = "producer" if role == "consumer" else "consumer"
                # librdkafka names an alias by its own name (linger.ms: queue.buffering.max.ms): find the one given.
                given_names = [p for p in own if verdict(role, {p: own[p]})[1]] or misplaced
                return (
                    f"{name} property {given_names[0]} ({origins[name].get(given_names[0], name)}): librdkafka says "
                    f"it is a {other} property, which a {role} ignores; set it in kafka_{other} or kafka_common"
                )
            if common:
                refusal, _ = verdict(role, {**common, **own})
                if refusal is not None:
                    return f"kafka_common with {name}: librdkafka refuses them in a {role}: {refusal}"
    return None


def built_problem(built: Mapping[Role, Mapping[str, Any]], names: str) -> str | None:
    """The clients as the worker builds them (the properties with its tuning, its settings and the contract);
    ``names`` are the properties settings given, for the message."""
    for client, conf in built.items():
        refusal, _ = verdict(client, conf)
        if refusal is not None:
            return f"{names}: librdkafka refuses the worker's {client} with them: {refusal}"
    return None
