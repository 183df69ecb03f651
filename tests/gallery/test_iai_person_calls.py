"""The IAI calls the gallery added to the worker's client — GetPersonBaseInfo, GetPersonGroupInfo, DeleteFace,
DeletePerson — against the emulator over HTTP, and their answers' parsers on malformed bodies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from worker.api import iai_answers
from worker.api.errors import ApiError
from worker.api.iai_client import IaiClient, IaiOptions
from worker.emulator import DEV_ACCOUNT, EmulatorHandle, synth

FACE = (40, 40, 120, 120)


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[IaiClient]:
    emu.reset(gallery=True)
    with IaiClient(
        IaiOptions(secret_id=DEV_ACCOUNT.secret_id, secret_key=DEV_ACCOUNT.secret_key, endpoint=emu.base_url)
    ) as c:
        yield c


def test_person_info_groups_and_deletes(client: IaiClient) -> None:
    client.create_group("staff")
    first = client.create_person("staff", "alice", "Alice", image=synth.render_scene([("alice", FACE)], (200, 200)))
    more = client.create_face("alice", images=[synth.render_scene([("alice", FACE)], (200, 200), seed=2)])
    info = client.person_base_info("alice")
    assert info.person_name == "Alice" and info.face_ids == (first.face_id, *more.suc_face_ids)
    assert client.person_groups("alice") == ["staff"]

    deleted = client.delete_faces("alice", [more.suc_face_ids[0], "no-such-face"])
    assert deleted.deleted == 1 and deleted.face_ids == more.suc_face_ids
    with pytest.raises(ApiError) as last:
        client.delete_faces("alice", [first.face_id])
    assert last.value.code == "InvalidParameterValue.DeleteFaceNumExceed"  # a person keeps one face

    client.delete_person("alice")
    for call in (client.person_base_info, client.person_groups, client.delete_person):
        with pytest.raises(ApiError) as missing:
            call("alice")
        assert missing.value.code == "InvalidParameterValue.PersonIdNotExist"
    with pytest.raises(ApiError) as empty:
        client.delete_faces("alice", [])
    assert empty.value.code == "MissingParameter.ErrorParameterEmpty"


def test_detect_faces_counts_the_faces_of_a_photo(client: IaiClient) -> None:
    pair = synth.render_scene([("alice", (10, 10, 100, 100)), ("bob", (150, 40, 80, 80))], (300, 200))
    both = client.detect_faces(image=pair, max_face_num=5)
    assert [(f.width, f.height) for f in both.faces] == [(100, 100), (80, 80)]  # largest first
    assert (both.image_width, both.image_height) == (300, 200)
    assert len(client.detect_faces(image=pair).faces) == 1  # MaxFaceNum's default: the largest only
    with pytest.raises(ApiError) as none:
        client.detect_faces(image=synth.render_scene([], (200, 200)))
    assert none.value.code == "InvalidParameterValue.NoFaceInPhoto"
    with pytest.raises(ValueError, match="max_face_num"):
        client.detect_faces(image=pair, max_face_num=121)


@pytest.mark.parametrize(
    ("parse", "body"),
    [
        (iai_answers.parse_person_base_info, b'{"Response": {"FaceIds": "f1", "RequestId": "r"}}'),
        (iai_answers.parse_person_group_info, b'{"Response": {"PersonGroupInfos": [{}], "RequestId": "r"}}'),
        (iai_answers.parse_delete_face, b'{"Response": {"SucFaceIds": [], "RequestId": "r"}}'),
        (iai_answers.parse_detect_face, b'{"Response": {"FaceInfos": [{"X": 1}], "RequestId": "r"}}'),
    ],
)
def test_malformed_answers_are_bad_responses(parse: object, body: bytes) -> None:
    with pytest.raises(ApiError) as err:
        parse(body, 200)  # type: ignore[operator]
    assert err.value.code == "bad_response" and err.value.transient
