"""Synthetic faces: rectangles and identities survive JPEG, PNG and resizing; strangers score low."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from worker.emulator import ImageError, Rect, SyntheticEngine, synth
from worker.emulator.engine import DetectionCache

ENGINE = SyntheticEngine()


def by_position(found: list[tuple[Rect, np.ndarray]], rects: list[Rect], scale: float = 1.0) -> list[int]:
    """Index into ``rects`` of the generated rectangle closest to each found one."""
    return [
        min(range(len(rects)), key=lambda i: abs(rects[i].x * scale - r.x) + abs(rects[i].y * scale - r.y))
        for r, _ in found
    ]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_rectangles_match_the_generated_ones(fmt: str) -> None:
    data, rects = synth.scene_with_faces([f"p{i}" for i in range(6)], (640, 480), fmt, seed=3)
    faces = ENGINE.detect(data)
    assert len(faces) == 6
    found = sorted(f.rect for f in faces)
    for got, want in zip(found, sorted(rects), strict=True):
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 2


def test_other_photo_of_same_person_scores_high_and_strangers_low() -> None:
    names = ["ann", "ben", "cid", "dee"]
    a, rects_a = synth.scene_with_faces(names, seed=1)
    b, rects_b = synth.scene_with_faces(names, seed=2)
    fa = [(f.rect, f.vector) for f in ENGINE.detect(a)]
    fb = [(f.rect, f.vector) for f in ENGINE.detect(b)]
    va = {names[i]: v for i, (_, v) in zip(by_position(fa, rects_a), fa, strict=True)}
    vb = {names[i]: v for i, (_, v) in zip(by_position(fb, rects_b), fb, strict=True)}
    for name in names:
        assert 90 <= ENGINE.similarity(va[name], vb[name]) < 99  # a new photo, not a near-duplicate
        for other in names:
            if other != name:
                assert ENGINE.similarity(va[name], vb[other]) < 60


def test_identity_survives_resizing_and_reencoding() -> None:
    data, rects = synth.scene_with_faces(["x", "y", "z"], (640, 480), seed=5)
    found = [(f.rect, f.vector) for f in ENGINE.detect(data)]
    original = {i: vector for i, (_, vector) in zip(by_position(found, rects), found, strict=True)}
    small = Image.open(io.BytesIO(data)).resize((448, 336), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=75)
    resized = [(f.rect, f.vector) for f in ENGINE.detect(out.getvalue())]
    assert len(resized) == 3
    for i, (rect, vector) in zip(by_position(resized, rects, 0.7), resized, strict=True):
        assert abs(rect.width - rects[i].width * 0.7) <= 3
        assert ENGINE.similarity(vector, original[i]) >= 97


def test_same_photo_again_is_a_near_duplicate() -> None:
    data = synth.render_scene([("dup", (10, 10, 120, 120))], (200, 200), seed=9)
    (face,) = ENGINE.detect(data)
    (again,) = ENGINE.detect(synth.render_scene([("dup", (10, 10, 120, 120))], (200, 200), seed=9))
    assert ENGINE.similarity(face.vector, again.vector) >= 99


def test_scene_without_faces_has_none() -> None:
    assert ENGINE.detect(synth.render_scene([], (320, 240), seed=4)) == []


def test_gif_and_garbage_are_image_errors_with_api_codes() -> None:
    gif = synth.render_scene([("g", (10, 10, 80, 80))], (120, 120), "GIF")
    with pytest.raises(ImageError) as gif_error:
        ENGINE.detect(gif)
    assert gif_error.value.code == -1400
    with pytest.raises(ImageError) as garbage:
        ENGINE.detect(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    assert garbage.value.code == -1102


def test_identity_is_stable_and_distinct() -> None:
    assert np.array_equal(synth.identity_for("alice"), synth.identity_for("alice"))
    assert not np.array_equal(synth.identity_for("alice"), synth.identity_for("bob"))
    assert synth.identity_for(7).shape == (synth.DIM,)


def test_similarity_matrix_agrees_with_pairwise_similarity() -> None:
    vectors = np.stack([synth.identity_for(i) for i in range(5)])
    matrix = ENGINE.similarity_matrix(vectors[:2], vectors)
    assert matrix.shape == (2, 5)
    for q in range(2):
        for j in range(5):
            assert matrix[q, j] == pytest.approx(ENGINE.similarity(vectors[q], vectors[j]), abs=1e-6)


def test_detection_cache_remembers_results_and_errors() -> None:
    cache = DetectionCache(ENGINE, max_entries=2)
    data = synth.render_scene([("c", (5, 5, 60, 60))], (100, 100))
    key = cache.key(data)
    assert cache.get(key) is None
    cache.put(key, cache.compute(data))
    result = cache.get(key)
    assert isinstance(result, tuple) and len(result) == 1
    bad = b"nope"
    cache.put(cache.key(bad), cache.compute(bad))
    assert isinstance(cache.get(cache.key(bad)), ImageError)
    cache.put(b"k3", ())
    assert cache.get(key) is None  # evicted, least recently used


@pytest.mark.parametrize(
    "rect",
    [(-30, 40, 120, 120), (240, 40, 120, 120), (50, -40, 100, 100), (200, 130, 100, 100)],
    ids=["left", "right", "top", "bottom"],
)
def test_a_face_passing_the_image_edge_keeps_its_box_beyond_the_edge(rect: tuple[int, int, int, int]) -> None:
    # A synthetic face cut by the edge is taken to be square (as layout() draws them), so its box can start
    # left of or above the image, or end past it, as Tencent's FaceRect does. (Cut at a corner, both sides
    # are unknown: the box is then the larger visible side, square.)
    people = ["cut", "other"]
    data = synth.render_scene([("cut", rect), ("other", (120, 70, 50, 50))], (300, 200), seed=4)
    faces = ENGINE.detect(data)
    cut = max(faces, key=lambda f: f.rect.area)
    assert max(abs(a - b) for a, b in zip(cut.rect, rect, strict=True)) <= 2, cut.rect
    whole = ENGINE.detect(synth.render_scene([("cut", (40, 40, 120, 120))], (200, 200), seed=5))[0]
    stranger = ENGINE.detect(synth.render_scene([("stranger", (40, 40, 120, 120))], (200, 200), seed=5))[0]
    assert ENGINE.similarity(cut.vector, whole.vector) > ENGINE.similarity(cut.vector, stranger.vector)
    assert len(faces) == len(people)


def test_a_square_face_touching_the_edge_from_inside_is_not_moved() -> None:
    for rect in [(0, 40, 120, 120), (180, 0, 120, 120), (100, 80, 120, 120)]:
        (face,) = ENGINE.detect(synth.render_scene([("edge", rect)], (300, 200), seed=6))
        assert face.rect.x >= 0 and face.rect.y >= 0
        assert face.rect.x + face.rect.width <= 300 and face.rect.y + face.rect.height <= 200
        assert max(abs(a - b) for a, b in zip(face.rect, rect, strict=True)) <= 2


def test_a_face_outside_the_image_cannot_be_drawn() -> None:
    with pytest.raises(ValueError, match="outside"):
        synth.render_scene([("gone", (300, 10, 60, 60))], (300, 200))
