"""``multidentify-worker gallery`` against the emulator over HTTP on 127.0.0.1, on both APIs: enrol a folder, a rerun
skips everything, a dry run changes nothing, refused photos are listed with their code, ``--json`` parses, delete.

The command runs in-process through ``worker.cli.main`` with the worker's own configuration from the environment
(``MDW_*``), as an operator would set it; one test runs it as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker import cli
from worker.emulator import DEV_ACCOUNT, EmulatorHandle, start_in_thread, synth

ROOT = Path(__file__).resolve().parents[2]
FACE = (40, 40, 120, 120)
PEOPLE = ("alice", "bob")


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with start_in_thread() as handle:
        yield handle


@pytest.fixture(params=["v1", "iai"])
def api(request: pytest.FixtureRequest, emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> str:
    """The worker's configuration for one API, pointed at the emulator (its gallery emptied first)."""
    emu.reset(gallery=True)
    for name, value in environment(emu, str(request.param)).items():
        monkeypatch.setenv(name, value)
    return str(request.param)


def environment(emu: EmulatorHandle, api: str) -> dict[str, str]:
    return {
        "MDW_API": api,
        "MDW_APPID": DEV_ACCOUNT.appid,
        "MDW_SECRET_ID": DEV_ACCOUNT.secret_id,
        "MDW_SECRET_KEY": DEV_ACCOUNT.secret_key,
        "MDW_API_BASE_URL": emu.base_url,
        "MDW_IAI_ENDPOINT": emu.base_url,
        "MDW_MAX_ATTEMPTS": "2",
        "MDW_RETRY_DEADLINE_S": "10",
        "MDW_BACKOFF_INITIAL_S": "0.01",
        "MDW_BACKOFF_MAX_S": "0.05",
    }


def photo(person: str, seed: int) -> bytes:
    return synth.render_scene([(person, FACE)], (200, 200), seed=seed)


@pytest.fixture
def people(tmp_path: Path) -> Path:
    """alice: two photos and a name; bob: two photos, the second without a face; a text file that is ignored."""
    root = tmp_path / "people"
    for person in PEOPLE:
        (root / person).mkdir(parents=True)
        (root / person / "1.jpg").write_bytes(photo(person, 1))
    (root / "alice" / "2.jpg").write_bytes(photo("alice", 2))
    (root / "alice" / "name.txt").write_text("Alice-Liddell\n")
    (root / "bob" / "2.jpg").write_bytes(synth.render_scene([], (200, 200), seed=3))  # no face
    (root / "bob" / "notes.txt").write_text("not a photo")
    (root / ".hidden").mkdir()
    return root


def gallery(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = cli.main(["gallery", *args, "--json"])
    out = capsys.readouterr().out
    return code, orjson.loads(out)


def by_where(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["where"]: p for p in document["photos"]}


NO_FACE = {"v1": "-1101", "iai": "InvalidParameterValue.NoFaceInPhoto"}  # newperson / CreatePerson: the request


def test_enrol_then_rerun_skips_everything(api: str, people: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = gallery(capsys, "enrol", "staff", str(people), "--create-group")
    photos = by_where(doc)
    assert set(photos) == {"alice/1.jpg", "alice/2.jpg", "bob/1.jpg", "bob/2.jpg"}  # notes.txt is no photo
    assert doc["summary"] == {
        "enrolled": 3, "skipped": 0, "refused": 1, "failed": 0, "planned": 0, "persons_created": 2
    }  # fmt: skip
    refused = photos["bob/2.jpg"]
    assert refused["status"] == "refused"
    assert refused["code"] == "-1101"  # CreateFace's RetCode on IAI, addface's ret_codes on v1: "no face"
    assert code == doc["exit_code"] == 1  # a refused photo
    assert doc["group_created"] is True

    code, shown = gallery(capsys, "show", "alice")
    assert code == 0
    assert shown["person"]["person_name"] == "Alice-Liddell"
    assert shown["person"]["group_ids"] == ["staff"]
    assert sorted(shown["person"]["face_ids"]) == sorted(
        [photos["alice/1.jpg"]["face_id"], photos["alice/2.jpg"]["face_id"]]
    )

    code, again = gallery(capsys, "enrol", "staff", str(people))
    assert again["summary"]["enrolled"] == 0
    assert again["summary"]["skipped"] == 3
    assert {p["reason"] for p in again["photos"] if p["status"] == "skipped"} == {"already enrolled"}
    assert by_where(again)["bob/2.jpg"]["status"] == "refused"  # refused photos are sent again, and refused again
    assert gallery(capsys, "show", "alice")[1]["person"]["face_ids"] == shown["person"]["face_ids"]


def test_a_dry_run_changes_nothing(api: str, people: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = gallery(capsys, "enrol", "staff", str(people), "--create-group", "--dry-run")
    assert doc["dry_run"] is True
    assert doc["summary"]["planned"] == 4 and doc["summary"]["enrolled"] == 0
    assert {p["reason"] for p in doc["photos"]} == {"create person", "add face"}
    assert code == 0
    _, groups = gallery(capsys, "groups")
    assert groups["groups"] == []  # not even the group was created
    assert not (people / ".gallery-ledger.jsonl").exists()

    gallery(capsys, "enrol", "staff", str(people), "--create-group")
    (people / "carol").mkdir()
    (people / "carol" / "1.jpg").write_bytes(photo("carol", 1))
    _, dry = gallery(capsys, "enrol", "staff", str(people), "--dry-run")
    planned = {p["where"]: p["reason"] for p in dry["photos"] if p["status"] == "planned"}
    assert planned == {"bob/2.jpg": "add face", "carol/1.jpg": "create person"}  # bob/2.jpg was refused before
    _, persons = gallery(capsys, "persons", "staff")
    assert sorted(p["person_id"] for p in persons["persons"]) == ["alice", "bob"]


def test_a_face_deleted_since_is_enrolled_again_and_delete(
    api: str, people: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery(capsys, "enrol", "staff", str(people), "--create-group")
    code, deleted = gallery(capsys, "delete", "bob")
    assert code == 0 and deleted["persons"] == [{"person_id": "bob", "status": "deleted"}]
    code, missing = gallery(capsys, "show", "bob")
    assert code == 1 and missing["person"] is None
    code, again = gallery(capsys, "delete", "bob")
    assert code == 1 and again["persons"][0]["status"] == "not_found"
    assert gallery(capsys, "delete", "bob", "--missing-ok")[0] == 0

    # The ledger still names bob's first photo, but bob's face is gone: it is enrolled again, bob re-created.
    _, rerun = gallery(capsys, "enrol", "staff", str(people))
    bob = by_where(rerun)["bob/1.jpg"]
    assert bob["status"] == "enrolled" and bob["created_person"] is True
    assert rerun["summary"]["skipped"] == 2  # alice's two photos


def test_refused_photos_are_listed_with_their_codes(
    api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest: a missing file (unreadable, local), a photo without a face as a person's first photo (the
    person is created from the next one), one of another group (left out)."""
    (tmp_path / "a1.jpg").write_bytes(synth.render_scene([], (200, 200), seed=5))
    (tmp_path / "a2.jpg").write_bytes(photo("dave", 2))
    manifest = tmp_path / "people.csv"
    manifest.write_text(
        "person_id,person_name,image,group\n"
        "dave,Dave,a1.jpg,\n"
        "dave,Dave,a2.jpg,\n"
        "erin,,missing.jpg,\n"
        "frank,,a2.jpg,visitors\n"
        "gina,,big.jpg,\n"
        "hana,Hana Smith,a2.jpg,\n"
        "hana,Hana Smith,a3.jpg,\n"
    )
    (tmp_path / "big.jpg").write_bytes(b"\xff\xd8\xff" + bytes(4 * 1024 * 1024))  # over both APIs' limits
    (tmp_path / "a3.jpg").write_bytes(photo("hana", 3))
    code, doc = gallery(capsys, "enrol", "staff", str(manifest), "--create-group")
    photos = by_where(doc)
    assert photos["people.csv:2"]["code"] == NO_FACE[api]  # CreatePerson / newperson refuse the whole request
    assert photos["people.csv:3"]["status"] == "enrolled" and photos["people.csv:3"]["created_person"] is True
    assert photos["people.csv:4"]["code"] == "unreadable"
    assert "people.csv:5" not in photos and doc["left_out"] == 1
    assert photos["people.csv:6"]["code"] == {"v1": "23", "iai": "FailedOperation.ImageSizeExceed"}[api]
    if api == "iai":  # a space is not allowed in an IAI PersonName: the person is refused, its photos with it
        assert {photos[w]["code"] for w in ("people.csv:7", "people.csv:8")} == {
            "InvalidParameterValue.PersonNameIllegal"
        }
    else:
        assert photos["people.csv:7"]["status"] == photos["people.csv:8"]["status"] == "enrolled"
    assert code == 1
    assert (tmp_path / "people.csv.ledger.jsonl").exists()

    capsys.readouterr()
    assert cli.main(["gallery", "enrol", "staff", str(manifest)]) == 1
    text = capsys.readouterr().out
    # dave exists now: the photo without a face goes to addface / CreateFace, which answer -1101 for that image
    assert "refused:" in text and "people.csv:4" in text and "unreadable" in text and "people.csv:2" in text
    assert "-1101" in text


def test_add_faces_to_an_existing_person(
    api: str, people: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery(capsys, "enrol", "staff", str(people), "--create-group")
    extra = tmp_path / "alice3.jpg"
    extra.write_bytes(photo("alice", 7))
    code, doc = gallery(capsys, "add-faces", "alice", str(extra))
    assert code == 0 and doc["summary"]["enrolled"] == 1
    _, shown = gallery(capsys, "show", "alice")
    assert doc["photos"][0]["face_id"] in shown["person"]["face_ids"]
    code, nobody = gallery(capsys, "add-faces", "zoe", str(extra))
    assert code == 1 and nobody["error"]["code"] in ("-1303", "InvalidParameterValue.PersonIdNotExist")


def test_a_missing_group_is_not_created_without_asking(
    api: str, people: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert cli.main(["gallery", "enrol", "nosuch", str(people)]) == 2
    assert "--create-group" in capsys.readouterr().err
    code, doc = gallery(capsys, "enrol", "nosuch", str(people / "nope.csv"))
    assert code == 2 and "no such folder or manifest" in doc["error"]["message"]


def test_wrong_credentials_stop_with_exit_3(
    api: str, people: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MDW_SECRET_KEY", "wrong")
    capsys.readouterr()
    assert cli.main(["gallery", "groups"]) == 3
    assert "MDW_SECRET_KEY" in capsys.readouterr().err


def test_the_command_as_a_process(emu: EmulatorHandle, people: Path) -> None:
    emu.reset(gallery=True)
    env = {**os.environ, **environment(emu, "iai"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "worker", "gallery", "enrol", "staff", str(people), "--create-group"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "enrolled 3, skipped 0, refused 1" in done.stdout
    assert "bob/2.jpg" in done.stdout and "-1101" in done.stdout
    assert done.stderr == ""  # stderr is no terminal: no progress bar


def test_rate_limits_are_retried_under_the_worker_s_policy(
    api: str, emu: EmulatorHandle, people: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every second call (seeded) answers the API's rate-limit code: with 8 attempts each, everything gets through;
    with the service answering nothing else, the command gives up after the policy's attempts and exits 4."""
    rate_limited = {"v1": "15", "iai": "RequestLimitExceeded"}[api]  # the emulator's IAI answers v1's 15 so
    monkeypatch.setenv("MDW_MAX_ATTEMPTS", "8")
    emu.admin({"error_rates": {"15": 0.5}, "apply_to_management": True, "seed": 7})
    try:
        code, doc = gallery(capsys, "enrol", "staff", str(people), "--create-group", "--workers", "1")
        assert doc["summary"]["enrolled"] == 3 and doc["summary"]["failed"] == 0
        assert code == 1  # bob/2.jpg, refused as before
        assert emu.stats()["faults"], "no call was rate limited: the test proves nothing"
        emu.admin({"error_rates": {"15": 1.0}, "apply_to_management": True})
        monkeypatch.setenv("MDW_MAX_ATTEMPTS", "3")
        code, failed = gallery(capsys, "groups")
        assert code == 4
        assert failed["error"]["code"] == str(rate_limited) and failed["error"]["class"] == "transient"
    finally:
        emu.reset()


def test_single_face_refuses_a_group_photo_on_iai(api: str, people: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (people / "alice" / "3.jpg").write_bytes(
        synth.render_scene([("alice", (10, 10, 100, 100)), ("bob", (150, 40, 80, 80))], (300, 200))
    )
    if api == "v1":  # the worker's v1 client has no detection call: said at once, nothing done
        code, doc = gallery(capsys, "enrol", "staff", str(people), "--create-group", "--single-face")
        assert code == 2 and "--single-face needs api iai" in doc["error"]["message"]
        return
    code, doc = gallery(capsys, "enrol", "staff", str(people), "--create-group", "--single-face")
    photos = by_where(doc)
    assert photos["alice/3.jpg"]["code"] == "several_faces"
    assert photos["bob/2.jpg"]["code"] == "InvalidParameterValue.NoFaceInPhoto"  # DetectFace found none
    assert doc["summary"]["enrolled"] == 3 and code == 1
    # without the flag the group photo is enrolled: IAI takes its largest face (alice's here)
    _, again = gallery(capsys, "enrol", "staff", str(people))
    assert by_where(again)["alice/3.jpg"]["status"] == "enrolled"


def test_missing_credentials_are_named_before_any_call(
    api: str, emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MDW_SECRET_ID")
    emu.reset()
    code, doc = gallery(capsys, "groups")
    assert code == 2 and "secret_id (MDW_SECRET_ID)" in doc["error"]["message"]
    assert emu.stats()["requests_total"] == 0
