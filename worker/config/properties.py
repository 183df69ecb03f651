"""librdkafka properties in the settings (``kafka_common``, ``kafka_consumer``, ``kafka_producer``; docs/kafka.md):
pure decisions, no I/O and no librdkafka.

Which clients each properties setting reaches, what the commit contract fixes in them, which properties the worker
or a setting owns (refused, with the reason), which are secrets, how a property name is spelt in a variable, and how
one setting's properties are layered from a TOML table, ``MDW_<SETTING>_<NAME>`` variables and repeated
``NAME=VALUE`` flags (file < environment < flags, per property). A property given wrong raises
:class:`PropertyError` with a message naming the setting, the property and where it came from; :mod:`worker.config`
turns it into its ``ConfigError``. librdkafka's own check of what is left is :mod:`worker.config.probe`.

This module imports nothing of the worker: :mod:`worker.config` builds on it, not the other way round.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Literal, Protocol

Role = Literal["consumer", "producer"]
#: librdkafka properties as (name, value) pairs, in order: the kind "properties" (a TOML table, MDW_<SETTING>_<NAME>).
KafkaProperties = tuple[tuple[str, str], ...]

#: The clients each properties setting reaches.
PROPERTY_ROLES: Mapping[str, tuple[Role, ...]] = MappingProxyType(
    {"kafka_common": ("consumer", "producer"), "kafka_consumer": ("consumer",), "kafka_producer": ("producer",)}
)
#: What the at-least-once contract fixes in every worker consumer and producer (docs/reliability.md).
CONSUMER_CONTRACT: Mapping[str, Any] = MappingProxyType(
    {"enable.auto.commit": False, "enable.auto.offset.store": False, "isolation.level": "read_committed"}
)
PRODUCER_CONTRACT: Mapping[str, Any] = MappingProxyType({"enable.idempotence": True, "acks": "all"})

_OFFSETS = "the worker stores and commits an input offset only once the event's output is acknowledged (at-least-once)"
_OUTPUTS = (
    "an output counts as written only when every in-sync replica has it, once and in order (idempotent producer, "
    "acks=all); only then is its input committed"
)
#: Properties the worker owns, and why: refused in every properties setting.
OWNED_PROPERTIES: Mapping[str, str] = MappingProxyType(
    {
        "enable.auto.commit": _OFFSETS,
        "auto.commit.enable": _OFFSETS,
        "enable.auto.offset.store": _OFFSETS,
        "offset.store.method": _OFFSETS,
        "auto.commit.interval.ms": _OFFSETS + "; how often it commits is commit_interval_s (MDW_COMMIT_INTERVAL_S)",
        "enable.idempotence": _OUTPUTS,
        "acks": _OUTPUTS,
        "request.required.acks": _OUTPUTS,
        "transactional.id": "the worker's producer is idempotent, not transactional: " + _OUTPUTS,
        "isolation.level": "the worker reads committed events only (read_committed): an event of an aborted "
        "transaction was never written, and is neither processed nor replayed",
        "group.protocol": "the worker runs the classic consumer group protocol, which its session, assignment and "
        "static membership settings are made for",
        "statistics.interval.ms": "the worker reads librdkafka statistics every 5 s: consumer lag, broker "
        "reachability for /readyz and fair pausing",
        **dict.fromkeys(
            ("error_cb", "stats_cb", "throttle_cb", "oauth_cb", "logger", "on_commit", "on_delivery", "dr_cb"),
            "a callback the worker installs in code",
        ),
        "dr_msg_cb": "a callback the worker installs in code",
    }
)
#: Properties a setting already holds: refused, naming the setting to use instead.
SETTING_PROPERTIES: Mapping[str, str] = MappingProxyType(
    {
        "bootstrap.servers": "bootstrap_servers",
        "metadata.broker.list": "bootstrap_servers",
        "security.protocol": "security_protocol",
        "sasl.mechanism": "sasl_mechanism",
        "sasl.mechanisms": "sasl_mechanism",
        "sasl.username": "sasl_username",
        "sasl.password": "sasl_password",
        "ssl.ca.location": "ssl_ca_location",
        "group.id": "group_id",
        "group.instance.id": "group_instance_id",
        "partition.assignment.strategy": "assignment_strategy",
        "session.timeout.ms": "session_timeout_ms",
        "max.poll.interval.ms": "max_poll_interval_ms",
        "auto.offset.reset": "auto_offset_reset",
    }
)
# Passwords, client secrets, pass phrases and key contents (not key file paths): masked when shown, redacted in logs.
# In any case (a variable's name is read back in lower case) and with librdkafka's topic. prefix. The pattern itself
# stays free of inline flags: the chart's values.schema.json reuses it, next to its own refusal of upper case.
SECRET_PROPERTY = re.compile(
    r"password|secret|passphrase|(^|\.)key\.pem$|^(topic\.)?ssl_key$|^(topic\.)?sasl\.oauthbearer\.config$",
    re.IGNORECASE,
)
#: librdkafka reads ``topic.<name>`` as the topic property ``<name>`` (of the default topic configuration).
TOPIC_PREFIX = "topic."
_ENCODED_PROPERTY = re.compile(r"^[A-Z0-9]+(_{1,3}[A-Z0-9]+)*$")


class PropertyError(ValueError):
    """A property given wrong; the message names the setting, the property and where it came from."""


class PropertySetting(Protocol):
    """What the layering needs of a properties setting (a :class:`worker.config.Setting`)."""

    @property
    def name(self) -> str: ...
    @property
    def env(self) -> str: ...  # the prefix of its variables, MDW_<SETTING>
    @property
    def flag(self) -> str: ...


def is_secret_property(name: str) -> bool:
    """A librdkafka property whose value is never shown, logged or accepted on the command line (in any case)."""
    return bool(SECRET_PROPERTY.search(name))


def _shown(name: str, raw: Any) -> str:
    """A value given wrong, for a message: its repr, or only its type for a secret property."""
    if is_secret_property(name):
        kinds: dict[type, str] = {list: "an array", dict: "a table"}
        return f"*** ({kinds.get(type(raw), f'a {type(raw).__name__}')})"
    return repr(raw)


def encode_name(prop: str) -> str:
    """``prop`` as its variable spells it after the setting's prefix: upper case, '.' → '_', '_' → '__',
    '-' → '___' (``client.rack``: ``CLIENT_RACK``)."""
    return prop.replace("_", "__").replace("-", "___").replace(".", "_").upper()


def decode_name(encoded: str) -> str | None:
    """The inverse of :func:`encode_name`, or None for a name it cannot have made."""
    if not _ENCODED_PROPERTY.match(encoded):
        return None
    return re.sub(r"_{1,3}", lambda m: {1: ".", 2: "_", 3: "-"}[len(m.group())], encoded).lower()


def property_value(raw: Any) -> str | None:
    """A property's value as librdkafka takes it (text), or None for a value that is not text, a number or a bool."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float | str):
        return str(raw)
    return None


def flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """TOML reads ``client.rack = "a"`` as ``{"client": {"rack": "a"}}``: back to dotted property names."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def refusal(name: str, variable_of: Callable[[str], str]) -> str | None:
    """Why property ``name`` may not be given, or None: it is not in lower case, a setting holds it (named with its
    variable, ``variable_of(setting)``), or the worker owns it; ``topic.<name>`` as ``<name>``, as librdkafka reads
    it."""
    if name != name.lower():
        # librdkafka knows no such name; and a variable's name is read back in lower case, so the chart's check of the
        # name as written would not be the worker's.
        return f"librdkafka property names are lower case ({name.lower()})"
    name = name.removeprefix(TOPIC_PREFIX)  # topic.acks is acks (no refused property's own name starts so)
    if name in SETTING_PROPERTIES:
        instead = SETTING_PROPERTIES[name]
        return f"the setting {instead} holds it; set {instead} ({variable_of(instead)}) instead"
    if name in OWNED_PROPERTIES:
        return f"the worker sets it and it cannot be changed: {OWNED_PROPERTIES[name]}"
    return None


def flag_pairs(s: PropertySetting, raw: Any) -> Iterator[tuple[str, str]]:
    """A properties setting's override: ``NAME=VALUE`` strings (flags), or pairs or a mapping (``replace``)."""
    items = raw.items() if isinstance(raw, Mapping) else raw
    for item in items:
        if isinstance(item, str):
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                # NAME VALUE typed wrong would show a secret's value: masked when the entry names a secret; a value
                # without its name (=VALUE) is never shown, it may be anyone's.
                shown = "***" if sep or is_secret_property(item) else repr(item)
                raise PropertyError(f"{s.name} ({s.flag}): {shown} is not NAME=VALUE")
            yield name.strip(), value
        else:
            name, value = item
            text = property_value(value)
            if text is None:
                raise PropertyError(
                    f"{s.name} property {name} ({s.flag}): {_shown(str(name), value)} is not text, a number or "
                    "true/false"
                )
            yield str(name), text


def gather(
    s: PropertySetting,
    file_values: Mapping[str, Any],
    env: Mapping[str, str],
    override: Any,
    variable_of: Callable[[str], str],
) -> tuple[KafkaProperties, str, dict[str, str]]:
    """One properties setting: its (name, value) pairs, its source and where each property came from.

    ``file_values`` is the whole config file, ``env`` the environment, ``override`` the flags' value (or None);
    ``variable_of`` names a setting's variable, for the refusal of a property that setting holds.
    """
    found: dict[str, tuple[str, str]] = {}  # name → (value, origin)
    source = "default"
    if s.name in file_values:
        table = file_values[s.name]
        if not isinstance(table, dict):
            raise PropertyError(
                f"{s.name} (config file): a table of librdkafka properties, e.g. [{s.name}] then "
                '"client.rack" = "eu-west-1a"'
            )
        for name, raw in flatten(table):
            value = property_value(raw)
            if value is None:
                raise PropertyError(
                    f"{s.name} property {name} (config file): {_shown(name, raw)} is not text, a number or true/false"
                )
            found[name] = (value, "config file")
        source = "file"
    prefix = s.env + "_"
    for var in sorted(v for v in env if v.startswith(prefix)):
        decoded = decode_name(var[len(prefix) :])
        if decoded is None:
            raise PropertyError(
                f"{s.name} ({var}): not a property variable: {prefix} is followed by the property name in upper case, "
                f"'.' written '_', '_' written '__' and '-' written '___' (client.rack: {prefix}CLIENT_RACK)"
            )
        found[decoded] = (env[var], var)
        source = "env"
    if override is not None:
        for name, value in flag_pairs(s, override):
            found[name] = (value, s.flag)
            source = "flag"
    for name, (_, origin) in found.items():
        problem = refusal(name, variable_of)
        if problem is not None:
            raise PropertyError(f"{s.name} property {name} ({origin}): {problem}")
    return tuple((n, v) for n, (v, _) in found.items()), source, {n: o for n, (_, o) in found.items()}
