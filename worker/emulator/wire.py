"""Request bodies in (JSON or multipart/form-data) and envelopes out: the v1 wire format, no I/O.

* JSON: an object; arrays are real arrays; ``image`` may be a base64 string (as ``/face/identify``
  documents); numbers where strings are expected (``"appid": 1250000000``) are accepted.
* multipart: one part per field; arrays as ``name[0]``, ``name[1]``… (or repeated ``name`` / ``name[]``);
  text parts may carry ``filename=`` (the official Python SDK sends every field that way); ``image`` /
  ``images[i]`` parts are the raw image bytes.
* ``Content-Encoding``: ``identity``, ``gzip`` (``x-gzip``) and ``deflate`` (zlib or raw), also chained
  (``gzip, gzip``); any other encoding, or a body that does not decode, cannot be read (code 3).
* Unknown fields are ignored. Envelopes are ``{"data": …, "code": …, "message": …}`` with the documented
  Chinese text as ``message`` (``"OK"`` for code 0).
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from worker.api.errors import CODES

MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 1024

_INDEXED = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<index>\d*)\]$")
_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')


class BodyError(ValueError):
    """The body cannot be read as the declared content type (answered as code 3, bad request)."""


class BodyTooLarge(ValueError):
    """The body is larger than allowed once decoded (answered as code 23, like an oversized body)."""


def decode_content(body: bytes, content_encoding: str, max_bytes: int) -> bytes:
    """``body`` with its ``Content-Encoding`` undone (the last listed encoding was applied last).

    Raises :class:`BodyError` for an encoding the emulator does not know (``br``, ``zstd``, ``compress``,
    anything else) or a body that does not decode completely, and :class:`BodyTooLarge` as soon as the
    decoded body would pass ``max_bytes`` (a small compressed body can expand a thousandfold).
    """
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, max_bytes)
        elif coding == "deflate":
            # HTTP's deflate is the zlib format, but raw deflate streams are common: accept both.
            try:
                body = _inflate(body, zlib.MAX_WBITS, max_bytes)
            except BodyError:
                body = _inflate(body, -zlib.MAX_WBITS, max_bytes)
        else:
            raise BodyError(f"unsupported Content-Encoding {coding!r}")
    return body


def _inflate(data: bytes, wbits: int, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise BodyError(f"the body does not decode: {exc}") from exc
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise BodyTooLarge(f"larger than {max_bytes} bytes once decoded")
    if not inflater.eof or inflater.unused_data:
        raise BodyError("the encoded body is cut short or followed by other bytes")
    return out


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def _header_params(value: str) -> dict[str, str]:
    return {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in _PARAM.finditer(value)}


def boundary_of(content_type: str) -> str:
    boundary = _header_params(";" + content_type.split(";", 1)[1] if ";" in content_type else "").get("boundary")
    if not boundary:
        raise BodyError("multipart body without a boundary")
    # RFC 2046: 1–70 characters from a small ASCII set; anything else cannot delimit a body we could parse.
    if len(boundary) > 70 or not boundary.isascii():
        raise BodyError("multipart boundary is not 1-70 ASCII characters")
    return boundary


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Split a multipart/form-data body into parts (RFC 7578); tolerant of LF-only line ends."""
    delimiter = b"--" + boundary_of(content_type).encode("ascii")
    chunks = body.split(delimiter)
    if len(chunks) < 2:
        raise BodyError("boundary not found in the body")
    parts: list[Part] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # closing delimiter
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        elif chunk.startswith(b"\n"):
            chunk = chunk[1:]
        sep = chunk.find(b"\r\n\r\n")
        skip = 4
        if sep < 0:
            sep, skip = chunk.find(b"\n\n"), 2
        if sep < 0:
            raise BodyError("multipart part without a header/body separator")
        head, data = chunk[:sep], chunk[sep + skip :]
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").splitlines():
            key, colon, value = line.partition(":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        params = _header_params(disposition[disposition.find(";") :] if ";" in disposition else "")
        name = params.get("name")
        if name is None:
            continue  # not a form field
        parts.append(Part(name, params.get("filename"), headers.get("content-type"), data))
    return parts


def _to_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None


class Fields:
    """Uniform access to the fields of a JSON or multipart body."""

    def __init__(self, values: dict[str, Any], lists: dict[str, list[Any]]) -> None:
        self._values = values  # name → scalar (str/number/bytes) or list (JSON)
        self._lists = lists  # multipart base name → items in index order

    @classmethod
    def from_json(cls, body: bytes) -> Fields:
        try:
            data = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise BodyError("body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise BodyError("JSON body is not an object")
        return cls(data, {})

    @classmethod
    def from_multipart(cls, body: bytes, content_type: str) -> Fields:
        values: dict[str, Any] = {}
        indexed: dict[str, list[tuple[int, int, bytes]]] = {}
        for order, part in enumerate(parse_multipart(body, content_type)):
            match = _INDEXED.match(part.name)
            if match:
                digits = match.group("index")
                if digits and len(digits) > 6:  # far beyond any real array (5000 groups at most)
                    raise BodyError(f"array index too large in part {part.name[:40]!r}")
                index = int(digits) if digits else order
                indexed.setdefault(match.group("base"), []).append((index, order, part.data))
            elif part.name in values:  # a repeated plain name is an array too
                indexed.setdefault(part.name, [(0, -1, values[part.name])]).append((order, order, part.data))
            else:
                values[part.name] = part.data
        lists = {base: [data for _, _, data in sorted(items)] for base, items in indexed.items()}
        return cls(values, lists)

    @classmethod
    def parse(cls, body: bytes, content_type: str) -> Fields:
        if content_type.lower().startswith("multipart/"):
            return cls.from_multipart(body, content_type)
        return cls.from_json(body)  # the documented alternative; also what an absent content type gets

    def has(self, name: str) -> bool:
        return name in self._values or name in self._lists

    def text(self, name: str) -> str | None:
        """A scalar field as text (None when absent or not a scalar)."""
        value = self._values.get(name)
        if value is None and name in self._lists and len(self._lists[name]) == 1:
            value = self._lists[name][0]
        return _to_text(value)

    def texts(self, name: str) -> list[str] | None:
        """An array field (JSON array, ``name[i]`` parts or repeated parts); a lone string is a 1-item list."""
        items = self._items(name)
        if items is None:
            return None
        out = [_to_text(v) for v in items]
        return [t for t in out if t is not None]

    def blob(self, name: str) -> bytes | None:
        """Binary field: the multipart part as is, or a JSON string as base64 (undecodable → its raw bytes)."""
        value = self._values.get(name)
        if value is None and name in self._lists and self._lists[name]:
            value = self._lists[name][0]
        return _to_blob(value)

    def blobs(self, name: str) -> list[bytes] | None:
        items = self._items(name)
        if items is None:
            return None
        return [b for b in (_to_blob(v) for v in items) if b is not None]

    def _items(self, name: str) -> list[Any] | None:
        """An array field's raw items: ``name[i]`` or repeated parts, a JSON array, or one value as a list."""
        if name in self._lists:
            return self._lists[name]
        value = self._values.get(name)
        if value is None:
            return None
        return value if isinstance(value, list) else [value]


def _to_blob(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value.encode()
    return None


def check_id(value: str | None) -> int:
    """0 if ``value`` is a usable id; -1301 empty/missing, -1313 whitespace or '/', -1304 too long."""
    if not value:
        return -1301
    if "/" in value or any(ch.isspace() for ch in value):
        return -1313
    if len(value) > MAX_ID_LENGTH:
        return -1304
    return 0


def message_for(code: int) -> str:
    if code == 0:
        return "OK"
    info = CODES.get(code)
    return info.zh if info else "未知错误"


def envelope(code: int, data: Any = None, message: str | None = None) -> bytes:
    return orjson.dumps({"data": {} if data is None else data, "code": code, "message": message or message_for(code)})
