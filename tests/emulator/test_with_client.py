"""The project's own client against the emulator: success shapes and typed errors end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.emulator import DEV_ACCOUNT, EmulatorHandle, synth
from worker.emulator.imageserver import ImageServerHandle

client_module = pytest.importorskip("worker.api.client")
MultidentifyClient = client_module.MultidentifyClient
ClientOptions = client_module.ClientOptions
ApiError = pytest.importorskip("worker.api.errors").ApiError


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[object]:
    emu.reset(gallery=True)
    c = MultidentifyClient(
        ClientOptions(
            appid=DEV_ACCOUNT.appid,
            secret_id=DEV_ACCOUNT.secret_id,
            secret_key=DEV_ACCOUNT.secret_key,
            base_url=emu.base_url,
        )
    )
    try:
        yield c
    finally:
        c.close()


def face(name: str, seed: int) -> bytes:
    return synth.render_scene([(name, (20, 20, 120, 120))], (200, 200), seed=seed)


def test_enroll_and_identify_with_the_client(client, images: ImageServerHandle, image_dir: Path) -> None:  # type: ignore[no-untyped-def]
    names = ["wan", "xia", "yue"]
    for i, name in enumerate(names):
        data = client.newperson(name, ["staff"], image=face(name, 10 + i), person_name=name.title())
        assert data["person_id"] == name
    added = client.addface("wan", images=[face("wan", 99)], tag="second")
    assert added["ret_codes"] == [0]
    assert client.getgroupids() == ["staff"]
    assert client.getpersonids("staff") == names
    assert len(client.getinfo("wan")["face_ids"]) == 2

    scene, rects = synth.scene_with_faces([*names, "stranger"], (640, 480), seed=31)
    result = client.multidentify_image(scene, ["staff"], session_id="s-9")
    assert result.session_id == "s-9"
    assert len(result.faces) == 4
    tops = {}
    for f in result.faces:
        generated = min(range(4), key=lambda i: abs(rects[i].x - f.rect.x) + abs(rects[i].y - f.rect.y))
        assert abs(rects[generated].width - f.rect.width) <= 3
        tops[[*names, "stranger"][generated]] = f.candidates[0]
    for name in names:
        assert tops[name].person_id == name and tops[name].confidence >= 90
    assert tops["stranger"].confidence < 60

    (image_dir / "client-scene.jpg").write_bytes(scene)
    by_url = client.multidentify_url(images.url_for("client-scene.jpg"), ["staff"])
    assert [f.rect for f in by_url.faces] == [f.rect for f in result.faces]

    client.delperson("yue")
    assert client.getpersonids("staff") == ["wan", "xia"]


def test_client_sees_typed_errors(client, images: ImageServerHandle) -> None:  # type: ignore[no-untyped-def]
    client.newperson("zoe", ["team"], image=face("zoe", 1))
    with pytest.raises(ApiError) as unknown_group:
        client.multidentify_image(face("zoe", 2), ["nope"])
    assert unknown_group.value.code == "-1306"
    assert unknown_group.value.error_class == "config"
    with pytest.raises(ApiError) as missing:
        client.multidentify_url(images.url_for("never.jpg"), ["team"])
    assert missing.value.code == "-1308"
    assert missing.value.error_class == "permanent"
    with pytest.raises(ApiError) as no_face:
        client.multidentify_image(synth.render_scene([], (100, 100)), ["team"])
    assert no_face.value.code == "-1101"
    with pytest.raises(ApiError) as exists:
        client.newperson("zoe", ["team"], image=face("zoe", 3))
    assert exists.value.code == "-1302"


def test_client_transient_faults(client, emu: EmulatorHandle) -> None:  # type: ignore[no-untyped-def]
    client.newperson("amy", ["t"], image=face("amy", 1))
    for faults, code, error_class in [
        ({"error_rates": {"213": 1.0}}, "213", "transient"),
        ({"qps_limit": 1, "qps_burst": 1, "error_rates": {"15": 1.0}}, "15", "transient"),
        ({"http_error_rates": {"503": 1.0}}, "http_503", "transient"),
        ({"drop_rate": 1.0}, "connection", "transient"),
    ]:
        emu.admin(faults)
        with pytest.raises(ApiError) as failure:
            client.multidentify_image(face("amy", 2), ["t"])
        assert (failure.value.code, failure.value.error_class) == (code, error_class)
    emu.admin({})


def test_client_with_wrong_key_gets_14(emu: EmulatorHandle) -> None:
    bad = MultidentifyClient(
        ClientOptions(
            appid=DEV_ACCOUNT.appid, secret_id=DEV_ACCOUNT.secret_id, secret_key="wrong", base_url=emu.base_url
        )
    )
    try:
        with pytest.raises(ApiError) as failure:
            bad.getgroupids()
        assert failure.value.code == "14"
    finally:
        bad.close()
