"""Reading a gallery source (worker.tools.gallery.sources): a folder per person, CSV and JSON-lines manifests, and the
errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.tools.gallery.sources import SourceError, read_source


def test_a_folder_per_person(tmp_path: Path) -> None:
    for rel in ("bob/b.JPG", "alice/2.png", "alice/1.jpg", "alice/notes.txt", "alice/.x.jpg", "top.jpg", ".git/a.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "alice" / "name.txt").write_text("  Alice  \nignored\n")
    entries = read_source(tmp_path)
    assert [(e.person_id, e.person_name, e.where) for e in entries] == [
        ("alice", "Alice", "alice/1.jpg"),
        ("alice", "Alice", "alice/2.png"),
        ("bob", None, "bob/b.JPG"),
    ]
    assert entries[0].path == tmp_path / "alice" / "1.jpg" and entries[0].url is None


def test_csv_and_jsonl_manifests(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("person_id,name,path,group\nalice,Alice,photos/a.jpg,\nbob,,https://h.example/b.jpg,staff\n")
    a, b = read_source(csv)
    assert (a.person_id, a.person_name, a.path, a.group, a.where) == (
        "alice",
        "Alice",
        tmp_path / "photos/a.jpg",
        None,
        "m.csv:2",
    )
    assert (b.url, b.path, b.group) == ("https://h.example/b.jpg", None, "staff")
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(
        '{"person_id": "carol", "image": "/abs/c.jpg", "person_name": "Carol"}\n\n{"person_id": "d", "url": "http://h/d.jpg"}\n'
    )
    c, d = read_source(jsonl)
    assert (c.path, c.person_name, c.where) == (Path("/abs/c.jpg"), "Carol", "m.jsonl:1")
    assert (d.url, d.where) == ("http://h/d.jpg", "m.jsonl:3")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.csv", "id,image\na,b.jpg\n", "m.csv:1: the header must name a person_id"),
        ("m.csv", "person_id,image\n,b.jpg\n", "m.csv:2: person_id is empty"),
        ("m.csv", "person_id,image\na,\n", "m.csv:2: no image"),
        ("m.jsonl", '{"person_id": "a", "image": "x.jpg"}\nnot json\n', "m.jsonl:2: not JSON"),
        ("m.jsonl", "[1]\n", "m.jsonl:1: not a JSON object"),
        ("m.jsonl", '{"person_id": 5, "image": "x.jpg"}\n', "m.jsonl:1: person_id must be a string"),
        ("m.txt", "", "a manifest ends in .csv, .jsonl or .ndjson"),
    ],
)
def test_a_malformed_manifest_names_the_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(SourceError, match=message.replace(".", r"\.").replace("[", r"\[")):
        read_source(tmp_path / name)


def test_a_missing_source(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such folder or manifest"):
        read_source(tmp_path / "nope")
