"""End to end on the embedded broker and the emulator: one output per event, commits after delivery.

The tests that use the ``emulator`` fixture run once per face API (``api``: v1 and IAI). For IAI the gallery is
enrolled through IAI itself (CreateGroup, CreatePerson), as a real IAI account must; the scenario expects IAI's
codes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.support.kafkatest import produce_all, wait_until
from tests.support.pipeline import enrolled_emulator, settings_env, thread_worker, validate_all
from worker.config import ApiName
from worker.dev.harness.outputs import read_outputs
from worker.dev.harness.positions import committed_positions
from worker.dev.harness.topics import Topics
from worker.dev.scenario import Scenario
from worker.emulator import EmulatorHandle
from worker.runtime.exits import ExitCode

pytestmark = pytest.mark.broker

PEOPLE = ["alice", "bob", "carol"]


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module", params=["v1", "iai"])
def api(request: pytest.FixtureRequest) -> ApiName:
    """The face API the worker calls (its ``api`` setting)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def emulator(images_dir: Path, api: ApiName) -> Iterator[EmulatorHandle]:
    with enrolled_emulator(images_dir, PEOPLE, api=api) as (handle, _):
        yield handle


@pytest.fixture
def topics(make_topics: Callable[..., Topics]) -> Topics:
    return make_topics(4, results=2, dlq=2)


def _scenario(images_dir: Path, emulator: EmulatorHandle, api: ApiName) -> Scenario:
    sc = Scenario(images_dir, emulator.base_url + "/images/", api=api)
    sc.enrolled = list(PEOPLE)
    return sc


def test_mixed_batch_yields_exactly_one_valid_output_per_event(
    kafka_bootstrap: str, emulator: EmulatorHandle, images_dir: Path, topics: Topics, api: ApiName
) -> None:
    sc = _scenario(images_dir, emulator, api)
    sc.add_known(12, seed=1000)
    sc.add_strangers(3, seed=1100)
    sc.add_no_face(3, seed=1200)
    sc.add_unreachable(3, seed=1300)
    sc.add_malformed()
    produce_all(kafka_bootstrap, topics.input, [(e.key, e.value) for e in sc.events])
    env = settings_env(kafka_bootstrap, emulator.base_url, topics, api=api, max_in_flight=8)
    with thread_worker(env) as w:
        wait_until(
            lambda: w.pipeline.stats.results + sum(w.pipeline.stats.dead_letters.values()) >= len(sc.events),
            timeout=60,
            what="an output for every event",
        )
        exit_code = w.stop()
    assert exit_code == 0

    out = read_outputs(kafka_bootstrap, topics)
    validate_all(out)
    assert sc.unexpected(out) == []
    assert len(out) == len(sc.events)
    assert {sc.code("no_face"), sc.code("unreachable")} <= {o.code for o in out}
    # Every record names the API the worker called.
    assert {o.doc["api"]["name"] for o in out if o.kind == "result"} == {api}
    assert {o.doc["worker"]["api"] for o in out if o.kind == "dlq"} == {api}

    # Every face of a known person is matched to that person; strangers stay low.
    results = {o.event_id: o.doc for o in out if o.kind == "result"}
    for e in sc.events:
        if e.expect != "result":
            continue
        faces = results[e.event_id]["faces"]
        assert len(faces) == len(e.people)
        best = [
            f["candidates"][0]["person_id"] if f["candidates"] and f["candidates"][0]["confidence"] >= 80 else None
            for f in faces
        ]
        assert sorted(best, key=str) == sorted(e.people, key=str)

    # Dead letters carry the original bytes exactly, and the error's coordinates.
    for o in out:
        if o.kind == "dlq":
            assert o.doc["error"]["code"] == o.code
            assert o.doc["original"]["topic"] == topics.input
            names = [h[0] for h in o.headers]
            assert "mdw.original.offset" in names and "mdw.error.code" in names

    # Everything consumed was committed, only after its output was acknowledged.
    per_partition: dict[int, int] = {}
    for o in out:
        per_partition[o.partition] = max(per_partition.get(o.partition, -1), o.offset)
    positions = committed_positions(kafka_bootstrap, topics.group, topics.input)
    for p, last in per_partition.items():
        assert positions[p] == last + 1


#: What a wrong SecretKey is refused with, per API.
WRONG_KEY_CODE = {"v1": "code 14", "iai": "code AuthFailure.SignatureFailure"}


def test_wrong_credentials_stop_the_worker_without_commit_or_dead_letter(
    kafka_bootstrap: str, emulator: EmulatorHandle, images_dir: Path, topics: Topics, api: ApiName
) -> None:
    sc = _scenario(images_dir, emulator, api)
    sc.add_known(5, seed=2000)
    produce_all(kafka_bootstrap, topics.input, [(e.key, e.value) for e in sc.events])
    env = settings_env(kafka_bootstrap, emulator.base_url, topics, api=api, max_in_flight=4)
    env["MDW_SECRET_KEY"] = "not-the-right-key"
    with thread_worker(env) as w:
        exit_code = w.join(60)
        assert exit_code == ExitCode.CONFIG_REFUSED
        reason = w.pipeline.fatal_reason or ""
    assert WRONG_KEY_CODE[api] in reason and "MDW_SECRET_KEY" in reason, reason
    assert read_outputs(kafka_bootstrap, topics) == []
    assert all(offset < 0 for offset in committed_positions(kafka_bootstrap, topics.group, topics.input).values())


@pytest.mark.parametrize("api", ["iai"], indirect=True)
def test_iai_a_configured_group_that_does_not_exist_stops_the_worker_naming_the_setting(
    kafka_bootstrap: str, emulator: EmulatorHandle, images_dir: Path, topics: Topics, api: ApiName
) -> None:
    """IAI creates groups explicitly: a group in MDW_GROUP_IDS that was never created (a typo) is answered
    InvalidParameterValue.GroupIdNotExist; GetGroupList confirms it is missing, so the worker stops (exit 3) naming
    MDW_GROUP_IDS instead of dead-lettering every event. An event naming an unknown group of its own is its fault."""
    sc = _scenario(images_dir, emulator, api)
    sc.add_known(3, seed=2500)
    own_group = orjson.dumps(
        {"event_id": "own-group", "image_url": sc.images_url + "known-2500.jpg", "group_ids": ["nope"]}
    )
    produce_all(kafka_bootstrap, topics.input, [(b"own", own_group)], partition=0)
    env = settings_env(kafka_bootstrap, emulator.base_url, topics, api=api, max_in_flight=1)
    with thread_worker(env) as w:  # the configured group exists: the event's own unknown group is dead-lettered
        wait_until(lambda: sum(w.pipeline.stats.dead_letters.values()) == 1, timeout=60, what="the event's dead letter")
        assert w.stop() == 0
    (dead,) = read_outputs(kafka_bootstrap, topics)
    assert dead.code == "InvalidParameterValue.GroupIdNotExist" and dead.event_id == "own-group"

    produce_all(kafka_bootstrap, topics.input, [(e.key, e.value) for e in sc.events])
    env = settings_env(kafka_bootstrap, emulator.base_url, topics, api=api, max_in_flight=4, group_ids="demo,dmeo")
    with thread_worker(env) as w:
        exit_code = w.join(60)
        reason = w.pipeline.fatal_reason or ""
    assert exit_code == ExitCode.CONFIG_REFUSED, reason
    assert "InvalidParameterValue.GroupIdNotExist" in reason and "MDW_GROUP_IDS" in reason, reason
    assert read_outputs(kafka_bootstrap, topics) == [dead]


def test_api_outage_of_503s_dead_letters_nothing_and_processing_resumes(
    kafka_bootstrap: str, emulator: EmulatorHandle, images_dir: Path, topics: Topics, api: ApiName
) -> None:
    sc = _scenario(images_dir, emulator, api)
    sc.add_known(30, stranger_every=0, seed=3000)
    emulator.admin({"http_error_rates": {"503": 1.0}, "seed": 3})
    produce_all(kafka_bootstrap, topics.input, [(e.key, e.value) for e in sc.events])
    env = settings_env(
        kafka_bootstrap,
        emulator.base_url,
        topics,
        api=api,
        max_in_flight=8,
        max_attempts=3,
        breaker_open_s=0.5,
    )
    try:
        with thread_worker(env) as w:
            # The outage lasts well past every event's retry budget.
            wait_until(lambda: w.pipeline._breaker.is_open, timeout=30, what="the breaker to open")
            # Held through three failed probes (measured by progress, not by the clock): still nothing out.
            wait_until(lambda: w.pipeline.stats.probes >= 3, timeout=60, what="three probes into the outage")
            assert w.pipeline.stats.results == 0 and not w.pipeline.stats.dead_letters
            emulator.admin({})  # the API recovers
            wait_until(lambda: w.pipeline.stats.results >= len(sc.events), timeout=60, what="all events identified")
            assert w.stop() == 0
    finally:
        emulator.admin({})
    out = read_outputs(kafka_bootstrap, topics)
    assert [o for o in out if o.kind == "dlq"] == []
    assert sorted(o.event_id or "" for o in out) == sorted(e.event_id for e in sc.events)


def test_a_dead_letter_too_large_for_kafka_is_sent_without_the_original(kafka_bootstrap: str, topics: Topics) -> None:
    import threading

    from worker import config
    from worker.runtime import kafka
    from worker.runtime.app import build_pipeline

    # A producer that refuses records over 100 kB stands in for a broker with a small max.message.bytes.
    big = b"{" + b" " * 150_000 + b"oops"  # not JSON, 150 kB: its envelope would carry 200 kB of base64
    produce_all(kafka_bootstrap, topics.input, [(b"k", big), (b"k2", b"small but not json")], partition=0)
    settings = config.load(
        environ=settings_env(kafka_bootstrap, "http://127.0.0.1:9", topics), require_credentials=True
    )
    producer_config = kafka.producer_config(settings) | {"message.max.bytes": 100_000}
    pipeline = build_pipeline(settings, producer_config=producer_config)
    runner = threading.Thread(target=pipeline.run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: sum(pipeline.stats.dead_letters.values()) == 2, timeout=30, what="both dead letters")
    finally:
        pipeline.request_stop()
        runner.join(30)
    assert pipeline.fatal_reason is None
    out = read_outputs(kafka_bootstrap, topics)
    validate_all(out)
    by_offset = {o.offset: o.doc for o in out if o.kind == "dlq"}
    assert by_offset[0]["original"]["value_omitted"] is True and by_offset[0]["original"]["value_size"] == len(big)
    assert by_offset[1]["original"]["value_base64"] == base64.b64encode(b"small but not json").decode()
    assert all(env["error"]["code"] == "invalid_json" for env in by_offset.values())
    assert by_offset[0]["original"]["key_base64"] is None  # sent without the original's key and headers
