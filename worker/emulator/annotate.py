"""What the API answered, drawn onto the photo: a box per face and a label (who, how sure), with Pillow.

For people looking at results (the demo, a ``tail`` that saves annotated photos): :func:`marks_for` turns the faces
of a result (:class:`worker.api.models.Face`, from either API) into :class:`Mark` s, :func:`annotate` draws them.
Coordinates are the API's: pixels of the upright photo (its EXIF orientation applied, as the engine sees it), so
the photo is turned upright before drawing; a photo larger than ``max_side`` is drawn scaled down, boxes with it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from worker.api.models import Face
from worker.emulator.photo import open_upright

KNOWN = (40, 200, 90)  # green: the top candidate reaches the threshold
UNKNOWN = (255, 150, 20)  # orange: a face nobody enrolled matches well enough
UNSEARCHED = (150, 150, 150)  # gray: a rectangle without candidates (v1 answers only five faces in full)


@dataclass(frozen=True)
class Mark:
    """One face to draw: its box (x, y, width, height) in the upright photo's pixels, a label and a colour."""

    box: tuple[int, int, int, int]
    label: str
    colour: tuple[int, int, int] = KNOWN


def marks_for(faces: Sequence[Face], threshold: float, names: Mapping[str, str] | None = None) -> list[Mark]:
    """A mark per face: ``"alice 95"`` when its top candidate scores ≥ ``threshold`` (``names`` maps person ids to
    what to print), ``"? 40"`` below it, no label when the face has no candidates."""
    marks = []
    for face in faces:
        box = (face.rect.x, face.rect.y, face.rect.width, face.rect.height)
        if not face.candidates:
            marks.append(Mark(box, "", UNSEARCHED))
            continue
        best = face.candidates[0]
        score = f"{best.confidence:.0f}"
        if best.confidence >= threshold:
            who = (names or {}).get(best.person_id) or best.person_name or best.person_id
            marks.append(Mark(box, f"{who} {score}", KNOWN))
        else:
            marks.append(Mark(box, f"? {score}", UNKNOWN))
    return marks


def annotate(image: bytes, marks: Sequence[Mark], *, max_side: int = 1280, quality: int = 90) -> bytes:
    """The photo upright, at most ``max_side`` px, with every mark drawn; JPEG bytes. Raises
    :class:`worker.emulator.faces.ImageError` for bytes that are no photo (GIF, undecodable)."""
    photo = open_upright(image, max_side)
    canvas = Image.fromarray(photo.rgb)
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(max(canvas.size) / 400))
    font = _font(max(12, round(max(canvas.size) / 45)))
    for mark in marks:
        x, y, w, h = mark.box
        left, top = x / photo.scale_x, y / photo.scale_y
        right, bottom = (x + w) / photo.scale_x, (y + h) / photo.scale_y
        draw.rectangle((left, top, right, bottom), outline=mark.colour, width=line)
        if mark.label:
            tl, tt, tr, tb = draw.textbbox((0, 0), mark.label, font=font)
            text_w, text_h = tr - tl, tb - tt
            # Above the box when there is room, else inside its top edge.
            label_top = top - text_h - 2 * line if top - text_h - 2 * line >= 0 else top
            draw.rectangle((left, label_top, left + text_w + 2 * line, label_top + text_h + 2 * line), fill=mark.colour)
            draw.text((left + line - tl, label_top + line - tt), mark.label, fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size)  # Pillow ≥ 10.1 with FreeType: a scalable font
    except (TypeError, OSError):
        return ImageFont.load_default()
