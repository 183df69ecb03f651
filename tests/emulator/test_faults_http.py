"""Fault injection over HTTP: reproducible with a seed, each kind of failure as a client sees it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
import requests

from tests.support.emulator import APPID, dev_auth
from worker.emulator import EmulatorHandle, start_in_thread, synth

BODY = orjson.dumps({"appid": APPID, "group_id": "nobody-here", "url": "http://127.0.0.1:9/x.jpg"})
# Without faults this request answers -1306 (unknown group) at once: a cheap, stable baseline.


@pytest.fixture
def session(emu: EmulatorHandle) -> Iterator[requests.Session]:
    emu.reset()
    s = requests.Session()
    s.trust_env = False
    try:
        yield s
    finally:
        s.close()


def outcome(session: requests.Session, base_url: str, action: str = "multidentify", timeout: float = 10) -> str:
    headers = {"Authorization": dev_auth(), "Content-Type": "application/json"}
    try:
        response = session.post(f"{base_url}/face/{action}", data=BODY, headers=headers, timeout=timeout)
    except requests.ConnectionError:
        return "connection"
    if response.status_code != 200:
        return f"http_{response.status_code}"
    try:
        return str(orjson.loads(response.content)["code"])
    except orjson.JSONDecodeError:
        return "malformed"


def test_seeded_error_rates_are_reproducible_and_roughly_honoured(
    emu: EmulatorHandle, session: requests.Session
) -> None:
    config = {"error_rates": {"213": 0.2, "15": 0.1}, "http_error_rates": {"503": 0.1}, "seed": 7}
    runs = []
    for _ in range(2):
        emu.admin(config)  # re-seeds the generator
        runs.append([outcome(session, emu.base_url) for _ in range(200)])
    assert runs[0] == runs[1]
    counts = Counter(runs[0])
    assert 20 <= counts["213"] <= 60
    assert 5 <= counts["15"] <= 35
    assert 5 <= counts["http_503"] <= 35
    assert counts["-1306"] >= 80


def test_503_has_a_non_json_body(emu: EmulatorHandle, session: requests.Session) -> None:
    emu.admin({"http_error_rates": {"503": 1.0}})
    response = session.post(
        f"{emu.base_url}/face/multidentify", data=BODY, headers={"Authorization": dev_auth()}, timeout=10
    )
    assert response.status_code == 503
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)


def test_dropped_connection_is_a_connection_error(emu: EmulatorHandle, session: requests.Session) -> None:
    emu.admin({"drop_rate": 1.0})
    assert outcome(session, emu.base_url) == "connection"
    emu.admin({})
    assert outcome(session, emu.base_url) == "-1306"  # the server keeps serving
    assert emu.stats()["codes"]["/face/multidentify"]["dropped"] == 1


def test_malformed_json_body(emu: EmulatorHandle, session: requests.Session) -> None:
    emu.admin({"malformed_json_rate": 1.0})
    assert outcome(session, emu.base_url) == "malformed"


def test_slow_body_arrives_complete_after_the_headers(emu: EmulatorHandle, session: requests.Session) -> None:
    emu.admin({"slow_body_rate": 1.0, "slow_body_ms": 1000})
    headers = {"Authorization": dev_auth(), "Content-Type": "application/json"}
    with session.post(
        f"{emu.base_url}/face/multidentify", data=BODY, headers=headers, timeout=10, stream=True
    ) as response:
        assert response.status_code == 200
        assert emu.stats()["in_flight"] == 1  # headers are here, the body is still being trickled
        body = response.content
    assert orjson.loads(body)["code"] == -1306
    assert emu.stats()["faults"]["slow"] == 1


def test_a_late_answer_comes_after_the_action_took_effect(emu: EmulatorHandle, session: requests.Session) -> None:
    """``late_answer_rate``: the action is carried out, then its answer held: a client whose read timeout is shorter
    sees a timeout although the write happened; ``actions`` spares the reads that check on it."""
    emu.reset(gallery=True)
    emu.admin({"late_answer_rate": 1.0, "late_answer_ms": 3000, "actions": ["newperson"]})
    image = synth.render_scene([("zed", (40, 40, 120, 120))], (200, 200))
    fields = [("appid", APPID), ("person_id", "zed"), ("group_ids[0]", "late")]
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        session.post(
            f"{emu.base_url}/face/newperson",
            data=fields,
            files=[("image", ("face.jpg", image, "image/jpeg"))],
            headers={"Authorization": dev_auth()},
            timeout=(5, 0.5),
        )
    assert time.monotonic() - started < 3  # the client gave up before the answer came
    headers = {"Authorization": dev_auth(), "Content-Type": "application/json"}
    info = session.post(
        f"{emu.base_url}/face/getinfo", data=orjson.dumps({"appid": APPID, "person_id": "zed"}), headers=headers,
        timeout=10,
    ).json()  # fmt: skip
    assert info["code"] == 0 and len(info["data"]["face_ids"]) == 1  # the person was created all the same
    assert emu.stats()["faults"] == {"late": 1}
    wait_until_idle(emu)
    emu.reset(gallery=True)


def test_an_applied_error_is_answered_after_the_action_took_effect(
    emu: EmulatorHandle, session: requests.Session
) -> None:
    """``applied_error_rates``: the action is carried out, then a server fault answers instead of its result (a
    backend that stored the face and timed out answering)."""
    emu.reset(gallery=True)
    emu.admin({"applied_error_rates": {"213": 1.0}, "actions": ["newperson"]})
    image = synth.render_scene([("zed", (40, 40, 120, 120))], (200, 200))
    fields = [("appid", APPID), ("person_id", "zed"), ("group_ids[0]", "applied")]
    answer = session.post(
        f"{emu.base_url}/face/newperson",
        data=fields,
        files=[("image", ("face.jpg", image, "image/jpeg"))],
        headers={"Authorization": dev_auth()},
        timeout=10,
    ).json()
    assert answer["code"] == 213 and not answer.get("data")
    headers = {"Authorization": dev_auth(), "Content-Type": "application/json"}
    info = session.post(
        f"{emu.base_url}/face/getinfo", data=orjson.dumps({"appid": APPID, "person_id": "zed"}), headers=headers,
        timeout=10,
    ).json()  # fmt: skip
    assert info["code"] == 0 and len(info["data"]["face_ids"]) == 1  # the person was created all the same
    assert emu.stats()["faults"] == {"applied": 1}
    emu.reset(gallery=True)


def test_qps_limit_answers_15(emu: EmulatorHandle, session: requests.Session) -> None:
    emu.admin({"qps_limit": 2, "qps_burst": 2})
    results = Counter(outcome(session, emu.base_url) for _ in range(12))
    assert results["15"] >= 8
    assert results["-1306"] >= 2
    assert emu.stats()["faults"]["qps"] == results["15"]


def test_latency_applies_to_search_not_management(emu: EmulatorHandle, session: requests.Session) -> None:
    emu.admin({"error_rates": {"213": 1.0}})
    assert outcome(session, emu.base_url, "multidentify") == "213"
    assert outcome(session, emu.base_url, "identify") == "213"
    assert outcome(session, emu.base_url, "getgroupids") == "0"
    emu.admin({"error_rates": {"213": 1.0}, "apply_to_management": True})
    assert outcome(session, emu.base_url, "getgroupids") == "213"


def test_admin_endpoints_over_http(emu: EmulatorHandle, session: requests.Session) -> None:
    bad = session.post(f"{emu.base_url}/__admin/faults", json={"drop_rate": 3}, timeout=10)
    assert bad.status_code == 400 and "drop_rate" in bad.json()["error"]
    set_ = session.post(f"{emu.base_url}/__admin/faults", json={"latency_ms": 5, "seed": 1}, timeout=10)
    assert set_.json()["latency"] == {"kind": "fixed", "ms": 5.0}
    assert session.get(f"{emu.base_url}/__admin/faults", timeout=10).json()["seed"] == 1
    assert outcome(session, emu.base_url) == "-1306"
    stats = session.get(f"{emu.base_url}/__admin/stats", timeout=10).json()
    assert stats["faults"] == {"latency": 1}
    assert stats["requests"]["/face/multidentify"] == 1
    assert stats["codes"]["/face/multidentify"] == {"-1306": 1}
    assert stats["http_status"] == {"200": 1}
    assert session.post(f"{emu.base_url}/__admin/reset", timeout=10).json() == {"ok": True}
    after = session.get(f"{emu.base_url}/__admin/stats", timeout=10).json()
    assert after["requests_total"] == 0
    assert session.get(f"{emu.base_url}/__admin/faults", timeout=10).json()["latency"] == {"kind": "none"}


def test_faults_from_start_options() -> None:
    with start_in_thread(faults={"error_rates": {"107": 1.0}}, latency_ms=1) as emu:
        s = requests.Session()
        s.trust_env = False
        assert outcome(s, emu.base_url) == "107"
        assert emu.admin()["latency"] == {"kind": "fixed", "ms": 1.0}
        s.close()


def test_a_stats_reset_keeps_counting_the_requests_still_in_flight(
    emu: EmulatorHandle, session: requests.Session
) -> None:
    # in_flight is a gauge, not a counter: zeroing it under a request in flight would leave it at -1 once that
    # request ends, and a test waiting for "one in flight" after the next reset would wait forever.
    wait_until_idle(emu)  # an earlier test's trickled answer may still be finishing
    emu.admin({"slow_body_rate": 1.0, "slow_body_ms": 600})
    headers = {"Authorization": dev_auth(), "Content-Type": "application/json"}
    with session.post(
        f"{emu.base_url}/face/multidentify", data=BODY, headers=headers, timeout=10, stream=True
    ) as response:
        assert emu.stats()["in_flight"] == 1
        emu.reset(faults=False)
        assert emu.stats()["in_flight"] == 1
        response.content  # noqa: B018 - read the whole trickled body
    wait_until_idle(emu)


def wait_until_idle(emu: EmulatorHandle, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while emu.stats()["in_flight"] != 0:
        assert time.monotonic() < deadline, f"in_flight stuck at {emu.stats()['in_flight']}"
        time.sleep(0.01)
