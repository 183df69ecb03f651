"""The worker's outputs read back as typed records: a result or a dead letter per record, and a tally.

:func:`parse_output` turns one record of the results or the dead-letter topic into an :class:`Output`:
its kind, its code (``"result"`` or the dead-letter key), the event id, the input coordinates it names
(``source`` of a result, ``original`` of a dead letter), when it was written (by the record's own stamp
and by its Kafka timestamp), the worker instance, key and headers. Fields a record lacks (the naive loop
of the benchmarks writes only ``event_id`` and ``source``) read as ``None``, ``-1`` or ``""``. The raw
message stays available as ``message`` and its parsed value as ``doc`` unless the reader was told not to
keep them (``keep_messages=False``: a benchmark reading 100,000s of outputs keeps the fields only).

:class:`OutputReader` is a :class:`~worker.dev.harness.reader.TopicReader` of both output topics that
keeps :class:`Output` s, with waits on a condition (bounded in time, optionally failing only after a stall
without new outputs). :func:`tally` counts outputs against the events expected: unique, duplicates, lost,
by code, and the window from the first output to the last.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import orjson
from confluent_kafka import Message

from worker.dev.harness.reader import FETCH_WAIT_MS, TopicReader
from worker.dev.harness.topics import Topics

Headers = tuple[tuple[str, bytes | None], ...]
Kind = Literal["result", "dlq"]


@dataclass(frozen=True)
class Output:
    """One record the worker wrote: a result or a dead letter, with the input coordinates it names."""

    kind: Kind
    code: str  # "result", or the dead-letter key (the error code)
    event_id: str | None
    partition: int  # input coordinates (source.* of a result, original.* of a dead letter); -1 if absent
    offset: int
    written_ms: int  # processed_at_ms / dead_lettered_at_ms: stamped before the record was produced; -1 if absent
    ts: float  # the record's Kafka timestamp (set by the writer's producer), seconds since the epoch
    instance: str  # worker host/pid; "" if absent
    key: bytes | None
    headers: Headers
    message: Message | None = field(default=None, compare=False, repr=False)

    @functools.cached_property
    def doc(self) -> dict[str, Any]:
        """The record's value, parsed (needs the message: a reader with ``keep_messages=False`` drops it)."""
        if self.message is None:
            raise ValueError("this output was read without its message (keep_messages=False)")
        parsed: dict[str, Any] = orjson.loads(self.message.value() or b"null")
        return parsed


def parse_output(msg: Message, results_topic: str, *, keep_message: bool = True) -> Output:
    """The :class:`Output` of one record of ``results_topic`` or of the dead-letter topic."""
    value = msg.value()
    doc: dict[str, Any] = orjson.loads(value) if value else {}
    key = msg.key()
    is_result = msg.topic() == results_topic
    where = doc.get("source" if is_result else "original") or {}
    written = doc.get("processed_at_ms" if is_result else "dead_lettered_at_ms")
    return Output(
        kind="result" if is_result else "dlq",
        code="result" if is_result else (key or b"").decode("utf-8", "replace"),
        event_id=doc.get("event_id"),
        partition=int(where.get("partition", -1)),
        offset=int(where.get("offset", -1)),
        written_ms=int(written) if written is not None else -1,
        ts=msg.timestamp()[1] / 1000,
        instance=str((doc.get("worker") or {}).get("instance", "")),
        key=key,
        headers=_headers(msg),
        message=msg if keep_message else None,
    )


def _headers(msg: Message) -> Headers:
    # A consumed record's headers are a list of (name, value) pairs; value None for a header without one.
    pairs = cast(list[tuple[str, bytes | None]], msg.headers() or [])
    return tuple(pairs)


class OutputReader(TopicReader[Output]):
    """Reads the results and dead-letter topics of ``topics`` from the beginning and keeps every output."""

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        *,
        keep_messages: bool = True,
        fetch_wait_ms: int = FETCH_WAIT_MS,
    ) -> None:
        results = topics.results

        def convert(msg: Message) -> Output:
            return parse_output(msg, results, keep_message=keep_messages)

        super().__init__(bootstrap, topics.outputs, convert, fetch_wait_ms=fetch_wait_ms)

    @property
    def outputs(self) -> list[Output]:
        return self.items

    # -- views -----------------------------------------------------------------------------------------------

    def results(self) -> list[Output]:
        return [o for o in self.snapshot() if o.kind == "result"]

    def dead_letters(self) -> list[Output]:
        return [o for o in self.snapshot() if o.kind == "dlq"]

    def event_ids(self) -> set[str]:
        return {o.event_id for o in self.snapshot() if o.event_id is not None}

    def unique(self) -> int:
        return len(self.event_ids())

    def by_coordinates(self) -> dict[tuple[int, int], list[Output]]:
        out: dict[tuple[int, int], list[Output]] = {}
        for o in self.snapshot():
            out.setdefault((o.partition, o.offset), []).append(o)
        return out

    def summary(self) -> str:
        outputs = self.snapshot()
        return f"{len(outputs)} outputs: {dict(Counter(o.code for o in outputs))}"

    # -- waits -----------------------------------------------------------------------------------------------

    def wait(
        self, predicate: Callable[[OutputReader], object], timeout: float, *, stall_s: float | None = None
    ) -> bool:
        """Until ``predicate(self)`` holds (True); False after ``timeout``, or ``stall_s`` without a new output.

        Reads meanwhile, unless a background thread does.
        """
        start = time.monotonic()
        seen, last_progress = self.count(), start
        while not predicate(self):
            now = time.monotonic()
            if self.count() != seen:
                seen, last_progress = self.count(), now
            if now - start > timeout or (stall_s is not None and now - last_progress > stall_s):
                return False
            if self.reading_in_background:
                time.sleep(0.05)
            else:
                self.poll(0.2)
        return True

    def wait_for(
        self,
        predicate: Callable[[OutputReader], object],
        timeout: float,
        what: str,
        *,
        stall_s: float | None = None,
        diagnose: Callable[[], str] | None = None,
    ) -> None:
        """:meth:`wait`, failing with ``what``, the outputs so far and ``diagnose()`` (what the workers say)."""
        if not self.wait(predicate, timeout, stall_s=stall_s):
            state = f"; workers: {diagnose()}" if diagnose else ""
            bound = f"no progress for {stall_s:.0f}s" if stall_s is not None else f"timed out after {timeout:.0f}s"
            raise TimeoutError(f"{bound} waiting for {what} ({self.summary()}){state}")

    def wait_for_unique(self, n: int, timeout: float, alive: Callable[[], bool] | None = None) -> bool:
        """Until ``n`` distinct events have an output (True), ``timeout`` passes, or ``alive()`` turns False
        (then for 3 s more: outputs the process wrote may still be on their way)."""
        deadline = time.monotonic() + timeout
        seen: set[str | None] = set()
        index = 0
        while time.monotonic() < deadline:
            new, index = self.since(index)
            seen.update(o.event_id for o in new)
            if len(seen) >= n:
                return True
            if alive is not None and not alive():
                deadline = min(deadline, time.monotonic() + 3.0)
                alive = None
            if self.reading_in_background:
                time.sleep(0.05)
            else:
                self.poll(0.1)
        return False

    def first_ts(self, timeout: float) -> float | None:
        """The Kafka timestamp of the earliest of the first outputs, once there is one; None after ``timeout``."""
        if not self.wait(lambda r: r.count() > 0, timeout):
            return None
        first, _ = self.since(0)
        return min(o.ts for o in first[:1000])


def read_outputs(bootstrap: str, topics: Topics, timeout: float = 15.0) -> list[Output]:
    """Every output in the topics now (read up to the end of each partition)."""
    with OutputReader(bootstrap, topics) as reader:
        reader.read_to_end(timeout)
        return reader.outputs


@dataclass(frozen=True)
class Tally:
    """What came out for a set of expected events (every event, when none were named)."""

    expected: int
    outputs: int
    unique: int
    duplicates: int  # outputs beyond the first per event
    lost: int  # expected events with no output at all
    kinds: dict[str, int]  # outputs by code: "result" or the dead-letter key
    first_ts: float
    last_ts: float

    @property
    def results(self) -> int:
        return self.kinds.get("result", 0)

    @property
    def dead_letters(self) -> int:
        return self.outputs - self.results

    @property
    def window_s(self) -> float:
        return max(0.0, self.last_ts - self.first_ts)

    @property
    def rate(self) -> float:
        """Outputs per second from the first to the last output ((n − 1) intervals over the window)."""
        return (self.outputs - 1) / self.window_s if self.window_s > 0 and self.outputs > 1 else 0.0


def tally(outputs: Iterable[Output], expected_ids: Sequence[str] | None = None) -> Tally:
    """Count ``outputs`` for ``expected_ids`` (outputs of other events are left out), or all of them.

    An output without an event id (a dead letter of an unreadable record) counts as an output of its own.
    """
    wanted = None if expected_ids is None else set(expected_ids)
    mine = [o for o in outputs if wanted is None or o.event_id in wanted]
    counts = Counter(o.event_id for o in mine if o.event_id is not None)
    expected = set(counts) if wanted is None else wanted
    return Tally(
        expected=len(expected),
        outputs=len(mine),
        unique=sum(1 for e in expected if counts.get(e)),
        duplicates=sum(max(0, counts[e] - 1) for e in expected if counts.get(e)),
        lost=sum(1 for e in expected if not counts.get(e)),
        kinds=dict(Counter(o.code for o in mine)),
        first_ts=min((o.ts for o in mine), default=0.0),
        last_ts=max((o.ts for o in mine), default=0.0),
    )
