"""Real faces end to end: the emulator with the dlib engine, driven over HTTP by the project's own v1 and IAI clients.

One emulator (``engine="dlib"``, its process pool) serves the whole module. People are enrolled from real photos
(tests/data/faces/README.md): Barack Obama, Joe Biden and Grace Hopper; Eileen Collins stays a stranger. Then:
another photo of an enrolled person is its top candidate above the documented threshold (90, v1's usual one), a
stranger stays below it, a group picture pasted together from these photos yields one face per person where it was
pasted (and, six faces, candidates for the five largest only), photos as users send them (EXIF-rotated, PNG with
transparency, grayscale, 12 megapixels) are identified alike, corrupt bytes and GIF get -1102 and -1400, and IAI
answers the same faces with the same people.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.emulator.real_photos import Placed, committed, compose, dlib_missing, fetched, overlap
from worker.api.client import ClientOptions, MultidentifyClient
from worker.api.errors import ApiError
from worker.api.iai_client import IaiClient, IaiOptions
from worker.api.models import Face, IdentifyResult
from worker.emulator import DEV_ACCOUNT, EmulatorHandle, start_in_thread
from worker.emulator.iai_wire import iai_score

MISSING = dlib_missing()
pytestmark = [pytest.mark.real_faces, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

SAME_PERSON = 90.0  # the documented threshold (worker/emulator/dlib_engine.py, docs/api-notes.md)
GROUP = "people"
ENROLLED = {"obama": "obama.jpg", "biden": "biden.jpg", "hopper": "grace_hopper.jpg"}


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    found = fetched()
    if isinstance(found, str):
        pytest.skip(found)
    return {**found, "grace_hopper.jpg": committed("grace_hopper.jpg"), "astronaut.jpg": committed("astronaut.jpg")}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-faces-images")


@pytest.fixture(scope="module")
def emu(image_dir: Path) -> Iterator[EmulatorHandle]:
    with start_in_thread(engine="dlib", engine_workers=2, images_dir=image_dir) as handle:
        yield handle


@pytest.fixture(scope="module")
def client(emu: EmulatorHandle, photos: dict[str, bytes]) -> Iterator[MultidentifyClient]:
    """The v1 client, with Obama, Biden and Hopper enrolled in ``people`` (uploaded photos)."""
    options = ClientOptions(
        appid=DEV_ACCOUNT.appid,
        secret_id=DEV_ACCOUNT.secret_id,
        secret_key=DEV_ACCOUNT.secret_key,
        base_url=emu.base_url,
    )
    with MultidentifyClient(options) as c:
        for person, photo in ENROLLED.items():
            c.newperson(person, [GROUP], image=photos[photo], person_name=person.title())
        yield c


def jpeg(img: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **save)
    return buf.getvalue()


def top(face: Face) -> tuple[str, float]:
    best = face.candidates[0]
    return best.person_id, best.confidence


def only_face(result: IdentifyResult) -> Face:
    assert len(result.faces) == 1, result.faces
    return result.faces[0]


def box(face: Face) -> tuple[int, int, int, int]:
    r = face.rect
    return (r.x, r.y, r.width, r.height)


def assert_obama(face: Face) -> None:
    person, confidence = top(face)
    assert person == "obama" and confidence > SAME_PERSON, face.candidates
    assert all(c.confidence < SAME_PERSON for c in face.candidates[1:]), face.candidates


# --- identification --------------------------------------------------------------------------------------------


def test_the_same_person_in_other_photos_is_the_top_candidate_above_the_threshold(
    client: MultidentifyClient, photos: dict[str, bytes]
) -> None:
    for other in ("obama2.jpg", "obama3.jpg"):
        face = only_face(client.multidentify_image(photos[other], [GROUP]))
        assert_obama(face)
        assert len(face.candidates) == len(ENROLLED)  # everyone is a candidate, ranked


def test_a_stranger_stays_below_the_threshold(client: MultidentifyClient, photos: dict[str, bytes]) -> None:
    face = only_face(client.multidentify_image(photos["astronaut.jpg"], [GROUP]))
    assert face.candidates and all(c.confidence < SAME_PERSON for c in face.candidates), face.candidates
    assert face.candidates[0].confidence < 80  # below dlib's own threshold too


def test_a_group_picture_yields_one_face_per_person_where_it_was_pasted(
    client: MultidentifyClient, photos: dict[str, bytes]
) -> None:
    picture, placed = group_picture(client, photos)
    result = client.multidentify_image(picture, [GROUP])
    assert len(result.faces) == len(placed) == 6
    matched = []
    for face in result.faces:
        best = max(placed, key=lambda p: overlap(p.box, box(face)))
        assert overlap(best.box, box(face)) >= 0.5, (box(face), best)
        matched.append(best)
    assert len({id(p) for p in matched}) == 6  # one face per pasted person, none twice
    # Faces come largest first; the five largest get candidates, the sixth its rectangle only (v1's rule).
    areas = [f.rect.width * f.rect.height for f in result.faces]
    assert areas == sorted(areas, reverse=True)
    assert all(f.candidates for f in result.faces[:5]) and result.faces[5].candidates == ()
    for face, who in zip(result.faces[:5], matched[:5], strict=True):
        person, confidence = top(face)
        if who.who == "stranger":
            assert confidence < SAME_PERSON, face.candidates
        else:
            assert person == who.who and confidence > SAME_PERSON, (who, face.candidates)


def group_picture(client: MultidentifyClient, photos: dict[str, bytes]) -> tuple[bytes, list[Placed]]:
    """Six faces from five photos, each face box taken from the engine's answer for its photo alone; face widths
    170, 150, 135, 120, 105 and 75 px, so that the smallest (a stranger) is sixth."""
    layout = [  # (who, photo, face width, crop position)
        ("obama", "obama3.jpg", 170, (10, 10)),
        ("biden", "biden.jpg", 150, (370, 10)),
        ("hopper", "grace_hopper.jpg", 135, (690, 10)),
        ("stranger", "astronaut.jpg", 120, (10, 380)),
        ("obama", "obama2.jpg", 105, (280, 380)),
        ("stranger", "astronaut.jpg", 75, (520, 380)),
    ]
    parts = []
    for who, name, width, at in layout:
        alone = only_face(client.multidentify_image(photos[name], [GROUP]))
        parts.append((who, photos[name], box(alone), at, width / alone.rect.width))
    return compose((1000, 640), parts)


def test_the_v1_rules_hold_with_real_faces(client: MultidentifyClient, photos: dict[str, bytes]) -> None:
    # No face: -1101.
    landscape = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    with pytest.raises(ApiError) as no_face:
        client.multidentify_image(jpeg(landscape), [GROUP])
    assert no_face.value.code == "-1101"
    # Enrolment: the same photo again, re-encoded, is a near-duplicate (-1312); another photo is a new face.
    client.newperson("obama-dup", ["dups"], image=photos["obama.jpg"])
    again = jpeg(Image.open(io.BytesIO(photos["obama.jpg"])), quality=70)
    added = client.addface("obama-dup", images=[again, photos["obama3.jpg"]])
    assert added["ret_codes"] == [-1312, 0] and added["added"] == 1
    # Top five: with six people enrolled, a face gets five candidates.
    for i, name in enumerate(["biden.jpg", "grace_hopper.jpg", "astronaut.jpg", "obama2.jpg", "obama3.jpg"]):
        client.newperson(f"crowd-{i}", ["crowd"], image=photos[name])
    client.newperson("crowd-5", ["crowd"], image=photos["obama.jpg"])
    face = only_face(client.multidentify_image(photos["obama2.jpg"], ["crowd"]))
    assert len(face.candidates) == 5 and face.candidates[0].person_id == "crowd-3"  # obama2.jpg itself


# --- photos as users send them -----------------------------------------------------------------------------------


def test_photos_as_users_send_them_are_identified_in_their_own_pixels(
    client: MultidentifyClient, photos: dict[str, bytes], emu: EmulatorHandle, image_dir: Path
) -> None:
    original = Image.open(io.BytesIO(photos["obama2.jpg"]))
    upright = box(only_face(client.multidentify_image(photos["obama2.jpg"], [GROUP])))

    # Stored sideways with "turn 90° clockwise" in its EXIF (as a phone does): found where it is displayed.
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = jpeg(original.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes(), quality=92)
    face = only_face(client.multidentify_image(sideways, [GROUP]))
    assert_obama(face)
    assert overlap(box(face), upright) >= 0.8, (box(face), upright)

    # A PNG whose border is transparent; a grayscale JPEG.
    rgba = original.convert("RGBA")
    alpha = Image.new("L", rgba.size, 0)
    alpha.paste(255, (60, 120, rgba.width - 60, rgba.height - 120))
    rgba.putalpha(alpha)
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    for variant in (buf.getvalue(), jpeg(original.convert("L"), quality=90)):
        face = only_face(client.multidentify_image(variant, [GROUP]))
        assert_obama(face)
        assert overlap(box(face), upright) >= 0.8

    # 12 megapixels (scaled down for the detector): the face is answered in the photo's own pixels.
    huge = original.resize((original.width * 4, original.height * 4), Image.Resampling.BICUBIC)
    (image_dir / "huge.jpg").write_bytes(jpeg(huge, quality=85))
    face = only_face(client.multidentify_url(f"{emu.base_url}/images/huge.jpg", [GROUP]))
    assert_obama(face)
    assert overlap(box(face), tuple(4 * v for v in upright)) >= 0.6, (box(face), upright)  # type: ignore[arg-type]


def test_corrupt_bytes_and_gif_get_the_api_codes(
    client: MultidentifyClient, photos: dict[str, bytes], emu: EmulatorHandle, image_dir: Path
) -> None:
    whole = photos["obama2.jpg"]
    for corrupt in (whole[: len(whole) // 3], b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8):
        with pytest.raises(ApiError) as bad:
            client.multidentify_image(corrupt, [GROUP])
        assert bad.value.code == "-1102"
    gif = io.BytesIO()
    Image.open(io.BytesIO(whole)).convert("P").save(gif, "GIF")
    (image_dir / "face.gif").write_bytes(gif.getvalue())
    with pytest.raises(ApiError) as refused:  # by url: the client refuses a GIF it would upload itself
        client.multidentify_url(f"{emu.base_url}/images/face.gif", [GROUP])
    assert refused.value.code == "-1400"


# --- IAI over the same engine --------------------------------------------------------------------------------


def test_iai_answers_the_same_faces_with_the_same_people(
    client: MultidentifyClient, emu: EmulatorHandle, photos: dict[str, bytes]
) -> None:
    picture, _ = group_picture(client, photos)
    v1 = client.multidentify_image(picture, [GROUP])
    iai_options = IaiOptions(secret_id=DEV_ACCOUNT.secret_id, secret_key=DEV_ACCOUNT.secret_key, endpoint=emu.base_url)
    with IaiClient(iai_options) as iai:
        iai.create_group("iai-people", "People")
        for person, photo in ENROLLED.items():  # IAI's gallery is its own: enrolled again, from the same photos
            iai.create_person("iai-people", person, person.title(), image=photos[photo])
        answer = iai.identify_image(picture, ["iai-people"])
    assert [box(f) for f in answer.faces] == [box(f) for f in v1.faces]
    for mine, theirs in zip(answer.faces[:5], v1.faces[:5], strict=True):
        assert mine.candidates[0].person_id == theirs.candidates[0].person_id
        assert mine.candidates[0].confidence == pytest.approx(iai_score(theirs.candidates[0].confidence), abs=0.01)


# --- the engine's own figures ----------------------------------------------------------------------------------


def test_the_emulator_reports_its_engine_and_images_per_second(
    client: MultidentifyClient, emu: EmulatorHandle, photos: dict[str, bytes]
) -> None:
    emu.reset(stats=True, caches=False)
    fresh = jpeg(Image.open(io.BytesIO(photos["obama3.jpg"])), quality=88)  # bytes the engine has not seen
    assert_obama(only_face(client.multidentify_image(fresh, [GROUP])))
    engine = emu.stats()["engine"]
    assert engine["name"] == "dlib" and engine["pool"] == "processes" and engine["workers"] == 2
    assert len(engine["pids"]) == 2
    assert engine["images"] == 1 and engine["images_per_s"] > 0 and engine["mean_ms"] > 0
