"""What IAI's actions mean at the emulator, beyond their field names: limits, thresholds, face sizes and quality,
image errors, group and person rules, and where IAI's data live (their own gallery space, or v1's when shared).

Synthetic photos make every case deterministic: a face's size is its pixel side, so MinFaceSize, the quality
check (QualityControl q needs a side of QUALITY_MIN_SIDE[q] px) and MaxFaceNum's "largest first" are set up
by drawing faces of chosen sizes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.emulator.iai_support import IaiCaller, b64, photo, publish
from tests.support.emulator import Caller
from worker.emulator import EmulatorHandle, start_in_thread, synth
from worker.emulator.iai_wire import QUALITY_MIN_SIDE, iai_score


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    handle = start_in_thread(images_dir=tmp_path_factory.mktemp("iai-semantics"))
    try:
        yield handle
    finally:
        handle.stop()


def enrol(iai: IaiCaller, names: list[str], group: str = "staff", **extra: Any) -> None:
    iai.ok("CreateGroup", {"GroupId": group, "GroupName": group})
    for i, name in enumerate(names):
        fields = {"GroupId": group, "PersonId": name, "PersonName": name.title(), "Image": b64(photo(name, 100 + i))}
        iai.ok("CreatePerson", fields | extra)


def search(iai: IaiCaller, image: bytes, action: str = "SearchFaces", **fields: Any) -> dict[str, Any]:
    return iai.ok(action, {"GroupIds": ["staff"], "Image": b64(image), **fields})


PEOPLE = [f"p{i}" for i in range(7)]


# --- search ---------------------------------------------------------------------------------------------------


def test_max_person_num_bounds_the_candidates_best_first(iai: IaiCaller) -> None:
    enrol(iai, PEOPLE)
    for asked, expected in ((None, 5), (7, 7), (2, 2)):
        fields = {} if asked is None else {"MaxPersonNum": asked}
        (result,) = search(iai, photo("p3", 9), **fields)["Results"]
        scores = [c["Score"] for c in result["Candidates"]]
        assert len(scores) == expected and scores == sorted(scores, reverse=True)
        assert result["Candidates"][0]["PersonId"] == "p3" and scores[0] > 80 > scores[1]


def test_face_match_threshold_is_exclusive_for_faces_and_inclusive_for_persons(iai: IaiCaller) -> None:
    enrol(iai, PEOPLE)
    image = photo("p3", 9)
    (result,) = search(iai, image, FaceMatchThreshold=50)["Results"]
    assert [c["PersonId"] for c in result["Candidates"]] == ["p3"]
    top = result["Candidates"][0]["Score"]
    assert search(iai, image, FaceMatchThreshold=top)["Results"][0]["Candidates"] == []
    (fused,) = search(iai, image, "SearchPersons", FaceMatchThreshold=top)["Results"]
    assert [(c["PersonId"], c["Score"]) for c in fused["Candidates"]] == [("p3", top)]


def test_need_person_info(iai: IaiCaller) -> None:
    enrol(iai, ["alice"], Gender=2)
    for flag, expected in ((1, ("Alice", 2, [{"GroupId": "staff", "PersonExDescriptions": []}])), (0, None), (5, None)):
        candidate = search(iai, photo("alice", 3), NeedPersonInfo=flag)["Results"][0]["Candidates"][0]
        info = (candidate["PersonName"], candidate["Gender"], candidate["PersonGroupInfos"])
        assert info == (expected or (None, None, None))


def test_faces_come_largest_first_and_max_face_num_takes_the_largest(iai: IaiCaller) -> None:
    enrol(iai, ["a", "b", "c"])
    scene = synth.render_scene(
        [("a", (10, 10, 60, 60)), ("b", (100, 10, 120, 120)), ("c", (240, 10, 90, 90))], (340, 140)
    )
    widths = [r["FaceRect"]["Width"] for r in search(iai, scene, MaxFaceNum=10)["Results"]]
    assert [round(w, -1) for w in widths] == [120, 90, 60]
    two = search(iai, scene, MaxFaceNum=2)["Results"]
    assert [r["Candidates"][0]["PersonId"] for r in two] == ["b", "c"]


def test_faces_under_min_face_size_are_skipped_and_none_under_34_px_is_ever_searched(iai: IaiCaller) -> None:
    enrol(iai, ["a", "b"])
    scene = synth.render_scene([("a", (10, 10, 40, 40)), ("b", (80, 10, 120, 120))], (220, 140))
    assert len(search(iai, scene, MaxFaceNum=10)["Results"]) == 2
    assert [r["Candidates"][0]["PersonId"] for r in search(iai, scene, MaxFaceNum=10, MinFaceSize=80)["Results"]] == [
        "b"
    ]
    fields = {"GroupIds": ["staff"], "Image": b64(scene), "MinFaceSize": 200}
    assert iai.error("SearchFaces", fields) == "FailedOperation.FaceSizeTooSmall"
    tiny = synth.render_scene([("a", (10, 10, 30, 30))], (100, 100))
    fields = {"GroupIds": ["staff"], "Image": b64(tiny), "MinFaceSize": 10}
    assert iai.error("SearchFaces", fields) == "FailedOperation.FaceSizeTooSmall"


def test_a_face_failing_the_quality_check_comes_back_with_ret_code_1601(iai: IaiCaller) -> None:
    enrol(iai, ["a", "b"])
    assert QUALITY_MIN_SIDE[2] == 48
    scene = synth.render_scene([("a", (10, 10, 44, 44)), ("b", (80, 10, 120, 120))], (220, 140))
    results = search(iai, scene, MaxFaceNum=10, QualityControl=2)["Results"]
    assert [(r["RetCode"], len(r["Candidates"]) > 0) for r in results] == [(0, True), (-1601, False)]
    assert results[1]["FaceRect"]["Width"] in range(42, 47)
    assert [r["RetCode"] for r in search(iai, scene, MaxFaceNum=10)["Results"]] == [0, 0]  # no control, no check
    small = synth.render_scene([("a", (10, 10, 44, 44))], (100, 100))
    persons = search(iai, small, "SearchPersons", QualityControl=2)
    assert persons["PersonNum"] == 0 and persons["Results"][0]["RetCode"] == -1601


def test_a_face_passing_the_image_edge_has_a_face_rect_beyond_it(iai: IaiCaller) -> None:
    enrol(iai, ["alice", "bob"])
    scene = synth.render_scene([("alice", (-25, 30, 120, 120)), ("bob", (150, -30, 90, 90))], (280, 200), seed=2)
    results = search(iai, scene, MaxFaceNum=10)["Results"]
    boxes = {r["Candidates"][0]["PersonId"]: r["FaceRect"] for r in results}
    assert boxes["alice"]["X"] in range(-27, -22) and boxes["alice"]["Width"] in range(118, 123)
    assert boxes["bob"]["Y"] in range(-32, -27) and boxes["bob"]["Height"] in range(88, 93)


def test_scores_map_the_engine_confidence_onto_iais_scale() -> None:
    assert (iai_score(0), iai_score(90), iai_score(100)) == (0.0, 80.0, 100.0)
    scores = [iai_score(c) for c in range(0, 101)]
    assert scores == sorted(scores) and len(set(scores)) == 101
    assert iai_score(95) == pytest.approx(89.7, abs=0.1) and iai_score(40) < 15


def test_searching_groups_without_faces(iai: IaiCaller) -> None:
    enrol(iai, ["a"])
    iai.ok("CreateGroup", {"GroupId": "empty", "GroupName": "empty"})
    image = b64(photo("a", 3))
    assert iai.error("SearchFaces", {"GroupIds": ["empty"], "Image": image}) == "InvalidParameterValue.NoFaceInGroups"
    found = iai.ok("SearchFaces", {"GroupIds": ["empty", "staff"], "Image": image})
    assert found["FaceNum"] == 1 and found["Results"][0]["Candidates"][0]["PersonId"] == "a"


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (80, 80)).save(out, "GIF")
    return out.getvalue()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"Image": b64(synth.render_scene([], (200, 200)))}, "InvalidParameterValue.NoFaceInPhoto"),
        ({"Image": b64(_gif())}, "FailedOperation.ImageDecodeFailed"),
        ({"Image": b64(b"not an image at all")}, "FailedOperation.ImageDecodeFailed"),
        ({"Image": "not base64!"}, "FailedOperation.ImageDecodeFailed"),
        ({"Image": ""}, "InvalidParameterValue.ImageEmpty"),
        ({}, "InvalidParameterValue.ImageEmpty"),
        ({"Image": "A" * (5 * 1024 * 1024 + 4)}, "FailedOperation.ImageSizeExceed"),
        ({"Url": "ftp://127.0.0.1/a.jpg"}, "InvalidParameterValue.UrlIllegal"),
        ({"Url": "{base}/images/not-there.jpg", "Image": b64(photo("a"))}, "FailedOperation.ImageDownloadError"),
        ({"Url": "{base}/images/four-mb.bin"}, "FailedOperation.ImageSizeExceed"),
    ],
    ids=["no-face", "gif", "not-an-image", "not-base64", "empty", "none", "over-5mb", "ftp", "404", "url-over-5mb"],
)
def test_image_errors(emu: EmulatorHandle, iai: IaiCaller, fields: dict[str, str], expected: str) -> None:
    enrol(iai, ["a"])
    publish(emu, "four-mb.bin", bytes(4 * 1024 * 1024))  # 5.3 MB once base64-encoded
    fields = {k: v.replace("{base}", emu.base_url) for k, v in fields.items()}
    assert iai.error("SearchFaces", {"GroupIds": ["staff"], **fields}) == expected


def test_url_wins_over_image_and_groups_are_checked_before_any_download(emu: EmulatorHandle, iai: IaiCaller) -> None:
    enrol(iai, ["a"])
    url = publish(emu, "a.jpg", photo("a", 5))
    found = iai.ok("SearchFaces", {"GroupIds": ["staff"], "Url": url, "Image": "garbage"})
    assert found["Results"][0]["Candidates"][0]["PersonId"] == "a"
    downloads = emu.stats()["downloads"]["count"]
    assert iai.error("SearchFaces", {"GroupIds": ["nobody"], "Url": url}) == "InvalidParameterValue.GroupIdNotExist"
    assert emu.stats()["downloads"]["count"] == downloads


# --- groups, persons, faces -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"GroupId": "staff", "GroupName": "Other"}, "InvalidParameterValue.GroupIdAlreadyExist"),
        ({"GroupId": "other", "GroupName": "staff"}, "InvalidParameterValue.GroupNameAlreadyExist"),
        ({"GroupId": "a/b", "GroupName": "x"}, "InvalidParameterValue.GroupIdIllegal"),
        ({"GroupId": "g" * 65, "GroupName": "x"}, "InvalidParameterValue.GroupIdTooLong"),
        ({"GroupId": "x", "GroupName": "n" * 61}, "InvalidParameterValue.GroupNameTooLong"),
        ({"GroupId": "x", "GroupName": "two words"}, "InvalidParameterValue.GroupNameIllegal"),
        ({"GroupId": "x", "GroupName": "x", "Tag": "t" * 41}, "InvalidParameterValue.GroupTagTooLong"),
        (
            {"GroupId": "x", "GroupName": "x", "FaceModelVersion": "2.0"},
            "InvalidParameterValue.FaceModelVersionIllegal",
        ),
        ({"GroupName": "x"}, "MissingParameter"),
    ],
)
def test_create_group_errors(iai: IaiCaller, fields: dict[str, str], expected: str) -> None:
    iai.ok("CreateGroup", {"GroupId": "staff", "GroupName": "staff"})
    assert iai.error("CreateGroup", fields) == expected


def test_group_list_pages(iai: IaiCaller) -> None:
    for i in range(12):
        iai.ok("CreateGroup", {"GroupId": f"g{i:02}", "GroupName": f"n{i:02}", "Tag": "t"})
    first = iai.ok("GetGroupList")
    assert first["GroupNum"] == 12 and [g["GroupId"] for g in first["GroupInfos"]] == [f"g{i:02}" for i in range(10)]
    assert [g["GroupId"] for g in iai.ok("GetGroupList", {"Offset": 10, "Limit": 5})["GroupInfos"]] == ["g10", "g11"]
    info = first["GroupInfos"][0]
    assert (info["Tag"], info["FaceModelVersion"]) == ("t", "3.0") and info["CreationTimestamp"] > 0
    assert iai.error("GetGroupList", {"Limit": 1001}) == "InvalidParameterValue.LimitExceed"
    assert iai.error("GetGroupList", {"Offset": 13}) == "InvalidParameterValue.OffsetExceed"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"GroupId": "nobody"}, "InvalidParameterValue.GroupIdNotExist"),
        ({"PersonId": "alice"}, "InvalidParameterValue.PersonIdAlreadyExist"),
        ({"PersonId": "a b"}, "InvalidParameterValue.PersonIdIllegal"),
        ({"Gender": 3}, "InvalidParameterValue.PersonGenderIllegal"),
        ({"Image": b64(photo("carol", side=30, size=(100, 100)))}, "FailedOperation.FaceSizeTooSmall"),
        ({"Image": b64(photo("carol", side=60)), "QualityControl": 4}, "FailedOperation.FaceQualityNotQualified"),
        ({"Image": b64(synth.render_scene([], (100, 100)))}, "InvalidParameterValue.NoFaceInPhoto"),
        ({"UniquePersonControl": 5}, "InvalidParameterValue.UniquePersonControlIllegal"),
    ],
)
def test_create_person_errors(iai: IaiCaller, fields: dict[str, Any], expected: str) -> None:
    enrol(iai, ["alice"])
    iai.ok("CreateGroup", {"GroupId": "other", "GroupName": "other"})
    base = {"GroupId": "other", "PersonId": "carol", "PersonName": "Carol", "Image": b64(photo("carol"))}
    assert iai.error("CreatePerson", base | fields) == expected


def test_unique_person_control_answers_the_similar_person_instead_of_creating(iai: IaiCaller) -> None:
    enrol(iai, ["alice"])
    again = {"GroupId": "staff", "PersonId": "alice2", "PersonName": "Alice", "Image": b64(photo("alice", 42))}
    answer = iai.ok("CreatePerson", again | {"UniquePersonControl": 2})
    assert (answer["FaceId"], answer["SimilarPersonId"]) == ("", "alice")
    assert [p["PersonId"] for p in iai.ok("GetPersonList", {"GroupId": "staff"})["PersonInfos"]] == ["alice"]
    created = iai.ok("CreatePerson", again)  # without the control she is enrolled twice
    assert created["FaceId"] and created["SimilarPersonId"] == ""


def test_create_face_answers_per_image(emu: EmulatorHandle, iai: IaiCaller) -> None:
    enrol(iai, ["alice", "bob"])
    images = [photo("alice", 7), synth.render_scene([], (100, 100)), b"junk", photo("bob", 7)]
    added = iai.ok("CreateFace", {"PersonId": "alice", "Images": [b64(i) for i in images]})
    assert added["RetCode"] == [0, -1101, -1102, -1604]
    assert (added["SucFaceNum"], added["SucIndexes"], len(added["SucFaceIds"])) == (1, [0], 1)
    assert added["SucFaceRects"][0]["Width"] in range(118, 123)
    bob = iai.ok("CreateFace", {"PersonId": "bob", "Images": [b64(photo("alice", 8))], "FaceMatchThreshold": 0})
    assert bob["RetCode"] == [0], "a threshold of 0 takes any face"
    small = iai.ok("CreateFace", {"PersonId": "bob", "Images": [b64(photo("bob", 3, side=60))], "QualityControl": 4})
    assert small["RetCode"] == [-1601]
    five = [b64(photo("alice", s)) for s in range(5)]
    assert iai.error("CreateFace", {"PersonId": "alice", "Images": five}) == "InvalidParameterValue.UploadFaceNumExceed"
    assert (
        iai.error("CreateFace", {"PersonId": "nobody", "Images": five[:1]}) == "InvalidParameterValue.PersonIdNotExist"
    )
    missing = {"PersonId": "alice", "Urls": [publish(emu, "x.jpg", photo("alice", 9)), f"{emu.base_url}/images/no"]}
    assert iai.error("CreateFace", missing) == "FailedOperation.ImageDownloadError"
    faces = iai.ok("GetPersonList", {"GroupId": "staff"})["PersonInfos"][0]["FaceIds"]
    assert len(faces) == 2, "a failed download adds none of the request's faces"


def test_delete_face_keeps_at_least_one(iai: IaiCaller) -> None:
    enrol(iai, ["alice"])
    added = iai.ok("CreateFace", {"PersonId": "alice", "Images": [b64(photo("alice", 7))]})["SucFaceIds"]
    (person,) = iai.ok("GetPersonList", {"GroupId": "staff"})["PersonInfos"]
    everything = {"PersonId": "alice", "FaceIds": person["FaceIds"]}
    assert iai.error("DeleteFace", everything) == "InvalidParameterValue.DeleteFaceNumExceed"
    assert iai.ok("DeleteFace", {"PersonId": "alice", "FaceIds": ["123", "456"]})["SucDeletedNum"] == 0
    assert iai.ok("DeleteFace", {"PersonId": "alice", "FaceIds": added})["SucFaceIds"] == added


def test_deleting_a_group_deletes_its_persons(iai: IaiCaller) -> None:
    enrol(iai, ["alice"])
    iai.ok("DeleteGroup", {"GroupId": "staff"})
    assert iai.error("DeleteGroup", {"GroupId": "staff"}) == "InvalidParameterValue.GroupIdNotExist"
    assert iai.error("DeletePerson", {"PersonId": "alice"}) == "InvalidParameterValue.PersonIdNotExist"
    enrol(iai, ["alice"])  # the id is free again


# --- where IAI's data live ----------------------------------------------------------------------------------------


def test_iai_and_v1_data_are_apart_by_default(emu: EmulatorHandle, iai: IaiCaller) -> None:
    v1 = Caller(emu.base_url)
    try:
        assert v1.newperson("alice", ["g"], photo("alice")).code == 0
        assert iai.ok("GetGroupList")["GroupInfos"] == []
        fields = {"GroupIds": ["g"], "Image": b64(photo("alice", 2))}
        assert iai.error("SearchFaces", fields) == "InvalidParameterValue.GroupIdNotExist"
        enrol(iai, ["bob"], group="g")
        assert v1.multidentify(photo("bob", 2), ["g"]).data["results"][0]["candidates"][0]["person_id"] == "alice"
    finally:
        v1.close()


def test_a_shared_gallery_serves_both_apis(tmp_path: Path) -> None:
    with start_in_thread(iai_shared_gallery=True, db=tmp_path / "g.db") as handle:
        v1, iai = Caller(handle.base_url), IaiCaller(handle.base_url)
        try:
            assert v1.newperson("alice", ["g"], photo("alice")).code == 0
            assert [(g["GroupId"], g["GroupName"]) for g in iai.ok("GetGroupList")["GroupInfos"]] == [("g", "g")]
            found = iai.ok("SearchFaces", {"GroupIds": ["g"], "Image": b64(photo("alice", 2))})
            assert found["Results"][0]["Candidates"][0]["PersonId"] == "alice"
            iai.ok("CreatePerson", {"GroupId": "g", "PersonId": "bob", "PersonName": "Bob", "Image": b64(photo("bob"))})
            assert v1.multidentify(photo("bob", 2), ["g"]).data["results"][0]["candidates"][0]["person_id"] == "bob"
            iai.ok("CreateGroup", {"GroupId": "empty", "GroupName": "empty"})
        finally:
            v1.close()
            iai.close()
    with start_in_thread(iai_shared_gallery=True, db=tmp_path / "g.db") as again:
        iai = IaiCaller(again.base_url)
        try:
            assert [g["GroupId"] for g in iai.ok("GetGroupList")["GroupInfos"]] == ["empty", "g"]
            persons = iai.ok("GetPersonList", {"GroupId": "g"})
            assert [p["PersonId"] for p in persons["PersonInfos"]] == ["alice", "bob"] and persons["FaceNum"] == 2
        finally:
            iai.close()
