"""The dlib engine in ``python -m worker.emulator``: chosen by flag, serving, stopped with its pool processes; and a
gallery file made by the other engine stops it at start, naming both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.emulator.real_photos import committed, dlib_missing, pid_running
from worker.api.client import ClientOptions, MultidentifyClient
from worker.emulator import DEV_ACCOUNT, spawn_process, start_in_thread, synth

MISSING = dlib_missing()
pytestmark = [pytest.mark.real_faces, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]
ROOT = Path(__file__).resolve().parents[2]


def test_the_emulator_process_serves_real_faces_and_stops_with_its_pool() -> None:
    emulator = spawn_process(engine="dlib", engine_workers=1, timeout_s=120)
    try:
        options = ClientOptions(
            appid=DEV_ACCOUNT.appid,
            secret_id=DEV_ACCOUNT.secret_id,
            secret_key=DEV_ACCOUNT.secret_key,
            base_url=emulator.base_url,
        )
        with MultidentifyClient(options) as client:
            client.newperson("hopper", ["g"], image=committed("grace_hopper.jpg"))
            result = client.multidentify_image(committed("astronaut.jpg"), ["g"])
        assert len(result.faces) == 1 and result.faces[0].candidates[0].confidence < 80
        engine = emulator.stats()["engine"]
        assert engine["name"] == "dlib" and engine["images"] == 2
        (pid,) = engine["pids"]
        assert pid_running(pid)
    finally:
        code = emulator.stop()
    assert code == 0, emulator.log_tail()
    deadline = time.monotonic() + 10
    while pid_running(pid):  # joined by the emulator on its way out: gone at once, bounded wait anyway
        assert time.monotonic() < deadline, f"engine process {pid} outlived the emulator"
        time.sleep(0.05)


def test_a_gallery_file_of_the_other_engine_stops_the_emulator_naming_both(tmp_path: Path) -> None:
    db = tmp_path / "synthetic.db"
    with start_in_thread(db=db) as synthetic:  # a gallery written by the synthetic engine
        synthetic.call(
            lambda em: em.gallery.new_person(
                "app", "p", ["g"], em.engine.detect(synth.render_scene([("p", (10, 10, 100, 100))], (140, 140)))[0]
            )
        )
    done = subprocess.run(
        [sys.executable, "-m", "worker.emulator", "--engine", "dlib", "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "bad configuration" in done.stderr and "synthetic/36, not dlib/128" in done.stderr


def test_the_pool_processes_end_when_the_emulator_is_killed() -> None:
    emulator = spawn_process(engine="dlib", engine_workers=1, timeout_s=120)
    (pid,) = emulator.stats()["engine"]["pids"]
    try:
        os.kill(emulator.pid, signal.SIGKILL)  # no clean-up at all: the pool must notice on its own
        emulator.proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while pid_running(pid):
            assert time.monotonic() < deadline, f"engine process {pid} outlived the killed emulator"
            time.sleep(0.05)
    finally:
        emulator.stop()
        if pid_running(pid):
            os.kill(pid, signal.SIGKILL)  # never leave it behind, even when the test fails
