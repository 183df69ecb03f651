"""The pieces of the real face engine that need no dlib: photo decoding, the distance → confidence table, the
gallery's vectors of a 128-d engine, the Detector's pool, and the annotation of a photo."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.emulator.real_photos import pid_running
from worker.api.models import Candidate, Face, FaceRect
from worker.emulator import ImageError, Rect, start_in_thread
from worker.emulator.annotate import KNOWN, UNKNOWN, UNSEARCHED, annotate, marks_for
from worker.emulator.detector import Detector
from worker.emulator.dlib_engine import ANCHORS, confidence
from worker.emulator.faces import DetectedFace, Vector
from worker.emulator.gallery import Gallery
from worker.emulator.photo import open_upright

DIM = 128


def jpeg(img: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **save)
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def marked(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    """A gray picture with one black box (x, y, w, h): where the box ends up tells how the picture was turned."""
    img = Image.new("RGB", (width, height), (200, 200, 200))
    x, y, w, h = box
    img.paste((0, 0, 0), (x, y, x + w, y + h))
    return img


def dark_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(pixels.mean(axis=2) < 100)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


# --- photos as users send them -------------------------------------------------------------------------------


def test_exif_orientation_turns_the_photo_upright() -> None:
    # Stored 300×200 with the box at the top left; orientation 6 means "turn 90° clockwise to display".
    stored = marked(300, 200, (10, 20, 60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = open_upright(jpeg(stored, exif=exif.tobytes(), quality=95))
    assert (photo.width, photo.height) == (200, 300)
    assert photo.rgb.shape == (300, 200, 3)
    x, y, w, h = dark_box(photo.rgb)
    # Turned clockwise: the stored top-left corner is now at the top right.
    assert abs(x - (200 - 20 - 40)) <= 2 and abs(y - 10) <= 2 and abs(w - 40) <= 2 and abs(h - 60) <= 2


def test_transparency_is_laid_over_white_and_grayscale_becomes_rgb() -> None:
    rgba = Image.new("RGBA", (64, 48), (0, 0, 0, 0))  # transparent black: shown as the page behind it
    rgba.paste((10, 20, 30, 255), (0, 0, 16, 16))
    photo = open_upright(png(rgba))
    assert photo.rgb.shape == (48, 64, 3)
    assert photo.rgb[40, 60].tolist() == [255, 255, 255]
    assert photo.rgb[5, 5].tolist() == [10, 20, 30]
    gray = open_upright(png(Image.new("L", (20, 10), 77)))
    assert gray.rgb.shape == (10, 20, 3) and gray.rgb[0, 0].tolist() == [77, 77, 77]
    deep = Image.fromarray(np.full((10, 20), 65535 // 2, dtype=np.uint16))  # 16-bit grayscale PNG
    assert 120 <= int(open_upright(png(deep)).rgb[0, 0, 0]) <= 135
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0] * 256)
    assert open_upright(png(palette)).rgb[0, 0].tolist() == [255, 0, 0]


def test_a_large_jpeg_is_scaled_down_and_boxes_map_back_to_its_pixels() -> None:
    big = marked(4000, 3000, (1000, 600, 400, 500))
    photo = open_upright(jpeg(big, quality=80), max_side=1280)
    assert max(photo.rgb.shape[:2]) <= 1280
    assert (photo.width, photo.height) == (4000, 3000)
    x, y, w, h = dark_box(photo.rgb)
    back = photo.to_original(x, y, x + w, y + h)
    for got, want in zip(back, (1000, 600, 400, 500), strict=True):
        assert abs(got - want) <= 8, (back, "(1000, 600, 400, 500)")
    small = open_upright(jpeg(marked(640, 480, (1, 2, 3, 4))))
    assert small.rgb.shape == (480, 640, 3) and small.to_original(1, 2, 4, 6) == Rect(1, 2, 3, 4)


def test_corrupt_bytes_and_gif_get_the_api_codes() -> None:
    whole = jpeg(marked(64, 64, (0, 0, 8, 8)))
    for broken in (b"not an image at all", whole[: len(whole) // 2], b"\xff\xd8\xff" + b"\x00" * 100):
        with pytest.raises(ImageError) as bad:
            open_upright(broken)
        assert bad.value.code == -1102
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    with pytest.raises(ImageError) as refused:
        open_upright(gif.getvalue())
    assert refused.value.code == -1400


# --- the confidence scale ------------------------------------------------------------------------------------


def test_the_confidence_table_is_monotone_and_puts_the_thresholds_where_documented() -> None:
    distances = np.linspace(0.0, 1.5, 301)
    values = confidence(distances)
    assert values[0] == 100.0 and values[-1] == 0.0
    assert np.all(np.diff(values) <= 0)
    assert [float(confidence(d)) for d, _ in ANCHORS] == [c for _, c in ANCHORS]
    assert confidence(0.09) >= 99  # a re-encoded copy: the near-duplicate rule
    assert 90 < confidence(0.43) < 99  # another photo of the same person: above v1's usual threshold
    assert confidence(0.5) == 90 and confidence(0.6) == 80  # 90 ↔ 0.5; dlib's own 0.6 ↔ 80
    assert confidence(0.63) < 80 and confidence(0.7) <= 40  # different people


# --- the gallery keeps 128-d vectors -------------------------------------------------------------------------


class VectorEngine:
    """An engine of ``dim``-d vectors compared like the dlib engine (no images: the gallery's view of an engine)."""

    processes = False

    def __init__(self, name: str = "fake128", dim: int = DIM) -> None:
        self.name = name
        self.dim = dim

    def detect(self, image: bytes) -> list[DetectedFace]:
        raise AssertionError("not used")

    def similarity(self, a: Vector, b: Vector) -> float:
        return float(confidence(float(np.linalg.norm(a.astype(np.float64) - b))))

    def similarity_matrix(self, queries: Vector, matrix: Vector) -> np.ndarray:
        q, m = np.atleast_2d(queries).astype(np.float64), np.atleast_2d(matrix).astype(np.float64)
        return confidence(np.linalg.norm(q[:, None, :] - m[None, :, :], axis=2))


def unit(seed: int) -> Vector:
    v = np.random.default_rng(seed).normal(size=DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_a_128_d_vector_round_trips_through_the_gallery_file(tmp_path: Path) -> None:
    path = str(tmp_path / "g.db")
    vector = unit(1)
    first = Gallery(VectorEngine(), path)
    first.new_person("app", "p1", ["g"], DetectedFace(Rect(1, 2, 30, 40), vector))
    before = first.search("app", ["g"], [unit(1) + np.float32(0.01)])
    first.close()
    again = Gallery(VectorEngine(), path)
    (face_id,) = again.get_person("app", "p1").face_ids
    stored = again.face("app", face_id).vector
    assert stored.dtype == np.float32 and stored.shape == (DIM,) and np.array_equal(stored, vector)
    assert again.search("app", ["g"], [unit(1) + np.float32(0.01)]) == before
    again.close()


def test_a_gallery_file_of_another_engine_or_dimension_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "g.db")
    Gallery(VectorEngine(), path).close()
    with pytest.raises(ValueError, match=r"fake128/128, not other/128"):
        Gallery(VectorEngine("other"), path)
    # A face row whose vector does not have the engine's dimension (written by a broken or older engine).
    db = sqlite3.connect(path)
    db.execute("INSERT INTO persons (appid, person_id, name, tag) VALUES ('app', 'p', '', '')")
    db.execute("INSERT INTO faces VALUES ('app', 'f', 'p', '', 0, 0, 10, 10, ?)", (np.zeros(36, np.float32).tobytes(),))
    db.commit()
    db.close()
    with pytest.raises(ValueError, match=r"face f .* 36 values, not 128"):
        Gallery(VectorEngine(), path)


def test_a_face_whose_vector_has_another_dimension_is_not_stored() -> None:
    gallery = Gallery(VectorEngine())
    with pytest.raises(ValueError, match="36 values, not 128"):
        gallery.new_person("app", "p", ["g"], DetectedFace(Rect(0, 0, 9, 9), np.zeros(36, np.float32)))
    assert not gallery.has_person("app", "p")
    gallery.new_person("app", "q", ["g"], DetectedFace(Rect(0, 0, 9, 9), unit(2)))
    with pytest.raises(ValueError, match="36 values, not 128"):
        gallery.add_faces("app", "q", [DetectedFace(Rect(0, 0, 9, 9), np.zeros(36, np.float32))])
    assert len(gallery.get_person("app", "q").face_ids) == 1


# --- the Detector: the engine off the event loop -------------------------------------------------------------


class GatedEngine(VectorEngine):
    """Threads: ``detect`` waits for ``gate`` and counts its calls; ``b"bad"`` is undecodable."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.calls: list[bytes] = []
        self._lock = threading.Lock()

    def detect(self, image: bytes) -> list[DetectedFace]:
        with self._lock:
            self.calls.append(image)
        assert self.gate.wait(30), "the test never opened the gate"
        if image == b"bad":
            raise ImageError(-1102, "undecodable")
        return [DetectedFace(Rect(0, 0, 10, 10), unit(len(image)))]


async def until(condition: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_one_computation_per_image_and_a_bounded_hand_over() -> None:
    engine = GatedEngine()

    async def scenario() -> None:
        detector = Detector(engine, workers=1)  # threads; 2 images handed over at a time
        await detector.start()
        try:
            same = [asyncio.create_task(detector.detect(b"one")) for _ in range(5)]
            others = [asyncio.create_task(detector.detect(bytes([65 + i]) * (i + 2))) for i in range(5)]
            await until(lambda: detector.in_pool == 2 and detector.waiting == 4)
            assert len(engine.calls) <= 2  # nothing more inside the pool than it was handed
            engine.gate.set()
            results = await asyncio.gather(*same, *others)
            assert engine.calls.count(b"one") == 1  # five requests, one computation
            assert len({key for key, _ in results[:5]}) == 1 and all(r == results[0] for r in results[:5])
            stats = detector.stats()
            assert stats["images"] == 6 and stats["max_waiting"] >= 4 and stats["in_pool"] == 0
            assert stats["images_per_s"] > 0 and stats["mean_ms"] > 0 and stats["pool"] == "threads"
            _, again = await detector.detect(b"one")  # cached: no new computation
            assert len(engine.calls) == 6 and again == results[0][1]
            _, bad = await detector.detect(b"bad")
            assert isinstance(bad, ImageError) and bad.code == -1102
        finally:
            engine.gate.set()
            await detector.close()

    asyncio.run(scenario())


class ProcessEngine(VectorEngine):
    """A process-pool engine (as dlib's is): ``warm_up`` runs once per process; ``b"bad"`` is undecodable."""

    processes = True

    def warm_up(self) -> None:
        global _warmed
        _warmed = True

    def detect(self, image: bytes) -> list[DetectedFace]:
        assert _warmed, "warm_up did not run in this process"
        if image == b"bad":
            raise ImageError(-1102, "undecodable")
        return [DetectedFace(Rect(len(image), 0, 10, 10), unit(len(image)))]


_warmed = False


def test_a_process_pool_starts_warm_answers_and_stops_with_its_processes() -> None:
    async def scenario() -> list[int]:
        detector = Detector(ProcessEngine(), workers=2)
        await detector.start()
        try:
            pids = detector.pids()
            assert len(pids) == 2 and all(pid_running(pid) for pid in pids)
            _, faces = await detector.detect(b"abc")
            assert isinstance(faces, tuple) and faces[0].rect == Rect(3, 0, 10, 10)
            assert np.array_equal(faces[0].vector, unit(3))
            _, bad = await detector.detect(b"bad")  # an ImageError travels back with its code
            assert isinstance(bad, ImageError) and bad.code == -1102
            assert detector.stats()["pool"] == "processes" and detector.stats()["pids"] == pids
        finally:
            await detector.close()
        assert detector.pids() == []
        return pids

    pids = asyncio.run(scenario())
    assert not any(pid_running(pid) for pid in pids)  # joined by close(): gone, not zombies


# --- choosing the engine -------------------------------------------------------------------------------------


def test_an_unknown_engine_or_a_missing_extra_stops_the_emulator_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="engine must be one of synthetic, dlib, not 'dlub'"):
        start_in_thread(engine="dlub")
    with pytest.raises(ValueError, match="engine_workers must be"):
        start_in_thread(engine_workers=-1)
    monkeypatch.setitem(sys.modules, "dlib", None)  # as if the faces extra were not installed
    with pytest.raises(RuntimeError, match=r"pip install 'multidentify-worker\[faces\]'"):
        start_in_thread(engine="dlib")


# --- drawing the answer onto the photo -----------------------------------------------------------------------


def test_annotate_draws_each_face_where_the_api_put_it_on_the_upright_photo() -> None:
    faces = (
        Face(FaceRect(100, 300, 200, 150), (Candidate("p1", "f1", 95.4),)),
        Face(FaceRect(500, 100, 100, 100), (Candidate("p2", "f2", 41.0),)),
        Face(FaceRect(700, 500, 60, 60), ()),
    )
    marks = marks_for(faces, 90, names={"p1": "Alice"})
    assert [m.label for m in marks] == ["Alice 95", "? 41", ""]
    assert [m.colour for m in marks] == [KNOWN, UNKNOWN, UNSEARCHED]
    # A 1600×1200 photo stored sideways (EXIF 6): drawn upright and scaled to 1280 px, boxes scaled with it.
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = Image.new("RGB", (1200, 1600), (255, 255, 255))
    out = Image.open(io.BytesIO(annotate(jpeg(stored, exif=exif.tobytes()), marks, max_side=1280)))
    assert out.size == (1280, 960)
    pixels = np.asarray(out).astype(int)
    scale = 1280 / 1600
    for mark in marks:
        x, y, w, h = (round(v * scale) for v in mark.box)
        left_edge = pixels[y + h // 2, x]  # the middle of the box's left side
        assert np.abs(left_edge - np.array(mark.colour)).max() <= 40, (mark, left_edge)
        assert pixels[y + h // 2, x + w // 2].min() >= 230  # inside: the photo, untouched
