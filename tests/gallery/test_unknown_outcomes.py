"""Writes whose outcome is unknown, against the emulator over HTTP on both APIs: an answer that comes after the
client's read timeout for a write that took effect, a run killed between a write and its ledger record, and two runs
on one ledger. Neither may add a photo twice (IAI: a second face of the person; v1: a ``-1312`` refusal of a photo
that is enrolled).

The emulator's ``late_answer`` fault carries a write out and holds its answer; ``actions`` spares the reads that
check on it. Waits follow the emulator's own counters, never the clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.gallery.test_gallery_command import ROOT, by_where, environment, gallery, photo
from tests.support.kafkatest import wait_until
from worker import cli
from worker.emulator import EmulatorHandle, start_in_thread

WRITES = {"v1": ["newperson", "addface"], "iai": ["CreateGroup", "CreatePerson", "CreateFace"]}
ADD_FACE = {"v1": ["addface"], "iai": ["CreateFace"]}


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with start_in_thread() as handle:
        yield handle


@pytest.fixture(params=["v1", "iai"])
def api(request: pytest.FixtureRequest, emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    emu.reset(gallery=True)
    for name, value in environment(emu, str(request.param)).items():
        monkeypatch.setenv(name, value)
    try:
        yield str(request.param)
    finally:
        emu.reset()


@pytest.fixture
def people(tmp_path: Path) -> Path:
    """alice: two photos; bob: one."""
    root = tmp_path / "people"
    for person, seeds in (("alice", (1, 2)), ("bob", (1,))):
        (root / person).mkdir(parents=True)
        for seed in seeds:
            (root / person / f"{seed}.jpg").write_bytes(photo(person, seed))
    return root


def faces_of(capsys: pytest.CaptureFixture[str], person: str) -> list[str]:
    code, shown = gallery(capsys, "show", person)
    assert code == 0, shown
    return sorted(shown["person"]["face_ids"])


def ledger_faces(path: Path) -> dict[str, str]:
    """The ledger's confirmed records: the photo's path within the folder → face id."""
    found = {}
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        if isinstance(record.get("face_id"), str):
            found[Path(record["source"]).relative_to(path.parent).as_posix()] = record["face_id"]
    return found


def test_a_write_answered_after_the_timeout_is_enrolled_once(
    api: str, emu: EmulatorHandle, people: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every create (IAI: the group's too) and add takes effect and answers after the client's read timeout: the
    command re-reads the person (the groups), adopts the face it finds as the photo's, and sends nothing twice."""
    monkeypatch.setenv("MDW_READ_TIMEOUT_S", "0.5")
    monkeypatch.setenv("MDW_MAX_ATTEMPTS", "3")
    emu.admin({"late_answer_rate": 1.0, "late_answer_ms": 2500, "actions": WRITES[api]})
    code, doc = gallery(capsys, "enrol", "staff", str(people), "--create-group", "--workers", "1")
    writes = 3 + (api == "iai")  # IAI creates the group with a call of its own
    assert emu.stats()["faults"].get("late") == writes, "not each write sent once and answered late"
    assert doc["summary"] == {
        "enrolled": 3, "skipped": 0, "refused": 0, "failed": 0, "planned": 0, "persons_created": 2
    }, doc  # fmt: skip
    assert code == 0
    assert emu.stats()["requests"].get(
        "/face/addface" if api == "v1" else "iai/CreateFace"
    ) == 1, "a write was sent twice"  # fmt: skip
    alice, bob = faces_of(capsys, "alice"), faces_of(capsys, "bob")
    assert len(alice) == 2 and len(bob) == 1
    photos = by_where(doc)
    assert sorted([photos["alice/1.jpg"]["face_id"], photos["alice/2.jpg"]["face_id"]]) == alice
    assert ledger_faces(people / ".gallery-ledger.jsonl") == {
        "alice/1.jpg": photos["alice/1.jpg"]["face_id"],
        "alice/2.jpg": photos["alice/2.jpg"]["face_id"],
        "bob/1.jpg": bob[0],
    }

    emu.reset()
    code, again = gallery(capsys, "enrol", "staff", str(people))
    assert code == 0 and again["summary"]["skipped"] == 3, again
    assert faces_of(capsys, "alice") == alice


def test_a_write_applied_then_answered_with_a_server_fault_is_enrolled_once(
    api: str, emu: EmulatorHandle, people: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every create and add takes effect and is answered with a server fault (v1 213, IAI ``InternalError``): the
    outcome is unknown, so nothing is sent again; the command re-reads the person and adopts the face it finds."""
    monkeypatch.setenv("MDW_MAX_ATTEMPTS", "3")
    writes = {"v1": ["newperson", "addface"], "iai": ["CreatePerson", "CreateFace"]}[api]
    emu.admin({"applied_error_rates": {"213": 1.0}, "actions": writes})
    code, doc = gallery(capsys, "enrol", "staff", str(people), "--create-group", "--workers", "1")
    assert emu.stats()["faults"].get("applied") == 3, "not each write sent once"
    assert doc["summary"]["enrolled"] == 3 and code == 0, doc
    emu.reset()
    alice, bob = faces_of(capsys, "alice"), faces_of(capsys, "bob")
    assert len(alice) == 2 and len(bob) == 1
    photos = by_where(doc)
    assert sorted([photos["alice/1.jpg"]["face_id"], photos["alice/2.jpg"]["face_id"]]) == alice
    code, again = gallery(capsys, "enrol", "staff", str(people))
    assert code == 0 and again["summary"]["skipped"] == 3, again


def start_hanging_run(emu: EmulatorHandle, api: str, people: Path) -> subprocess.Popen[str]:
    """A run as a process whose first CreateFace / addface takes effect and is answered only much later (its read
    timeout is longer still): returns once that write took effect and the run is waiting for the answer."""
    emu.admin({"late_answer_rate": 1.0, "late_answer_ms": 30_000, "actions": ADD_FACE[api]})
    env = {**os.environ, **environment(emu, api), "PYTHONPATH": str(ROOT), "MDW_READ_TIMEOUT_S": "120"}
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "gallery", "enrol", "staff", str(people), "--create-group", "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_until(
        lambda: emu.stats()["faults"].get("late") == 1 or process.poll() is not None,
        timeout=60,
        interval=0.02,
        what="the held write",
    )
    assert process.poll() is None, process.communicate()
    return process


def kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)


def test_a_run_killed_after_a_write_is_reconciled_by_the_next_run(
    api: str, emu: EmulatorHandle, people: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed after the service added alice's second photo and before the ledger says so: the rerun finds that face
    (the ledger's pending record says which faces alice had before), records it and sends the photo no more."""
    (people / "bob" / "1.jpg").unlink()
    (people / "bob").rmdir()
    process = start_hanging_run(emu, api, people)
    kill(process)
    emu.reset()
    before = faces_of(capsys, "alice")
    assert len(before) == 2  # the killed run's add took effect

    code, doc = gallery(capsys, "enrol", "staff", str(people))
    photos = by_where(doc)
    assert [photos[w]["status"] for w in ("alice/1.jpg", "alice/2.jpg")] == ["skipped", "skipped"], doc
    assert code == 0
    assert faces_of(capsys, "alice") == before  # nothing sent again
    assert sorted(ledger_faces(people / ".gallery-ledger.jsonl").values()) == before
    code, again = gallery(capsys, "enrol", "staff", str(people))
    assert code == 0 and {p["reason"] for p in again["photos"]} == {"already enrolled"}


def test_a_second_run_on_one_ledger_exits_2(
    api: str, emu: EmulatorHandle, people: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MDW_READ_TIMEOUT_S", "0.5")  # were it not stopped, its writes would not wait long
    process = start_hanging_run(emu, api, people)
    try:
        capsys.readouterr()
        code = cli.main(["gallery", "enrol", "staff", str(people), "--json"])
        out = capsys.readouterr()
        assert code == 2
        ledger = str(people / ".gallery-ledger.jsonl")
        assert ledger in out.err and "another run" in out.err
        assert orjson.loads(out.out)["error"]["code"] == "ledger_locked"
        assert process.poll() is None  # the first run is untouched
    finally:
        kill(process)


def test_a_delete_answered_after_the_timeout_is_reported_deleted(
    api: str, emu: EmulatorHandle, people: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sent again, the delete would be answered "no such person" and reported ``not_found`` (exit 1)."""
    gallery(capsys, "enrol", "staff", str(people), "--create-group")
    monkeypatch.setenv("MDW_READ_TIMEOUT_S", "0.5")
    emu.admin(
        {
            "late_answer_rate": 1.0,
            "late_answer_ms": 2500,
            "actions": {"v1": ["delperson"], "iai": ["DeletePerson"]}[api],
        }
    )
    code, doc = gallery(capsys, "delete", "bob")
    assert emu.stats()["faults"].get("late") == 1, "the delete was not answered late, or was sent twice"
    assert code == 0 and doc["persons"] == [{"person_id": "bob", "status": "deleted"}], doc


def test_a_run_killed_after_a_write_is_reconciled_behind_a_torn_ledger_line(
    api: str, emu: EmulatorHandle, people: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An earlier run was killed mid-record (a fragment without its newline ends the ledger); the next run is killed
    after its add took effect: its pending record must be a line of its own, or the rerun would send the photo again
    (IAI: a second face; v1: a ``-1312`` refusal). The rerun reports the fragment and sends nothing."""
    second = people / "alice" / "2.jpg"
    held = second.read_bytes()
    second.unlink()
    (people / "bob" / "1.jpg").unlink()
    (people / "bob").rmdir()
    code, first = gallery(capsys, "enrol", "staff", str(people), "--create-group")
    assert code == 0 and first["summary"]["enrolled"] == 1, first
    ledger = people / ".gallery-ledger.jsonl"
    with ledger.open("ab") as file:
        file.write(b'{"target": "iai https://x", "person_id": "alice", "ke')  # killed mid-record
    second.write_bytes(held)
    kill(start_hanging_run(emu, api, people))
    emu.reset()
    before = faces_of(capsys, "alice")
    assert len(before) == 2  # the killed run's add took effect

    capsys.readouterr()
    code = cli.main(["gallery", "enrol", "staff", str(people), "--json"])
    out = capsys.readouterr()
    doc = orjson.loads(out.out)
    assert by_where(doc)["alice/2.jpg"]["status"] == "skipped", doc
    assert code == 0 and doc["ledger_unreadable"] == 1
    assert f"the ledger {ledger} has 1 unreadable line(s), the first at line 3" in out.err  # after pending, added
    assert faces_of(capsys, "alice") == before  # nothing sent again
