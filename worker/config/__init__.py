"""One settings object, built from defaults < config file < environment (``MDW_*``) < command-line flags.

Every setting is declared once, as a typed field of :class:`Settings` made with :func:`setting` (default, help,
group, limits, secret, validator); its type gives the kind (``tuple[str, ...]`` is a list, a ``Literal`` the
choices). :data:`SETTINGS` is derived from those fields, and the environment variable, the flag, the README table
and ``multidentify-worker check`` derive from it, so they cannot drift and ``mypy`` sees a misspelt setting.
Secrets may come from ``MDW_<NAME>`` or from a file named by ``MDW_<NAME>_FILE`` (Kubernetes secret volumes);
they are masked whenever settings are shown and never logged.

librdkafka properties (``kafka_common``, ``kafka_consumer``, ``kafka_producer``; docs/kafka.md) are the one kind with
a variable per entry, ``MDW_<SETTING>_<NAME>``, a TOML table in the file and a repeated ``NAME=VALUE`` flag; those the
commit contract or a setting owns are refused, and librdkafka checks the rest at load, in clients that connect nowhere.
Their own modules: :mod:`worker.config.properties` (pure decisions: names, variables, layering, what is refused,
secrets) and :mod:`worker.config.probe` (librdkafka's check); neither imports this one, which turns their problems
into :class:`ConfigError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from worker.config import probe, properties

# OWNED_PROPERTIES, SECRET_PROPERTY and SETTING_PROPERTIES also as config.X, where callers have always found them.
from worker.config.properties import OWNED_PROPERTIES as OWNED_PROPERTIES
from worker.config.properties import PROPERTY_ROLES, KafkaProperties, Role, encode_name, is_secret_property
from worker.config.properties import SECRET_PROPERTY as SECRET_PROPERTY
from worker.config.properties import SETTING_PROPERTIES as SETTING_PROPERTIES

if TYPE_CHECKING:
    from worker.core.formats import Inputs

ENV_PREFIX = "MDW_"
MIB = 1024 * 1024
#: Largest image v1 accepts in fetch mode (its request body limit is 1.5 MiB, multipart included).
V1_MAX_IMAGE_BYTES = 1_500_000
#: Largest image IAI accepts: its ``Image`` may be 5 MiB once base64-encoded (4/3 of the bytes), JSON around it.
IAI_MAX_IMAGE_BYTES = 3_800_000
_ID_RE = re.compile(r"^[^\s/]{1,64}$")

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the setting and what is allowed."""


@dataclass(frozen=True)
class Setting:
    """One setting as the flags, the environment, ``check`` and the README table see it (derived from a field)."""

    name: str
    kind: str  # str | int | float | bool | list | choice | properties
    default: Any
    help: str
    group: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    secret: bool = False
    required_for_run: bool = False
    validate: Callable[[Any], str | None] | None = None

    @property
    def env(self) -> str:
        """The variable of this setting; for a ``properties`` setting, the prefix of one variable per property."""
        return ENV_PREFIX + self.name.upper()

    @property
    def env_shown(self) -> str:
        return self.env + "_<NAME>" if self.kind == "properties" else self.env

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def _number(self, x: float) -> str:
        # Whole numbers in full (≤ 86400000, not ≤ 8.64e+07): the table is read by people.
        return str(int(x)) if self.kind == "int" else f"{x:g}"

    def allowed(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind in ("int", "float"):
            lo = "" if self.minimum is None else f"≥ {self._number(self.minimum)}"
            hi = "" if self.maximum is None else f"≤ {self._number(self.maximum)}"
            word = "an integer" if self.kind == "int" else "a number"
            return " ".join(p for p in (word, lo, hi) if p)
        if self.kind == "list":
            return "comma-separated list"
        if self.kind == "properties":
            return "librdkafka properties (docs/kafka.md)"
        return "text"


Group = Literal["kafka", "api", "pipeline", "ops"]  # add_flags(groups=...) selects by it
SETTING_META = "mdw_setting"  # the key of a field's metadata that holds its SettingMeta


@dataclass(frozen=True)
class SettingMeta:
    """What a :class:`Settings` field carries beyond its name, type and default."""

    help: str
    group: Group
    minimum: float | None = None
    maximum: float | None = None
    secret: bool = False  # from MDW_<NAME> or MDW_<NAME>_FILE only, never a flag; masked when shown
    required_for_run: bool = False  # `run` refuses to start while it is empty
    validate: Callable[[Any], str | None] | None = None  # a problem with the coerced value, or None


def setting(
    default: T,
    help: str,
    group: Group,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    secret: bool = False,
    required_for_run: bool = False,
    validate: Callable[[Any], str | None] | None = None,
) -> T:
    """Declare one setting: a :class:`Settings` field whose metadata holds its help, group and limits."""
    meta = SettingMeta(help, group, minimum, maximum, secret, required_for_run, validate)
    return field(default=default, metadata={SETTING_META: meta})


def _url(value: Any) -> str | None:
    return None if re.match(r"^https?://[^\s/]+", str(value)) else "must be an http:// or https:// URL"


def _group_ids(value: Any) -> str | None:
    bad = [g for g in value if not _ID_RE.match(g)]
    return f"group ids must be 1–64 characters without whitespace or '/': {bad!r}" if bad else None


def _endpoint(value: Any) -> str | None:
    from worker.api.iai_wire import parse_endpoint  # here, not at the top: the settings import nothing to load

    try:
        parse_endpoint(str(value))
    except ValueError as exc:
        return str(exc).replace("iai_endpoint ", "", 1)
    return None


def _region(value: Any) -> str | None:
    ok = re.match(r"^[a-z]{2,}-[a-z0-9]+(-[a-z0-9]+)*$", str(value))
    return None if ok else "a Tencent Cloud region such as ap-guangzhou, ap-shanghai or na-siliconvalley"


def _topic(value: Any) -> str | None:
    ok = re.match(r"^[A-Za-z0-9._-]{1,249}$", str(value))
    return None if ok else "topic names use letters, digits, '.', '_' and '-' (1–249 characters)"


def _input_topics(value: Any) -> str | None:
    from worker.core.formats import topics_problem  # here, not at the top: the settings import nothing to load

    return topics_problem(str(value))


def _input_formats(value: Any) -> str | None:
    from worker.core.formats import parse_formats

    try:
        parse_formats(value)
    except ValueError as exc:
        return str(exc)
    return None


def _image_url_template(value: Any) -> str | None:
    from worker.core.formats import parse_templates

    try:
        parse_templates(str(value))
    except ValueError as exc:
        return str(exc)
    return None


def _instance_id(value: Any) -> str | None:
    # Kafka's own rule for group.instance.id (the broker refuses others at JoinGroup).
    ok = value == "" or re.match(r"^[A-Za-z0-9._-]{1,249}$", str(value))
    return None if ok else "group.instance.id uses letters, digits, '.', '_' and '-' (1–249 characters), or is empty"


# The choices of the `choice` settings, in the order `allowed()` lists them.
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
AssignmentStrategy = Literal["cooperative-sticky", "range", "roundrobin"]
OffsetReset = Literal["earliest", "latest"]
ImageMode = Literal["url", "fetch"]
ApiName = Literal["v1", "iai"]
Ordering = Literal["unordered", "key", "partition"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["json", "text"]


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Validated effective configuration: one typed field per setting, in the order of the README table.

    Build it with :func:`load` (or :meth:`replace`), which validates; a new setting is one more field here.
    """

    # Kafka
    bootstrap_servers: str = setting("127.0.0.1:9092", "Kafka bootstrap servers (host:port,…)", "kafka")
    group_id: str = setting("multidentify-worker", "consumer group shared by all worker replicas", "kafka")
    input_topic: str = setting(
        "images",
        "topic of image events to identify; a comma-separated list consumes several (formats: input_formats)",
        "kafka",
        validate=_input_topics,
    )
    input_formats: tuple[str, ...] = setting(
        (),
        "topic=format for input topics not in the worker's event format: cloudevents, s3 (S3/MinIO notifications) "
        "or cos (docs/event-formats.md)",
        "kafka",
        validate=_input_formats,
    )
    image_url_template: str = setting(
        "",
        "image URL of an s3/cos notification, e.g. https://minio.example:9000/{bucket}/{key} ({region} too); "
        "per topic: whitespace-separated topic=TEMPLATE",
        "kafka",
        validate=_image_url_template,
    )
    results_topic: str = setting("face-results", "topic the result records go to", "kafka", validate=_topic)
    dlq_topic: str = setting("face-dlq", "dead-letter topic (key = error code)", "kafka", validate=_topic)
    security_protocol: SecurityProtocol = setting("PLAINTEXT", "Kafka security protocol", "kafka")
    sasl_mechanism: SaslMechanism = setting("PLAIN", "SASL mechanism (with SASL_* protocols)", "kafka")
    sasl_username: str = setting("", "SASL user name", "kafka")
    sasl_password: str = setting("", "SASL password", "kafka", secret=True)
    ssl_ca_location: str = setting("", "CA bundle file for Kafka TLS (empty: system default)", "kafka")
    assignment_strategy: AssignmentStrategy = setting("cooperative-sticky", "partition assignment strategy", "kafka")
    session_timeout_ms: int = setting(
        10000,
        "group session timeout; a dead replica's partitions move after this",
        "kafka",
        minimum=500,
        maximum=300000,
    )
    max_poll_interval_ms: int = setting(
        300_000,
        "longest the consumer may go unpolled before it leaves the group; must exceed revoke_timeout_s and "
        "drain_timeout_s each plus one API call (connect + read timeout), and session_timeout_ms",
        "kafka",
        minimum=10_000,
        maximum=86_400_000,
    )
    auto_offset_reset: OffsetReset = setting(
        "earliest",
        "where a partition without a committed offset starts. earliest: its oldest retained event (a first "
        "deployment against an old topic processes the whole retention); latest: only events that arrive later, "
        "but then a partition that has no committed offset yet and moves in a rebalance skips what its previous "
        "owner consumed and had not committed",
        "kafka",
    )
    commit_interval_s: float = setting(
        0.2,
        "how often contiguous offsets are committed (the duplicates a crash can cause ≈ throughput × this)",
        "kafka",
        minimum=0.05,
        maximum=60,
    )
    group_instance_id: str = setting(
        "",
        "static group membership: this replica's group.instance.id, unique per replica (the chart uses the pod name); "
        "a replica back within session_timeout_ms gets its partitions again without a rebalance, but a replica gone "
        "for good holds them that long (docs/kafka.md). Empty: dynamic membership",
        "kafka",
        validate=_instance_id,
    )
    kafka_common: KafkaProperties = setting(
        (),
        "librdkafka properties of every Kafka client of the worker and its tools, e.g. ssl.certificate.location, "
        "sasl.oauthbearer.method",
        "kafka",
    )
    kafka_consumer: KafkaProperties = setting(
        (),
        "librdkafka properties of the consumers only (over kafka_common), e.g. client.rack, fetch.min.bytes",
        "kafka",
    )
    kafka_producer: KafkaProperties = setting(
        (), "librdkafka properties of the producers only (over kafka_common), e.g. linger.ms, compression.type", "kafka"
    )
    # The face API
    api: ApiName = setting(
        "v1", "which Tencent face API: v1 (multidentify, legacy) or iai (SearchFaces, API 3.0; iai_* settings)", "api"
    )
    api_base_url: str = setting(
        "https://recognition.image.myqcloud.com",
        "face API base URL (the emulator's URL in development)",
        "api",
        validate=_url,
    )
    appid: str = setting(
        "", "Tencent AppID (v1 only: IAI knows the account by its SecretId)", "api", required_for_run=True
    )
    secret_id: str = setting("", "Tencent SecretId (main account)", "api", secret=True, required_for_run=True)
    secret_key: str = setting("", "Tencent SecretKey (main account)", "api", secret=True, required_for_run=True)
    bucket: str = setting("", "legacy bucket field of the signature (usually empty)", "api")
    group_ids: tuple[str, ...] = setting(
        (), "groups searched when an event names none", "api", required_for_run=True, validate=_group_ids
    )
    signature_lifetime_s: int = setting(
        3600, "lifetime of the cached multi-use signature", "api", minimum=30, maximum=7776000
    )
    iai_endpoint: str = setting(
        "iai.tencentcloudapi.com",
        "IAI endpoint: a host (HTTPS; the nearest region, or iai.<region>.tencentcloudapi.com) or an http(s) URL",
        "api",
        validate=_endpoint,
    )
    iai_region: str = setting("ap-guangzhou", "IAI region (X-TC-Region) holding the groups", "api", validate=_region)
    iai_token: str = setting("", "IAI session token of temporary credentials (X-TC-Token)", "api", secret=True)
    iai_max_face_num: int = setting(
        10, "IAI MaxFaceNum: faces searched per image (IAI's own default is 1)", "api", minimum=1, maximum=10
    )
    iai_max_person_num: int = setting(5, "IAI MaxPersonNum: candidates per face", "api", minimum=1, maximum=100)
    iai_min_face_size: int = setting(
        34, "IAI MinFaceSize: smallest face searched, in pixels", "api", minimum=34, maximum=4000
    )
    iai_face_match_threshold: float = setting(
        0.0,
        "IAI FaceMatchThreshold: only candidates scoring above it (≈ 80 suits most uses)",
        "api",
        minimum=0,
        maximum=99.99,
    )
    iai_quality_control: int = setting(
        0, "IAI QualityControl: 0 none … 4 strictest image quality check", "api", minimum=0, maximum=4
    )
    iai_need_person_info: bool = setting(False, "IAI NeedPersonInfo: candidates carry the person's name", "api")
    connect_timeout_s: float = setting(3.0, "API connect timeout", "api", minimum=0.1, maximum=60)
    read_timeout_s: float = setting(
        10.0, "API read timeout; a whole call gets connect + read timeout", "api", minimum=0.1, maximum=300
    )
    tls_verify: bool = setting(True, "verify the face API's TLS certificate (image downloads: fetch_tls_verify)", "api")
    image_mode: ImageMode = setting(
        "url", "url: Tencent downloads the image; fetch: the worker downloads it and uploads the bytes", "api"
    )
    fetch_max_bytes: int = setting(
        1_400_000,
        "largest image fetched in fetch mode (v1 takes ≤ 1,500,000; iai ≤ 3,800,000, 5 MB once base64-encoded)",
        "api",
        minimum=1024,
        maximum=IAI_MAX_IMAGE_BYTES,
    )
    fetch_memory_mb: int = setting(
        128,
        "MiB of image bytes fetch mode holds in memory at once (downloads wait for room); at least fetch_max_bytes",
        "api",
        minimum=1,
        maximum=65536,
    )
    fetch_timeout_s: float = setting(5.0, "total time allowed for one image download", "api", minimum=0.1, maximum=120)
    fetch_tls_verify: bool = setting(
        True, "fetch mode: verify the image hosts' TLS certificates (tls_verify covers the face API only)", "api"
    )
    fetch_allowed_networks: tuple[str, ...] = setting(
        (), "CIDRs fetch mode may reach even though private/loopback (e.g. 127.0.0.0/8)", "api"
    )
    # The pipeline
    max_in_flight: int = setting(
        64, "events processed concurrently by one worker (API calls in flight)", "pipeline", minimum=1, maximum=4096
    )
    ordering: Ordering = setting(
        "unordered", "unordered | key (same key in order) | partition (strictly sequential)", "pipeline"
    )
    max_attempts: int = setting(5, "API attempts per event before dead-lettering", "pipeline", minimum=1, maximum=100)
    retry_deadline_s: float = setting(
        60.0, "time budget for one event's retries", "pipeline", minimum=0.1, maximum=3600
    )
    backoff_initial_s: float = setting(
        0.2, "first retry delay (exponential, jittered)", "pipeline", minimum=0, maximum=60
    )
    backoff_max_s: float = setting(10.0, "largest retry delay", "pipeline", minimum=0, maximum=600)
    rate_limit_qps: float = setting(
        0.0,
        "API calls/s per worker; lowered on code 15/HTTP 429, probed back up (AIMD); 0: no cap until throttled",
        "pipeline",
        minimum=0,
        maximum=100000,
    )
    breaker_failure_ratio: float = setting(
        0.5, "share of transient failures that opens the circuit breaker", "pipeline", minimum=0.01, maximum=1
    )
    breaker_open_s: float = setting(10.0, "how long the breaker stays open before a probe", "pipeline", minimum=0.1)
    dlq_guard_ratio: float = setting(
        0.98,
        "hold the worker (take no new events) when this share of recent events went to the DLQ",
        "pipeline",
        minimum=0.01,
        maximum=1,
    )
    dlq_guard_window: int = setting(500, "events the DLQ guard looks at", "pipeline", minimum=10)
    dlq_guard_pause_s: float = setting(
        60.0,
        "how long a tripped DLQ guard holds the worker before a trial of 20 events (doubles while it trips again,"
        " up to 1 h)",
        "pipeline",
        minimum=0,
        maximum=3600,
    )
    drain_timeout_s: float = setting(
        25.0, "on SIGTERM, time allowed to finish in-flight events", "pipeline", minimum=0, maximum=3600
    )
    revoke_timeout_s: float = setting(
        5.0, "on revoke, time allowed for the revoked partitions' in-flight events", "pipeline", minimum=0, maximum=600
    )
    # Operations
    metrics_host: str = setting("0.0.0.0", "address of /metrics, /healthz, /readyz", "ops")
    metrics_port: int = setting(
        9400, "port of /metrics, /healthz, /readyz (0: disabled)", "ops", minimum=0, maximum=65535
    )
    log_level: LogLevel = setting("INFO", "log level", "ops")
    log_format: LogFormat = setting("json", "json lines or plain text logs", "ops")
    liveness_timeout_s: float = setting(
        30.0, "/healthz fails when the poll loop has not turned for this long", "ops", minimum=1
    )

    # Not a setting: where each value came from, name → "default" | "file" | "env" | "flag".
    sources: Mapping[str, str] = field(default_factory=dict, kw_only=True, hash=False)

    def masked(self) -> dict[str, Any]:
        """Values safe to print: secrets show only whether they are set."""
        out: dict[str, Any] = {}
        for s in SETTINGS:
            value = getattr(self, s.name)
            if s.secret:
                out[s.name] = "***" if value else ""
            elif s.kind == "properties":
                out[s.name] = {k: "***" if v and is_secret_property(k) else v for k, v in value}
            elif isinstance(value, tuple):
                out[s.name] = ",".join(value)
            else:
                out[s.name] = value
        return out

    @property
    def input_topics(self) -> tuple[str, ...]:
        """The topics consumed (``input_topic`` is one name or a comma-separated list)."""
        from worker.core.formats import split_topics  # the one reading of the list (its validator's too)

        return split_topics(self.input_topic)

    @property
    def image_limit_bytes(self) -> int:
        """The largest image the configured API and image mode accept (an s3/cos object beyond it is refused)."""
        if self.image_mode == "fetch":
            return self.fetch_max_bytes
        return V1_MAX_IMAGE_BYTES if self.api == "v1" else IAI_MAX_IMAGE_BYTES

    def inputs(self) -> Inputs:
        """The input topics and how each is read (worker.core.formats)."""
        from worker.core.formats import inputs_from_settings

        return inputs_from_settings(
            self.input_topic, self.input_formats, self.image_url_template, max_object_bytes=self.image_limit_bytes
        )

    def secret_values(self) -> list[str]:
        """Every secret set: the secret settings and the secret librdkafka properties (what logs redact)."""
        out = [getattr(self, s.name) for s in SETTINGS if s.secret]
        for s in SETTINGS:
            if s.kind == "properties":
                out.extend(v for k, v in getattr(self, s.name) if is_secret_property(k))
        return [v for v in out if v]

    def properties(self, role: Role) -> dict[str, str]:
        """The librdkafka properties given for ``role``'s clients: kafka_common, then kafka_consumer/_producer."""
        return {**dict(self.kafka_common), **dict(getattr(self, f"kafka_{role}"))}

    def replace(self, **changes: Any) -> Settings:
        """These settings with ``changes`` applied, validated again (sources become "flag")."""
        values = {s.name: getattr(self, s.name) for s in SETTINGS}
        values.update(changes)
        return load(overrides=values, environ={}, config_file=None)

    def __repr__(self) -> str:
        return f"Settings({self.masked()!r})"


_NOT_SETTINGS = frozenset({"sources"})  # the fields of Settings that are not settings
_KINDS: dict[Any, str] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    tuple[str, ...]: "list",
    KafkaProperties: "properties",
}


def settings_of(cls: type[Any]) -> tuple[Setting, ...]:
    """The settings a dataclass declares, in field order; a field not made with :func:`setting` is refused."""
    hints = get_type_hints(cls)
    out: list[Setting] = []
    for f in dataclasses.fields(cls):
        if f.name in _NOT_SETTINGS:
            continue
        meta = f.metadata.get(SETTING_META)
        if not isinstance(meta, SettingMeta):
            raise TypeError(f"{cls.__name__}.{f.name}: declare it with setting(...) so it gets a flag and a variable")
        hint = hints[f.name]
        if get_origin(hint) is Literal and all(isinstance(c, str) for c in get_args(hint)):
            kind, choices = "choice", get_args(hint)
        elif hint in _KINDS:
            kind, choices = _KINDS[hint], ()
        else:
            raise TypeError(
                f"{cls.__name__}.{f.name}: type {hint!r} is not str, int, float, bool, a Literal of "
                "strings, tuple[str, ...] or KafkaProperties"
            )
        out.append(
            Setting(
                f.name,
                kind,
                f.default,
                meta.help,
                meta.group,
                choices=choices,
                minimum=meta.minimum,
                maximum=meta.maximum,
                secret=meta.secret,
                required_for_run=meta.required_for_run,
                validate=meta.validate,
            )
        )
    return tuple(out)


SETTINGS: tuple[Setting, ...] = settings_of(Settings)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def _check_property_prefixes(settings: Sequence[Setting]) -> None:
    """Every variable under a properties setting's prefix is one of its properties: no other variable may start so."""
    prefixes = [s.env + "_" for s in settings if s.kind == "properties"]
    for s in settings:
        for prefix in prefixes:
            if (s.env + "_").startswith(prefix) and s.env + "_" != prefix:
                raise TypeError(f"setting {s.name}: its variable {s.env} falls under the property prefix {prefix}")


_check_property_prefixes(SETTINGS)


# --- librdkafka properties: kafka_common, kafka_consumer, kafka_producer ----------------------------------------------
# Given as a TOML table, as one MDW_<SETTING>_<NAME> variable per property, or as repeated --kafka-<role> NAME=VALUE
# flags; layered per property (file < environment < flags; kafka_consumer/_producer over kafka_common) in
# worker.config.properties, checked by librdkafka in worker.config.probe. The worker builds every client from them in
# worker/runtime/kafka.py, which applies the properties the worker owns last.


def property_env(setting_name: str, prop: str) -> str:
    """The variable of ``prop`` in a properties setting: upper case, '.' → '_', '_' → '__', '-' → '___'.

    ``property_env("kafka_consumer", "client.rack")`` is ``MDW_KAFKA_CONSUMER_CLIENT_RACK``.
    """
    return BY_NAME[setting_name].env + "_" + encode_name(prop)


def _gather_properties(
    s: Setting, file_values: Mapping[str, Any], env: Mapping[str, str], override: Any
) -> tuple[KafkaProperties, str, dict[str, str]]:
    """One properties setting: its (name, value) pairs, its source and where each property came from."""
    try:
        return properties.gather(s, file_values, env, override, lambda name: BY_NAME[name].env)
    except properties.PropertyError as exc:
        raise ConfigError(str(exc)) from None


def _check_with_librdkafka(settings: Settings, origins: Mapping[str, Mapping[str, str]]) -> None:
    """librdkafka's own check of the properties, at start: a misspelt name, a bad value or a property of the other
    role stops the worker here, naming the setting and the property, not at the first connection."""
    given = {name: dict(getattr(settings, name)) for name in PROPERTY_ROLES}
    problem = probe.given_problem(given, origins)
    if problem is None:
        # Last, the clients as the worker builds them: the properties with its tuning, its settings and the contract.
        from worker.runtime import kafka  # here: runtime.kafka builds on these settings

        built: dict[Role, dict[str, Any]] = {
            "consumer": kafka.consumer_config(settings),
            "producer": kafka.producer_config(settings),
        }
        problem = probe.built_problem(built, ", ".join(n for n in PROPERTY_ROLES if given[n]))
    if problem is not None:
        # librdkafka quotes a value it refuses ('Invalid value "…"'): never a secret's, whatever it refuses.
        for secret in sorted(settings.secret_values(), key=len, reverse=True):
            problem = problem.replace(secret, "***")
        raise ConfigError(problem)


def _coerce(setting: Setting, raw: Any, source: str) -> Any:
    where = f"{setting.name} ({setting.env if source == 'env' else source})"
    try:
        if setting.kind == "int":
            if isinstance(raw, bool):
                raise ValueError
            value: Any = int(str(raw).strip()) if not isinstance(raw, int) else raw
        elif setting.kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            value = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
        elif setting.kind == "bool":
            if isinstance(raw, bool):
                value = raw
            else:
                text = str(raw).strip().lower()
                if text in ("1", "true", "yes", "on"):
                    value = True
                elif text in ("0", "false", "no", "off"):
                    value = False
                else:
                    raise ValueError
        elif setting.kind == "list":
            items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            value = tuple(str(i).strip() for i in items if str(i).strip())
        elif setting.kind == "choice":
            value = str(raw).strip()
            matches = [c for c in setting.choices if c.lower() == value.lower()]
            if not matches:
                raise ValueError
            value = matches[0]
        else:
            value = str(raw)
    except ValueError:
        shown = "***" if setting.secret else repr(raw)
        raise ConfigError(f"{where}: {shown} is not valid; expected {setting.allowed()}") from None
    if setting.kind in ("int", "float"):
        if setting.minimum is not None and value < setting.minimum:
            raise ConfigError(f"{where}: {value} is too small; expected {setting.allowed()}")
        if setting.maximum is not None and value > setting.maximum:
            raise ConfigError(f"{where}: {value} is too large; expected {setting.allowed()}")
    if setting.validate is not None:
        problem = setting.validate(value)
        if problem:
            raise ConfigError(f"{where}: {problem}")
    return value


def _read_secret_file(setting: Setting, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{setting.name} ({setting.env}_FILE): cannot read {path!r}: {exc.strerror}") from None


def _from_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config file {os.fspath(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {os.fspath(path)!r}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"config file {os.fspath(path)!r}: unknown settings {unknown}; known: {sorted(BY_NAME)}")
    return data


def load(
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    require_credentials: bool = False,
) -> Settings:
    """Build and validate the settings. ``overrides`` are flag values (highest precedence).

    The config file may also be named by ``MDW_CONFIG_FILE``.
    """
    env = os.environ if environ is None else environ
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG_FILE") or None
    file_values = _from_file(config_file) if config_file else {}
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"unknown settings {unknown}")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    origins: dict[str, dict[str, str]] = {}
    for s in SETTINGS:
        if s.kind == "properties":
            values[s.name], sources[s.name], origins[s.name] = _gather_properties(
                s, file_values, env, overrides.get(s.name)
            )
            continue
        raw: Any = s.default
        source = "default"
        if s.name in file_values:
            raw, source = file_values[s.name], "file"
        if s.secret and env.get(s.env + "_FILE"):
            raw, source = _read_secret_file(s, env[s.env + "_FILE"]), "env"
        if s.env in env:
            raw, source = env[s.env], "env"
        if overrides.get(s.name) is not None:
            raw, source = overrides[s.name], "flag"
        values[s.name] = raw if source == "default" else _coerce(s, raw, source)
        sources[s.name] = source
    settings = Settings(**values, sources=sources)
    _check_combinations(settings)
    if any(origins.values()):
        _check_with_librdkafka(settings, origins)
    if require_credentials:
        unused = _UNUSED_BY_API[settings.api]
        missing = [s for s in SETTINGS if s.required_for_run and not values[s.name] and s.name not in unused]
        if missing:
            names = ", ".join(f"{s.name} ({s.env})" for s in missing)
            raise ConfigError(f"required for `run` but not set: {names}")
    return settings


#: Settings one API never reads: not required for `run` when that API is chosen.
_UNUSED_BY_API: dict[str, frozenset[str]] = {"v1": frozenset(), "iai": frozenset({"appid", "bucket"})}


def _check_combinations(s: Settings) -> None:
    """Limits that involve several settings; each message names all of them."""
    try:
        s.inputs()  # input_topic, input_formats and image_url_template together
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    # An output topic read as input: each output would be consumed and written again, without end (a dead letter is
    # an event that cannot be identified, so it fails again; a result record is no image event at all).
    for name, topic, what in (
        ("dlq_topic", s.dlq_topic, "every dead letter would be consumed and dead-lettered again, without end"),
        ("results_topic", s.results_topic, "every result record would be consumed as an image event"),
    ):
        if topic in s.input_topics:
            raise ConfigError(
                f"input_topic ({s.input_topic}) lists {name} ({topic}): {what}; an output topic is never an input "
                f"topic: change input_topic (MDW_INPUT_TOPIC) or {name} ({ENV_PREFIX}{name.upper()})"
            )
    if s.backoff_initial_s > s.backoff_max_s:
        raise ConfigError("backoff_initial_s must not exceed backoff_max_s")
    if s.fetch_memory_mb * MIB < s.fetch_max_bytes:
        raise ConfigError(
            f"fetch_memory_mb ({s.fetch_memory_mb} MiB = {s.fetch_memory_mb * MIB:,} bytes) must "
            f"hold at least one image of fetch_max_bytes ({s.fetch_max_bytes:,} bytes)"
        )
    if s.api == "v1" and s.fetch_max_bytes > V1_MAX_IMAGE_BYTES:
        raise ConfigError(
            f"fetch_max_bytes ({s.fetch_max_bytes:,}) is above what api v1 accepts ({V1_MAX_IMAGE_BYTES:,} bytes: its "
            "request body limit); lower fetch_max_bytes (MDW_FETCH_MAX_BYTES) or use api iai (MDW_API)"
        )
    poll_ms = s.max_poll_interval_ms
    if poll_ms < s.session_timeout_ms:
        raise ConfigError(
            f"max_poll_interval_ms ({poll_ms}) must not be below session_timeout_ms ({s.session_timeout_ms}); "
            "the Kafka client refuses it"
        )
    # A revoke and the drain wait for in-flight events without polling the consumer; an event's call may still need
    # its whole connect + read timeout. Past max.poll.interval.ms the consumer leaves the group, its commit fails and
    # every event of the wait is processed again by the next owner.
    call_s = s.connect_timeout_s + s.read_timeout_s
    for name, wait_s, what in (
        ("revoke_timeout_s", s.revoke_timeout_s, "a revoke"),
        ("drain_timeout_s", s.drain_timeout_s, "the drain on SIGTERM"),
    ):
        need_s = wait_s + call_s
        if need_s * 1000 >= poll_ms:
            raise ConfigError(
                f"{name} ({wait_s:g} s) + connect_timeout_s ({s.connect_timeout_s:g} s) + "
                f"read_timeout_s ({s.read_timeout_s:g} s) = {need_s:g} s reaches max_poll_interval_ms "
                f"({poll_ms} ms): {what} waits that long without polling the consumer, which then leaves the group "
                f"and cannot commit; raise max_poll_interval_ms (MDW_MAX_POLL_INTERVAL_MS) or lower {name} "
                f"({ENV_PREFIX}{name.upper()})"
            )


def add_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, s: Setting) -> None:
    """The flag of one setting; a properties setting's flag is repeated, one ``NAME=VALUE`` each."""
    if s.kind == "properties":
        parser.add_argument(
            s.flag, dest=s.name, action="append", default=None, metavar="NAME=VALUE", help=f"{s.help} [{s.env_shown}]"
        )
    else:
        parser.add_argument(s.flag, dest=s.name, default=None, metavar=s.kind.upper(), help=f"{s.help} [{s.env}]")


def add_flags(parser: argparse.ArgumentParser, groups: Sequence[str] | None = None) -> None:
    """One flag per setting (``--max-in-flight``); values stay strings until :func:`load` validates them."""
    for s in SETTINGS:
        if groups is not None and s.group not in groups:
            continue
        if s.secret:
            continue  # secrets never on the command line: they would show in `ps`
        add_flag(parser, s)
    parser.add_argument("--config", dest="config_file", default=None, help="TOML config file [MDW_CONFIG_FILE]")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given; a secret librdkafka property on the command line (it would show in ``ps``) is refused."""
    out = {s.name: getattr(args, s.name) for s in SETTINGS if getattr(args, s.name, None) is not None}
    for s in SETTINGS:
        if s.kind != "properties":
            continue
        for item in out.get(s.name) or ():
            name, sep, _ = str(item).partition("=")
            name = name.strip()
            if sep and is_secret_property(name):  # without '=', properties.flag_pairs refuses it, masked
                raise ConfigError(
                    f"{s.name} property {name} ({s.flag}): a secret is never given on the command line (it would "
                    f"show in ps); use {property_env(s.name, name)} or the config file"
                )
    return out


def markdown_table() -> str:
    """The README's configuration table, generated so it cannot drift from :data:`SETTINGS`."""
    lines = ["| setting | environment | default | allowed | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        default = ",".join(s.default) if isinstance(s.default, tuple) else s.default
        shown = "" if default in ("", ()) else f"`{str(default).lower() if s.kind == 'bool' else default}`"
        env = f"`{s.env_shown}`" + (f" / `{s.env}_FILE`" if s.secret else "")
        required = " **(required for run)**" if s.required_for_run else ""
        lines.append(f"| `{s.flag}` | {env} | {shown} | {s.allowed()} | {s.help}{required} |")
    return "\n".join(lines)
