"""Logging for the ``worker`` logger hierarchy: JSON lines (or text), secret redaction, and a log observer.

A JSON line holds ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``msg``, every
``extra={...}`` field given to the call (``event_id``, ``topic``, ``partition``, ``offset``, ``code``…)
and ``exc`` (the formatted exception) when there is one.

Secrets never reach the output (defence in depth; config already keeps them out of settings dumps):
a filter on our handler rewrites each record in place, replacing every configured secret value in
the message, its args, string extras (also inside dicts/lists/tuples), the exception text and the
stack; the formatter then redacts the finished line once more, so a secret hidden in an object's
``str()`` is caught too. The record is rewritten in place, so any handler that runs after ours sees
the redacted version as well.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from worker.runtime.observer import Observer, Snapshot

ROOT = "worker"
MASK = "***"

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_CORE = ("ts", "level", "logger", "msg", "exc", "stack")


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of every non-empty secret replaced by ``***`` (longest first)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record so that no configured secret value remains in it; never drops a record."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format/args pair: keep both, redacted, rather than lose the line
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = self._text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._text(record.exc_text)
        if record.stack_info:
            record.stack_info = self._text(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD:
                record.__dict__[key] = self._value(value)
        return True

    def _text(self, text: str) -> str:
        return redact(text, self.secrets)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, dict):
            return {self._value(k): self._value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._value(v) for v in value]
        return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module docstring for the fields."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                out[key + "_" if key in _CORE else key] = value  # core fields win; a clashing extra is kept renamed
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        line = orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return _redact_line(line, self._secrets)


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger: msg key=value …`` for humans at a terminal."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._secrets = tuple(secrets)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _rfc3339(record.created)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD]
        if extras:
            head, sep, tail = line.partition("\n")  # extras on the message line, before any traceback
            line = head + " " + " ".join(extras) + sep + tail
        return redact(line, self._secrets)


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so a second call replaces it instead of stacking."""


def configure_logging(
    level: str = "INFO",
    fmt: str = "json",
    *,
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> None:
    """Sends the ``worker`` hierarchy to ``stream`` (stderr) as ``fmt`` (json|text) at ``level``.

    Idempotent: a second call replaces the handler of the first. ``secrets`` are the values (not the
    names) that must never appear in the output. The ``worker`` logger stops propagating to the root
    logger so that a library's ``basicConfig`` cannot print our records twice (or unredacted).
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be json or text, not {fmt!r}")
    secret_values = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
    logger = logging.getLogger(ROOT)
    for old in [h for h in logger.handlers if isinstance(h, _OurHandler)]:
        logger.removeHandler(old)
        old.close()
    handler = _OurHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(secret_values) if fmt == "json" else TextFormatter(secret_values))
    handler.addFilter(RedactingFilter(secret_values))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


class LogObserver(Observer):
    """Logs what an operator wants to read: rebalances, stop reasons, and state changes seen in snapshots.

    Snapshot fields (breaker state, pause, broker reachability, stopping, fatal) are logged only when
    they change, compared with the previous snapshot (the first is compared with ``Snapshot()``).
    Called from the poll loop only.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger if logger is not None else logging.getLogger("worker.pipeline.events")
        self._prev = Snapshot()

    def rebalance(self, kind: str, partitions: Sequence[tuple[str, int]]) -> None:
        parts = [f"{t}:{p}" for t, p in partitions]
        level = logging.WARNING if kind == "lost" else logging.INFO
        self._log.log(
            level, "partitions %s: %s", kind, ", ".join(parts) or "none", extra={"kind": kind, "partitions": parts}
        )

    def stopped(self, exit_code: int, reason: str) -> None:
        level = logging.ERROR if exit_code != 0 else logging.INFO
        self._log.log(level, "pipeline stopped: %s", reason, extra={"exit_code": exit_code, "reason": reason})

    def snapshot(self, snap: Snapshot) -> None:
        prev, self._prev = self._prev, snap
        load = {"in_flight": snap.in_flight, "queued": snap.queued}
        if snap.breaker_state != prev.breaker_state:
            level = logging.WARNING if snap.breaker_state == "open" else logging.INFO
            extra = {"breaker_state": snap.breaker_state, "rate_limit_qps": snap.rate_limit_qps}
            self._log.log(level, "circuit breaker %s -> %s", prev.breaker_state, snap.breaker_state, extra=extra)
        if snap.paused != prev.paused:
            self._log.info(
                "consumption %s", "paused" if snap.paused else "resumed", extra={"paused": snap.paused, **load}
            )
        if snap.broker_reachable != prev.broker_reachable:
            if snap.broker_reachable:
                self._log.info("broker reachable again")
            else:
                self._log.warning("broker unreachable")
        if snap.stopping and not prev.stopping:
            self._log.info("stopping: draining in-flight events", extra=load)
        if snap.fatal and snap.fatal != prev.fatal:
            self._log.error("fatal: %s", snap.fatal, extra={"fatal": snap.fatal})


def _rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _redact_line(line: str, secrets: Sequence[str]) -> str:
    """Redacts a JSON line: each secret as written and as JSON would escape it (quotes, backslashes)."""
    if not secrets:
        return line
    escaped = [orjson.dumps(s).decode()[1:-1] for s in secrets]
    return redact(line, [*secrets, *escaped])
