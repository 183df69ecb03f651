"""The gallery's explicit groups (IAI's CreateGroup/DeleteGroup) beside v1's implicit ones, and the per-call knobs
IAI needs (face limit, no duplicate rule, top-N, group size), in memory and in a SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from worker.emulator import SyntheticEngine, synth
from worker.emulator.faces import DetectedFace, Rect
from worker.emulator.gallery import Gallery, GalleryError, GroupInfo

APP = "1250000000"


def face(name: str, noise: float = 0.0) -> DetectedFace:
    vector = synth.identity_for(name) + noise
    return DetectedFace(Rect(0, 0, 60, 60), vector.astype("float32"))


@pytest.fixture
def gallery() -> Gallery:
    return Gallery(SyntheticEngine())


def test_an_explicit_group_exists_while_empty_and_outlives_its_last_person(gallery: Gallery) -> None:
    info = gallery.create_group(APP, "staff", "Staff", "tag")
    assert (info.group_id, info.name, info.tag) == ("staff", "Staff", "tag") and info.created_ms > 0
    assert gallery.has_group(APP, "staff") and gallery.group_ids(APP) == ["staff"]
    assert gallery.person_ids(APP, "staff") == []
    assert gallery.size(APP, ["staff"]) == (0, 0)
    gallery.new_person(APP, "alice", ["staff"], face("alice"), "Alice", gender=2)
    assert gallery.get_person(APP, "alice").gender == 2
    gallery.del_person(APP, "alice")
    assert gallery.has_group(APP, "staff"), "v1 would drop an implicit group here"
    with pytest.raises(ValueError):
        gallery.create_group(APP, "staff", "Again")


def test_implicit_groups_are_listed_after_the_named_ones(gallery: Gallery) -> None:
    gallery.new_person(APP, "bob", ["v1-group"], face("bob"))
    gallery.create_group(APP, "staff", "Staff")
    staff, implicit = gallery.group_infos(APP)
    assert (staff.group_id, staff.name) == ("staff", "Staff")
    assert implicit == GroupInfo("v1-group", "v1-group")
    assert gallery.counts()["groups"] == 2
    assert gallery.group_infos("other-app") == []


def test_deleting_a_group_deletes_the_persons_it_alone_held(gallery: Gallery) -> None:
    gallery.create_group(APP, "a", "A")
    gallery.create_group(APP, "b", "B")
    gallery.new_person(APP, "only-a", ["a"], face("x"))
    gallery.new_person(APP, "both", ["a", "b"], face("y"))
    assert gallery.delete_group(APP, "a") == ["only-a"]
    assert not gallery.has_person(APP, "only-a")
    assert gallery.get_person(APP, "both").group_ids == ["b"]
    assert gallery.group_ids(APP) == ["b"] and gallery.size(APP, ["b"]) == (1, 1)
    with pytest.raises(GalleryError) as missing:
        gallery.delete_group(APP, "a")
    assert missing.value.code == -1306


def test_a_call_may_lower_the_face_limit_and_skip_the_duplicate_rule(gallery: Gallery) -> None:
    gallery.new_person(APP, "alice", ["g"], face("alice"))
    same = face("alice")
    assert gallery.add_faces(APP, "alice", [same])[1] == [-1312]
    added, codes = gallery.add_faces(APP, "alice", [same, same, same], max_faces=3, duplicates=False)
    assert codes == [0, 0, -1309] and len(added) == 2


def test_search_top_n_per_call(gallery: Gallery) -> None:
    for i in range(8):
        gallery.new_person(APP, f"p{i}", ["g"], face(f"p{i}"))
    (five,) = gallery.search(APP, ["g"], [face("p3").vector])
    (eight,) = gallery.search(APP, ["g"], [face("p3").vector], top_n=8)
    assert len(five) == 5 and len(eight) == 8 and eight[0].person_id == "p3"


def test_named_groups_and_person_fields_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "g.db")
    first = Gallery(SyntheticEngine(), path)
    first.create_group(APP, "staff", "Staff", "t")
    first.new_person(APP, "carol", ["staff"], face("carol"), "Carol", gender=1)
    created = first.get_person(APP, "carol").created_ms
    first.create_group(APP, "empty", "Empty")
    first.close()
    again = Gallery(SyntheticEngine(), path)
    assert [g.group_id for g in again.group_infos(APP)] == ["staff", "empty"]
    carol = again.get_person(APP, "carol")
    assert (carol.name, carol.gender, carol.created_ms) == ("Carol", 1, created)
    again.reset()
    assert again.group_infos(APP) == []
    again.close()


def test_a_gallery_file_from_before_gets_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE persons (appid TEXT NOT NULL, person_id TEXT NOT NULL, name TEXT NOT NULL, tag TEXT NOT NULL,"
        " PRIMARY KEY (appid, person_id));"
        f"INSERT INTO persons VALUES ('{APP}', 'old', 'Old', '');"
    )
    db.close()
    gallery = Gallery(SyntheticEngine(), str(path))
    old = gallery.get_person(APP, "old")
    assert (old.name, old.gender, old.created_ms) == ("Old", 0, 0)
    gallery.close()
