"""The one image sniffer: real files of every format Pillow writes, and what must not pass for an image."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from worker.api.images import GIF, SNIFF_BYTES, sniff_image_type


def _image(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("BMP", "image/bmp"),
        ("WEBP", "image/webp"),
        ("TIFF", "image/tiff"),
        ("GIF", GIF),  # named, so that every caller refuses it with -1400
    ],
)
def test_every_format_is_named_from_its_first_bytes(fmt: str, mime: str) -> None:
    data = _image(fmt)
    assert sniff_image_type(data) == mime
    assert sniff_image_type(data[:SNIFF_BYTES]) == mime  # the head is enough
    assert sniff_image_type(memoryview(data)) == mime  # a fetched image is a view of its buffer
    assert sniff_image_type(bytearray(data)) == mime


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<html>not an image</html>",
        b"BM",  # too short to be a BMP header
        b"BM" + b"\x00" * (SNIFF_BYTES - 3),
        b"RIFF\x00\x00\x00\x00WAVEfmt ",  # RIFF, but audio
        b"GIF88a" + b"\x00" * 20,
        b"\xff\xd8",  # half a JPEG signature
        b"\x89PNG\r\n",
        b"II+\x00" + b"\x00" * 20,  # BigTIFF is not accepted
    ],
)
def test_anything_else_is_no_image(data: bytes) -> None:
    assert sniff_image_type(data) is None


def test_only_the_head_is_read() -> None:
    class Huge:
        """A buffer that only allows a slice of its head to be taken."""

        def __getitem__(self, key: slice) -> bytes:
            assert key.start in (None, 0) and key.stop is not None and key.stop <= SNIFF_BYTES
            return b"\x89PNG\r\n\x1a\n"

    assert sniff_image_type(Huge()) == "image/png"  # type: ignore[arg-type]
