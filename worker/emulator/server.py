"""The emulator's HTTP server: Tencent face API v1 on aiohttp.web, plus an admin API for tests.

IAI (API 3.0) is served on ``POST /`` by :class:`worker.emulator.iai.IaiApi` over this server's engine, gallery,
fetcher, faults and statistics; the rest of this docstring is about v1.

Why aiohttp.web: one event loop serves thousands of concurrent slow requests (injected latency is an
``asyncio.sleep``, not a thread), and it is fast enough that the emulator is never what a benchmark of
the worker measures. A prototype (docs/design.md) measured aiohttp.web + uvloop at ≈31k req/s per
core for a trivial handler; bench/bench_emulator.py measures this server (signature check, multipart or
JSON, matching, a url download per call) on the 2-core project machine, without uvloop, at ≈8.5k
multidentify req/s at 0 ms in image mode (≈8.6–9k req/s per core of emulator CPU; ≈3.5–5k/s in url
mode, where the load generator and the image server share the other core), and ≈1,170–1,240/s with 256
requests in flight at 200 ms (the ideal is 1,280/s), ≈2.2–3.9k/s with 1,024 in flight. One requests-based
worker process drives at most ≈2.4k/s, so a single emulator process is enough.

Request path for ``POST /face/<action>`` (answers are always ``{"data", "code", "message"}``, HTTP 200
unless ``youtu_http_status`` maps 23→413 and 15→429):

1. faults (multidentify/identify only, unless ``apply_to_management``): QPS limit → 15; latency; then at
   most one of dropped connection, HTTP 5xx, business code, malformed JSON, slow body, late answer (the
   action is carried out, then its answer held: ``late_answer_ms``), applied error (the action is carried out,
   then answered with a code instead of its result: ``applied_error_rates``); ``actions`` narrows faults to named
   actions;
2. body > max_body_bytes (also once its Content-Encoding is undone) → 23; signature → 4/5; body
   unreadable (a Content-Encoding other than gzip/deflate/identity or one the body does not match,
   broken chunked framing, not complete within ``body_timeout_s``, not the declared JSON/multipart)
   → 3; no appid → -1301;
   signature vs body and accounts → 6/10/11/12/14/9/13 (see :mod:`worker.emulator.auth`);
3. the action: fields → -1301/-1313/-1304, groups → -1306, image (``url`` wins over ``image``; a
   download failure → -1308; GIF → -1400; undecodable → -1102; no face → -1101), gallery → -1302/-1303/
   -1305/-1309/-1310/-1311/-1312.

A request aiohttp cannot parse at all (request line, headers, broken chunked framing arriving with
them) is answered the same way, code 3, and counted under the path ``<unparsed>``. A client that closes
the connection before its body arrived gets no answer (counted as ``client_gone``).

Admin (no auth; loopback only): ``GET/POST /__admin/faults``, ``GET /__admin/stats``,
``POST /__admin/reset`` — shapes in :meth:`Emulator.stats` and :meth:`Emulator.reset`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from worker.api.images import GIF, sniff_image_type
from worker.emulator.accounts import AccountBook
from worker.emulator.auth import SignatureChecker
from worker.emulator.config import EmulatorConfig
from worker.emulator.detector import Detector
from worker.emulator.download import DownloadError, UrlDownloader
from worker.emulator.engine import make_engine
from worker.emulator.faces import DetectedFace, FaceEngine, ImageError
from worker.emulator.faults import NO_FAULT, FaultConfig, FaultInjector, FaultPlan
from worker.emulator.gallery import Gallery, GalleryError
from worker.emulator.iai import IaiApi
from worker.emulator.serving import PARSE_ERROR_RESPONSE
from worker.emulator.wire import (
    MAX_TEXT_LENGTH,
    BodyError,
    BodyTooLarge,
    Fields,
    check_id,
    decode_content,
    envelope,
)

SEARCH_ACTIONS = frozenset({"multidentify", "identify"})
YOUTU_HTTP_STATUS = {23: 413, 15: 429}
HTTP_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
SLOW_BODY_CHUNKS = 8
RESULT_CACHE_ENTRIES = 4096

Result = tuple[int, Any]  # (code, data)
Action = Callable[[str, Fields], Awaitable[Result]]
EMULATOR_KEY = web.AppKey("emulator", object)
UNPARSED = "<unparsed>"  # the stats' path for requests aiohttp could not parse


class _ClientGone(Exception):
    """The client closed the connection before its body arrived: there is no one to answer."""


class _Unreadable(Exception):
    """The body could not be read to its end: answer ``code`` and close the connection (the rest may follow)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Abort(Exception):
    """Stop processing and answer this code (raised from helpers deep in an action)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Stats:
    """Counters for ``GET /__admin/stats``; touched only from the event loop."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.time()
        self.requests: Counter[str] = Counter()
        self.codes: dict[str, Counter[str]] = {}
        self.http_status: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        # A gauge, not a counter: requests in flight at a reset are still in flight, and end after it.
        self.in_flight: int = getattr(self, "in_flight", 0)
        self.max_in_flight = self.in_flight

    def answered(self, path: str, outcome: str, status: int | None) -> None:
        per_path = self.codes.get(path)
        if per_path is None:
            per_path = self.codes[path] = Counter()
        per_path[outcome] += 1
        if status is not None:
            self.http_status[str(status)] += 1


class Emulator:
    """State of one emulator (config, accounts, gallery, engine, caches, faults, stats) and its handlers.

    The engine is ``engine`` when given, else the one ``config.engine`` names (:func:`make_engine`). A gallery file
    made by another engine, or an engine that cannot load, raises here (ValueError, RuntimeError)."""

    def __init__(self, config: EmulatorConfig, *, engine: FaceEngine | None = None) -> None:
        self.config = config
        self.engine: FaceEngine = engine or make_engine(config.engine)
        self.checker = SignatureChecker(AccountBook(config.accounts))
        self.detector = Detector(self.engine, cache_entries=config.detect_cache_entries, workers=config.engine_workers)
        self.gallery = Gallery(self.engine, config.db, config.limits)
        self.downloader = UrlDownloader(
            timeout_s=config.download_timeout_s, max_bytes=config.download_max_bytes, cache_ttl_s=config.url_cache_ttl_s
        )
        self.faults = FaultInjector(config.faults)
        self.stats = Stats()
        self._results: dict[tuple[str, bytes, tuple[str, ...], int], list[dict[str, Any]]] = {}
        self.iai = IaiApi(self)  # IAI (API 3.0) on POST /, over the same engine, gallery and faults
        self._actions: dict[str, Action] = {
            "multidentify": self._multidentify,
            "identify": self._identify,
            "newperson": self._newperson,
            "delperson": self._delperson,
            "addface": self._addface,
            "delface": self._delface,
            "setinfo": self._setinfo,
            "getinfo": self._getinfo,
            "getgroupids": self._getgroupids,
            "getpersonids": self._getpersonids,
            "getfaceids": self._getfaceids,
            "getfaceinfo": self._getfaceinfo,
            "addgroupids": self._addgroupids,
            "delgroupids": self._delgroupids,
        }

    # --- app ------------------------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        # Bodies are decoded here, not by aiohttp: an encoding it cannot decode (br without Brotli, zstd)
        # or a body that does not match its Content-Encoding would otherwise be answered with a
        # text/plain 400 or 500 before or around the handler, instead of the API's envelope (code 3).
        app = web.Application(client_max_size=self.config.max_body_bytes * 4, handler_args={"auto_decompress": False})
        app[EMULATOR_KEY] = self
        app[PARSE_ERROR_RESPONSE] = self._unparseable
        app.router.add_post("/face/{action}", self.handle_face)
        app.router.add_post("/", self.iai.handle)
        app.router.add_get("/__admin/faults", self._admin_get_faults)
        app.router.add_post("/__admin/faults", self._admin_set_faults)
        app.router.add_get("/__admin/stats", self._admin_stats)
        app.router.add_post("/__admin/reset", self._admin_reset)
        if self.config.images_dir:
            from worker.emulator.imageserver import add_routes

            add_routes(app, self.config.images_dir, "/images")
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    def _unparseable(self) -> web.Response:
        """The answer to a request aiohttp could not parse (see ``PARSE_ERROR_RESPONSE``): bad request."""
        self.stats.requests[UNPARSED] += 1
        self.stats.answered(UNPARSED, "3", 200)
        return web.Response(status=200, body=envelope(3), content_type="application/json")

    async def _on_startup(self, _app: web.Application) -> None:
        await self.detector.start()  # a process pool is up, its models loaded, before the first request
        await self.downloader.start()

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.downloader.close()
        await self.detector.close()
        self.gallery.close()

    # --- admin ----------------------------------------------------------------------------------------------

    def set_faults(self, faults: FaultConfig | dict[str, Any]) -> dict[str, Any]:
        config = faults if isinstance(faults, FaultConfig) else FaultConfig.from_json(faults)
        self.faults.configure(config)
        return config.to_json()

    def stats_json(self) -> dict[str, Any]:
        """``GET /__admin/stats``::

        {"uptime_s": 1.2, "requests_total": 10, "requests": {"/face/multidentify": 10},
         "codes": {"/face/multidentify": {"0": 7, "15": 1, "http_503": 1, "dropped": 1}},
         "http_status": {"200": 8, "503": 1}, "faults": {"latency": 10, "qps": 1, "http": 1, "drop": 1},
         "in_flight": 0, "max_in_flight": 4, "detect_cache": {"hits": 9, "misses": 1, "entries": 1},
         "engine": {"name": "dlib", "pool": "processes", "workers": 2, "pids": [4711, 4712], "images": 1,
                    "images_per_s": 0.1, "mean_ms": 131.2, "in_pool": 0, "waiting": 0, "max_waiting": 0},
         "downloads": {"count": 10, "failures": 0}, "gallery": {"appids": 1, "groups": 1, "persons": 3, "faces": 3}}

        ``engine``: the face engine's own throughput (:meth:`worker.emulator.detector.Detector.stats`): images it
        computed (cache misses) since the last reset, per second over the last 10 s, mean time per image.
        """
        s = self.stats
        return {
            "uptime_s": round(time.time() - s.started, 3),
            "requests_total": sum(s.requests.values()),
            "requests": dict(s.requests),
            "codes": {path: dict(c) for path, c in s.codes.items()},
            "http_status": dict(s.http_status),
            "faults": dict(s.faults),
            "in_flight": s.in_flight,
            "max_in_flight": s.max_in_flight,
            "detect_cache": {
                "hits": self.detector.cache.hits,
                "misses": self.detector.cache.misses,
                "entries": len(self.detector.cache),
            },
            "engine": self.detector.stats(),
            "downloads": {"count": self.downloader.downloads, "failures": self.downloader.failures},
            "gallery": self.gallery.counts(),
        }

    def reset(self, *, stats: bool = True, faults: bool = True, gallery: bool = False, caches: bool = True) -> None:
        """``POST /__admin/reset`` with optional body ``{"stats": true, "faults": true, "gallery": false,
        "caches": true}``: faults back to the configured ones, counters to zero, caches (detections,
        downloads, seen single-use signatures) emptied; the gallery only when asked."""
        if stats:
            self.stats.reset()
            self.detector.reset_stats()
        if faults:
            self.faults.configure(self.config.faults)
        if caches:
            self._results.clear()
            self.detector.clear()
            self.downloader.clear()
            self.checker.reset()
        if gallery:
            self.gallery.reset()

    async def _admin_get_faults(self, _request: web.Request) -> web.Response:
        return web.json_response(self.faults.config.to_json(), dumps=_dumps)

    async def _admin_set_faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
            data = orjson.loads(body) if body.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            return web.json_response(self.set_faults(data), dumps=_dumps)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400, dumps=_dumps)

    async def _admin_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats_json(), dumps=_dumps)

    async def _admin_reset(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            options = orjson.loads(body) if body.strip() else {}
            if not isinstance(options, dict):
                raise ValueError("expected a JSON object")
            self.reset(**{k: bool(options[k]) for k in ("stats", "faults", "gallery", "caches") if k in options})
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400, dumps=_dumps)
        return web.json_response({"ok": True}, dumps=_dumps)

    # --- the API --------------------------------------------------------------------------------------------

    async def handle_face(self, request: web.Request) -> web.StreamResponse:
        action_name = request.match_info["action"]
        path = request.path
        stats = self.stats
        stats.requests[path] += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            action = self._actions.get(action_name)
            if action is None:
                stats.answered(path, "3", 404)
                return web.Response(status=404, body=envelope(3), content_type="application/json")
            management = action_name not in SEARCH_ACTIONS
            plan = self.faults.plan() if self.faults.applies_to(management, action_name) else NO_FAULT
            if plan is not NO_FAULT:
                early = await self._apply_fault(request, path, plan)
                if early is not None:
                    return early
            broken_body = False
            try:
                code, data = await self._process(request, action)
            except _ClientGone:
                stats.answered(path, "client_gone", None)
                # Nothing can be sent; aiohttp drops a response for a closed transport without a fuss.
                return web.Response(status=200, body=envelope(3), content_type="application/json")
            except _Unreadable as unreadable:
                code, data, broken_body = unreadable.code, None, True
            if plan.action == "applied":  # carried out; a server fault answers instead
                stats.faults["applied"] += 1
                code, data = plan.code, None
            body = envelope(code, data)
            status = self._status_for(code)
            if plan.action == "malformed":
                stats.faults["malformed"] += 1
                body = body[: max(1, len(body) // 2)]
            if plan.action == "late":
                await self.hold_answer()
            stats.answered(path, str(code), status)
            if plan.action == "slow":
                stats.faults["slow"] += 1
                return await self._trickle(request, status, body, plan)
            response = web.Response(status=status, body=body, content_type="application/json")
            if broken_body:
                response.force_close()  # what is left of a broken body may still come: start afresh
            return response
        finally:
            stats.in_flight -= 1

    def _status_for(self, code: int) -> int:
        return YOUTU_HTTP_STATUS.get(code, 200) if self.config.youtu_http_status else 200

    async def _apply_fault(self, request: web.Request, path: str, plan: FaultPlan) -> web.StreamResponse | None:
        stats = self.stats
        if plan.action == "qps":
            stats.faults["qps"] += 1
            status = self._status_for(15)
            stats.answered(path, "15", status)
            return web.Response(status=status, body=envelope(15), content_type="application/json")
        if plan.latency_s > 0:
            stats.faults["latency"] += 1
            await asyncio.sleep(plan.latency_s)
        if plan.action == "drop":
            stats.faults["drop"] += 1
            stats.answered(path, "dropped", None)
            transport = request.transport
            if transport is not None:
                transport.abort()  # no answer at all: the client sees a reset connection
            raise asyncio.CancelledError  # aiohttp treats a cancelled handler on a closed transport as done
        if plan.action == "http":
            stats.faults["http"] += 1
            stats.answered(path, f"http_{plan.http_status}", plan.http_status)
            reason = HTTP_REASONS.get(plan.http_status, "Error")
            html = f"<html><body><h1>{plan.http_status} {reason}</h1></body></html>\n"
            return web.Response(status=plan.http_status, text=html, content_type="text/html")
        if plan.action == "code":
            stats.faults["code"] += 1
            status = self._status_for(plan.code)
            stats.answered(path, str(plan.code), status)
            return web.Response(status=status, body=envelope(plan.code), content_type="application/json")
        return None

    async def hold_answer(self) -> None:
        """The ``late`` fault: the request took effect; its whole answer waits ``late_answer_ms``."""
        self.stats.faults["late"] += 1
        await asyncio.sleep(self.faults.config.late_answer_ms / 1000.0)

    async def _trickle(self, request: web.Request, status: int, body: bytes, plan: FaultPlan) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        step = max(1, -(-len(body) // SLOW_BODY_CHUNKS))
        delay = self.faults.config.slow_body_ms / 1000.0 / SLOW_BODY_CHUNKS
        for start in range(0, len(body), step):
            await response.write(body[start : start + step])
            await asyncio.sleep(delay)
        await response.write_eof()
        return response

    async def _process(self, request: web.Request, action: Action) -> Result:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return 23, None
        body: bytes | None
        try:
            async with asyncio.timeout(self.config.body_timeout_s):
                raw = await request.read()
            body = decode_content(raw, request.headers.get("Content-Encoding", ""), limit)
        except (web.HTTPRequestEntityTooLarge, BodyTooLarge):
            return 23, None
        except (web.RequestPayloadError, BodyError, TimeoutError):
            # Broken chunked framing (aiohttp may then never end the body: hence the timeout), a body that
            # stops short of its Content-Length, or a Content-Encoding the body does not match.
            body = None
        except ConnectionError as exc:  # the client left mid-body: no one to answer
            raise _ClientGone from exc
        if body is not None and len(body) > limit:
            return 23, None
        header = request.headers.get("Authorization")
        sig = self.checker.parse_header(header)
        if body is None:
            raise _Unreadable(sig if isinstance(sig, int) else 3)
        if isinstance(sig, int):
            return sig, None
        try:
            fields = Fields.parse(body, request.headers.get("Content-Type", ""))
        except BodyError:
            return 3, None
        appid = fields.text("appid")
        if not appid:
            return -1301, None
        code = self.checker.check(header or "", sig, appid, fields.text("bucket"))
        if code:
            return code, None
        try:
            return await action(appid, fields)
        except _Abort as abort:
            return abort.code, None
        except GalleryError as exc:
            return exc.code, None

    # --- field helpers (raise _Abort) ----------------------------------------------------------------------------

    @staticmethod
    def _id(fields: Fields, name: str) -> str:
        value = fields.text(name)
        code = check_id(value)
        if code:
            raise _Abort(code)
        assert value is not None
        return value

    @staticmethod
    def _ids(fields: Fields, name: str) -> list[str]:
        values = fields.texts(name)
        if not values:
            raise _Abort(-1301)
        for value in values:
            code = check_id(value)
            if code:
                raise _Abort(code)
        return values

    def _group_ids(self, fields: Fields) -> list[str]:
        """``group_ids`` (array) or ``group_id``; one of them is required."""
        if fields.texts("group_ids"):
            return self._ids(fields, "group_ids")
        return [self._id(fields, "group_id")]

    @staticmethod
    def _text(fields: Fields, name: str) -> str | None:
        value = fields.text(name)
        if value is not None and len(value) > MAX_TEXT_LENGTH:
            raise _Abort(-1304)
        return value

    async def _image_bytes(self, url: str | None, blob: bytes | None) -> bytes:
        """``url`` wins over ``image``; neither → -1301, empty image → -1300, download failure → -1308."""
        if url:
            try:
                return await self.downloader.download(url)
            except DownloadError as exc:
                raise _Abort(exc.code) from exc
        if blob is None:
            raise _Abort(-1301)
        if not blob:
            raise _Abort(-1300)
        return blob

    async def _detect(self, data: bytes) -> tuple[DetectedFace, ...]:
        return (await self._detect_keyed(data))[1]

    async def _detect_keyed(self, data: bytes) -> tuple[bytes, tuple[DetectedFace, ...]]:
        """(sha1, faces largest first); GIF → -1400, undecodable → -1102 (results cached by the sha1)."""
        if not data:
            raise _Abort(-1300)
        if sniff_image_type(data) == GIF:
            raise _Abort(-1400)
        key, result = await self.detector.detect(data)
        if isinstance(result, ImageError):
            raise _Abort(result.code)
        return key, result

    async def _faces_of(self, fields: Fields) -> tuple[bytes, tuple[DetectedFace, ...]]:
        data = await self._image_bytes(fields.text("url"), fields.blob("image"))
        key, faces = await self._detect_keyed(data)
        if not faces:
            raise _Abort(-1101)
        return key, faces

    @staticmethod
    def _session(fields: Fields) -> str:
        return fields.text("session_id") or ""

    # --- actions -------------------------------------------------------------------------------------------

    async def _multidentify(self, appid: str, fields: Fields) -> Result:
        group_ids = self._group_ids(fields)
        self.gallery.check_groups(appid, group_ids)  # before any download: a wrong group fails fast
        key, faces = await self._faces_of(fields)
        # The answer depends only on (appid, image, groups, gallery state): repeated images skip matching.
        cache_key = (appid, key, tuple(group_ids), self.gallery.version)
        results = self._results.get(cache_key)
        if results is None:
            full = faces[: self.config.full_faces]
            matches = self.gallery.search(appid, group_ids, [f.vector for f in full])
            results = [
                {"candidates": [c.to_json() for c in candidates], "face_rect": face.rect.to_json()}
                for face, candidates in zip(full, matches, strict=True)
            ]
            results.extend({"candidates": [], "face_rect": face.rect.to_json()} for face in faces[len(full) :])
            if len(self._results) >= RESULT_CACHE_ENTRIES:
                self._results.clear()
            self._results[cache_key] = results
        return 0, {"session_id": self._session(fields), "results": results}

    async def _identify(self, appid: str, fields: Fields) -> Result:
        group_ids = self._group_ids(fields)
        self.gallery.check_groups(appid, group_ids)
        _, faces = await self._faces_of(fields)
        (candidates,) = self.gallery.search(appid, group_ids, [faces[0].vector])
        return 0, {"session_id": self._session(fields), "candidates": [c.to_json() for c in candidates]}

    async def _newperson(self, appid: str, fields: Fields) -> Result:
        person_id = self._id(fields, "person_id")
        group_ids = self._group_ids(fields)
        name = self._text(fields, "person_name") or ""
        tag = self._text(fields, "tag") or ""
        if self.gallery.has_person(appid, person_id):
            raise _Abort(-1302)
        _, faces = await self._faces_of(fields)
        face_id, joined = self.gallery.new_person(appid, person_id, group_ids, faces[0], name, tag)
        return 0, {
            "session_id": self._session(fields),
            "suc_group": len(joined),
            "suc_face": 1,
            "person_id": person_id,
            "face_id": face_id,
            "group_ids": joined,
        }

    async def _delperson(self, appid: str, fields: Fields) -> Result:
        person_id = self._id(fields, "person_id")
        self.gallery.del_person(appid, person_id)
        return 0, {"session_id": self._session(fields), "person_id": person_id, "deleted": 1}

    async def _addface(self, appid: str, fields: Fields) -> Result:
        """Per-image ``ret_codes``; ``face_ids`` lists the added faces only. When no image could be added,
        the request itself answers the first image's failure code (data still carries ``ret_codes``)."""
        person_id = self._id(fields, "person_id")
        tag = self._text(fields, "tag") or ""
        self.gallery.get_person(appid, person_id)  # -1303 before any download
        urls = fields.texts("urls") or ([u] if (u := fields.text("url")) else [])
        blobs = None if urls else (fields.blobs("images") or fields.blobs("image"))
        if not urls and blobs is None:
            raise _Abort(-1301)
        sources: list[tuple[str | None, bytes | None]] = (
            [(url, None) for url in urls] if urls else [(None, blob) for blob in blobs or []]
        )
        if not sources:
            raise _Abort(-1301)
        items: list[DetectedFace | int] = []
        for url, blob in sources:
            try:
                faces = await self._detect(await self._image_bytes(url, blob))
                items.append(faces[0] if faces else -1101)
            except _Abort as abort:
                items.append(abort.code)
        added, codes = self.gallery.add_faces(appid, person_id, items, tag)
        data = {"session_id": self._session(fields), "added": len(added), "face_ids": added, "ret_codes": codes}
        code = 0 if added else next(c for c in codes if c)
        return code, data

    async def _delface(self, appid: str, fields: Fields) -> Result:
        person_id = self._id(fields, "person_id")
        face_ids = self._ids(fields, "face_ids")
        deleted = self.gallery.del_faces(appid, person_id, face_ids)
        return 0, {"session_id": self._session(fields), "deleted": len(deleted), "face_ids": deleted}

    async def _setinfo(self, appid: str, fields: Fields) -> Result:
        person_id = self._id(fields, "person_id")
        self.gallery.set_info(appid, person_id, self._text(fields, "person_name"), self._text(fields, "tag"))
        return 0, {"session_id": self._session(fields), "person_id": person_id}

    async def _getinfo(self, appid: str, fields: Fields) -> Result:
        person = self.gallery.get_person(appid, self._id(fields, "person_id"))
        return 0, {
            "person_id": person.person_id,
            "person_name": person.name,
            "face_ids": list(person.face_ids),
            "group_ids": list(person.group_ids),
            "tag": person.tag,
            "session_id": self._session(fields),
        }

    async def _getgroupids(self, appid: str, fields: Fields) -> Result:
        return 0, {"group_ids": self.gallery.group_ids(appid)}

    async def _getpersonids(self, appid: str, fields: Fields) -> Result:
        return 0, {"person_ids": self.gallery.person_ids(appid, self._id(fields, "group_id"))}

    async def _getfaceids(self, appid: str, fields: Fields) -> Result:
        person = self.gallery.get_person(appid, self._id(fields, "person_id"))
        return 0, {"face_ids": list(person.face_ids)}

    async def _getfaceinfo(self, appid: str, fields: Fields) -> Result:
        face = self.gallery.face(appid, self._id(fields, "face_id"))
        v = face.vector
        # Attributes are not modelled; stable values derived from the vector keep the shape realistic.
        info = {
            "face_id": face.face_id,
            "x": face.rect.x,
            "y": face.rect.y,
            "width": float(face.rect.width),
            "height": float(face.rect.height),
            "gender": int(float(v[0]) * 100) % 101,
            "age": 18 + int(float(v[1]) * 50),
            "expression": int(float(v[2]) * 100) % 101,
            "glass": bool(float(v[3]) > 0.5),
            "pitch": int(float(v[4]) * 20) - 10,
            "yaw": int(float(v[5]) * 20) - 10,
            "roll": int(float(v[6]) * 20) - 10,
        }
        return 0, {"face_info": info}

    async def _addgroupids(self, appid: str, fields: Fields) -> Result:
        person_id = self._id(fields, "person_id")
        joined = self.gallery.add_group_ids(appid, person_id, self._ids(fields, "group_ids"))
        return 0, {
            "person_id": person_id,
            "added": len(joined),
            "group_ids": joined,
            "session_id": self._session(fields),
        }

    async def _delgroupids(self, appid: str, fields: Fields) -> Result:
        person_id = self._id(fields, "person_id")
        left = self.gallery.del_group_ids(appid, person_id, self._ids(fields, "group_ids"))
        return 0, {
            "person_id": person_id,
            "deleted": len(left),
            "group_ids": left,
            "session_id": self._session(fields),
        }


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def create_app(config: EmulatorConfig | None = None, *, engine: FaceEngine | None = None) -> web.Application:
    """A ready aiohttp app; its :class:`Emulator` is ``app[EMULATOR_KEY]``."""
    return Emulator(config or EmulatorConfig(), engine=engine).make_app()


def emulator_of(app: web.Application) -> Emulator:
    emulator = app[EMULATOR_KEY]
    assert isinstance(emulator, Emulator)
    return emulator
