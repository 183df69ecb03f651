"""``tail results --annotate DIR``: each result's image fetched from its URL (a real image server on loopback), its
faces drawn into ``DIR/<event_id>.jpg``, ``DIR/index.html`` kept up to date; an image that cannot be had (404, not
http, not a photo) is reported and skipped, and tail carries on."""

from __future__ import annotations

import argparse
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from PIL import Image

from tests.support.records import TWO_FACES, result_value
from worker.api.models import Candidate, Face, FaceRect
from worker.core import records
from worker.dev.gallery import FetchError, Gallery, faces_of, fetch_image, safe_name
from worker.emulator import synth
from worker.emulator.imageserver import ImageServerHandle, start_image_server_in_thread
from worker.tools import tail


@pytest.fixture
def images(tmp_path: Path) -> Iterator[ImageServerHandle]:
    folder = tmp_path / "served"
    folder.mkdir()
    data, _ = synth.scene_with_faces(["alice", "bob"], (480, 360), seed=3)
    (folder / "two.jpg").write_bytes(data)
    (folder / "notes.txt").write_bytes(b"not a photo")
    with start_image_server_in_thread(folder) as server:
        yield server


def tail_results(bootstrap: str, topic: str, folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    tail.add_arguments(parser)
    args = parser.parse_args(
        [
            "results",
            "--results-topic",
            topic,
            "--from-beginning",
            "--max",
            "4",
            "--annotate",
            str(folder),
            "--bootstrap-servers",
            bootstrap,
        ]
    )
    out = io.StringIO()
    code = tail.run(args, out)
    return code, capsys.readouterr().err


@pytest.mark.broker
def test_tail_annotate_draws_each_result_and_skips_images_it_cannot_have(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    images: ImageServerHandle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = make_topic("res", partitions=1)
    faces = (Face(FaceRect(40, 50, 120, 130), (Candidate("alice", "f1", 95.0, ""),)), *TWO_FACES)
    values = [
        result_value(event=records.Event("ok-1", images.url_for("two.jpg")), faces=faces),
        result_value(event=records.Event("gone", images.url_for("missing.jpg"))),
        result_value(event=records.Event("ftp", "ftp://127.0.0.1/a.jpg")),
        result_value(event=records.Event("text", images.url_for("notes.txt"))),
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for value in values:
        producer.produce(topic, value=value, partition=0)
    assert producer.flush(15) == 0
    folder = tmp_path / "annotated"

    code, err = tail_results(kafka_bootstrap, topic, folder, capsys)

    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "ok-1.jpg"]
    with Image.open(folder / "ok-1.jpg") as img:
        assert img.format == "JPEG" and img.size == (480, 360)
    page = (folder / "index.html").read_text()
    assert re.findall(r'src="([^"]+)"', page) == ["ok-1.jpg"]  # relative, and nothing external
    assert re.findall(r'href="([^"]+)"', page) == ["ok-1.jpg"] and "<script" not in page and "<link" not in page
    assert "alice 95 at (40, 50) 120×130" in page and "not searched" in page
    assert "not annotated: gone: HTTP 404" in err
    assert "not annotated: ftp: not an http(s) URL" in err
    assert "not annotated: text:" in err
    assert "tail: 4 record(s)" in err


def test_annotate_is_for_results_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    tail.add_arguments(parser)
    args = parser.parse_args(["dlq", "--annotate", str(tmp_path), "--bootstrap-servers", "127.0.0.1:9"])
    assert tail.run(args, io.StringIO()) == 2
    assert "--annotate draws results" in capsys.readouterr().err


def test_fetch_image_is_bounded_in_size(images: ImageServerHandle) -> None:
    assert fetch_image(images.url_for("two.jpg"))[:2] == b"\xff\xd8"
    with pytest.raises(FetchError, match="larger than 100 bytes"):
        fetch_image(images.url_for("two.jpg"), max_bytes=100)
    with pytest.raises(FetchError, match="not an http"):
        fetch_image("file:///etc/passwd")


def test_a_result_record_becomes_faces_and_the_page_lists_the_newest(tmp_path: Path) -> None:
    import orjson

    doc = orjson.loads(result_value())
    faces = faces_of(doc)
    assert [(f.rect.x, [c.person_id for c in f.candidates]) for f in faces] == [(1, ["alice", "bob"]), (5, [])]
    assert safe_name("../a b/c") == "_a_b_c"
    data, _ = synth.scene_with_faces(["alice"], (200, 200), seed=1)
    gallery = Gallery(tmp_path)
    gallery.add("a", data, faces, 90.0)
    gallery.add("a", data, faces, 90.0)  # the same event again (at-least-once): one entry
    assert gallery.page().count('<img src="a.jpg"') == 1
