"""``multidentify-worker replay``: re-publish dead letters to the input topic each came from (docs/design.md#replay).

Each input topic has its own format (``input_formats``), so without ``--to`` a dead letter goes back to the topic
its event was read from when the worker still reads it, and is skipped and counted otherwise
(:class:`replay_plan.Route`); ``--to`` sends every selected dead letter to one topic, ``--from-topic`` selects the
dead letters of one topic.

Sequence of one run:

1. Take the DLQ's end offsets per partition (right on Tansu too, see :func:`_kafka.end_offsets`): the run
   never reads past them, so dead letters written while it runs (including replayed events that fail again)
   wait for the next run.
2. Read the saved progress of the replay's own consumer group (``--group``; ignored with ``--restart``) and
   plan each partition's range (:func:`replay_plan.plan_partition`).
3. Read the ranges with ``assign()`` (no group join). Each selected record is re-published with its original
   key, value and headers to its target topic (:func:`replay_plan.decide`), throttled by ``--rate``.
4. Commit, about every second and at the end, the position past the records whose output the broker has
   acknowledged (idempotent producer, acks=all). An interrupted run resumes there: records acknowledged but
   not yet committed (at most ~1 s of them) are replayed again; none is lost.

A dry run reads the same ranges and prints what would happen; it creates no producer and commits nothing.

``--json`` prints one JSON document on stdout instead of the text (:meth:`Summary.document`, also when the run
cannot start: :func:`replay_plan.failure_document`), for scripts and the chart's replay Job; messages still go to
stderr. Exit codes: 0 done or stopped at ``--limit``, 1 errors, timeout or interrupted (progress saved; run again),
2 invalid arguments or settings (retrying cannot help).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from worker.api.errors import meaning
from worker.config import ConfigError, Settings
from worker.core.ratelimit import AimdRateLimiter
from worker.tools import _kafka
from worker.tools.replay_plan import (
    Headers,
    PartitionPlan,
    Progress,
    Republish,
    Route,
    Selection,
    Skip,
    Summary,
    code_of,
    decide,
    failure_document,
    original_topic,
    parse_time,
    plan_partition,
    sample_line,
)

COMMIT_INTERVAL_S = 1.0
FINAL_FLUSH_S = 10.0  # after --timeout: time still allowed to collect acknowledgements and commit
BATCH = 200


@dataclass(frozen=True)
class ReplayOptions:
    """One replay run. ``target_topic`` None = each dead letter back to its own input topic (``--to``);
    ``group`` None = :func:`default_group`;
    ``rate`` 0 = unlimited; ``limit`` = stop after that many republished records (None = no limit);
    ``allow_missing_key`` = republish dead letters whose original key was not kept with a null key."""

    selection: Selection = field(default_factory=Selection)
    target_topic: str | None = None
    group: str | None = None
    dry_run: bool = False
    restart: bool = False
    max_replays: int = 3
    rate: float = 0.0
    limit: int | None = None
    timeout_s: float = 300.0
    samples: int = 5
    allow_missing_key: bool = False


def default_group(dlq_topic: str, selection: Selection | None = None) -> str:
    """``multidentify-replay-<dlq>``, plus the selection's label when it has criteria.

    Saved progress is one position per DLQ partition: past it, every record counts as handled. A run for
    code 15 must not mark the -1308 records next to them as handled for a later run that wants everything,
    so each selection keeps its own progress (re-running the same command resumes it).
    """
    label = selection.label() if selection is not None else ""
    return f"multidentify-replay-{dlq_topic}" + (f"-{label}" if label else "")


def _new_consumer(conf: dict[str, Any]) -> Consumer:
    return Consumer(conf)


def _new_producer(conf: dict[str, Any]) -> Producer:
    return Producer(conf)


def replay(settings: Settings, options: ReplayOptions) -> Summary:
    """Run one replay and return its summary (``summary.ok`` False on errors or timeout). Raises ToolError when
    the DLQ cannot be read at all."""
    deadline = time.monotonic() + options.timeout_s
    dlq = settings.dlq_topic
    group = options.group or default_group(dlq, options.selection)
    summary = Summary(dlq, options.target_topic, group, options.dry_run, input_topics=settings.input_topics)
    conf = _kafka.consumer_config(settings, group)
    consumer = _new_consumer(conf)
    # Created first: the idempotent producer gets its producer id while the ranges are planned.
    producer = None if options.dry_run else _new_producer(_kafka.producer_config(settings))
    try:
        plans = _plan(consumer, conf, dlq, options, deadline)
        summary.plans = plans
        todo = {p.partition: p for p in plans if not p.empty}
        if not todo:
            return summary
        consumer.assign([TopicPartition(dlq, p.partition, p.start) for p in todo.values()])
        _Run(consumer, producer, options, summary, todo, deadline).loop()
        return summary
    finally:
        consumer.close()


def _remaining(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _plan(
    consumer: Consumer, conf: dict[str, Any], dlq: str, options: ReplayOptions, deadline: float
) -> list[PartitionPlan]:
    sel = options.selection
    partitions = _kafka.partitions_of(consumer, dlq, _remaining(deadline))
    if sel.partition is not None and sel.partition not in partitions:
        raise _kafka.ToolError(f"{dlq} has no partition {sel.partition} (partitions: {partitions})")
    wanted = [p for p in partitions if sel.partition is None or p == sel.partition]
    marks = _kafka.end_offsets(conf, dlq, wanted, _remaining(deadline))
    committed: dict[int, int | None] = {p: None for p in wanted}
    try:
        if not options.restart:
            for tp in consumer.committed([TopicPartition(dlq, p) for p in wanted], timeout=_remaining(deadline)):
                committed[tp.partition] = tp.offset if tp.offset >= 0 else None
        since: dict[int, int | None] = {p: None for p in wanted}
        if sel.since_ms is not None:
            # Only a hint: Tansu answers from append time and says 0 (not "none") past the end; every record is
            # checked against the window anyway.
            asked = [TopicPartition(dlq, p, sel.since_ms) for p in wanted]
            for tp in consumer.offsets_for_times(asked, timeout=_remaining(deadline)):
                since[tp.partition] = tp.offset if tp.error is None else None
    except KafkaException as exc:
        raise _kafka.ToolError(f"cannot read offsets of {dlq}: {exc}") from None
    plans = []
    for p in wanted:
        low, high = marks[p]
        plan = plan_partition(p, low, high, sel, committed=committed[p], since_offset=since[p])
        if plan is not None:
            plans.append(plan)
    return plans


class _Run:
    """The read → decide → produce → commit loop of one replay (one thread)."""

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer | None,
        options: ReplayOptions,
        summary: Summary,
        todo: dict[int, PartitionPlan],
        deadline: float,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.options = options
        self.summary = summary
        self.todo = todo
        self.open = set(todo)
        self.deadline = deadline
        self.progress = Progress()
        self.limiter = AimdRateLimiter(options.rate) if options.rate > 0 else None
        self.produced = 0
        self.route = Route(summary.input_topics, options.target_topic)

    def loop(self) -> None:
        last_commit = time.monotonic()
        try:
            while self.open and self.summary.stopped == "complete":
                if time.monotonic() >= self.deadline:
                    self.summary.stopped = "timeout"
                    break
                for msg in self.consumer.consume(BATCH, min(0.2, _remaining(self.deadline))):
                    if not self._handle(msg):
                        break
                if self.producer is not None:
                    self.producer.poll(0)
                    if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                        self._commit()
                        last_commit = time.monotonic()
        except KeyboardInterrupt:
            self.summary.stopped = "interrupted"  # then save what was acknowledged, below
        finally:
            if self.producer is not None:
                left = self.producer.flush(
                    max(0.1, min(FINAL_FLUSH_S, self.deadline + FINAL_FLUSH_S - time.monotonic()))
                )
                if left:
                    self._error(f"{left} republished record(s) not acknowledged; their dead letters stay uncommitted")
                self._commit()

    def _handle(self, msg: Message) -> bool:
        """Process one consumed message; False stops the current batch (limit reached or an error)."""
        p = msg.partition()
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                if p is not None:
                    self.open.discard(p)  # reached the high watermark, which is past the planned end
                return True
            if err.fatal() or err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED):
                self._error(f"reading the DLQ failed: {err}")
                return False
            return True  # transient: librdkafka retries
        offset = msg.offset()
        if p is None or offset is None or p not in self.open:
            return True
        plan = self.todo[p]
        if offset >= plan.end:
            self.open.discard(p)
            return True
        self.summary.read += 1
        key = msg.key()
        key_bytes = key.encode() if isinstance(key, str) else key
        ts_type, ts = msg.timestamp()
        timestamp = ts if ts_type != 0 and ts >= 0 else None
        origin = f"{self.summary.dlq_topic}/{p}/{offset}"
        selection = self.options.selection
        raw = msg.value()
        value = raw.encode() if isinstance(raw, str) else raw
        headers = _kafka.message_headers(msg)
        topic = original_topic(value, headers) if selection.from_topic is not None else None
        go_on = True
        if selection.matches(key_bytes, timestamp, topic):
            go_on = self._replay(value, headers, p, offset, code_of(key_bytes), origin, timestamp)
        else:
            self.progress.read(p, offset)
        if offset + 1 >= plan.end:
            self.open.discard(p)
        return go_on

    def _replay(
        self,
        value: bytes | None,
        headers: Headers,
        p: int,
        offset: int,
        code: str,
        origin: str,
        timestamp: int | None,
    ) -> bool:
        summary = self.summary
        outcome = decide(
            value,
            headers,
            origin=origin,
            max_replays=self.options.max_replays,
            route=self.route,
            allow_missing_key=self.options.allow_missing_key,
        )
        if isinstance(outcome, Republish) and self.producer is not None and not self._throttle():
            summary.stopped = "timeout"  # this record stays unread: the next run starts with it
            return False
        summary.selected[code] += 1
        if summary.dry_run and len(summary.samples) < self.options.samples:
            summary.samples.append(sample_line(origin, code, timestamp, outcome))
        if isinstance(outcome, Skip):
            summary.skip(outcome.reason, origin, outcome.original_topic)
            self.progress.read(p, offset)
            return True
        if self.producer is None:
            summary.delivered(code, outcome.topic)
            self.progress.read(p, offset)
        elif not self._produce(outcome, p, offset, code):
            return False
        self.produced += 1
        if self.options.limit is not None and self.produced >= self.options.limit:
            summary.stopped = "limit"
            return False
        return True

    def _produce(self, record: Republish, p: int, offset: int, code: str) -> bool:
        assert self.producer is not None
        progress, summary = self.progress, self.summary

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                progress.delivered(p, offset)
                summary.delivered(code, record.topic)
            else:
                progress.failed(p, offset)
                self._error(f"{summary.dlq_topic}/{p}/{offset}: delivery to {record.topic} failed: {err}")

        headers: list[tuple[str, str | bytes | None]] = list(record.headers)
        progress.sent(p, offset)
        progress.read(p, offset)
        while True:
            try:
                self.producer.produce(
                    record.topic, value=record.value, key=record.key, headers=headers, on_delivery=on_delivery
                )
                return True
            except BufferError:
                self.producer.poll(0.1)  # local queue full: wait for acknowledgements
                if time.monotonic() < self.deadline:
                    continue
                error: Exception = TimeoutError("the producer queue stayed full")
            except (KafkaException, TypeError, ValueError) as exc:
                error = exc
            progress.failed(p, offset)
            self._error(f"{summary.dlq_topic}/{p}/{offset}: cannot produce to {record.topic}: {error}")
            return False

    def _throttle(self) -> bool:
        """Wait for a token (serving delivery reports meanwhile); False when the deadline comes first."""
        if self.limiter is None:
            return True
        while (wait := self.limiter.try_acquire()) > 0:
            if time.monotonic() >= self.deadline:
                return False
            assert self.producer is not None
            self.producer.poll(min(0.05, wait))
        return True

    def _commit(self) -> None:
        positions = self.progress.positions()
        if not positions:
            return
        offsets = [TopicPartition(self.summary.dlq_topic, p, o) for p, o in sorted(positions.items())]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self._error(f"committing replay progress failed: {exc}")

    def _error(self, text: str) -> None:
        self.summary.errors.append(text)
        self.summary.stopped = "error"


# --- command line -----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Re-publish dead letters with their original key, value and headers (mdw.replay.count + 1), each to the "
        "input topic it was read from (input_topic; each topic has its own format), or all to --to. Reads only up "
        "to the DLQ's end offsets at start; progress is saved in its own consumer group, so an interrupted replay "
        "resumes instead of repeating. Dead letters without their original value, without their original key "
        "(unless --allow-missing-key) or from a topic the worker no longer reads (unless --to) are skipped and "
        "counted per reason."
    )
    sel = parser.add_argument_group("selection (all given criteria must hold)")
    sel.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="CODE",
        help="dead-letter code (the record key), e.g. 15, -1308, invalid_json; repeatable",
    )
    sel.add_argument(
        "--since", metavar="TIME", help="dead-lettered at or after TIME (ISO 8601, no zone = UTC, or epoch ms)"
    )
    sel.add_argument("--until", metavar="TIME", help="dead-lettered before TIME (ISO 8601 or epoch ms)")
    sel.add_argument("--partition", type=int, metavar="P", help="only this DLQ partition")
    sel.add_argument("--from-offset", type=int, metavar="A", help="first DLQ offset (inclusive; needs --partition)")
    sel.add_argument("--to-offset", type=int, metavar="B", help="last DLQ offset (inclusive; needs --partition)")
    sel.add_argument(
        "--from-topic",
        metavar="TOPIC",
        help="only dead letters of events read from TOPIC (their original.topic); one the worker no longer reads "
        "needs --to",
    )
    run_ = parser.add_argument_group("run")
    run_.add_argument(
        "--dry-run", action="store_true", help="count per code and print samples; produce nothing, commit nothing"
    )
    run_.add_argument(
        "--json",
        action="store_true",
        help="print one JSON summary document on stdout (counts by code and skip reason, per-partition ranges, "
        "status and exit_code) instead of text, also when the run cannot start",
    )
    run_.add_argument("--samples", type=int, default=5, metavar="N", help="sample lines in a dry run (default 5)")
    run_.add_argument(
        "--to",
        dest="target_topic",
        metavar="TOPIC",
        help="publish every selected dead letter here (default: each back to the input topic it came from; those "
        "from a topic the worker no longer reads are skipped)",
    )
    run_.add_argument(
        "--group",
        metavar="GROUP",
        help="consumer group keeping the progress (default multidentify-replay-<dlq topic>, plus a label of the "
        "selection when one is given, so each selection resumes its own progress)",
    )
    run_.add_argument("--restart", action="store_true", help="ignore saved progress and read the whole range")
    run_.add_argument(
        "--max-replays", type=int, default=3, metavar="N", help="skip records already replayed N times (default 3)"
    )
    run_.add_argument(
        "--allow-missing-key",
        action="store_true",
        help="republish dead letters whose original key (over 64 KiB) was not kept with a null key; without it they "
        "are skipped and counted, since a null key changes the partition and the key's order",
    )
    run_.add_argument("--rate", type=float, default=0.0, metavar="N", help="records per second (default 0: unlimited)")
    run_.add_argument("--limit", type=int, metavar="N", help="stop after N republished records (progress is saved)")
    run_.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="give up after S seconds (default 300; +10 s to collect acknowledgements and commit)",
    )
    _kafka.add_connection_flags(parser)


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    """Raises ValueError with an operator-facing message."""
    selection = Selection(
        codes=frozenset(args.code),
        since_ms=parse_time(args.since) if args.since else None,
        until_ms=parse_time(args.until) if args.until else None,
        partition=args.partition,
        from_offset=args.from_offset,
        to_offset=args.to_offset,
        from_topic=args.from_topic,
    )
    problems = selection.problems()
    if args.max_replays < 1:
        problems.append("--max-replays must be ≥ 1")
    if args.rate < 0 or args.timeout <= 0 or (args.limit is not None and args.limit < 1) or args.samples < 0:
        problems.append("--rate must be ≥ 0, --timeout > 0, --limit ≥ 1, --samples ≥ 0")
    if problems:
        raise ValueError("; ".join(problems))
    return ReplayOptions(
        selection=selection,
        target_topic=args.target_topic,
        group=args.group,
        dry_run=args.dry_run,
        restart=args.restart,
        max_replays=args.max_replays,
        rate=args.rate,
        limit=args.limit,
        timeout_s=args.timeout,
        samples=args.samples,
        allow_missing_key=args.allow_missing_key,
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Exit codes: 0 done (or stopped at --limit), 1 errors, timeout or interrupted, 2 invalid arguments or
    configuration. With ``--json`` the outcome is one JSON document on ``out`` whatever happens."""
    out = out or sys.stdout
    as_json = bool(getattr(args, "json", False))

    def fail(status: str, code: int, message: str, **where: Any) -> int:
        print(f"replay: {message}", file=sys.stderr)
        if as_json:
            _print_json(failure_document(status, code, message, dry_run=bool(args.dry_run), **where), out)
        return code

    try:
        options = options_from_args(args)
        settings = _kafka.load_settings(args)
    except (ValueError, ConfigError) as exc:
        return fail("invalid", 2, str(exc))
    target, source = options.target_topic, options.selection.from_topic
    group = options.group or default_group(settings.dlq_topic, options.selection)
    where: dict[str, Any] = {
        "dlq_topic": settings.dlq_topic,
        "target_topic": Route(settings.input_topics, target).single,
        "input_topics": settings.input_topics,
        "group": group,
    }
    # Never into the outputs (the DLQ among the input topics is refused with the settings, config.load()).
    if target == settings.dlq_topic:
        return fail("invalid", 2, "the target topic is the DLQ itself", **where)
    if target == settings.results_topic:
        message = (
            f"the target topic is the results topic (results_topic = {settings.results_topic}): raw input events "
            "would be written into the result records"
        )
        return fail("invalid", 2, message, **where)
    if target is None and source is not None and source not in settings.input_topics:
        # Every one would be skipped, and this selection's saved progress would then pass them for good.
        message = (
            f"--from-topic {source} is not an input topic (input_topic = {settings.input_topic}); "
            "name where they go with --to"
        )
        return fail("invalid", 2, message, **where)
    try:
        summary = replay(settings, options)
    except _kafka.ToolError as exc:
        return fail("error", 1, str(exc), **where)
    if as_json:
        _print_json(summary.document(meaning), out)
    else:
        for line in summary.render(meaning):
            print(line, file=out)
    return summary.exit_code


def _print_json(document: dict[str, Any], out: TextIO) -> None:
    """One line: a log collector keeps it as one record; ``jq .`` pretty-prints it."""
    print(orjson.dumps(document).decode(), file=out, flush=True)
