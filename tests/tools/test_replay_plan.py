"""The replay's decisions without a broker: selection, ranges, what is republished, what is committed."""

from __future__ import annotations

import base64

import orjson
import pytest

from worker.api.errors import meaning
from worker.core import records
from worker.tools.replay_plan import (
    H_REPLAYED_FROM,
    OTHER_TOPICS,
    SKIP_BAD_ENVELOPE,
    SKIP_KEY_OMITTED,
    SKIP_MAX_REPLAYS,
    SKIP_NOT_INPUT_TOPIC,
    SKIP_TOPICS,
    SKIP_VALUE_OMITTED,
    PartitionPlan,
    Progress,
    Republish,
    Route,
    Selection,
    Skip,
    Summary,
    decide,
    failure_document,
    original_topic,
    parse_time,
    plan_partition,
)

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HOME = Route(("images",))  # the worker reads "images", the topic the test dead letters came from


def _dead_letter(
    value: bytes | None,
    *,
    key: bytes | None = b"cam-1",
    headers: tuple[tuple[str, bytes | None], ...] = (("traceparent", TRACEPARENT),),
    replay_count: int = 0,
    max_original_bytes: int = records.MAX_ORIGINAL_BYTES,
    topic: str = "images",
) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    source = records.Source(topic, 2, 41, 1_700_000_000_000, key, headers)
    error = records.ErrorInfo("15", "transient", "rate limited", 200, 5, 1_700_000_000_000, 1_700_000_001_000)
    envelope = records.build_dead_letter(
        value,
        event_id="e-1",
        error=error,
        source=source,
        worker_version="0.1.0",
        replay_count=replay_count,
        max_original_bytes=max_original_bytes,
    )
    return envelope, records.dead_letter_headers(source, error, "0.1.0", replay_count)


# --- time ---------------------------------------------------------------------------------------------------


def test_parse_time_reads_iso_8601_and_epoch_ms() -> None:
    assert parse_time("1700000000123") == 1_700_000_000_123
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20.5") == 1_700_000_000_500  # no zone = UTC
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


# --- selection ----------------------------------------------------------------------------------------------


def test_selection_by_code_compares_the_record_key() -> None:
    sel = Selection(codes=frozenset({"15", "-1308"}))
    assert sel.matches(b"15", None)
    assert sel.matches(b"-1308", None)
    assert not sel.matches(b"150", None)
    assert not sel.matches(None, None)
    assert Selection().matches(None, None)  # no criteria: everything


def test_time_window_is_since_inclusive_until_exclusive() -> None:
    sel = Selection(since_ms=1000, until_ms=2000)
    assert [sel.matches(b"15", t) for t in (999, 1000, 1999, 2000)] == [False, True, True, False]
    assert not sel.matches(b"15", None)  # no timestamp: cannot be inside a window


def test_selection_problems_name_the_flags() -> None:
    assert Selection(partition=1, from_offset=2, to_offset=5).problems() == []
    assert "--partition" in Selection(from_offset=2).problems()[0]
    assert "--to-offset" in Selection(partition=0, from_offset=5, to_offset=2).problems()[0]
    assert "--until" in Selection(since_ms=5, until_ms=5).problems()[0]


def test_each_selection_has_its_own_stable_label() -> None:
    assert Selection().label() == ""
    assert Selection(codes=frozenset({"15", "-1308"})).label() == "code=-1308,15"
    assert Selection(partition=1, from_offset=2, to_offset=4).label() == "p1=2..4"
    assert Selection(since_ms=0, until_ms=5).label() == "t=0..5"
    long = Selection(codes=frozenset(str(c) for c in range(100))).label()
    assert long.startswith("sel-") and len(long) == 16
    assert Selection(codes=frozenset({"a b"})).label().startswith("sel-")  # no spaces in a group id


# --- ranges -------------------------------------------------------------------------------------------------


def test_plan_is_bounded_by_the_end_offset_at_start() -> None:
    assert plan_partition(0, 3, 40, Selection()) == PartitionPlan(0, 3, 40)


def test_plan_offset_range_is_inclusive_and_only_for_its_partition() -> None:
    sel = Selection(partition=1, from_offset=5, to_offset=9)
    assert plan_partition(0, 0, 100, sel) is None
    assert plan_partition(1, 0, 100, sel) == PartitionPlan(1, 5, 10)
    assert plan_partition(1, 0, 7, sel) == PartitionPlan(1, 5, 7)  # never past the end at start


def test_plan_resumes_at_saved_progress() -> None:
    assert plan_partition(0, 0, 40, Selection(), committed=25) == PartitionPlan(0, 25, 40, saved=25)
    assert plan_partition(0, 30, 40, Selection(), committed=25) == PartitionPlan(0, 30, 40)  # older than the log
    done = plan_partition(0, 0, 40, Selection(), committed=40)
    assert done is not None and done.empty
    beyond = plan_partition(0, 0, 40, Selection(partition=0, to_offset=9), committed=20)
    assert beyond is not None and beyond.empty


def test_plan_uses_the_since_offset_as_a_start_hint() -> None:
    assert plan_partition(0, 0, 40, Selection(since_ms=1), since_offset=12) == PartitionPlan(0, 12, 40)
    none_after = plan_partition(0, 0, 40, Selection(since_ms=1), since_offset=-1)
    assert none_after is not None and none_after.empty


# --- decisions ----------------------------------------------------------------------------------------------


def test_decide_republishes_original_key_value_and_headers_byte_for_byte() -> None:
    value = b"\xff\xfe\x00not utf-8\x80"
    headers = (("traceparent", TRACEPARENT), ("dup", b"1"), ("dup", b"2"), ("nullhdr", None))
    envelope, dlq_headers = _dead_letter(value, key=b"\x00\xffkey", headers=headers)
    out = decide(envelope, dlq_headers, origin="face-dlq/3/17", max_replays=3, route=HOME)
    assert isinstance(out, Republish)
    assert out.key == b"\x00\xffkey"
    assert out.value == value
    assert out.headers == [*headers, (records.H_REPLAY_COUNT, b"1"), (H_REPLAYED_FROM, b"face-dlq/3/17")]
    assert out.replay_count == 1 and out.event_id == "e-1"


def test_decide_replaces_earlier_replay_headers_and_counts_on() -> None:
    headers = (("traceparent", TRACEPARENT), ("mdw.replay.count", b"1"), ("mdw.replayed.from", b"face-dlq/0/3"))
    envelope, dlq_headers = _dead_letter(b"{}", headers=headers, replay_count=1)
    out = decide(envelope, dlq_headers, origin="face-dlq/1/9", max_replays=3, route=HOME)
    assert isinstance(out, Republish)
    assert out.headers == [("traceparent", TRACEPARENT), ("mdw.replay.count", b"2"), (H_REPLAYED_FROM, b"face-dlq/1/9")]


def test_decide_keeps_a_missing_key_and_a_tombstone_value() -> None:
    envelope, dlq_headers = _dead_letter(None, key=None, headers=())
    out = decide(envelope, dlq_headers, origin="d/0/0", max_replays=3, route=HOME)
    assert isinstance(out, Republish)
    assert (out.key, out.value) == (None, None)


@pytest.mark.parametrize(("header_count", "envelope_count", "skipped"), [(2, 2, False), (3, 3, True), (0, 3, True)])
def test_decide_refuses_records_at_the_replay_limit(header_count: int, envelope_count: int, skipped: bool) -> None:
    envelope, dlq_headers = _dead_letter(b"{}", replay_count=envelope_count)
    dlq_headers = [(n, v) for n, v in dlq_headers if n != records.H_REPLAY_COUNT]
    dlq_headers.append((records.H_REPLAY_COUNT, str(header_count).encode()))
    out = decide(envelope, dlq_headers, origin="d/0/0", max_replays=3, route=HOME)
    if skipped:
        assert isinstance(out, Skip) and out.reason == SKIP_MAX_REPLAYS
    else:
        assert isinstance(out, Republish) and out.replay_count == 3


def test_decide_skips_an_omitted_value() -> None:
    envelope, dlq_headers = _dead_letter(b"x" * 100, max_original_bytes=10)
    out = decide(envelope, dlq_headers, origin="d/0/0", max_replays=3, route=HOME)
    assert isinstance(out, Skip) and out.reason == SKIP_VALUE_OMITTED and "100 bytes" in out.detail


def test_decide_skips_an_omitted_key_unless_allowed() -> None:
    """A key over 64 KiB is not kept in the dead letter; a null key would land on another partition and lose the
    per-key order, so the record is skipped unless the operator accepts exactly that."""
    big_key = b"k" * (records.MAX_ORIGINAL_KEY_BYTES + 1)
    envelope, dlq_headers = _dead_letter(b"{}", key=big_key)
    assert orjson.loads(envelope)["original"]["key_omitted"] is True
    out = decide(envelope, dlq_headers, origin="d/0/0", max_replays=3, route=HOME)
    assert isinstance(out, Skip) and out.reason == SKIP_KEY_OMITTED and "--allow-missing-key" in out.detail
    allowed = decide(envelope, dlq_headers, origin="d/0/0", max_replays=3, route=HOME, allow_missing_key=True)
    assert isinstance(allowed, Republish) and (allowed.key, allowed.value) == (None, b"{}")
    # A record that never had a key is not "missing" one: it is republished as it was, without the flag.
    keyless, keyless_headers = _dead_letter(b"{}", key=None)
    assert isinstance(decide(keyless, keyless_headers, origin="d/0/0", max_replays=3, route=HOME), Republish)


def test_an_omitted_value_is_never_replayed_even_with_allow_missing_key() -> None:
    big_key = b"k" * (records.MAX_ORIGINAL_KEY_BYTES + 1)
    envelope, dlq_headers = _dead_letter(b"x" * 100, key=big_key, max_original_bytes=10)
    out = decide(envelope, dlq_headers, origin="d/0/0", max_replays=3, route=HOME, allow_missing_key=True)
    assert isinstance(out, Skip) and out.reason == SKIP_VALUE_OMITTED


def _mutated(change: dict[str, object]) -> bytes:
    envelope, _ = _dead_letter(b"{}")
    doc = orjson.loads(envelope)
    for path, value in change.items():
        target = doc
        *parents, last = path.split(".")
        for name in parents:
            target = target[name]
        target[last] = value
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"not json",
        b"[1, 2]",
        _mutated({"schema_version": 2}),
        _mutated({"original": "gone"}),
        _mutated({"original.value_base64": "%%%"}),
        _mutated({"original.key_base64": 5}),
        _mutated({"original.headers": [["traceparent"]]}),
        _mutated({"original.headers": {"a": "b"}}),
    ],
)
def test_decide_skips_envelopes_it_cannot_read(value: bytes | None) -> None:
    out = decide(value, [], origin="d/0/0", max_replays=3, route=HOME)
    assert isinstance(out, Skip) and out.reason == SKIP_BAD_ENVELOPE


def test_a_valid_mutation_helper_still_replays() -> None:
    """Guards the parametrized test above: the helper alone does not break the envelope."""
    value = _mutated({"original.value_base64": base64.b64encode(b"abc").decode()})
    out = decide(value, [], origin="d/0/0", max_replays=3, route=HOME)
    assert isinstance(out, Republish) and out.value == b"abc"


# --- routing: back to the topic it came from ------------------------------------------------------------------


def test_a_dead_letter_goes_back_to_its_own_input_topic() -> None:
    route = Route(("images", "camera.events"))
    for topic in ("images", "camera.events"):
        envelope, dlq_headers = _dead_letter(b"{}", topic=topic)
        out = decide(envelope, dlq_headers, origin="d/0/0", max_replays=3, route=route)
        assert isinstance(out, Republish) and out.topic == topic


def test_a_dead_letter_from_a_topic_no_longer_read_is_skipped_unless_to_names_a_topic() -> None:
    envelope, dlq_headers = _dead_letter(b"{}", topic="old-images")
    out = decide(envelope, dlq_headers, origin="d/0/0", max_replays=3, route=Route(("images", "camera.events")))
    assert isinstance(out, Skip) and out.reason == SKIP_NOT_INPUT_TOPIC and out.original_topic == "old-images"
    assert "'old-images'" in out.detail and "images, camera.events" in out.detail and "--to" in out.detail
    # One input topic: the same rule (the record's topic changes only when --to says so).
    alone = decide(envelope, dlq_headers, origin="d/0/0", max_replays=3, route=Route(("images",)))
    assert isinstance(alone, Skip) and alone.reason == SKIP_NOT_INPUT_TOPIC
    to = decide(envelope, dlq_headers, origin="d/0/0", max_replays=3, route=Route(("images",), to="images"))
    assert isinstance(to, Republish) and to.topic == "images" and to.value == b"{}"
    # --to sends every dead letter there, those of input topics too.
    home, home_headers = _dead_letter(b"{}", topic="camera.events")
    out = decide(home, home_headers, origin="d/0/0", max_replays=3, route=Route(("images", "camera.events"), "x"))
    assert isinstance(out, Republish) and out.topic == "x"


def test_a_reason_that_to_cannot_fix_comes_first() -> None:
    envelope, dlq_headers = _dead_letter(b"x" * 100, topic="old-images", max_original_bytes=10)
    out = decide(envelope, dlq_headers, origin="d/0/0", max_replays=3, route=HOME)
    assert isinstance(out, Skip) and out.reason == SKIP_VALUE_OMITTED


def test_the_original_topic_is_the_envelopes_then_the_header() -> None:
    envelope, dlq_headers = _dead_letter(b"{}", topic="camera.events")
    assert original_topic(envelope, dlq_headers) == "camera.events"
    assert original_topic(envelope, []) == "camera.events"
    assert original_topic(b"not json", dlq_headers) == "camera.events"
    assert original_topic(b"not json", []) is None
    doc = orjson.loads(envelope)
    del doc["original"]["topic"]
    bare = orjson.dumps(doc)
    assert original_topic(bare, dlq_headers) == "camera.events"
    route = Route(("camera.events",))
    out = decide(bare, dlq_headers, origin="d/0/0", max_replays=3, route=route)
    assert isinstance(out, Republish) and out.topic == "camera.events"
    # Neither says where it came from: only --to can place it.
    unknown = decide(bare, [], origin="d/0/0", max_replays=3, route=route)
    assert isinstance(unknown, Skip) and unknown.reason == SKIP_BAD_ENVELOPE and "--to" in unknown.detail
    assert isinstance(decide(bare, [], origin="d/0/0", max_replays=3, route=Route((), to="x")), Republish)


def test_selection_by_original_topic() -> None:
    sel = Selection(from_topic="camera.events")
    assert sel.matches(b"15", None, "camera.events")
    assert not sel.matches(b"15", None, "images")
    assert not sel.matches(b"15", None, None)
    assert Selection().matches(b"15", None, None)
    assert sel.label() == "from=camera.events"
    assert Selection(codes=frozenset({"15"}), from_topic="a").label() == "code=15-from=a"
    assert Selection(from_topic="a b").problems() == ["--from-topic: topic names use letters, digits, '.', '_' and '-'"]


# --- progress -----------------------------------------------------------------------------------------------


def test_progress_commits_past_read_records_but_waits_for_acknowledgements() -> None:
    progress = Progress()
    progress.read(0, 10)  # not selected
    assert progress.positions() == {0: 11}
    progress.sent(0, 11)
    progress.read(0, 11)
    progress.read(0, 12)
    assert progress.positions() == {0: 11}  # 11 not acknowledged yet
    progress.delivered(0, 11)
    assert progress.positions() == {0: 13}
    assert progress.in_flight == 0


def test_progress_holds_at_a_failed_delivery() -> None:
    progress = Progress()
    for offset in (5, 6, 7):
        progress.sent(1, offset)
        progress.read(1, offset)
    progress.delivered(1, 5)
    progress.failed(1, 6)
    progress.delivered(1, 7)
    assert progress.positions() == {1: 6}


# --- summary ------------------------------------------------------------------------------------------------


def test_summary_lists_codes_with_meanings_and_skip_reasons() -> None:
    summary = Summary("face-dlq", "images", "g", dry_run=True, plans=[PartitionPlan(0, 4, 9, saved=4)])
    summary.selected.update({"15": 3, "-1308": 1})
    summary.replayed.update({"15": 2})
    summary.skipped.update({SKIP_MAX_REPLAYS: 1, SKIP_VALUE_OMITTED: 1})
    text = "\n".join(summary.render(meaning))
    assert "dry run" in text
    assert "offsets 4..8 (resumed at saved progress 4" in text
    assert "selected: 4" in text and "would replay: 2" in text and "skipped: 2" in text
    assert meaning("15") in text and meaning("-1308") in text
    assert f"{SKIP_MAX_REPLAYS}: 1" in text
    assert summary.ok


def test_summary_names_where_skipped_records_are_and_how_to_replay_a_missing_key() -> None:
    summary = Summary("face-dlq", "images", "g", dry_run=False)
    for offset in range(8):
        summary.skip(SKIP_KEY_OMITTED, f"face-dlq/1/{offset}")
    summary.skip(SKIP_VALUE_OMITTED, "face-dlq/0/3")
    text = "\n".join(summary.render(meaning))
    assert f"{SKIP_KEY_OMITTED}: 8" in text and f"{SKIP_VALUE_OMITTED}: 1" in text and "skipped: 9" in text
    assert "face-dlq/1/0" in text and "face-dlq/1/4" in text and "face-dlq/1/5" not in text  # a bounded list
    assert "--allow-missing-key" in text and "face-dlq/0/3" in text
    summary.errors.append("boom")
    assert not summary.ok


def test_summary_counts_per_target_topic_and_names_the_topics_no_longer_read() -> None:
    summary = Summary("face-dlq", None, "g", dry_run=False, input_topics=("images", "camera.events"))
    summary.delivered("15", "images")
    summary.delivered("15", "camera.events")
    summary.delivered("-1308", "camera.events")
    summary.skip(SKIP_NOT_INPUT_TOPIC, "face-dlq/0/7", original_topic="old-images")
    summary.skip(SKIP_NOT_INPUT_TOPIC, "face-dlq/0/8", original_topic="old-images")
    summary.skip(SKIP_NOT_INPUT_TOPIC, "face-dlq/1/2", original_topic="legacy")
    text = "\n".join(summary.render(meaning))
    assert "face-dlq → each dead letter's own topic (images, camera.events)" in text
    assert "→ camera.events: 2" in text and "→ images: 1" in text
    assert f"{SKIP_NOT_INPUT_TOPIC}: 3 (at face-dlq/0/7, face-dlq/0/8, face-dlq/1/2)" in text
    assert "old-images: 2" in text and "legacy: 1" in text and "--from-topic" in text and "--to" in text
    doc = summary.document(meaning)
    assert doc["target_topic"] is None and doc["input_topics"] == ["images", "camera.events"]
    assert doc["replayed"] == {
        "total": 3,
        "by_code": {"-1308": 1, "15": 2},
        "by_topic": {"camera.events": 2, "images": 1},
    }
    assert doc["skipped"]["not_input_topics"] == {"legacy": 1, "old-images": 2}
    to = Summary("face-dlq", "images", "g", dry_run=False, input_topics=("images", "camera.events"))
    assert to.render(meaning)[0].startswith("replay face-dlq → images (")
    # One input topic: every replayed record goes there, as target_topic has always said.
    one = Summary("face-dlq", None, "g", dry_run=False, input_topics=("images",))
    assert one.document(meaning)["target_topic"] == "images"


def test_the_topics_no_longer_read_are_a_bounded_list() -> None:
    summary = Summary("d", None, "g", dry_run=False)
    for i in range(SKIP_TOPICS + 5):
        summary.skip(SKIP_NOT_INPUT_TOPIC, f"d/0/{i}", original_topic=f"t{i}")
    stray = summary.document(meaning)["skipped"]["not_input_topics"]
    assert len(stray) == SKIP_TOPICS + 1 and stray[OTHER_TOPICS] == 5
    assert sum(stray.values()) == SKIP_TOPICS + 5


def test_summary_document_carries_counts_ranges_and_the_exit_status() -> None:
    """The --json document: every count the text summary shows, keyed for scripts, and what the exit code means."""
    summary = Summary(
        "face-dlq", "images", "g", dry_run=True, plans=[PartitionPlan(0, 4, 9, saved=4), PartitionPlan(1, 7, 7)]
    )
    summary.read = 5
    summary.selected.update({"15": 3, "-1308": 1})
    summary.delivered("15", "images")
    summary.delivered("15", "images")
    summary.skip(SKIP_MAX_REPLAYS, "face-dlq/0/5")
    summary.skip(SKIP_VALUE_OMITTED, "face-dlq/0/6")
    summary.samples.append("face-dlq/0/4  -  code=15  event_id=e-1  replay (count → 1, value 2 B)")

    doc = summary.document(meaning)

    assert orjson.loads(orjson.dumps(doc)) == doc  # plain JSON types only
    assert (doc["status"], doc["ok"], doc["exit_code"], doc["dry_run"]) == ("complete", True, 0, True)
    assert (doc["dlq_topic"], doc["target_topic"], doc["group"]) == ("face-dlq", "images", "g")
    assert doc["input_topics"] == []
    assert doc["partitions"] == [
        {"partition": 0, "start_offset": 4, "end_offset": 9, "last_offset": 8, "records": 5, "resumed_from": 4},
        {"partition": 1, "start_offset": 7, "end_offset": 7, "last_offset": None, "records": 0, "resumed_from": None},
    ]
    assert doc["read"] == 5
    assert doc["selected"] == {"total": 4, "by_code": {"-1308": 1, "15": 3}}
    assert doc["replayed"] == {"total": 2, "by_code": {"15": 2}, "by_topic": {"images": 2}}
    assert doc["skipped"] == {
        "total": 2,
        "by_reason": {SKIP_MAX_REPLAYS: 1, SKIP_VALUE_OMITTED: 1},
        "examples": {SKIP_MAX_REPLAYS: ["face-dlq/0/5"], SKIP_VALUE_OMITTED: ["face-dlq/0/6"]},
        "not_input_topics": {},
    }
    assert doc["codes"] == {"-1308": meaning("-1308"), "15": meaning("15")}
    assert doc["samples"] == summary.samples and doc["errors"] == []

    summary.stopped = "limit"
    assert (summary.document(meaning)["status"], summary.document(meaning)["exit_code"]) == ("limit", 0)
    for stopped in ("timeout", "interrupted"):
        summary.stopped = stopped
        assert summary.document(meaning) | {"status": stopped, "ok": False, "exit_code": 1} == summary.document(meaning)
    summary.stopped = "error"
    summary.errors.append("face-dlq/0/4: delivery to images failed: boom")
    doc = summary.document(meaning)
    assert (doc["status"], doc["ok"], doc["exit_code"]) == ("error", False, 1)
    assert doc["errors"] == ["face-dlq/0/4: delivery to images failed: boom"]


def test_a_run_that_cannot_start_still_answers_with_a_document() -> None:
    doc = failure_document("invalid", 2, "--from-offset/--to-offset need --partition", dry_run=False)
    assert orjson.loads(orjson.dumps(doc)) == doc
    assert (doc["status"], doc["ok"], doc["exit_code"]) == ("invalid", False, 2)
    assert doc["errors"] == ["--from-offset/--to-offset need --partition"]
    # the same keys as a run's document, so a script reads both alike
    assert set(doc) == set(Summary("d", "t", "g", dry_run=False).document(meaning))
    assert doc["input_topics"] is None  # not known: the settings were not read
