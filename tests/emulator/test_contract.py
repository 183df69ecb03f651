"""The emulator on the wire: hand-built JSON and multipart requests, documented envelopes and codes."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import orjson
import pytest
import requests

from tests.support.emulator import APPID, Caller, dev_auth
from worker.api.signature import sign, sign_plain
from worker.emulator import DEV_ACCOUNT, Account, EmulatorHandle, start_in_thread, synth
from worker.emulator.imageserver import ImageServerHandle

FACE = (20, 20, 120, 120)


def photo(name: str, seed: int = 1, fmt: str = "JPEG") -> bytes:
    return synth.render_scene([(name, FACE)], (200, 200), fmt, seed=seed)


def enroll(api: Caller, names: list[str], group: str = "g") -> None:
    for i, name in enumerate(names):
        answer = api.newperson(name, [group], photo(name, seed=100 + i), person_name=name.title())
        assert answer.code == 0, answer.body


# --- envelopes and enrollment end to end -------------------------------------------------------------------------


def test_newperson_answer_shape(api: Caller) -> None:
    answer = api.newperson("alice", ["g1", "g2"], photo("alice"), person_name="Alice", tag="vip")
    assert answer.status == 200
    assert answer.body["code"] == 0 and answer.body["message"] == "OK"
    data = answer.data
    assert data["person_id"] == "alice"
    assert data["suc_group"] == 2 and data["suc_face"] == 1
    assert data["group_ids"] == ["g1", "g2"]
    assert data["face_id"].isdigit()
    assert data["session_id"] == ""


def test_enrolled_people_are_identified_in_a_crowd_with_a_stranger(api: Caller) -> None:
    people = ["alice", "bob", "carol"]
    enroll(api, people)
    scene, rects = synth.scene_with_faces([*people, "stranger"], (640, 480), seed=77)
    answer = api.multidentify(scene, ["g"], session_id="sess-1")
    assert answer.code == 0, answer.body
    assert answer.data["session_id"] == "sess-1"
    results = answer.data["results"]
    assert len(results) == 4
    expected = {tuple(r): name for r, name in zip(rects, [*people, "stranger"], strict=True)}
    for result in results:
        rect = result["face_rect"]
        generated = min(expected, key=lambda r: abs(r[0] - rect["x"]) + abs(r[1] - rect["y"]))
        assert (
            max(
                abs(a - b)
                for a, b in zip(generated, (rect["x"], rect["y"], rect["width"], rect["height"]), strict=False)
            )
            <= 3
        )
        candidates = result["candidates"]
        assert len(candidates) == 3  # every person of the group, best face each
        confidences = [c["confidence"] for c in candidates]
        assert confidences == sorted(confidences, reverse=True)
        assert set(candidates[0]) == {"person_id", "face_id", "confidence", "tag"}
        name = expected[generated]
        if name == "stranger":
            assert candidates[0]["confidence"] < 60
        else:
            assert candidates[0]["person_id"] == name
            assert candidates[0]["confidence"] >= 90
            assert candidates[1]["confidence"] < 60


def test_json_url_and_group_id_form(api: Caller, images: ImageServerHandle, image_dir: Path) -> None:
    enroll(api, ["dora"])
    (image_dir / "dora.jpg").write_bytes(synth.render_scene([("dora", (30, 30, 100, 100))], (240, 180), seed=5))
    answer = api.json("multidentify", {"appid": APPID, "group_id": "g", "url": images.url_for("dora.jpg"), "x": 1})
    assert answer.code == 0, answer.body
    (result,) = answer.data["results"]
    assert result["candidates"][0]["person_id"] == "dora"
    assert answer.data["session_id"] == ""


def test_url_wins_over_image(api: Caller, images: ImageServerHandle, image_dir: Path) -> None:
    enroll(api, ["eve", "finn"])
    (image_dir / "eve.jpg").write_bytes(photo("eve", seed=6))
    fields = [("appid", APPID), ("group_id", "g"), ("url", images.url_for("eve.jpg"))]
    answer = api.multipart("multidentify", fields, [("image", ("f.jpg", photo("finn", seed=7), "image/jpeg"))])
    assert answer.code == 0
    assert answer.data["results"][0]["candidates"][0]["person_id"] == "eve"


def test_official_sdk_style_multipart_with_filenames_on_text_parts(api: Caller) -> None:
    enroll(api, ["gus"])
    files = [
        ("appid", ("appid", APPID.encode(), "text/plain")),
        ("bucket", ("bucket", b"", "text/plain")),
        ("group_ids[0]", ("group_ids[0]", b"g", "text/plain")),
        ("image", ("frame.jpg", photo("gus", seed=8), "image/jpeg")),
    ]
    response = api.raw("multidentify", files=files, headers={"Authorization": dev_auth()})
    body = orjson.loads(response.content)
    assert body["code"] == 0, body
    assert body["data"]["results"][0]["candidates"][0]["person_id"] == "gus"


def test_identify_takes_the_largest_face_and_base64_json_image(api: Caller) -> None:
    enroll(api, ["hal", "ida"])
    scene = synth.render_scene([("hal", (10, 10, 60, 60)), ("ida", (100, 10, 150, 150))], (300, 200), seed=3)
    answer = api.json("identify", {"appid": APPID, "group_id": "g", "image": base64.b64encode(scene).decode()})
    assert answer.code == 0, answer.body
    assert answer.data["candidates"][0]["person_id"] == "ida"


def test_more_than_five_faces_rest_are_rect_only_largest_first(api: Caller) -> None:
    enroll(api, ["p0"])
    scene, _rects = synth.scene_with_faces([f"p{i}" for i in range(7)], (800, 480), seed=11)
    answer = api.multidentify(scene, ["g"])
    results = answer.data["results"]
    assert len(results) == 7
    assert [bool(r["candidates"]) for r in results] == [True] * 5 + [False] * 2
    areas = [r["face_rect"]["width"] * r["face_rect"]["height"] for r in results]
    assert areas == sorted(areas, reverse=True)


def test_zero_faces_is_1101(api: Caller) -> None:
    enroll(api, ["jo"])
    assert api.multidentify(synth.render_scene([], (320, 240)), ["g"]).code == -1101


def test_top_five_of_many_persons(api: Caller) -> None:
    enroll(api, [f"q{i}" for i in range(8)])
    answer = api.multidentify(photo("q3", seed=50), ["g"])
    candidates = answer.data["results"][0]["candidates"]
    assert len(candidates) == 5
    assert candidates[0]["person_id"] == "q3"
    assert len({c["person_id"] for c in candidates}) == 5


def test_person_in_two_requested_groups_counts_once(api: Caller) -> None:
    assert api.newperson("kim", ["ga", "gb"], photo("kim")).code == 0
    candidates = api.multidentify(photo("kim", seed=2), ["ga", "gb"]).data["results"][0]["candidates"]
    assert [c["person_id"] for c in candidates] == ["kim"]


# --- request validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"group_id": "g", "url": "http://127.0.0.1:9/x.jpg"}, -1301),  # appid missing
        ({"appid": APPID, "url": "http://127.0.0.1:9/x.jpg"}, -1301),  # group missing
        ({"appid": APPID, "group_id": "g"}, -1301),  # image and url missing
        ({"appid": APPID, "group_id": "no such group", "url": "http://x/y"}, -1313),
        ({"appid": APPID, "group_ids": ["g", "a/b"], "url": "http://x/y"}, -1313),
        ({"appid": APPID, "group_ids": ["tab\there"], "url": "http://x/y"}, -1313),
        ({"appid": APPID, "group_id": "unknown", "url": "http://x/y"}, -1306),
    ],
)
def test_multidentify_field_errors(api: Caller, body: dict[str, object], code: int) -> None:
    enroll(api, ["zed"])
    answer = api.json("multidentify", body)
    assert answer.status == 200
    assert answer.code == code
    assert isinstance(answer.body["message"], str) and answer.body["message"]


def test_body_over_limit_is_23(api: Caller) -> None:
    big = b"\xff\xd8" + b"\x00" * 1_600_000
    answer = api.multidentify(big, ["g"])
    assert (answer.status, answer.code) == (200, 23)


def test_gif_is_1400_and_garbage_is_1102(api: Caller) -> None:
    enroll(api, ["lee"])
    assert api.multidentify(photo("lee", fmt="GIF"), ["g"]).code == -1400
    assert api.multidentify(b"\x89PNG\r\n\x1a\n broken", ["g"]).code == -1102
    assert api.multidentify(b"", ["g"]).code == -1300


def test_bad_json_body_is_3(api: Caller) -> None:
    response = api.raw("multidentify", data=b"{oops", headers={"Authorization": dev_auth()})
    assert orjson.loads(response.content)["code"] == 3


def test_unknown_action_is_404(api: Caller) -> None:
    response = api.raw("nosuchthing", json={"appid": APPID}, headers={"Authorization": dev_auth()})
    assert response.status_code == 404


# --- url downloads ------------------------------------------------------------------------------------------------


def test_url_download_failures_are_1308_and_undecodable_is_1102(
    api: Caller, images: ImageServerHandle, image_dir: Path
) -> None:
    enroll(api, ["max"])
    body = {"appid": APPID, "group_id": "g"}
    assert api.json("multidentify", body | {"url": images.url_for("missing.jpg")}).code == -1308
    assert api.json("multidentify", body | {"url": "http://127.0.0.1:9/refused.jpg"}).code == -1308
    assert api.json("multidentify", body | {"url": "ftp://127.0.0.1/x.jpg"}).code == -1308
    (image_dir / "junk.jpg").write_bytes(b"this is not an image")
    assert api.json("multidentify", body | {"url": images.url_for("junk.jpg")}).code == -1102


def test_image_published_later_is_found_once_it_exists(api: Caller, images: ImageServerHandle, image_dir: Path) -> None:
    enroll(api, ["ned"])
    body = {"appid": APPID, "group_id": "g", "url": images.url_for("later.jpg")}
    assert api.json("multidentify", body).code == -1308
    (image_dir / "later.jpg").write_bytes(photo("ned", seed=9))
    assert api.json("multidentify", body).code == 0


# --- signature codes over HTTP ---------------------------------------------------------------------------------------


def test_signature_failures_over_http(api: Caller) -> None:
    enroll(api, ["sig"])
    now = int(time.time())
    body = {"appid": APPID, "group_id": "g", "url": "http://127.0.0.1:9/x.jpg"}

    def code(auth: str | None, appid: str = APPID) -> int:
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = auth
        response = api.raw("multidentify", data=orjson.dumps(body | {"appid": appid}), headers=headers)
        return int(orjson.loads(response.content)["code"])

    assert code(None) == 4
    assert code("") == 4
    assert code("not-base64!!") == 5
    assert code(dev_auth(), appid="1250000099") == 6
    assert code(sign("1259999999", DEV_ACCOUNT.secret_id, "k", now=now, lifetime=60), appid="1259999999") == 10
    assert code(sign(APPID, "AKIDunknown", "k", now=now, lifetime=60)) == 11
    assert code(sign(APPID, DEV_ACCOUNT.secret_id, "wrong-key", now=now, lifetime=60)) == 14
    assert code(dev_auth(lifetime=10, now=now - 100)) == 9
    single = sign(APPID, DEV_ACCOUNT.secret_id, DEV_ACCOUNT.secret_key, now=now, lifetime=0, fileid="f")
    assert code(single) == -1308  # accepted once (then the download fails)
    assert code(single) == 13
    shuffled = sign_plain(DEV_ACCOUNT.secret_key, f"k={DEV_ACCOUNT.secret_id}&t={now}&e={now + 60}&a={APPID}".encode())
    assert code(shuffled) == -1308


def test_secret_id_of_another_appid_is_12() -> None:
    other = Account("1250000777", "AKIDother777", "other-secret")
    with start_in_thread(accounts=[DEV_ACCOUNT, other]) as emu:
        caller = Caller(emu.base_url)
        auth = sign(APPID, other.secret_id, other.secret_key, now=int(time.time()), lifetime=60)
        answer = caller.json("getgroupids", {"appid": APPID}, auth=auth)
        assert answer.code == 12
        own = sign(other.appid, other.secret_id, other.secret_key, now=int(time.time()), lifetime=60)
        assert caller.json("getgroupids", {"appid": other.appid}, auth=own).code == 0
        caller.close()


# --- management ---------------------------------------------------------------------------------------------------


def test_person_lifecycle(api: Caller) -> None:
    assert api.newperson("olga", ["g1"], photo("olga"), person_name="Olga", tag="t1").code == 0
    assert api.newperson("olga", ["g1"], photo("olga", seed=2)).code == -1302
    info = api.json("getinfo", {"appid": APPID, "person_id": "olga"}).data
    assert (info["person_name"], info["tag"], info["group_ids"]) == ("Olga", "t1", ["g1"])
    assert len(info["face_ids"]) == 1

    added = api.multipart(
        "addface",
        [("appid", APPID), ("person_id", "olga"), ("tag", "second")],
        [
            ("images[0]", ("a.jpg", photo("olga", seed=3), "image/jpeg")),
            ("images[1]", ("b.jpg", photo("olga", seed=3), "image/jpeg")),  # same photo again
            ("images[2]", ("c.jpg", synth.render_scene([], (100, 100)), "image/jpeg")),
        ],
    )
    assert added.code == 0, added.body
    assert added.data["added"] == 1 and added.data["ret_codes"] == [0, -1312, -1101]
    assert len(added.data["face_ids"]) == 1
    new_face = added.data["face_ids"][0]

    face_ids = api.json("getfaceids", {"appid": APPID, "person_id": "olga"}).data["face_ids"]
    assert new_face in face_ids and len(face_ids) == 2
    face_info = api.json("getfaceinfo", {"appid": APPID, "face_id": new_face}).data["face_info"]
    assert face_info["face_id"] == new_face and face_info["width"] == 120.0

    assert api.json("setinfo", {"appid": APPID, "person_id": "olga", "person_name": "O."}).code == 0
    assert api.json("getinfo", {"appid": APPID, "person_id": "olga"}).data["person_name"] == "O."

    joined = api.json("addgroupids", {"appid": APPID, "person_id": "olga", "group_ids": ["g2", "g1"]})
    assert (joined.data["added"], joined.data["group_ids"]) == (1, ["g2"])
    assert api.json("getgroupids", {"appid": APPID}).data["group_ids"] == ["g1", "g2"]
    assert api.json("getpersonids", {"appid": APPID, "group_id": "g2"}).data["person_ids"] == ["olga"]
    left = api.json("delgroupids", {"appid": APPID, "person_id": "olga", "group_ids": ["g1"]})
    assert (left.data["deleted"], left.data["group_ids"]) == (1, ["g1"])
    assert api.json("getpersonids", {"appid": APPID, "group_id": "g1"}).code == -1306  # emptied group is gone

    deleted = api.json("delface", {"appid": APPID, "person_id": "olga", "face_ids": [new_face]})
    assert (deleted.data["deleted"], deleted.data["face_ids"]) == (1, [new_face])
    assert api.json("delface", {"appid": APPID, "person_id": "olga", "face_ids": [new_face]}).code == -1305
    assert api.json("getfaceinfo", {"appid": APPID, "face_id": new_face}).code == -1305

    assert api.json("delperson", {"appid": APPID, "person_id": "olga"}).data == {
        "session_id": "",
        "person_id": "olga",
        "deleted": 1,
    }
    assert api.json("getinfo", {"appid": APPID, "person_id": "olga"}).code == -1303
    assert api.json("delperson", {"appid": APPID, "person_id": "olga"}).code == -1303
    assert api.json("getgroupids", {"appid": APPID}).data["group_ids"] == []


def test_addface_with_only_failures_answers_the_failure_code(api: Caller) -> None:
    enroll(api, ["pia"])
    answer = api.multipart(
        "addface",
        [("appid", APPID), ("person_id", "pia")],
        [("images[0]", ("a.jpg", photo("pia", seed=100), "image/jpeg"))],  # the enrolled photo itself
    )
    assert answer.code == -1312
    assert answer.data["ret_codes"] == [-1312]


def test_addface_by_urls_and_missing_person(api: Caller, images: ImageServerHandle, image_dir: Path) -> None:
    enroll(api, ["quin"])
    (image_dir / "quin2.jpg").write_bytes(photo("quin", seed=21))
    body = {"appid": APPID, "person_id": "quin", "urls": [images.url_for("quin2.jpg"), images.url_for("nope.jpg")]}
    answer = api.json("addface", body)
    assert answer.code == 0 and answer.data["ret_codes"] == [0, -1308]
    assert api.json("addface", body | {"person_id": "nobody"}).code == -1303


def test_newperson_without_a_face_is_1101_and_bad_ids_1313(api: Caller) -> None:
    assert api.newperson("rex", ["g"], synth.render_scene([], (100, 100))).code == -1101
    assert api.newperson("r x", ["g"], photo("rex")).code == -1313
    assert api.newperson("rex", ["g/1"], photo("rex")).code == -1313
    assert api.newperson("rex", ["g"], photo("rex"), person_name="n" * 2000).code == -1304


def test_limits_with_small_configuration() -> None:
    with start_in_thread(limits={"max_groups": 2, "max_persons_per_group": 2, "max_faces_per_person": 2}) as emu:
        api = Caller(emu.base_url)
        assert api.newperson("a", ["g1", "g2"], photo("a")).code == 0
        assert api.newperson("b", ["g3"], photo("b")).code == -1311
        assert api.newperson("b", ["g1"], photo("b")).code == 0
        assert api.newperson("c", ["g1"], photo("c")).code == -1310
        files = [(f"images[{i}]", (f"{i}.jpg", photo("a", seed=10 + i), "image/jpeg")) for i in range(2)]
        answer = api.multipart("addface", [("appid", APPID), ("person_id", "a")], files)
        assert answer.data["ret_codes"] == [0, -1309]
        api.close()


def test_appids_have_separate_galleries() -> None:
    other = Account("1250000888", "AKIDother888", "k888")
    with start_in_thread(accounts=[DEV_ACCOUNT, other]) as emu:
        api = Caller(emu.base_url)
        assert api.newperson("same", ["g"], photo("same")).code == 0
        auth = sign(other.appid, other.secret_id, other.secret_key, now=int(time.time()), lifetime=60)
        assert api.json("getgroupids", {"appid": other.appid}, auth=auth).data["group_ids"] == []
        api.close()


# --- HTTP status mode ------------------------------------------------------------------------------------------------


def test_youtu_http_status_mode_maps_23_and_15() -> None:
    with start_in_thread(youtu_http_status=True, faults={"qps_limit": 1, "qps_burst": 1}) as emu:
        api = Caller(emu.base_url)
        big = api.multidentify(b"\xff\xd8" + b"\x00" * 1_600_000, ["g"])
        assert (big.status, big.code) == (413, 23)
        statuses = {api.json("multidentify", {"appid": APPID, "group_id": "g"}).status for _ in range(5)}
        assert 429 in statuses
        api.close()


def test_images_dir_is_served_under_images(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"abc")
    with start_in_thread(images_dir=tmp_path) as emu:
        session = requests.Session()
        session.trust_env = False
        assert session.get(f"{emu.base_url}/images/a.jpg", timeout=10).content == b"abc"
        assert session.get(f"{emu.base_url}/images/b.jpg", timeout=10).status_code == 404
        assert session.get(f"{emu.base_url}/images/../conftest.py", timeout=10).status_code == 404
        session.close()


def test_handle_stats_count_paths_and_codes(emu: EmulatorHandle, api: Caller) -> None:
    api.json("getgroupids", {"appid": APPID})
    api.json("getpersonids", {"appid": APPID, "group_id": "none"})
    stats = emu.stats()
    assert stats["requests"]["/face/getgroupids"] == 1
    assert stats["codes"]["/face/getpersonids"] == {"-1306": 1}
