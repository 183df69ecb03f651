"""One settings object, built from defaults < config file < environment (``MDW_*``) < command-line flags.

Every setting is declared once in :data:`SETTINGS` (name, type, default, limits, help); the environment
variable, the flag, the README table and ``multidentify-worker check`` all derive from that list, so
they cannot drift. Secrets may come from ``MDW_<NAME>`` or from a file named by ``MDW_<NAME>_FILE``
(Kubernetes secret volumes); they are masked whenever settings are shown and never logged.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "MDW_"
MIB = 1024 * 1024
_ID_RE = re.compile(r"^[^\s/]{1,64}$")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the setting and what is allowed."""


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str  # str | int | float | bool | list | choice
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
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def allowed(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind in ("int", "float"):
            lo = "" if self.minimum is None else f"≥ {self.minimum:g}"
            hi = "" if self.maximum is None else f"≤ {self.maximum:g}"
            word = "an integer" if self.kind == "int" else "a number"
            return " ".join(p for p in (word, lo, hi) if p)
        if self.kind == "list":
            return "comma-separated list"
        return "text"


def _url(value: Any) -> str | None:
    return None if re.match(r"^https?://[^\s/]+", str(value)) else "must be an http:// or https:// URL"


def _group_ids(value: Any) -> str | None:
    bad = [g for g in value if not _ID_RE.match(g)]
    return f"group ids must be 1–64 characters without whitespace or '/': {bad!r}" if bad else None


def _topic(value: Any) -> str | None:
    ok = re.match(r"^[A-Za-z0-9._-]{1,249}$", str(value))
    return None if ok else "topic names use letters, digits, '.', '_' and '-' (1–249 characters)"


SETTINGS: tuple[Setting, ...] = (
    # Kafka
    Setting("bootstrap_servers", "str", "127.0.0.1:9092", "Kafka bootstrap servers (host:port,…)", "kafka"),
    Setting("group_id", "str", "multidentify-worker", "consumer group shared by all worker replicas", "kafka"),
    Setting("input_topic", "str", "images", "topic of image events to identify", "kafka", validate=_topic),
    Setting("results_topic", "str", "face-results", "topic the result records go to", "kafka", validate=_topic),
    Setting("dlq_topic", "str", "face-dlq", "dead-letter topic (key = error code)", "kafka", validate=_topic),
    Setting(
        "security_protocol",
        "choice",
        "PLAINTEXT",
        "Kafka security protocol",
        "kafka",
        choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    ),
    Setting(
        "sasl_mechanism",
        "choice",
        "PLAIN",
        "SASL mechanism (with SASL_* protocols)",
        "kafka",
        choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
    ),
    Setting("sasl_username", "str", "", "SASL user name", "kafka"),
    Setting("sasl_password", "str", "", "SASL password", "kafka", secret=True),
    Setting("ssl_ca_location", "str", "", "CA bundle file for Kafka TLS (empty: system default)", "kafka"),
    Setting(
        "assignment_strategy",
        "choice",
        "cooperative-sticky",
        "partition assignment strategy",
        "kafka",
        choices=("cooperative-sticky", "range", "roundrobin"),
    ),
    Setting(
        "session_timeout_ms",
        "int",
        10000,
        "group session timeout; a dead replica's partitions move after this",
        "kafka",
        minimum=500,
        maximum=300000,
    ),
    Setting(
        "commit_interval_s",
        "float",
        0.2,
        "how often contiguous offsets are committed (the duplicates a crash can cause ≈ throughput × this)",
        "kafka",
        minimum=0.05,
        maximum=60,
    ),
    # The face API
    Setting(
        "api_base_url",
        "str",
        "https://recognition.image.myqcloud.com",
        "face API base URL (the emulator's URL in development)",
        "api",
        validate=_url,
    ),
    Setting("appid", "str", "", "Tencent AppID", "api", required_for_run=True),
    Setting("secret_id", "str", "", "Tencent SecretId (main account)", "api", secret=True, required_for_run=True),
    Setting("secret_key", "str", "", "Tencent SecretKey (main account)", "api", secret=True, required_for_run=True),
    Setting("bucket", "str", "", "legacy bucket field of the signature (usually empty)", "api"),
    Setting(
        "group_ids",
        "list",
        (),
        "groups searched when an event names none",
        "api",
        required_for_run=True,
        validate=_group_ids,
    ),
    Setting(
        "signature_lifetime_s",
        "int",
        3600,
        "lifetime of the cached multi-use signature",
        "api",
        minimum=30,
        maximum=7776000,
    ),
    Setting("connect_timeout_s", "float", 3.0, "API connect timeout", "api", minimum=0.1, maximum=60),
    Setting(
        "read_timeout_s",
        "float",
        10.0,
        "API read timeout; a whole call gets connect + read timeout",
        "api",
        minimum=0.1,
        maximum=300,
    ),
    Setting("tls_verify", "bool", True, "verify the API's TLS certificate", "api"),
    Setting(
        "image_mode",
        "choice",
        "url",
        "url: Tencent downloads the image; fetch: the worker downloads it and uploads the bytes",
        "api",
        choices=("url", "fetch"),
    ),
    Setting(
        "fetch_max_bytes",
        "int",
        1_400_000,
        "largest image fetched in fetch mode",
        "api",
        minimum=1024,
        maximum=1_500_000,
    ),
    Setting(
        "fetch_memory_mb",
        "int",
        128,
        "MiB of image bytes fetch mode holds in memory at once (downloads wait for room); at least fetch_max_bytes",
        "api",
        minimum=1,
        maximum=65536,
    ),
    Setting(
        "fetch_timeout_s",
        "float",
        5.0,
        "total time allowed for one image download",
        "api",
        minimum=0.1,
        maximum=120,
    ),
    Setting(
        "fetch_allowed_networks",
        "list",
        (),
        "CIDRs fetch mode may reach even though private/loopback (e.g. 127.0.0.0/8)",
        "api",
    ),
    # The pipeline
    Setting(
        "max_in_flight",
        "int",
        64,
        "events processed concurrently by one worker (API calls in flight)",
        "pipeline",
        minimum=1,
        maximum=4096,
    ),
    Setting(
        "ordering",
        "choice",
        "unordered",
        "unordered | key (same key in order) | partition (strictly sequential)",
        "pipeline",
        choices=("unordered", "key", "partition"),
    ),
    Setting(
        "max_attempts",
        "int",
        5,
        "API attempts per event before dead-lettering",
        "pipeline",
        minimum=1,
        maximum=100,
    ),
    Setting(
        "retry_deadline_s",
        "float",
        60.0,
        "time budget for one event's retries",
        "pipeline",
        minimum=0.1,
        maximum=3600,
    ),
    Setting(
        "backoff_initial_s",
        "float",
        0.2,
        "first retry delay (exponential, jittered)",
        "pipeline",
        minimum=0,
        maximum=60,
    ),
    Setting("backoff_max_s", "float", 10.0, "largest retry delay", "pipeline", minimum=0, maximum=600),
    Setting(
        "rate_limit_qps",
        "float",
        0.0,
        "API calls/s per worker; lowered on code 15/HTTP 429, probed back up (AIMD); 0: no cap until throttled",
        "pipeline",
        minimum=0,
        maximum=100000,
    ),
    Setting(
        "breaker_failure_ratio",
        "float",
        0.5,
        "share of transient failures that opens the circuit breaker",
        "pipeline",
        minimum=0.01,
        maximum=1,
    ),
    Setting(
        "breaker_open_s",
        "float",
        10.0,
        "how long the breaker stays open before a probe",
        "pipeline",
        minimum=0.1,
    ),
    Setting(
        "dlq_guard_ratio",
        "float",
        0.98,
        "stop the worker when this share of recent events went to the DLQ",
        "pipeline",
        minimum=0.01,
        maximum=1,
    ),
    Setting("dlq_guard_window", "int", 500, "events the DLQ guard looks at", "pipeline", minimum=10),
    Setting(
        "drain_timeout_s",
        "float",
        25.0,
        "on SIGTERM, time allowed to finish in-flight events",
        "pipeline",
        minimum=0,
        maximum=3600,
    ),
    Setting(
        "revoke_timeout_s",
        "float",
        5.0,
        "on revoke, time allowed for the revoked partitions' in-flight events",
        "pipeline",
        minimum=0,
        maximum=600,
    ),
    # Operations
    Setting("metrics_host", "str", "0.0.0.0", "address of /metrics, /healthz, /readyz", "ops"),
    Setting(
        "metrics_port",
        "int",
        9400,
        "port of /metrics, /healthz, /readyz (0: disabled)",
        "ops",
        minimum=0,
        maximum=65535,
    ),
    Setting(
        "log_level",
        "choice",
        "INFO",
        "log level",
        "ops",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
    Setting("log_format", "choice", "json", "json lines or plain text logs", "ops", choices=("json", "text")),
    Setting(
        "liveness_timeout_s",
        "float",
        30.0,
        "/healthz fails when the poll loop has not turned for this long",
        "ops",
        minimum=1,
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Validated effective configuration. Attribute names are the setting names."""

    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)  # name → "default" | "file" | "env" | "flag"

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def masked(self) -> dict[str, Any]:
        """Values safe to print: secrets show only whether they are set."""
        out: dict[str, Any] = {}
        for s in SETTINGS:
            value = self.values[s.name]
            if s.secret:
                out[s.name] = "***" if value else ""
            elif isinstance(value, tuple):
                out[s.name] = ",".join(value)
            else:
                out[s.name] = value
        return out

    def replace(self, **changes: Any) -> Settings:
        values = dict(self.values)
        values.update(changes)
        return load(overrides=values, environ={}, config_file=None)

    def __repr__(self) -> str:
        return f"Settings({self.masked()!r})"


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
    for s in SETTINGS:
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
    if values["backoff_initial_s"] > values["backoff_max_s"]:
        raise ConfigError("backoff_initial_s must not exceed backoff_max_s")
    if values["fetch_memory_mb"] * MIB < values["fetch_max_bytes"]:
        raise ConfigError(
            f"fetch_memory_mb ({values['fetch_memory_mb']} MiB = {values['fetch_memory_mb'] * MIB:,} bytes) must "
            f"hold at least one image of fetch_max_bytes ({values['fetch_max_bytes']:,} bytes)"
        )
    if require_credentials:
        missing = [s for s in SETTINGS if s.required_for_run and not values[s.name]]
        if missing:
            names = ", ".join(f"{s.name} ({s.env})" for s in missing)
            raise ConfigError(f"required for `run` but not set: {names}")
    return Settings(values=values, sources=sources)


def add_flags(parser: argparse.ArgumentParser, groups: Sequence[str] | None = None) -> None:
    """One flag per setting (``--max-in-flight``); values stay strings until :func:`load` validates them."""
    for s in SETTINGS:
        if groups is not None and s.group not in groups:
            continue
        if s.secret:
            continue  # secrets never on the command line: they would show in `ps`
        parser.add_argument(s.flag, dest=s.name, default=None, metavar=s.kind.upper(), help=f"{s.help} [{s.env}]")
    parser.add_argument("--config", dest="config_file", default=None, help="TOML config file [MDW_CONFIG_FILE]")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {s.name: getattr(args, s.name) for s in SETTINGS if getattr(args, s.name, None) is not None}


def markdown_table() -> str:
    """The README's configuration table, generated so it cannot drift from :data:`SETTINGS`."""
    lines = ["| setting | environment | default | allowed | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        default = ",".join(s.default) if isinstance(s.default, tuple) else s.default
        shown = "" if default in ("", ()) else f"`{str(default).lower() if s.kind == 'bool' else default}`"
        env = f"`{s.env}`" + (f" / `{s.env}_FILE`" if s.secret else "")
        required = " **(required for run)**" if s.required_for_run else ""
        lines.append(f"| `{s.flag}` | {env} | {shown} | {s.allowed()} | {s.help}{required} |")
    return "\n".join(lines)
