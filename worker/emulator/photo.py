"""Photos as users send them, made ready for a face detector: upright, RGB, at most ``max_side`` pixels.

Contract of :func:`open_upright` (pure: bytes in, pixels out):

* GIF → :class:`~worker.emulator.faces.ImageError` (-1400), by the magic bytes
  (:func:`worker.api.images.sniff_image_type`) and again by what Pillow finds; anything Pillow cannot decode,
  or an image over :data:`MAX_PIXELS` pixels (a decompression bomb), → ImageError (-1102);
* the EXIF orientation is applied: a phone's portrait photo stored sideways is turned upright, and every
  coordinate the emulator answers is in the pixels of the upright image (as the photo is displayed);
* transparency is laid over white (a PNG's transparent background is not black), palette, grayscale, CMYK and
  16-bit images become 8-bit RGB;
* an image whose longest side exceeds ``max_side`` is scaled down (a JPEG is first decoded at a reduced size by
  its DCT, ``draft``, so a 24-megapixel photo never exists in memory at full size);
  :meth:`Upright.to_original` maps a point or box of the scaled image back to the upright original's pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from worker.api.images import GIF, sniff_image_type
from worker.emulator.faces import ImageError, Rect

MAX_PIXELS = 40_000_000  # refuse decompression bombs as undecodable
MAX_SIDE = 1280  # the detector's input: larger photos are scaled down first (time grows with the pixels)
# Orientations 5–8 swap width and height (a quarter turn, possibly mirrored).
_SWAPS_AXES = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class Upright:
    """An upright RGB image (H, W, 3) and its scale: ``width``×``height`` are the upright original's pixels."""

    rgb: npt.NDArray[np.uint8]
    width: int
    height: int

    @property
    def scale_x(self) -> float:
        """Original pixels per pixel of ``rgb`` along x (1.0 when nothing was scaled)."""
        return self.width / int(self.rgb.shape[1])

    @property
    def scale_y(self) -> float:
        return self.height / int(self.rgb.shape[0])

    def to_original(self, left: float, top: float, right: float, bottom: float) -> Rect:
        """A box of ``rgb`` (edges, right/bottom exclusive) as a :class:`Rect` in the upright original's pixels."""
        x0, y0 = round(left * self.scale_x), round(top * self.scale_y)
        x1, y1 = round(right * self.scale_x), round(bottom * self.scale_y)
        return Rect(x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def open_upright(data: bytes, max_side: int = MAX_SIDE) -> Upright:
    """Decode ``data`` as described in the module docstring; raises :class:`ImageError` (-1400, -1102)."""
    if sniff_image_type(data) == GIF:
        raise ImageError(-1400, "GIF images are not supported")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            if img.format == "GIF":
                raise ImageError(-1400, "GIF images are not supported")
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(-1102, "image too large to decode")
            orientation = img.getexif().get(0x0112, 1)
            swapped = orientation in _SWAPS_AXES
            width, height = (img.height, img.width) if swapped else (img.width, img.height)
            if img.format == "JPEG" and max(width, height) > max_side:
                # Decode at 1/2, 1/4 or 1/8 straight from the DCT, never below the size asked for.
                factor = max_side / max(width, height)
                img.draft("RGB", (max(1, int(img.width * factor)), max(1, int(img.height * factor))))
            img = ImageOps.exif_transpose(img) or img
            rgb = _to_rgb(img)
            if max(rgb.width, rgb.height) > max_side:
                factor = max_side / max(rgb.width, rgb.height)
                size = (max(1, round(rgb.width * factor)), max(1, round(rgb.height * factor)))
                rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            pixels = np.asarray(rgb, dtype=np.uint8)
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises many types for broken data
        raise ImageError(-1102, f"cannot decode image: {type(exc).__name__}") from exc
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ImageError(-1102, f"unexpected pixel layout {pixels.shape}")
    return Upright(np.ascontiguousarray(pixels), width, height)


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB; transparency over white, 16- and 32-bit grayscale scaled to 8 bits."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        img = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")
