"""HTTP client for Tencent face API v1: ``/face/multidentify`` and the person/group management calls.

Wire format (docs/api-notes.md#transport-and-envelope): ``POST {base_url}/face/<action>`` with
``Host``, ``Authorization`` (multi-use v1 signature) and ``User-Agent``; a JSON body when the image is
a ``url``, a multipart body when it is binary ``image``. The multipart body is byte-for-byte what
requests would encode (urllib3's part headers and boundary), but streamed (:class:`MultipartBody`):
each image goes out from the caller's own buffer, never copied into a second full-size body, with a
``Content-Length``.

Contract:
- every failure is an :class:`ApiError` (service code, or ``timeout`` / ``connection`` /
  ``http_<status>`` / ``bad_response``); nothing is retried here except one re-signed attempt after
  code 9 or 13;
- requests the service would refuse (empty or ill-formed ids, body over 1.5 MB, GIF, empty url or
  image) are refused locally with the service's own code and nothing is sent;
- one client is shared by many threads: it holds no per-call state, the signer is thread-safe.
"""

from __future__ import annotations

import dataclasses
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
import requests
import urllib3
import urllib3.filepost
from urllib3.fields import RequestField

from worker.api.errors import ApiError
from worker.api.images import GIF, sniff_image_type
from worker.api.models import IdentifyResult, parse_data_object, parse_id_list, parse_multidentify
from worker.api.signature import CachedSigner
from worker.api.transport import HttpTransport

DEFAULT_BASE_URL = "https://recognition.image.myqcloud.com"
MULTIDENTIFY_PATH = "/face/multidentify"
MAX_BODY_BYTES = int(1.5 * 1024 * 1024)  # documented request body limit → code 23

_BAD_ID_CHARS = re.compile(r"[\s/]")  # -1313: spaces, slashes, tabs, newlines

R = TypeVar("R")
Image = bytes | bytearray | memoryview  # an image as the caller holds it; sent from that buffer as it is
_Fields = list[tuple[str, str]]
_Files = list[tuple[str, tuple[str, Image, str]]]


@dataclasses.dataclass(frozen=True)
class ClientOptions:
    """What a :class:`MultidentifyClient` is configured with: the account, the endpoint and its transport.

    Built from the settings in one place (``worker.runtime.app.client_options``). Raises ValueError when
    ``base_url`` is not an http(s) URL with a host. ``pool_size``: connections kept to the API (size it to the
    number of threads calling). ``verify``: True, False or a CA bundle path, passed on every request.
    ``user_agent``: None for ``multidentify-worker/<version>``.
    """

    appid: str
    secret_id: str = dataclasses.field(repr=False)
    secret_key: str = dataclasses.field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    bucket: str = ""
    signature_lifetime: int = 3600
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    pool_size: int = 64
    verify: bool | str = True
    user_agent: str | None = None

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL with a host, got {self.base_url!r}")


class MultipartBody:
    """A ``multipart/form-data`` body sent in pieces: each image is a memoryview of the caller's buffer.

    The bytes are exactly those of ``requests.Request(data=fields, files=files)`` for the same boundary
    (urllib3's ``RequestField`` renders every part header; text values are UTF-8). ``len()`` is known,
    so requests frames it with ``Content-Length``; iterating yields the pieces and may be repeated
    (the client re-sends the same body after a re-signed retry). The caller must not change an image
    buffer while a call that sends it is running.
    """

    __slots__ = ("_length", "_pieces", "content_type")

    def __init__(self, fields: _Fields, files: _Files, boundary: str | None = None) -> None:
        boundary = boundary or urllib3.filepost.choose_boundary()
        pieces: list[bytes | memoryview] = []
        head = bytearray()  # small runs of delimiters, part headers and text values, joined
        parts: list[tuple[RequestField, Image]] = []
        for name, value in fields:
            text = value.encode("utf-8")
            field = RequestField(name=name, data=text)
            field.make_multipart()
            parts.append((field, text))
        for name, (filename, image, content_type) in files:
            field = RequestField(name=name, data=b"", filename=filename)
            field.make_multipart(content_type=content_type)
            parts.append((field, image))
        for field, data in parts:
            head += f"--{boundary}\r\n".encode("latin-1")
            head += field.render_headers().encode("utf-8")
            if isinstance(data, bytes) and len(data) <= 4096:
                head += data
            else:
                pieces.append(bytes(head))
                head.clear()
                # A read-only view is sent as it is: releasing it (the fetcher does) then leaves no view behind.
                view = data if isinstance(data, memoryview) and data.readonly else memoryview(data).toreadonly()
                pieces.append(view)
            head += b"\r\n"
        head += f"--{boundary}--\r\n".encode("latin-1")
        pieces.append(bytes(head))
        self._pieces = tuple(pieces)
        self._length = sum(len(p) for p in pieces)
        self.content_type = f"multipart/form-data; boundary={boundary}"

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes | memoryview]:
        return iter(self._pieces)

    def getvalue(self) -> bytes:
        """The whole body in one piece (a full copy: for tests and debugging, never on the send path)."""
        return b"".join(self._pieces)


class MultidentifyClient:
    """Calls the face API over one ``requests.Session`` with keep-alive; safe to share between threads.

    The HTTP side (pool, timeouts, TLS, an injected ``session``) is :class:`worker.api.transport.HttpTransport`.
    ``clock`` (Unix time) dates the signatures and reads a ``Retry-After`` given as a date.
    """

    def __init__(
        self,
        options: ClientOptions,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._appid = options.appid
        self._bucket = options.bucket
        self._signer = CachedSigner(
            options.appid,
            options.secret_id,
            options.secret_key,
            lifetime=options.signature_lifetime,
            clock=clock,
            bucket=options.bucket,
        )
        self._http = HttpTransport.configured(options.base_url, options, session=session, clock=clock)

    # -- multidentify -------------------------------------------------------------------------------

    def multidentify_url(self, url: str, group_ids: Sequence[str], session_id: str | None = None) -> IdentifyResult:
        """Identify every face of the image at ``url`` (downloaded by the service) in ``group_ids``.

        JSON body: ``appid``, ``group_id`` (one group) or ``group_ids`` (several), ``url``, and
        ``session_id`` when non-empty. Raises :class:`ApiError`.
        """
        groups = _checked_ids("group id", group_ids)
        body: dict[str, Any] = self._envelope()
        body.update(_group_field_json(groups))
        body["url"] = _checked_url(url)
        if session_id:
            body["session_id"] = session_id
        return self._post_json(MULTIDENTIFY_PATH, body, parse_multidentify)

    def multidentify_image(
        self,
        image: Image,
        group_ids: Sequence[str],
        session_id: str | None = None,
        filename: str = "image.jpg",
    ) -> IdentifyResult:
        """Identify every face of ``image`` (binary) in ``group_ids``.

        Multipart body: ``appid``, ``group_id`` or ``group_ids[i]``, ``session_id`` when non-empty, and
        the ``image`` part, sent from ``image`` itself (not copied). Raises :class:`ApiError`.
        """
        groups = _checked_ids("group id", group_ids)
        fields = self._envelope_fields()
        fields += [("group_id", groups[0])] if len(groups) == 1 else _indexed("group_ids", groups)
        if session_id:
            fields.append(("session_id", session_id))
        files = [("image", _image_part(image, filename))]
        return self._post_multipart(MULTIDENTIFY_PATH, fields, files, parse_multidentify)

    # The worker's FaceApi names (worker.runtime.identify), shared with the IAI client.
    identify_url = multidentify_url
    identify_image = multidentify_image

    # -- person / group management (same envelope; return ``data``) ----------------------------------

    def newperson(
        self,
        person_id: str,
        group_ids: Sequence[str],
        *,
        image: bytes | None = None,
        url: str | None = None,
        person_name: str | None = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """Create ``person_id`` in ``group_ids`` (groups are created implicitly) with one face."""
        person = _checked_id("person id", person_id)
        groups = _checked_ids("group id", group_ids)
        _one_of("image", image, "url", url)
        extras = {k: v for k, v in (("person_name", person_name), ("tag", tag)) if v is not None}
        if url is not None:
            body = self._envelope() | {"group_ids": groups, "person_id": person, "url": _checked_url(url)} | extras
            return self._post_json("/face/newperson", body, parse_data_object)
        assert image is not None  # _one_of guarantees it
        fields = [*self._envelope_fields(), *_indexed("group_ids", groups), ("person_id", person), *extras.items()]
        return self._post_multipart("/face/newperson", fields, [("image", _image_part(image))], parse_data_object)

    def addface(
        self,
        person_id: str,
        *,
        images: Sequence[bytes] | None = None,
        urls: Sequence[str] | None = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """Add faces to ``person_id``; ``data.ret_codes`` holds one code per image."""
        person = _checked_id("person id", person_id)
        _one_of("images", images or None, "urls", urls or None)
        extras = {"tag": tag} if tag is not None else {}
        if urls:
            checked = [_checked_url(u) for u in urls]
            body = self._envelope() | {"person_id": person, "urls": checked} | extras
            return self._post_json("/face/addface", body, parse_data_object)
        assert images
        fields = [*self._envelope_fields(), ("person_id", person), *extras.items()]
        files = [(f"images[{i}]", _image_part(img, f"image{i}.jpg")) for i, img in enumerate(images)]
        return self._post_multipart("/face/addface", fields, files, parse_data_object)

    def delperson(self, person_id: str) -> dict[str, Any]:
        """Delete ``person_id`` and its faces."""
        body = self._envelope() | {"person_id": _checked_id("person id", person_id)}
        return self._post_json("/face/delperson", body, parse_data_object)

    def getinfo(self, person_id: str) -> dict[str, Any]:
        """``data`` of ``/face/getinfo``: person_id, person_name, face_ids, group_ids, tag."""
        body = self._envelope() | {"person_id": _checked_id("person id", person_id)}
        return self._post_json("/face/getinfo", body, parse_data_object)

    def getgroupids(self) -> list[str]:
        """Every group of the appid."""
        return self._post_json("/face/getgroupids", self._envelope(), _field_parser("group_ids"))

    def check_configuration(self, group_ids: Sequence[str]) -> None:
        """A cheap known-good call with our credentials: raises like a misconfigured identify would.

        The worker calls it before stopping on a configuration/auth answer (is it the configuration, or
        this event?) and as the circuit breaker's probe when no event is in flight. Lists the appid's groups
        (the signature, the appid and the account are checked) and refuses with -1306 when a configured
        group is missing.
        """
        existing = set(self.getgroupids())
        missing = [g for g in group_ids if g not in existing]
        if missing:
            raise ApiError.from_service(-1306, f"configured groups do not exist: {', '.join(missing)}")

    def getpersonids(self, group_id: str) -> list[str]:
        """Every person of ``group_id``."""
        body = self._envelope() | {"group_id": _checked_id("group id", group_id)}
        return self._post_json("/face/getpersonids", body, _field_parser("person_ids"))

    # -- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the session if this client created it (an injected session belongs to the caller)."""
        self._http.close()

    def __enter__(self) -> MultidentifyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never show the secrets
        return f"MultidentifyClient(appid={self._appid!r}, base_url={self._http.base_url!r})"

    # -- plumbing -----------------------------------------------------------------------------------

    def _envelope(self) -> dict[str, Any]:
        # The Python SDK sends bucket in every body; sent only when configured so a v1 appid (b empty)
        # gets the documented minimal body.
        return {"appid": self._appid, "bucket": self._bucket} if self._bucket else {"appid": self._appid}

    def _envelope_fields(self) -> _Fields:
        return list(self._envelope().items())

    def _post_json(self, path: str, body: dict[str, Any], parse: Callable[[bytes, int], R]) -> R:
        prepared = self._http.prepare(path, {"Content-Type": "application/json"}, orjson.dumps(body))
        return self._call(prepared, parse)

    def _post_multipart(self, path: str, fields: _Fields, files: _Files, parse: Callable[[bytes, int], R]) -> R:
        # Cheap early refusal before encoding a huge image; the exact check runs on the encoded body.
        if sum(len(content) for _, (_, content, _) in files) > MAX_BODY_BYTES:
            raise _too_large()
        body = MultipartBody(fields, files)
        return self._call(self._http.prepare(path, {"Content-Type": body.content_type}, body), parse)

    def _call(self, prepared: requests.PreparedRequest, parse: Callable[[bytes, int], R]) -> R:
        body = prepared.body
        if body is not None and len(body) > MAX_BODY_BYTES:
            raise _too_large()
        for attempt in (1, 2):
            prepared.headers["Authorization"] = self._signer.header()
            answer = self._http.send(prepared)
            try:
                return parse(answer.body, answer.status)
            except ApiError as err:
                if err.retry_after is None:
                    err.retry_after = answer.retry_after
                # 9 (expired) / 13 (replay): a fresh signature may pass; a second refusal is final.
                if err.resign and attempt == 1:
                    self._signer.invalidate()
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover


def _checked_id(kind: str, value: str) -> str:
    if not value:
        raise ApiError.refused(-1301, f"empty {kind}")
    if _BAD_ID_CHARS.search(value):
        raise ApiError.refused(-1313, f"{kind} {value!r} contains whitespace or '/'")
    return value


def _checked_ids(kind: str, values: Sequence[str]) -> list[str]:
    if isinstance(values, str):  # a str is a Sequence[str] too; "abc" would become three groups
        raise TypeError(f"{kind}s must be a sequence of strings, not a string")
    if not values:
        raise ApiError.refused(-1301, f"empty {kind} list")
    return [_checked_id(kind, v) for v in values]


def _checked_url(url: str) -> str:
    if not url or not url.strip():
        raise ApiError.refused(-1301, "empty url")
    return url


def _one_of(name_a: str, a: object, name_b: str, b: object) -> None:
    if a is None and b is None:
        raise ApiError.refused(-1301, f"neither {name_a} nor {name_b} given")
    if a is not None and b is not None:
        raise ValueError(f"give {name_a} or {name_b}, not both")


def _image_part(image: Image, filename: str = "image.jpg") -> tuple[str, Image, str]:
    if not image:
        raise ApiError.refused(-1300, "empty image")
    kind = sniff_image_type(image)
    if kind == GIF:
        raise ApiError.refused(-1400, "GIF images are not supported")
    if len(image) > MAX_BODY_BYTES:
        raise _too_large()
    return filename, image, kind or "application/octet-stream"


def _too_large() -> ApiError:
    return ApiError.refused(23, f"request body over {MAX_BODY_BYTES} bytes (1.5 MB)")


def _group_field_json(groups: list[str]) -> dict[str, Any]:
    # One group → "group_id", several → "group_ids" (as the official Java SDK sends them).
    return {"group_id": groups[0]} if len(groups) == 1 else {"group_ids": groups}


def _indexed(name: str, values: Sequence[str]) -> _Fields:
    return [(f"{name}[{i}]", v) for i, v in enumerate(values)]


def _field_parser(field: str) -> Callable[[bytes, int], list[str]]:
    return lambda body, status: parse_id_list(body, status, field)
