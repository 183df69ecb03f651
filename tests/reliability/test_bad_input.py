"""Malformed and hostile input records, end to end: each is dead-lettered with a precise code, its bytes preserved.

One worker reads a corpus of 60+ records from one partition, then a good event. Every record must get
exactly one output with the code of the table; the worker must keep running (it processes the good event
after the corpus); the dead-letter envelope must carry the original value byte-for-byte (or, above 512 KiB,
``value_omitted`` with the size), the key and every header; and input headers named ``mdw.*`` must never be
copied onto an output as if they were ours.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson
import pytest

from tests.support.pipeline import ThreadWorker, settings_env, validate_all
from tests.support.reliability import Headers, Record, enroll, event_value, image_urls, produce_records
from worker.core import records
from worker.dev.harness.outputs import OutputReader
from worker.dev.harness.topics import Topics
from worker.emulator import EmulatorHandle, start_in_thread

pytestmark = pytest.mark.broker

URL = "http://127.0.0.1:9/x.jpg"  # schema-valid; never fetched by the cases that use it (they fail earlier)
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass(frozen=True)
class Bad:
    name: str
    value: bytes | None
    expect: str  # the dead-letter key, or "result"
    key: bytes | None = None
    headers: Headers = field(default_factory=list)


def _doc(**fields: object) -> bytes:
    return orjson.dumps(fields)


def _nested(depth: int) -> bytes:
    return b'{"image_url":"' + URL.encode() + b'","metadata":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


def corpus(good_url: str) -> list[Bad]:
    """The hostile corpus; ``good_url`` is a real image for the cases that must still succeed."""
    return [
        # not JSON / not UTF-8 / empty
        Bad("not-json", b"this is not json", "invalid_json"),
        Bad("not-utf8", b"\xff\xfe\x00garbage", "invalid_utf8"),
        Bad("latin1-json", '{"image_url":"http://a/é"}'.encode("latin-1"), "invalid_utf8"),
        Bad("utf16-json-with-bom", '{"image_url":"http://a/b"}'.encode("utf-16"), "invalid_utf8"),
        Bad("utf8-bom", b"\xef\xbb\xbf" + _doc(image_url=URL), "invalid_json"),
        Bad("empty-bytes", b"", "empty_value"),
        Bad("tombstone", None, "empty_value"),
        Bad("whitespace-only", b" \n\t ", "invalid_json"),
        Bad("nul-bytes", b"\x00" * 16, "invalid_json"),
        Bad("trailing-garbage", _doc(image_url=URL) + b"garbage", "invalid_json"),
        Bad("two-documents", _doc(image_url=URL) + _doc(image_url=URL), "invalid_json"),
        Bad("json-comment", b'{"image_url": "http://a/b" /* hi */}', "invalid_json"),
        Bad("single-quotes", b"{'image_url': 'http://a/b'}", "invalid_json"),
        Bad("nan", b'{"image_url":"http://a/b","metadata":{"x":NaN}}', "invalid_json"),
        Bad("infinity", b'{"image_url":"http://a/b","metadata":{"x":Infinity}}', "invalid_json"),
        Bad("huge-exponent", b'{"image_url":"http://a/b","metadata":{"x":1e400}}', "invalid_json"),
        Bad("lone-surrogate", b'{"image_url":"http://a/b","event_id":"\\ud800"}', "invalid_json"),
        Bad("deep-nesting-2000", b"[" * 2000 + b"]" * 2000, "invalid_json"),
        # JSON, but not an event object
        Bad("json-array", b'["http://a/b"]', "invalid_event"),
        Bad("json-string", b'"http://a/b"', "invalid_event"),
        Bad("json-null", b"null", "invalid_event"),
        Bad("json-number", b"12345678901234567890123", "invalid_event"),
        Bad("missing-url", _doc(event_id="e-no-url"), "invalid_event"),
        Bad("url-null", _doc(image_url=None), "invalid_event"),
        Bad("url-number", _doc(image_url=42), "invalid_event"),
        Bad("url-object", _doc(image_url={"href": URL}), "invalid_event"),
        Bad("unknown-field", _doc(image_url=URL, group_id="g"), "invalid_event"),
        Bad("schema-version-2", _doc(image_url=URL, schema_version=2), "unsupported_version"),
        Bad("schema-version-string", _doc(image_url=URL, schema_version="1"), "invalid_event"),
        Bad("schema-version-bool", _doc(image_url=URL, schema_version=True), "invalid_event"),
        # non-http schemes and bad URLs
        Bad("file-scheme", _doc(image_url="file:///etc/passwd"), "invalid_url"),
        Bad("gopher-scheme", _doc(image_url="gopher://127.0.0.1:6379/_FLUSHALL"), "invalid_url"),
        Bad("javascript-scheme", _doc(image_url="javascript:alert(1)"), "invalid_url"),
        Bad("data-scheme", _doc(image_url="data:image/png;base64,iVBORw0KGgo="), "invalid_url"),
        Bad("ftp-scheme", _doc(image_url="ftp://example.invalid/a.jpg"), "invalid_url"),
        Bad("empty-url", _doc(image_url=""), "invalid_url"),
        Bad("no-host", _doc(image_url="http:///x.jpg"), "invalid_url"),
        Bad("credentials-in-url", _doc(image_url="http://user:secret@127.0.0.1/x.jpg"), "invalid_url"),
        Bad("space-in-url", _doc(image_url="http://127.0.0.1/a b.jpg"), "invalid_url"),
        Bad("nul-in-url", _doc(image_url="http://127.0.0.1/a\u0000.jpg"), "invalid_url"),
        Bad("port-zero", _doc(image_url="http://127.0.0.1:0/x.jpg"), "invalid_url"),
        Bad("port-out-of-range", _doc(image_url="http://127.0.0.1:99999/x.jpg"), "invalid_url"),
        Bad("broken-ipv6", _doc(image_url="http://[::1/x.jpg"), "invalid_url"),
        Bad("url-over-2048", _doc(image_url="http://127.0.0.1/" + "a" * 2100), "invalid_url"),
        Bad("duplicate-key-last-wins", b'{"image_url":"http://a/b.jpg","image_url":"ftp://x/y"}', "invalid_url"),
        # wrong types, over-long or special-character ids and group ids
        Bad("group-ids-string", _doc(image_url=URL, group_ids="g"), "invalid_event"),
        Bad("group-ids-empty", _doc(image_url=URL, group_ids=[]), "invalid_event"),
        Bad("group-id-slash", _doc(image_url=URL, group_ids=["../etc"]), "invalid_event"),
        Bad("group-id-space", _doc(image_url=URL, group_ids=["a b"]), "invalid_event"),
        Bad("group-id-65-chars", _doc(image_url=URL, group_ids=["g" * 65]), "invalid_event"),
        Bad("group-ids-101", _doc(image_url=URL, group_ids=[f"g{i}" for i in range(101)]), "invalid_event"),
        Bad("group-id-number", _doc(image_url=URL, group_ids=[7]), "invalid_event"),
        Bad("event-id-129-chars", _doc(image_url=URL, event_id="e" * 129), "invalid_event"),
        Bad("event-id-newline", _doc(image_url=URL, event_id="a\nb"), "invalid_event"),
        Bad("event-id-empty", _doc(image_url=URL, event_id=""), "invalid_event"),
        Bad("event-id-number", _doc(image_url=URL, event_id=12), "invalid_event"),
        Bad("session-id-129-chars", _doc(image_url=URL, session_id="s" * 129), "invalid_event"),
        Bad("metadata-list", _doc(image_url=URL, metadata=[1, 2]), "invalid_event"),
        Bad("metadata-17-deep", _nested(17), "invalid_event"),
        Bad("metadata-900-deep", _nested(900), "invalid_event"),
        # oversized: refused before parsing; above 512 KiB the envelope omits the value
        Bad("value-300KiB", _doc(image_url=URL, metadata={"pad": "x" * 300 * 1024}), "event_too_large"),
        Bad("value-1MiB", _doc(image_url=URL, metadata={"pad": "x" * 1024 * 1024}), "event_too_large"),
        # header and key abuse (with values that are refused, so the envelope shows what was kept)
        Bad("3000-headers", b"not json", "invalid_json", headers=[(f"h{i}", b"v") for i in range(3000)]),
        Bad(
            "spoofed-mdw-headers",
            b"not json",
            "invalid_json",
            headers=[
                ("mdw.error.code", b"spoofed"),
                ("MDW.Original.Offset", b"999999"),
                ("mdw.worker.version", b"evil"),
                ("mdw.original.topic", b"elsewhere"),
                ("mdw.original.key", b"forged-key"),
                ("traceparent", TRACEPARENT),
            ],
        ),
        Bad("header-value-512KiB", b"not json", "invalid_json", headers=[("big", b"\x00\xff" * 256 * 1024)]),
        Bad("header-null-and-empty-name", b"not json", "invalid_json", headers=[("", b"v"), ("n", None)]),
        Bad("header-utf8-name", b"not json", "invalid_json", headers=[("ключ-🔑", b"\xff")]),
        Bad("key-64KiB-binary", b"not json", "invalid_json", key=bytes(range(256)) * 256),
        # hostile but valid: must still be identified (or refused by the API for the event's own reason)
        Bad("event-id-unicode-128", event_value("\u202e🙂" + "é" * 126, good_url), "result"),
        Bad("metadata-200KiB", event_value("big-meta", good_url, metadata={"pad": "y" * 200 * 1024}), "result"),
        Bad(
            "spoofed-mdw-on-good-event",
            event_value("spoofed-good", good_url),
            "result",
            headers=[("mdw.error.code", b"spoofed"), ("traceparent", TRACEPARENT)],
        ),
        Bad("unknown-group-named-by-event", event_value("no-group", good_url, group_ids=["nobody-here"]), "-1306"),
        Bad("unicode-group-named-by-event", event_value("zu", good_url, group_ids=["组"]), "-1306"),
        Bad("unreachable-image", event_value("unreachable", "http://127.0.0.1:9/missing.jpg"), "-1308"),
    ]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorHandle, list[str]]]:
    images = tmp_path_factory.mktemp("bad-input-images")
    with start_in_thread(images_dir=str(images)) as handle:
        sc = enroll(handle.base_url, images, ["alice", "bob"])
        yield handle, image_urls(sc, 2, seed=9500)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def test_hostile_corpus_is_dead_lettered_precisely_and_the_worker_keeps_going(
    kafka_bootstrap: str, emulator: tuple[EmulatorHandle, list[str]], make_topics: Callable[..., Topics]
) -> None:
    handle, urls = emulator
    cases = corpus(urls[0])
    assert len(cases) >= 40
    cases.append(Bad("good-event-after-the-corpus", event_value("good-last", urls[1]), "result"))
    topics = make_topics(1, results=1, dlq=1)
    coords = produce_records(
        kafka_bootstrap, topics.input, [Record(c.value, c.key, list(c.headers), partition=0) for c in cases]
    )
    by_offset = {offset: case for case, (_, offset) in zip(cases, coords, strict=True)}
    calls_before = handle.stats()["requests"].get("/face/multidentify", 0)
    env = settings_env(kafka_bootstrap, handle.base_url, topics, max_in_flight=8)
    worker = ThreadWorker(env).start()
    collector = OutputReader(kafka_bootstrap, topics)
    try:
        collector.wait_for(lambda c: len(c.outputs) >= len(cases), timeout=60, what="an output for every record")
        assert worker.exit_code is None, f"the worker stopped: {worker.pipeline.fatal_reason}"
        exit_code = worker.stop()
    finally:
        if worker.exit_code is None:
            worker.stop()
    collector.drain()
    collector.close()
    assert exit_code == 0

    outputs = collector.outputs
    got = {}
    for o in outputs:
        assert o.offset not in got, f"two outputs for {by_offset[o.offset].name}"
        got[o.offset] = o
    assert set(got) == set(by_offset)
    mismatched = {by_offset[off].name: (by_offset[off].expect, o.code) for off, o in got.items()}
    mismatched = {name: pair for name, pair in mismatched.items() if pair[0] != pair[1]}
    assert mismatched == {}, mismatched

    validate_all(outputs)
    for offset, o in got.items():
        case = by_offset[offset]
        ours = [(n, v) for n, v in o.headers if n.lower().startswith("mdw.")]
        if o.kind == "result":
            # Results carry only the trace context of the input, never an input's mdw.* header.
            assert ours == [], (case.name, ours)
            assert [n for n, _ in o.headers] == (
                ["traceparent"] if any(n == "traceparent" for n, _ in case.headers) else []
            )
            continue
        original = o.doc["original"]
        # The original bytes, key and headers, exactly (the value omitted only above 512 KiB).
        if case.value is not None and len(case.value) > records.MAX_ORIGINAL_BYTES:
            assert (original["value_omitted"], original["value_base64"]) == (True, None), case.name
        else:
            assert original["value_omitted"] is False and original["value_base64"] == _b64(case.value), case.name
        assert original["value_size"] == (None if case.value is None else len(case.value)), case.name
        key_kept = case.key is None or len(case.key) <= records.MAX_ORIGINAL_KEY_BYTES
        assert original["key_base64"] == (_b64(case.key) if key_kept else None), case.name
        assert original["key_omitted"] is not key_kept, case.name
        header_bytes = sum(len(n) + len(v or b"") for n, v in case.headers)
        if header_bytes > records.MAX_ORIGINAL_HEADER_BYTES:
            # Too large to copy twice into one record: only the trace context is kept, and it says so.
            assert original["headers_omitted"] is True, case.name
            assert all(n.lower() in records.TRACE_HEADERS for n, _ in original["headers"]), case.name
        else:
            assert original["headers_omitted"] is False, case.name
            assert original["headers"] == [[n, _b64(v)] for n, v in case.headers], case.name
        assert (original["partition"], original["offset"], original["topic"]) == (0, offset, topics.input)
        # Our headers appear once each with the true values; input mdw.* headers are not copied.
        names = [n.lower() for n, _ in ours]
        assert len(names) == len(set(names)), (case.name, names)
        mine = dict(ours)
        assert mine["mdw.error.code"] == o.code.encode()
        assert mine["mdw.original.offset"] == str(offset).encode()
        assert mine["mdw.original.topic"] == topics.input.encode()
        assert mine.get("mdw.original.key") == (case.key if key_kept else None)
        assert mine["mdw.worker.version"] != b"evil"
        copied = [(n, v) for n, v in o.headers if not n.lower().startswith("mdw.")]
        expected_copies = [(n, v) for n, v in case.headers if not n.lower().startswith("mdw.")]
        if header_bytes > records.MAX_ORIGINAL_HEADER_BYTES:
            expected_copies = [(n, v) for n, v in expected_copies if n.lower() in records.TRACE_HEADERS]
        assert copied == expected_copies, case.name
        if o.code in records.INVALID_CODES:
            assert o.doc["error"]["class"] == "invalid" and o.doc["error"]["attempts"] == 0

    # Refused records never reached the API: only the events the table expects to be called were.
    called = sum(1 for c in cases if c.expect not in records.INVALID_CODES)
    calls = handle.stats()["requests"].get("/face/multidentify", 0) - calls_before
    assert calls == called, (calls, called)
    results = {o.event_id: o.doc for o in outputs if o.kind == "result"}
    assert results["\u202e🙂" + "é" * 126]["event_id"] == "\u202e🙂" + "é" * 126
    assert results["big-meta"]["metadata"] == {"pad": "y" * 200 * 1024}
    print(f"\nbad input: {len(cases)} records → {collector.summary()}")


def test_a_record_with_huge_headers_cannot_crash_the_worker(
    kafka_bootstrap: str, emulator: tuple[EmulatorHandle, list[str]], make_topics: Callable[..., Topics]
) -> None:
    handle, urls = emulator
    topics = make_topics(1, results=1, dlq=1)
    produce_records(
        kafka_bootstrap,
        topics.input,
        [
            Record(b"not json", None, [("huge", b"h" * 9 * 1024 * 1024)], partition=0),
            Record(event_value("after-the-huge-one", urls[0]), partition=0),
        ],
    )
    env = settings_env(kafka_bootstrap, handle.base_url, topics, max_in_flight=4)
    worker = ThreadWorker(env).start()
    collector = OutputReader(kafka_bootstrap, topics)
    try:
        collector.wait_for(
            lambda c: len(c.outputs) >= 2 or not worker.alive(), timeout=60, what="two outputs or a crash"
        )
        assert worker.alive(), "the worker thread died"
        assert worker.exit_code is None
        codes = sorted(o.code for o in collector.outputs)
        assert codes == ["invalid_json", "result"], codes
    finally:
        if worker.alive():
            worker.stop()
        collector.close()
