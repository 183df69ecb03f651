"""configure_logging: JSON lines with extras; secrets never reach the output; LogObserver logs changes only."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import datetime

import orjson
import pytest

from worker.ops.logs import LogObserver, configure_logging, redact
from worker.runtime.observer import Snapshot

SECRET = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA"
QUOTED_SECRET = 'p@ss"word\\x'


@pytest.fixture(autouse=True)
def _restore_worker_logger() -> Iterator[None]:
    logger = logging.getLogger("worker")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for h in list(logger.handlers):
        logger.removeHandler(h)
    for h in saved[0]:
        logger.addHandler(h)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_core_fields_and_extras() -> None:
    buf = io.StringIO()
    configure_logging("INFO", "json", stream=buf)
    log = logging.getLogger("worker.pipeline")
    log.debug("hidden at INFO")
    extra = {"event_id": "e-1", "topic": "images", "partition": 3, "offset": 42, "code": "-1308", "ts": "clash"}
    log.warning("dead-lettered %s", "e-1", extra=extra)
    (line,) = _lines(buf)
    assert line["level"] == "WARNING"
    assert line["logger"] == "worker.pipeline"
    assert line["msg"] == "dead-lettered e-1"
    assert (line["event_id"], line["topic"], line["partition"], line["offset"], line["code"]) == (
        "e-1",
        "images",
        3,
        42,
        "-1308",
    )
    assert line["ts_"] == "clash"  # an extra never overwrites a core field
    ts = str(line["ts"])
    assert ts.endswith("Z")
    assert datetime.fromisoformat(ts).utcoffset() is not None


def test_exception_is_a_string_field() -> None:
    buf = io.StringIO()
    configure_logging("INFO", "json", stream=buf)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("worker.x").exception("failed", extra={"event_id": "e-2"})
    (line,) = _lines(buf)
    assert isinstance(line["exc"], str) and "ValueError: boom" in line["exc"]
    assert line["event_id"] == "e-2"


def test_configure_twice_replaces_the_handler_and_text_format_works() -> None:
    buf1, buf2 = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", stream=buf1)
    configure_logging("DEBUG", "text", stream=buf2)
    logging.getLogger("worker.y").debug("hello %s", "there", extra={"event_id": "e-3"})
    assert buf1.getvalue() == ""
    text = buf2.getvalue()
    assert "DEBUG worker.y: hello there" in text and "event_id=e-3" in text
    with pytest.raises(ValueError):
        configure_logging("INFO", "xml")


def test_redact() -> None:
    assert redact(f"key={SECRET}; again {SECRET}", [SECRET, ""]) == "key=***; again ***"
    assert redact("abcdef", ["abc", "abcdef"]) == "***"  # the longest secret wins
    assert redact("nothing here", []) == "nothing here"


class _Leaky:
    def __str__(self) -> str:
        return f"Leaky({SECRET})"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_never_reach_the_output(fmt: str) -> None:
    buf = io.StringIO()
    configure_logging("DEBUG", fmt, secrets=[SECRET, QUOTED_SECRET], stream=buf)
    log = logging.getLogger("worker.api.client")
    log.info(f"in the message {SECRET}")
    log.info("in args %s and %r", SECRET, {"key": SECRET})
    log.info("in extras", extra={"header": f"Bearer {SECRET}", "nested": {"k": [SECRET]}, "obj": _Leaky()})
    log.info("quoted %s", QUOTED_SECRET, extra={"pw": QUOTED_SECRET})
    try:
        raise RuntimeError(f"auth failed for {SECRET}")
    except RuntimeError:
        log.exception("in the exception")
    log.info("with stack", stack_info=True, extra={"s": SECRET})
    out = buf.getvalue()
    assert out.count("\n") >= 6
    assert "***" in out
    assert SECRET not in out
    assert QUOTED_SECRET not in out and "p@ss" not in out
    if fmt == "json":
        for line in _lines(buf):  # still valid JSON after redaction
            assert line["msg"]


def test_secret_is_redacted_for_handlers_after_ours() -> None:
    # A handler on a child logger runs after ours only if attached higher up; attach one to "worker" itself.
    buf, seen = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", secrets=[SECRET], stream=buf)
    extra_handler = logging.StreamHandler(seen)
    logging.getLogger("worker").addHandler(extra_handler)
    logging.getLogger("worker.z").info("token %s", SECRET)
    assert SECRET not in seen.getvalue() and "***" in seen.getvalue()


def test_log_observer_logs_changes_only() -> None:
    buf = io.StringIO()
    configure_logging("INFO", "json", stream=buf)
    obs = LogObserver()
    obs.rebalance("assigned", [("images", 0), ("images", 1)])
    for _ in range(3):
        obs.snapshot(Snapshot(in_flight=1))  # nothing changed vs defaults
    obs.snapshot(Snapshot(paused=True, breaker_state="open", in_flight=5))
    obs.snapshot(Snapshot(paused=True, breaker_state="open", in_flight=6))  # same state: silent
    obs.snapshot(Snapshot(paused=False, breaker_state="closed"))
    obs.rebalance("lost", [("images", 1)])
    obs.stopped(0, "signal")
    obs.stopped(2, "fatal: code 11")
    lines = _lines(buf)
    msgs = [(ln["level"], ln["msg"]) for ln in lines]
    assert msgs == [
        ("INFO", "partitions assigned: images:0, images:1"),
        ("WARNING", "circuit breaker closed -> open"),
        ("INFO", "consumption paused"),
        ("INFO", "circuit breaker open -> closed"),
        ("INFO", "consumption resumed"),
        ("WARNING", "partitions lost: images:1"),
        ("INFO", "pipeline stopped: signal"),
        ("ERROR", "pipeline stopped: fatal: code 11"),
    ]
    assert lines[0]["partitions"] == ["images:0", "images:1"]
    assert lines[-1]["exit_code"] == 2
