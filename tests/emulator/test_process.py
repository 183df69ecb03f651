"""The emulator and the image server as processes: banner, ready file, SIGTERM, persistence across restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import requests

from tests.support.emulator import APPID, Caller
from worker.api.signature import sign
from worker.emulator import spawn_process, start_in_thread, synth
from worker.emulator.imageserver import spawn_image_server


def _get(url: str, timeout: float = 10) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False  # loopback only, never through an environment proxy
        return session.get(url, timeout=timeout)


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, "server exited before it was ready"
        assert time.monotonic() < deadline, "server not ready in time"
        time.sleep(0.02)
    return path.read_text().strip()


def test_cli_prints_banner_writes_ready_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.emulator",
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--latency-ms",
            "1",
            "--account",
            "1250000123:AKIDcli:cli-key",
            "--faults",
            '{"error_rates": {"213": 0.5}}',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = wait_for_file(ready, proc)
        assert line.startswith("EMULATOR http://127.0.0.1:")
        base_url = line.split()[1]
        faults = _get(f"{base_url}/__admin/faults", timeout=10).json()
        assert faults["latency"] == {"kind": "fixed", "ms": 1.0} and faults["error_rates"] == {"213": 0.5}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.decode().strip() == line


def test_cli_rejects_a_bad_configuration() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker.emulator", "--faults", '{"drop_rate": 9}'], capture_output=True, timeout=30
    )
    assert result.returncode == 2
    assert b"drop_rate" in result.stderr


def test_gallery_survives_a_restart_with_a_file_db(tmp_path: Path) -> None:
    db = tmp_path / "gallery.sqlite"
    first = spawn_process(db=db)
    try:
        api = Caller(first.base_url)
        assert (
            api.newperson(
                "uma",
                ["g1", "g2"],
                synth.render_scene([("uma", (10, 10, 100, 100))], (150, 150)),
                person_name="Uma",
                tag="t",
            ).code
            == 0
        )
        api.close()
    finally:
        assert first.stop() == 0
    assert not first.running
    second = spawn_process(db=db)
    try:
        api = Caller(second.base_url)
        info = api.json("getinfo", {"appid": APPID, "person_id": "uma"}).data
        assert (info["person_name"], info["tag"], info["group_ids"]) == ("Uma", "t", ["g1", "g2"])
        scene = synth.render_scene([("uma", (40, 30, 90, 90))], (200, 160), seed=5)
        top = api.multidentify(scene, ["g2"]).data["results"][0]["candidates"][0]
        assert top["person_id"] == "uma" and top["confidence"] >= 90
        assert second.stats()["gallery"]["faces"] == 1
        api.close()
    finally:
        second.stop()


def test_thread_handle_restart_keeps_gallery_too(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    with start_in_thread(db=str(db)) as emu:
        api = Caller(emu.base_url)
        assert api.newperson("vic", ["g"], synth.render_scene([("vic", (10, 10, 80, 80))], (100, 100))).code == 0
        api.close()
    with start_in_thread(db=str(db)) as emu:
        api = Caller(emu.base_url)
        assert api.json("getpersonids", {"appid": APPID, "group_id": "g"}).data["person_ids"] == ["vic"]
        api.close()


def test_process_admin_helpers_and_stop_by_pid() -> None:
    emu = spawn_process(faults={"error_rates": {"15": 1.0}})
    try:
        api = Caller(emu.base_url)
        assert api.json("multidentify", {"appid": APPID, "group_id": "g", "url": "http://x/y"}).code == 15
        assert emu.admin({})["error_rates"] == {}
        assert emu.stats()["codes"]["/face/multidentify"] == {"15": 1}
        emu.reset()
        assert emu.stats()["requests_total"] == 0
        api.close()
    finally:
        pid = emu.pid
        emu.stop()
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_image_server_process_404_then_200(tmp_path: Path) -> None:
    server = spawn_image_server(tmp_path)
    try:
        url = server.url_for("cam1/frame.jpg")
        assert _get(url, timeout=10).status_code == 404
        (tmp_path / "cam1").mkdir()
        (tmp_path / "cam1" / "frame.jpg").write_bytes(b"jpeg-bytes")
        response = _get(url, timeout=10)
        assert response.status_code == 200 and response.content == b"jpeg-bytes"
        assert response.headers["Content-Type"] == "image/jpeg"
    finally:
        assert server.stop() == 0


def test_accounts_file_flag(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.json"
    accounts.write_bytes(orjson.dumps([{"appid": "1250000555", "secret_id": "AKIDfile", "secret_key": "file-key"}]))
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.emulator", "--accounts-file", str(accounts), "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base_url = wait_for_file(ready, proc).split()[1]
        auth = sign("1250000555", "AKIDfile", "file-key", now=int(time.time()), lifetime=60)
        api = Caller(base_url)
        assert api.json("getgroupids", {"appid": "1250000555"}, auth=auth).code == 0
        assert api.json("getgroupids", {"appid": APPID}).code == 10  # the dev account is not configured
        api.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
