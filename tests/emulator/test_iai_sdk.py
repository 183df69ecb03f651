"""Tencent's own IAI SDK (``tencentcloud-sdk-python-iai``), unchanged, against the emulator's IAI API.

The SDK is pointed at the emulator with ``HttpProfile(endpoint="127.0.0.1:PORT", protocol="http")``; nothing
else of it is configured or patched. Enrolment, multi-face search and the errors a client must tell apart
(credentials, clock, groups, limits, images, rate limiting) come back as the SDK's own models and
``TencentCloudSDKException`` codes.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from tencentcloud.common.credential import Credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.iai.v20200303 import models
from tencentcloud.iai.v20200303.iai_client import IaiClient

from tests.emulator.iai_support import publish
from tests.support.emulator import Caller
from worker.emulator import DEV_ACCOUNT, EmulatorHandle, EmulatorProcess, spawn_process, start_in_thread, synth

FACE = (20, 20, 120, 120)
PEOPLE = ["alice", "bob", "carol"]
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    handle = start_in_thread(images_dir=tmp_path_factory.mktemp("iai-images"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(autouse=True)
def clean(emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    emu.reset(gallery=True)
    for name in PROXY_VARIABLES:  # the SDK and requests would route 127.0.0.1 through an environment proxy
        monkeypatch.delenv(name, raising=False)


def client_for(
    emu: EmulatorHandle | EmulatorProcess, secret_id: str = DEV_ACCOUNT.secret_id, secret_key: str | None = None
) -> IaiClient:
    port = urlsplit(emu.base_url).port
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=f"127.0.0.1:{port}", protocol="http", reqTimeout=30))
    return IaiClient(Credential(secret_id, secret_key or DEV_ACCOUNT.secret_key), "ap-guangzhou", profile)


def request(model: type[Any], **fields: Any) -> Any:
    req = model()
    req.from_json_string(json.dumps(fields))
    return req


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def photo(name: str, seed: int) -> bytes:
    return synth.render_scene([(name, FACE)], (200, 200), seed=seed)


def enrol(client: IaiClient, group: str = "staff") -> None:
    client.CreateGroup(request(models.CreateGroupRequest, GroupId=group, GroupName=group.title()))
    for i, name in enumerate(PEOPLE):
        created = client.CreatePerson(
            request(
                models.CreatePersonRequest,
                GroupId=group,
                PersonId=name,
                PersonName=name.title(),
                Image=b64(photo(name, 100 + i)),
            )
        )
        assert created.FaceId and created.FaceModelVersion == "3.0" and created.RequestId


def expect_error(code: str, call: Callable[[], object]) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as caught:
        call()
    assert caught.value.get_code() == code, caught.value
    assert caught.value.get_request_id(), "an error answer carries a RequestId"
    return caught.value


# --- enrolment and search --------------------------------------------------------------------------------------


def test_every_enrolled_face_of_a_crowd_is_found_with_max_face_num(emu: EmulatorHandle) -> None:
    client = client_for(emu)
    enrol(client)
    added = client.CreateFace(
        request(models.CreateFaceRequest, PersonId="alice", Urls=[publish(emu, "alice-2.jpg", photo("alice", 7))])
    )
    assert added.SucFaceNum == 1 and added.RetCode == [0] and added.SucIndexes == [0]
    scene, rects = synth.scene_with_faces([*PEOPLE, "stranger"], (640, 480), seed=77)
    url = publish(emu, "crowd.jpg", scene)

    found = client.SearchFaces(request(models.SearchFacesRequest, GroupIds=["staff"], Url=url, MaxFaceNum=10))

    assert found.FaceNum == 4 and found.FaceModelVersion == "3.0" and found.RequestId
    assert len(found.Results) == 4
    named = dict(zip([tuple(r) for r in rects], [*PEOPLE, "stranger"], strict=True))
    seen = set()
    for result in found.Results:
        box = (result.FaceRect.X, result.FaceRect.Y, result.FaceRect.Width, result.FaceRect.Height)
        name = named[min(named, key=lambda r: sum(abs(a - b) for a, b in zip(r, box, strict=True)))]
        assert result.RetCode == 0
        top = result.Candidates[0]
        if name == "stranger":
            assert top.Score < 80, "a stranger scores below the documented match threshold"
        else:
            assert (top.PersonId, top.Score > 80) == (name, True)
            assert top.FaceId
            seen.add(name)
    assert seen == set(PEOPLE)


def test_max_face_num_defaults_to_the_largest_face(emu: EmulatorHandle) -> None:
    client = client_for(emu)
    enrol(client)
    scene = synth.render_scene([("alice", (10, 10, 60, 60)), ("bob", (200, 100, 150, 150))], (400, 300), seed=3)
    found = client.SearchFaces(request(models.SearchFacesRequest, GroupIds=["staff"], Image=b64(scene)))
    assert len(found.Results) == 1
    assert found.Results[0].Candidates[0].PersonId == "bob"
    assert found.Results[0].FaceRect.Width >= 140


def test_search_persons_fuses_faces_per_person(emu: EmulatorHandle) -> None:
    client = client_for(emu)
    enrol(client)
    scene, _ = synth.scene_with_faces(["carol", "bob"], (640, 480), seed=5)
    found = client.SearchPersons(
        request(models.SearchPersonsRequest, GroupIds=["staff"], Image=b64(scene), MaxFaceNum=2, NeedPersonInfo=1)
    )
    assert found.PersonNum == 3
    assert sorted(r.Candidates[0].PersonId for r in found.Results) == ["bob", "carol"]
    for result in found.Results:
        top = result.Candidates[0]
        assert top.FaceId == "" and top.PersonName == top.PersonId.title()


def test_management_round_trip(emu: EmulatorHandle) -> None:
    client = client_for(emu)
    enrol(client)
    groups = client.GetGroupList(request(models.GetGroupListRequest))
    assert [(g.GroupId, g.GroupName) for g in groups.GroupInfos] == [("staff", "Staff")] and groups.GroupNum == 1
    persons = client.GetPersonList(request(models.GetPersonListRequest, GroupId="staff"))
    assert [p.PersonId for p in persons.PersonInfos] == PEOPLE and persons.PersonNum == 3 and persons.FaceNum == 3
    added = client.CreateFace(request(models.CreateFaceRequest, PersonId="bob", Images=[b64(photo("bob", 9))]))
    deleted = client.DeleteFace(request(models.DeleteFaceRequest, PersonId="bob", FaceIds=added.SucFaceIds))
    assert deleted.SucDeletedNum == 1 and deleted.SucFaceIds == added.SucFaceIds
    client.DeletePerson(request(models.DeletePersonRequest, PersonId="carol"))
    persons = client.GetPersonList(request(models.GetPersonListRequest, GroupId="staff"))
    assert [p.PersonId for p in persons.PersonInfos] == ["alice", "bob"]
    client.DeleteGroup(request(models.DeleteGroupRequest, GroupId="staff"))
    assert client.GetGroupList(request(models.GetGroupListRequest)).GroupInfos == []
    expect_error(
        "InvalidParameterValue.PersonIdNotExist",
        lambda: client.DeletePerson(request(models.DeletePersonRequest, PersonId="alice")),
    )


# --- errors as the SDK raises them ------------------------------------------------------------------------------


def test_a_wrong_secret_key_and_an_unknown_secret_id(emu: EmulatorHandle) -> None:
    get_groups = request(models.GetGroupListRequest)
    expect_error("AuthFailure.SignatureFailure", lambda: client_for(emu, secret_key="wrong").GetGroupList(get_groups))
    stranger = client_for(emu, secret_id="AKIDunknown000000000000000000000000")
    expect_error("AuthFailure.SecretIdNotFound", lambda: stranger.GetGroupList(get_groups))


def test_a_clock_more_than_five_minutes_off(emu: EmulatorHandle) -> None:
    client = client_for(emu)
    emu.call(lambda em: setattr(em.iai, "clock", lambda: time.time() + 301))
    try:
        expect_error("AuthFailure.SignatureExpire", lambda: client.GetGroupList(request(models.GetGroupListRequest)))
        emu.call(lambda em: setattr(em.iai, "clock", lambda: time.time() - 240))
        client.GetGroupList(request(models.GetGroupListRequest))  # within five minutes: accepted
    finally:
        emu.call(lambda em: setattr(em.iai, "clock", time.time))


def test_search_errors(emu: EmulatorHandle) -> None:
    client = client_for(emu)
    enrol(client)
    image = b64(photo("alice", 3))
    expect_error(
        "InvalidParameterValue.GroupIdNotExist",
        lambda: client.SearchFaces(request(models.SearchFacesRequest, GroupIds=["staff", "nobody"], Image=image)),
    )
    expect_error(
        "FailedOperation.SearchFacesExceed",
        lambda: client.SearchFaces(request(models.SearchFacesRequest, GroupIds=["staff"], Image=image, MaxFaceNum=11)),
    )
    missing = f"{emu.base_url}/images/not-there.jpg"
    expect_error(
        "FailedOperation.ImageDownloadError",
        lambda: client.SearchFaces(request(models.SearchFacesRequest, GroupIds=["staff"], Url=missing, Image=image)),
    )


def test_a_sixth_face_is_refused(emu: EmulatorHandle) -> None:
    client = client_for(emu)
    enrol(client)
    more = [b64(photo("alice", 20 + i)) for i in range(4)]
    assert client.CreateFace(request(models.CreateFaceRequest, PersonId="alice", Images=more)).SucFaceNum == 4
    sixth = request(models.CreateFaceRequest, PersonId="alice", Images=[b64(photo("alice", 30))])
    expect_error("InvalidParameterValue.PersonFaceNumExceed", lambda: client.CreateFace(sixth))


def test_injected_rate_limiting_and_internal_errors(emu: EmulatorHandle) -> None:
    client = client_for(emu)
    enrol(client)
    search = request(models.SearchFacesRequest, GroupIds=["staff"], Image=b64(photo("bob", 4)))
    emu.admin({"qps_limit": 0.001, "qps_burst": 1})
    client.SearchFaces(search)  # the bucket's one token
    expect_error("RequestLimitExceeded", lambda: client.SearchFaces(search))
    emu.admin({"error_rates": {"213": 1.0}})
    expect_error("InternalError", lambda: client.SearchFaces(search))
    client.GetGroupList(request(models.GetGroupListRequest))  # management calls are not faulted by default
    emu.admin({})
    assert client.SearchFaces(search).Results[0].Candidates[0].PersonId == "bob"


def test_a_spawned_emulator_with_a_shared_gallery_finds_v1_enrolments() -> None:
    with spawn_process(iai_shared_gallery=True) as process:
        v1 = Caller(process.base_url)
        try:
            assert v1.newperson("alice", ["legacy"], photo("alice", 1)).code == 0
        finally:
            v1.close()
        client = client_for(process)
        groups = client.GetGroupList(request(models.GetGroupListRequest))
        assert [g.GroupId for g in groups.GroupInfos] == ["legacy"]
        found = client.SearchFaces(
            request(models.SearchFacesRequest, GroupIds=["legacy"], Image=b64(photo("alice", 2)))
        )
        assert found.Results[0].Candidates[0].PersonId == "alice"
