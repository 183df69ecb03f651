"""The enrolment plan's rules (worker.tools.gallery.plan), pure: no API, no files."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.tools.gallery.plan import ALREADY_ENROLLED, DUPLICATE_IN_SOURCE, Photo, Refusal, photo_key, plan_enrolment
from worker.tools.gallery.sources import Entry


def entry(person: str, name: str, group: str | None = None, person_name: str | None = None) -> Entry:
    return Entry(person, person_name, Path(f"/src/{person}/{name}"), None, f"{person}/{name}", group)


def ph(person: str, name: str, content: bytes, **kw: str) -> Photo:
    return Photo(entry(person, name, **kw), photo_key(content))


def test_photo_keys_are_content_hashes_or_url_hashes() -> None:
    assert photo_key(b"a") == photo_key(b"a") != photo_key(b"b")
    assert photo_key(b"a").startswith("sha256:")
    assert photo_key(url="https://x/a.jpg").startswith("url-sha256:")
    assert photo_key(url="https://x/a.jpg") != photo_key(b"https://x/a.jpg")
    with pytest.raises(ValueError):
        photo_key()


def test_new_persons_are_created_and_every_photo_sent() -> None:
    plan = plan_enrolment(
        "g", [ph("alice", "1", b"a1", person_name="Alice"), ph("alice", "2", b"a2"), ph("bob", "1", b"b1")], {}, {}
    )
    assert [(t.person_id, t.person_name, t.create, len(t.send)) for t in plan.tasks] == [
        ("alice", "Alice", True, 2),
        ("bob", None, True, 1),
    ]
    assert plan.to_send == 3 and plan.to_create == 2


def test_a_photo_in_the_ledger_is_skipped_only_while_the_person_still_has_its_face() -> None:
    photos = [ph("alice", "1", b"a1"), ph("alice", "2", b"a2"), ph("alice", "3", b"a3")]
    ledger = {("alice", photo_key(b"a1")): "f1", ("alice", photo_key(b"a2")): "f2", ("bob", photo_key(b"a3")): "f3"}
    (task,) = plan_enrolment("g", photos, {"alice": ["f1", "f9"]}, ledger).tasks
    assert not task.create
    assert [(s.photo.entry.where, s.reason, s.face_id) for s in task.skipped] == [("alice/1", ALREADY_ENROLLED, "f1")]
    # a2's face f2 was deleted since: sent again; a3 is in the ledger for another person: sent
    assert [p.entry.where for p in task.send] == ["alice/2", "alice/3"]


def test_duplicates_refusals_and_other_groups() -> None:
    refused = Photo(entry("alice", "bad"), None, Refusal("unreadable", "cannot read"))
    photos = [ph("alice", "1", b"a1"), ph("alice", "copy", b"a1"), refused, ph("carol", "1", b"c1", group="other")]
    plan = plan_enrolment("g", photos, {}, {})
    (task,) = plan.tasks
    assert [p.entry.where for p in task.send] == ["alice/1"]
    assert [(s.photo.entry.where, s.reason) for s in task.skipped] == [("alice/copy", DUPLICATE_IN_SOURCE)]
    assert task.refused == (refused,)
    assert plan.left_out == 1
    # the same bytes for two persons are two photos: each person is planned on its own
    two = plan_enrolment("g", [ph("alice", "1", b"x"), ph("bob", "1", b"x")], {}, {})
    assert [len(t.send) for t in two.tasks] == [1, 1]
