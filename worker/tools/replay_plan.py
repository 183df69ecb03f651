"""What `replay` reads and what it does with each dead letter (no I/O).

- :class:`Selection`: which dead letters count (codes = record keys, a time window on the record timestamp,
  one partition and an inclusive offset range, the topic the event was read from); all given criteria must hold.
- :class:`Route`: where a dead letter goes. Each input topic has its own format (``input_formats``), so a dead
  letter goes back to the topic it was read from (``original.topic``) when the worker still reads that topic, and
  is skipped otherwise; ``--to`` sends every selected dead letter to one topic instead. Replay never changes a
  record's topic unless ``--to`` says so, with one input topic as with several.
- :func:`plan_partition`: the offset range to read in one DLQ partition, bounded by the end offset taken at
  start (so the replay never reads dead letters written while it runs) and by saved progress.
- :func:`decide`: a dead letter → the record to re-publish and its topic (original key, value and headers,
  byte-for-byte, plus ``mdw.replay.count`` = previous + 1 and ``mdw.replayed.from``), or a reason to skip it.
  A dead letter that lacks its original value can never be replayed; one that lacks its original key (over
  64 KiB, not kept) only with ``allow_missing_key``, because a null key changes the partition and the key's order.
- :class:`Progress`: the offset to commit per partition: past every record read, except that a republished
  record counts only once the broker acknowledged it (so a crash repeats, never loses).
- :class:`Summary`: counts for the operator (per code, per target topic, per skip reason), as text
  (:meth:`Summary.render`) or as one JSON document for scripts and Jobs (:meth:`Summary.document`;
  :func:`failure_document` when the run could not start). The document's
  ``exit_code`` is the command's: 0 done or stopped at the limit, 1 errors, timeout or interrupted (progress saved),
  2 invalid arguments or settings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.core import records

Headers = list[tuple[str, bytes | None]]

H_REPLAYED_FROM = "mdw.replayed.from"  # "<dlq topic>/<partition>/<offset>" of the dead letter replayed

SKIP_MAX_REPLAYS = "max replays"
SKIP_VALUE_OMITTED = "value omitted"
SKIP_KEY_OMITTED = "key omitted"
SKIP_BAD_ENVELOPE = "unparseable envelope"
SKIP_NOT_INPUT_TOPIC = "not an input topic"  # read from a topic the worker no longer reads, and no --to

NO_KEY = "(no key)"

SKIP_EXAMPLES = 5  # coordinates listed per skip reason in the summary
SKIP_TOPICS = 20  # original topics named under SKIP_NOT_INPUT_TOPIC; the others are counted as OTHER_TOPICS
OTHER_TOPICS = "(other topics)"
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
SKIP_HINTS = {
    SKIP_KEY_OMITTED: (
        "their original key (over 64 KiB) was not kept; republishing with a null key changes their partition and "
        "key order. To do it anyway: --allow-missing-key, with --partition/--from-offset/--to-offset for just them"
    ),
    SKIP_VALUE_OMITTED: (
        "their original value was too large to embed, so the DLQ cannot replay them; each dead letter names the "
        "input topic, partition and offset where the value stays while that topic retains it"
    ),
    SKIP_NOT_INPUT_TOPIC: (
        "the worker no longer reads the topic they came from, and each input topic has its own format, so replay "
        "puts a record back only on its own topic. To send them elsewhere: --from-topic TOPIC --to TARGET (their own "
        "selection, so their own progress)"
    ),
}


def parse_time(text: str) -> int:
    """Milliseconds since the epoch from epoch milliseconds (digits) or ISO 8601 (no zone = UTC).

    Raises ValueError with a message naming the accepted forms.
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither epoch milliseconds nor ISO 8601 (e.g. 2024-05-01T12:00:00Z)") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return round(instant.timestamp() * 1000)


def code_of(key: bytes | None) -> str:
    """The dead-letter code of a DLQ record key (UTF-8; undecodable bytes shown as U+FFFD)."""
    return NO_KEY if key is None else key.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters to replay. Empty criteria select everything.

    ``since_ms`` is inclusive and ``until_ms`` exclusive (record timestamps, i.e. when a record was
    dead-lettered); ``from_offset``/``to_offset`` are both inclusive and need ``partition``; ``from_topic`` is the
    input topic the event was read from (:func:`original_topic`).
    """

    codes: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    from_topic: str | None = None

    def problems(self) -> list[str]:
        """What is inconsistent about this selection (empty when it is usable)."""
        out = []
        if (self.from_offset is not None or self.to_offset is not None) and self.partition is None:
            out.append("--from-offset/--to-offset need --partition (offsets are per partition)")
        if self.partition is not None and self.partition < 0:
            out.append("--partition must be ≥ 0")
        if any(o is not None and o < 0 for o in (self.from_offset, self.to_offset)):
            out.append("offsets must be ≥ 0")
        if self.from_offset is not None and self.to_offset is not None and self.from_offset > self.to_offset:
            out.append("--from-offset must not exceed --to-offset")
        if self.since_ms is not None and self.until_ms is not None and self.since_ms >= self.until_ms:
            out.append("--since must be before --until")
        if self.from_topic is not None and not _TOPIC_NAME.match(self.from_topic):
            out.append("--from-topic: topic names use letters, digits, '.', '_' and '-'")
        return out

    def label(self) -> str:
        """A canonical, group-id-safe name of the criteria ("" when there are none): two runs with the same
        criteria get the same label, so they can share saved progress."""
        parts = []
        if self.codes:
            parts.append("code=" + ",".join(sorted(self.codes)))
        if self.partition is not None:
            lo = "" if self.from_offset is None else self.from_offset
            hi = "" if self.to_offset is None else self.to_offset
            parts.append(f"p{self.partition}={lo}..{hi}")
        if self.since_ms is not None or self.until_ms is not None:
            since = "" if self.since_ms is None else self.since_ms
            until = "" if self.until_ms is None else self.until_ms
            parts.append(f"t={since}..{until}")
        if self.from_topic is not None:
            parts.append(f"from={self.from_topic}")
        label = "-".join(parts)
        if len(label) > 100 or not all(ch.isascii() and ch.isprintable() and not ch.isspace() for ch in label):
            label = "sel-" + hashlib.sha1(label.encode(), usedforsecurity=False).hexdigest()[:12]
        return label

    def matches(self, key: bytes | None, timestamp_ms: int | None, topic: str | None = None) -> bool:
        """Whether a record inside the planned range is selected (codes, time window and, with ``from_topic``, its
        original ``topic``: None when it is unknown, which ``from_topic`` never selects)."""
        if self.codes and (key is None or code_of(key) not in self.codes):
            return False
        if self.from_topic is not None and topic != self.from_topic:
            return False
        if self.since_ms is not None or self.until_ms is not None:
            if timestamp_ms is None:
                return False
            if self.since_ms is not None and timestamp_ms < self.since_ms:
                return False
            if self.until_ms is not None and timestamp_ms >= self.until_ms:
                return False
        return True


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    """Read offsets ``start`` ≤ o < ``end`` of one DLQ partition. ``saved`` is the committed progress that moved
    the start forward (None when it did not, or with ``--restart``)."""

    partition: int
    start: int
    end: int
    saved: int | None = None

    @property
    def empty(self) -> bool:
        return self.start >= self.end


def plan_partition(
    partition: int,
    low: int,
    high: int,
    selection: Selection,
    *,
    committed: int | None = None,
    since_offset: int | None = None,
) -> PartitionPlan | None:
    """The range to read in ``partition`` (None when the selection excludes the partition).

    ``high`` is the end offset taken at start (exclusive). ``committed`` is the saved progress (pass None to
    ignore it). ``since_offset`` is the broker's answer to offsets_for_times(since): only a hint to skip
    older records (every record is still checked against the window); -1 (none at or after) → nothing.
    """
    if selection.partition is not None and partition != selection.partition:
        return None
    start, end = low, high
    if selection.from_offset is not None:
        start = max(start, selection.from_offset)
    if selection.to_offset is not None:
        end = min(end, selection.to_offset + 1)
    if since_offset is not None:
        start = end if since_offset < 0 else max(start, since_offset)
    saved = None
    if committed is not None and committed >= 0 and committed > start:
        start, saved = committed, committed
    return PartitionPlan(partition, start, max(start, end), saved)


@dataclass(frozen=True, slots=True)
class Route:
    """Where dead letters go: ``to`` when given (``--to``), else back to the topic each was read from when it is
    one of ``input_topics`` (the worker's, in order)."""

    input_topics: tuple[str, ...]
    to: str | None = None

    @property
    def single(self) -> str | None:
        """The one topic every replayed record goes to (``to``, or the only input topic), else None."""
        return self.to or (self.input_topics[0] if len(self.input_topics) == 1 else None)

    def target(self, original_topic: str | None) -> str | None:
        """The topic to produce to, or None when the dead letter must be skipped."""
        if self.to is not None:
            return self.to
        return original_topic if original_topic in self.input_topics else None


@dataclass(frozen=True, slots=True)
class Republish:
    """The record to produce to ``topic``: the original key, value and headers with the replay lineage appended."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    replay_count: int
    event_id: str | None
    topic: str


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str  # one of SKIP_*
    detail: str
    event_id: str | None = None
    original_topic: str | None = None  # with SKIP_NOT_INPUT_TOPIC: the topic it came from


def _header_topic(dlq_headers: Sequence[tuple[str, bytes | None]]) -> str | None:
    for name, value in dlq_headers:
        if name == records.H_ORIGINAL_TOPIC and value:
            return value.decode("utf-8", errors="replace")
    return None


def _envelope_topic(original: Any) -> str | None:
    topic = original.get("topic") if isinstance(original, dict) else None
    return topic if isinstance(topic, str) and topic else None


def original_topic(value: bytes | None, dlq_headers: Sequence[tuple[str, bytes | None]]) -> str | None:
    """The topic a dead letter's event was read from: the envelope's ``original.topic``, else the DLQ record's
    ``mdw.original.topic`` header (the worker writes both), else None. The same precedence as :func:`decide`."""
    try:
        envelope = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        envelope = None
    found = _envelope_topic(envelope.get("original")) if isinstance(envelope, dict) else None
    return found or _header_topic(dlq_headers)


def _b64(value: Any, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None


def _original_headers(raw: Any) -> Headers:
    if not isinstance(raw, list):
        raise ValueError("original.headers is not a list")
    out: Headers = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError("original.headers holds an entry that is not a [name, value] pair")
        out.append((item[0], _b64(item[1], f"header {item[0]!r}")))
    return out


def decide(
    value: bytes | None,
    dlq_headers: Sequence[tuple[str, bytes | None]],
    *,
    origin: str,
    max_replays: int,
    route: Route,
    allow_missing_key: bool = False,
) -> Republish | Skip:
    """What to do with one dead letter (``value`` = the envelope, ``origin`` = "<dlq topic>/<partition>/<offset>").

    The target is ``route``'s (:class:`Route`) for the topic the event was read from (:func:`original_topic`).
    A dead letter whose topic the worker no longer reads is skipped (``SKIP_NOT_INPUT_TOPIC``) unless ``route.to``
    names a topic; that check comes last, so the reason given is one that ``--to`` would fix. A dead letter that
    names no topic at all (neither envelope nor header) is unreadable unless ``route.to`` places it.

    The previous replay count is the highest of the DLQ record's ``mdw.replay.count`` header, the envelope's
    ``replay_count`` and the original headers' count (the loop guard errs on the side of refusing); a record
    with a count ≥ ``max_replays`` is skipped. The original ``mdw.*`` headers are dropped (they are ours and
    are rewritten), every other original header is kept in order, duplicates included.

    An omitted value is always skipped. An omitted key (``original.key_omitted``) is skipped unless
    ``allow_missing_key``: the record would go out with a null key, so to another partition than its key's and out
    of that key's order. A record that never had a key is republished without one as it was.
    """
    try:
        envelope = orjson.loads(value) if value is not None else None
        if not isinstance(envelope, dict):
            raise ValueError("the value is not a JSON object")
        if envelope.get("schema_version") != records.SCHEMA_VERSION:
            raise ValueError(f"schema_version {envelope.get('schema_version')!r} is not 1")
        original = envelope.get("original")
        if not isinstance(original, dict):
            raise ValueError("no 'original' object")
        event_id = envelope.get("event_id") if isinstance(envelope.get("event_id"), str) else None
        omitted = original.get("value_omitted") is True
        key_omitted = original.get("key_omitted") is True
        original_value = None if omitted else _b64(original.get("value_base64"), "original.value_base64")
        key = _b64(original.get("key_base64"), "original.key_base64")
        headers = _original_headers(original.get("headers", []))
        topic = _envelope_topic(original) or _header_topic(dlq_headers)
        if topic is None and route.to is None:
            raise ValueError("no original.topic (nor mdw.original.topic header): --to TOPIC names where it goes")
    except (orjson.JSONDecodeError, ValueError) as exc:
        return Skip(SKIP_BAD_ENVELOPE, str(exc))
    envelope_count = envelope.get("replay_count")
    previous = max(
        records.replay_count(dlq_headers),
        records.replay_count(headers),
        envelope_count if isinstance(envelope_count, int) and not isinstance(envelope_count, bool) else 0,
    )
    if previous >= max_replays:
        return Skip(SKIP_MAX_REPLAYS, f"already replayed {previous} time(s) (limit {max_replays})", event_id)
    if omitted:
        size = original.get("value_size")
        return Skip(SKIP_VALUE_OMITTED, f"the original value ({size} bytes) was too large to embed", event_id)
    if key_omitted and not allow_missing_key:
        detail = (
            "the original key (over 64 KiB) was not kept; a null key would change the partition and the key's order "
            "(--allow-missing-key republishes it so)"
        )
        return Skip(SKIP_KEY_OMITTED, detail, event_id)
    target = route.target(topic)
    if target is None:
        inputs = ", ".join(route.input_topics)
        detail = f"it was read from {topic!r}, which is not an input topic ({inputs}); --to TOPIC republishes it there"
        return Skip(SKIP_NOT_INPUT_TOPIC, detail, event_id, topic)
    kept = [(name, v) for name, v in headers if not name.lower().startswith(records.HEADER_PREFIX)]
    kept += [(records.H_REPLAY_COUNT, str(previous + 1).encode()), (H_REPLAYED_FROM, origin.encode())]
    return Republish(key, original_value, kept, previous + 1, event_id, target)


class Progress:
    """Commit positions per partition for records read in offset order.

    ``read`` every record (selected or not) as it is consumed; ``sent`` the ones produced, then ``delivered``
    or ``failed`` from the delivery report. ``positions`` is, per partition, the next offset after the
    records read, held back at the lowest offset still awaiting (or having failed) delivery.
    """

    def __init__(self) -> None:
        self._next: dict[int, int] = {}
        self._pending: dict[int, set[int]] = {}
        self._failed: dict[int, int] = {}

    def read(self, partition: int, offset: int) -> None:
        self._next[partition] = offset + 1

    def sent(self, partition: int, offset: int) -> None:
        self._pending.setdefault(partition, set()).add(offset)

    def delivered(self, partition: int, offset: int) -> None:
        self._pending.get(partition, set()).discard(offset)

    def failed(self, partition: int, offset: int) -> None:
        self.delivered(partition, offset)
        self._failed[partition] = min(offset, self._failed.get(partition, offset))

    @property
    def in_flight(self) -> int:
        return sum(len(s) for s in self._pending.values())

    def positions(self) -> dict[int, int]:
        out = {}
        for p, nxt in self._next.items():
            held = [*self._pending.get(p, ()), *([self._failed[p]] if p in self._failed else [])]
            out[p] = min([nxt, *held])
        return out


@dataclass
class Summary:
    """What a replay did (or, in a dry run, would do). ``target_topic`` is ``--to`` (None: each dead letter back to
    its own topic among ``input_topics``)."""

    dlq_topic: str
    target_topic: str | None
    group: str
    dry_run: bool
    plans: list[PartitionPlan] = field(default_factory=list)
    input_topics: tuple[str, ...] = ()
    read: int = 0
    selected: Counter[str] = field(default_factory=Counter)
    replayed: Counter[str] = field(default_factory=Counter)  # by code: delivered (dry run: would be replayed)
    replayed_to: Counter[str] = field(default_factory=Counter)  # the same, by target topic
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_at: dict[str, list[str]] = field(default_factory=dict)  # reason → the first SKIP_EXAMPLES origins
    stray: Counter[str] = field(default_factory=Counter)  # SKIP_NOT_INPUT_TOPIC by original topic (bounded)
    errors: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    stopped: str = "complete"  # complete | limit | timeout | interrupted | error

    def delivered(self, code: str, topic: str) -> None:
        """Count a replayed dead letter (acknowledged, or in a dry run one that would be replayed)."""
        self.replayed[code] += 1
        self.replayed_to[topic] += 1

    def skip(self, reason: str, origin: str, original_topic: str | None = None) -> None:
        """Count a skipped dead letter; its coordinates are kept for the first few of each reason, and the topic a
        dead letter of a topic no longer read came from for the first SKIP_TOPICS topics."""
        self.skipped[reason] += 1
        at = self.skipped_at.setdefault(reason, [])
        if len(at) < SKIP_EXAMPLES:
            at.append(origin)
        if reason == SKIP_NOT_INPUT_TOPIC:
            topic = original_topic or "?"
            known = topic in self.stray or len(self.stray) < SKIP_TOPICS
            self.stray[topic if known else OTHER_TOPICS] += 1

    @property
    def ok(self) -> bool:
        return not self.errors and self.stopped in ("complete", "limit")

    @property
    def exit_code(self) -> int:
        """The command's exit code: 0 done (or stopped at the limit), 1 errors, timeout or interrupted."""
        return 0 if self.ok else 1

    def document(self, meaning: Callable[[str], str]) -> dict[str, Any]:
        """The summary as one JSON-ready document (``replay --json``); ``meaning`` explains a code.

        ``status`` is how the run ended (complete, limit, timeout, interrupted, error); ``replayed`` counts records
        the broker acknowledged (a dry run: the ones it would republish), by code and by target topic;
        ``target_topic`` is the one topic replayed records go to (``--to``, or the only input topic; null when
        several input topics each get their own back). Codes, topics and reasons are sorted.
        """
        codes = sorted({*self.selected, *self.replayed})
        return {
            "status": "error" if self.errors else self.stopped,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "dry_run": self.dry_run,
            "dlq_topic": self.dlq_topic,
            "target_topic": Route(self.input_topics, self.target_topic).single,
            "input_topics": list(self.input_topics),
            "group": self.group,
            "partitions": [
                {
                    "partition": plan.partition,
                    "start_offset": plan.start,
                    "end_offset": plan.end,
                    "last_offset": None if plan.empty else plan.end - 1,
                    "records": plan.end - plan.start,
                    "resumed_from": plan.saved,
                }
                for plan in self.plans
            ],
            "read": self.read,
            "selected": _counts(self.selected),
            "replayed": {**_counts(self.replayed), "by_topic": dict(sorted(self.replayed_to.items()))},
            "skipped": {
                **_counts(self.skipped, "by_reason"),
                "examples": {reason: list(self.skipped_at.get(reason, [])) for reason in sorted(self.skipped)},
                "not_input_topics": dict(sorted(self.stray.items())),
            },
            "codes": {code: meaning(code) for code in codes},
            "samples": list(self.samples),
            "errors": list(self.errors),
        }

    def render(self, meaning: Callable[[str], str]) -> list[str]:
        """Lines for the operator; ``meaning`` explains a code."""
        mode = "  [dry run: nothing produced, nothing committed]" if self.dry_run else ""
        target = self.target_topic or f"each dead letter's own topic ({', '.join(self.input_topics)})"
        lines = [f"replay {self.dlq_topic} → {target} (progress group {self.group}){mode}"]
        for plan in self.plans:
            saved = f" (resumed at saved progress {plan.saved}; --restart reads earlier ones)" if plan.saved else ""
            span = "nothing to read" if plan.empty else f"offsets {plan.start}..{plan.end - 1}"
            lines.append(f"  partition {plan.partition}: {span}{saved}")
        lines.append(f"read: {self.read}")
        lines.append(f"selected: {sum(self.selected.values())}")
        lines += _per_key(self.selected, meaning)
        lines.append(f"{'would replay' if self.dry_run else 'replayed'}: {sum(self.replayed.values())}")
        lines += _per_key(self.replayed, meaning)
        lines += [f"  → {topic}: {n}" for topic, n in sorted(self.replayed_to.items())]
        lines.append(f"skipped: {sum(self.skipped.values())}")
        for reason, n in sorted(self.skipped.items()):
            at = self.skipped_at.get(reason, [])
            more = ", …" if n > len(at) else ""
            lines.append(f"  {reason}: {n}" + (f" (at {', '.join(at)}{more})" if at else ""))
            if reason == SKIP_NOT_INPUT_TOPIC and self.stray:
                lines.append("    read from: " + ", ".join(f"{t}: {c}" for t, c in self.stray.most_common()))
            if reason in SKIP_HINTS:
                lines.append(f"    {SKIP_HINTS[reason]}")
        if self.samples:
            lines.append("samples:")
            lines += [f"  {s}" for s in self.samples]
        lines.append(f"errors: {len(self.errors)}")
        lines += [f"  {e}" for e in self.errors]
        if self.stopped == "limit":
            lines.append("stopped at --limit; run again to continue")
        elif self.stopped in ("timeout", "interrupted"):
            why = "timed out" if self.stopped == "timeout" else "interrupted"
            lines.append(f"{why} before the end offsets; progress is saved, run again to continue")
        return lines


def _counts(counts: Counter[str], by: str = "by_code") -> dict[str, Any]:
    return {"total": sum(counts.values()), by: dict(sorted(counts.items()))}


def failure_document(
    status: str,
    exit_code: int,
    message: str,
    *,
    dry_run: bool,
    dlq_topic: str | None = None,
    target_topic: str | None = None,
    input_topics: Sequence[str] | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """The ``--json`` document of a run that could not start (``status`` "invalid" with exit code 2 for bad
    arguments or settings, "error" with 1 when the DLQ cannot be read): the keys of :meth:`Summary.document`, with
    nothing counted and the topics and group when they are known (``input_topics`` null when not)."""
    empty = Summary("", None, "", dry_run).document(lambda code: code)
    inputs = None if input_topics is None else list(input_topics)
    where = {"dlq_topic": dlq_topic, "target_topic": target_topic, "input_topics": inputs, "group": group}
    return {**empty, **where, "status": status, "ok": False, "exit_code": exit_code, "errors": [message]}


def _per_key(counts: Counter[str], meaning: Callable[[str], str]) -> list[str]:
    width = max((len(c) for c in counts), default=0)
    return [f"  {code.ljust(width)}  {n:>6}  {meaning(code)}" for code, n in sorted(counts.items())]


def sample_line(origin: str, code: str, timestamp_ms: int | None, outcome: Republish | Skip) -> str:
    """One line describing a selected dead letter and what happens to it."""
    when = records.rfc3339_ms(timestamp_ms) if timestamp_ms is not None and timestamp_ms >= 0 else "-"
    event = outcome.event_id or "-"
    if isinstance(outcome, Republish):
        size = "null" if outcome.value is None else f"{len(outcome.value)} B"
        verdict = f"replay to {outcome.topic} (count → {outcome.replay_count}, value {size})"
    else:
        verdict = f"skip: {outcome.reason} ({outcome.detail})"
    return f"{origin}  {when}  code={code}  event_id={event}  {verdict}"


def committed_or_none(offsets: Iterable[tuple[int, int]]) -> dict[int, int | None]:
    """``{partition: committed offset}`` from (partition, offset) pairs; negative (logical) offsets → None."""
    return {p: (o if o >= 0 else None) for p, o in offsets}
