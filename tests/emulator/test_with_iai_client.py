"""The worker's own IAI client against the emulator's IAI: enrolment, multi-face search, the configuration check,
and the errors the worker must tell apart, as typed results and ApiErrors over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulator.iai_support import publish
from worker.api.codes import Api
from worker.api.errors import ApiError, ErrorClass
from worker.api.iai_client import IaiClient, IaiOptions
from worker.api.iai_wire import SearchOptions
from worker.emulator import DEV_ACCOUNT, EmulatorHandle, start_in_thread, synth

FACE = (20, 20, 120, 120)
PEOPLE = ["alice", "bob", "carol"]


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    handle = start_in_thread(images_dir=tmp_path_factory.mktemp("iai-client-images"))
    try:
        yield handle
    finally:
        handle.stop()


def make_client(emu: EmulatorHandle, **options: object) -> IaiClient:
    return IaiClient(
        IaiOptions(
            secret_id=str(options.pop("secret_id", DEV_ACCOUNT.secret_id)),
            secret_key=DEV_ACCOUNT.secret_key,
            endpoint=emu.base_url,
            **options,  # type: ignore[arg-type]
        )
    )


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[IaiClient]:
    emu.reset(gallery=True)
    c = make_client(emu)
    try:
        yield c
    finally:
        c.close()


def enrol(client: IaiClient, group: str = "staff") -> None:
    client.create_group(group, "Staff")
    for i, name in enumerate(PEOPLE):
        client.create_person(group, name, name.title(), image=synth.render_scene([(name, FACE)], (200, 200), seed=i))


def test_every_face_of_an_image_is_searched_by_url_and_by_bytes(client: IaiClient, emu: EmulatorHandle) -> None:
    enrol(client)
    assert [g.group_id for g in client.groups()] == ["staff"]
    assert sorted(p.person_id for p in client.persons("staff")) == PEOPLE
    scene, rects = synth.scene_with_faces([*PEOPLE, "stranger"], (640, 480), seed=77)
    by_url = client.identify_url(publish(emu, "scene.jpg", scene), ["staff"])
    by_bytes = client.identify_image(scene, ["staff"])
    for result in (by_url, by_bytes):
        assert result.api is Api.IAI and result.request_id and result.http_status == 200
        assert len(result.faces) == 4  # MaxFaceNum 10 is sent: IAI's own default would search one face
        named = {}
        for face in result.faces:
            generated = min(range(4), key=lambda i: abs(rects[i].x - face.rect.x) + abs(rects[i].y - face.rect.y))
            named[[*PEOPLE, "stranger"][generated]] = face
            assert face.ret_code == 0
        for name in PEOPLE:
            assert named[name].candidates[0].person_id == name
            assert named[name].candidates[0].confidence > 80
        assert all(c.confidence < 50 for c in named["stranger"].candidates)


def test_the_configuration_check_passes_for_existing_groups_and_names_a_missing_one(client: IaiClient) -> None:
    enrol(client)
    client.check_configuration(["staff"])
    with pytest.raises(ApiError) as caught:
        client.check_configuration(["staff", "visitors"])
    assert caught.value.code == "InvalidParameterValue.GroupIdNotExist"
    assert caught.value.error_class is ErrorClass.CONFIG and "visitors" in caught.value.message


def test_a_wrong_key_is_a_configuration_error_and_an_unknown_group_the_events_or_the_configs(
    client: IaiClient, emu: EmulatorHandle
) -> None:
    enrol(client)
    with make_client(emu, secret_id="AKIDnobody") as stranger, pytest.raises(ApiError) as caught:
        stranger.check_configuration(["staff"])
    assert caught.value.code == "AuthFailure.SecretIdNotFound" and caught.value.error_class is ErrorClass.CONFIG
    with pytest.raises(ApiError) as caught:
        client.identify_image(synth.render_scene([("alice", FACE)], (200, 200), seed=5), ["nobody"])
    assert caught.value.code == "InvalidParameterValue.GroupIdNotExist"
    assert caught.value.request_id  # the service's RequestId, kept for the dead letter's message and the logs


def test_an_image_the_service_cannot_use_is_permanent_and_a_missing_url_too(
    client: IaiClient, emu: EmulatorHandle
) -> None:
    enrol(client)
    for call, code in (
        (
            lambda: client.identify_url(f"{emu.base_url}/images/missing.jpg", ["staff"]),
            "FailedOperation.ImageDownloadError",
        ),
        (lambda: client.identify_image(b"not an image at all", ["staff"]), "FailedOperation.ImageDecodeFailed"),
        (
            lambda: client.identify_image(synth.render_scene([], (200, 200), seed=1), ["staff"]),
            "InvalidParameterValue.NoFaceInPhoto",
        ),
    ):
        with pytest.raises(ApiError) as caught:
            call()
        assert caught.value.code == code and caught.value.error_class is ErrorClass.PERMANENT


def test_a_rate_limit_is_transient_and_marked_as_such(client: IaiClient, emu: EmulatorHandle) -> None:
    enrol(client)
    emu.admin({"error_rates": {"15": 1.0}})
    try:
        with pytest.raises(ApiError) as caught:
            client.identify_image(synth.render_scene([("alice", FACE)], (200, 200), seed=5), ["staff"])
    finally:
        emu.reset()
    assert caught.value.code == "RequestLimitExceeded"
    assert caught.value.transient and caught.value.rate_limited


def test_a_clock_off_by_more_than_five_minutes_is_refused_after_one_fresh_signature(emu: EmulatorHandle) -> None:
    emu.reset(gallery=True)
    skewed = IaiClient(
        IaiOptions(secret_id=DEV_ACCOUNT.secret_id, secret_key=DEV_ACCOUNT.secret_key, endpoint=emu.base_url),
        clock=lambda: time.time() - 600,
    )
    before = emu.stats()["requests_total"]
    with skewed, pytest.raises(ApiError) as caught:
        skewed.groups()
    assert caught.value.code == "AuthFailure.SignatureExpire" and caught.value.error_class is ErrorClass.CONFIG
    assert emu.stats()["requests_total"] - before == 2  # signed again once, then given up


def test_search_options_reach_the_service(client: IaiClient, emu: EmulatorHandle) -> None:
    enrol(client)
    scene, _ = synth.scene_with_faces([*PEOPLE], (640, 480), seed=78)
    with make_client(emu, search=SearchOptions(max_face_num=1, max_person_num=2, need_person_info=True)) as narrow:
        result = narrow.identify_image(scene, ["staff"])
    (face,) = result.faces  # the largest face only
    assert len(face.candidates) <= 2
    assert face.candidates[0].person_name == face.candidates[0].person_id.title()


def test_a_netrc_entry_for_the_api_host_does_not_replace_the_signature(
    client: IaiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests adds Basic auth from ~/.netrc to any request without its own auth, after the headers: it would
    # overwrite the TC3 Authorization header of every call to a host the user has a .netrc line for.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    enrol(client)
    assert [g.group_id for g in client.groups()] == ["staff"]
