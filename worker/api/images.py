"""Which image format a body is, from its magic bytes: the one answer for the whole project (pure, no I/O).

Contract of :func:`sniff_image_type`:

* It reads the first ``SNIFF_BYTES`` bytes at most (never copies a whole image) and names the format by its
  MIME type: ``image/jpeg``, ``image/png``, ``image/bmp`` (a whole 26-byte header), ``image/webp``,
  ``image/tiff``, and ``image/gif`` — named so that callers can refuse it with the service's own code -1400.
* None for anything else: an empty or truncated body, HTML, another format. The declared Content-Type or
  file name never enters into it.

Its users: the face API client labels an image part with it and refuses a GIF before sending
(``worker.api.client``), fetch mode keeps only what it names (``worker.fetch``), and the emulator refuses a
GIF the way the service does.
"""

from __future__ import annotations

__all__ = ["GIF", "SNIFF_BYTES", "sniff_image_type"]

GIF = "image/gif"
SNIFF_BYTES = 26  # the longest header looked at: BMP's file header and the width and height after it

_PREFIXES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", GIF),
    (b"GIF89a", GIF),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def sniff_image_type(data: bytes | bytearray | memoryview) -> str | None:
    """The MIME type the magic bytes of ``data`` show (``image/gif`` included), else None."""
    head = bytes(data[:SNIFF_BYTES])
    for magic, mime in _PREFIXES:
        if head.startswith(magic):
            return mime
    if head.startswith(b"BM") and len(head) >= SNIFF_BYTES:
        return "image/bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None
