"""IAI (Tencent Cloud API 3.0, version 2020-03-03) on the emulator: ``POST /`` routed by ``X-TC-Action``.

It shares everything with v1 (:mod:`worker.emulator.server`): the engine and its detection cache, the gallery,
the image fetcher, the fault model and the statistics (paths ``iai/<Action>``). Request path, every answer
HTTP 200 with a JSON body (:mod:`worker.emulator.iai_wire`) unless a fault says otherwise:

1. ``X-TC-Action`` missing → ``MissingParameter``, not one of :data:`FIELDS` → ``InvalidAction``; ``X-TC-Version``
   missing → ``MissingParameter``, not ``2020-03-03`` → ``NoSuchVersion``;
2. faults (SearchFaces/SearchPersons; the others too with ``apply_to_management``): v1's plan with its
   outcome in IAI's words: the QPS limit → ``RequestLimitExceeded``; an injected code n → ``iai_code(n)``
   (213 → ``InternalError``, -1200 → ``FailedOperation.ServerError``, 3 → ``ResourceUnavailable.InArrears`` …);
   latency, dropped connection, HTTP error status, malformed JSON, slow body, late answer and applied error
   (carried out, then answered ``iai_code(n)``) as for v1;
3. the body: over 10 MB → ``RequestSizeLimitExceeded``; not complete within ``body_timeout_s`` or broken →
   ``InvalidParameter`` (connection closed); then TC3 (:mod:`worker.emulator.iai_auth`);
4. the fields (``UnknownParameter``, ``MissingParameter``, ``InvalidParameter``), then the action.

An account's IAI data live in their own space of the gallery (key ``iai:<appid>``), apart from its v1 data,
as at Tencent; with ``EmulatorConfig.iai_shared_gallery`` IAI works on the v1 data of the same AppID (groups
made by ``newperson`` exist, persons enrolled through either API are found by both).

The actions themselves and their semantics are :mod:`worker.emulator.iai_actions`. ``IaiApi.clock`` is the
clock the timestamp is checked against (tests move it to provoke ``AuthFailure.SignatureExpire``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from worker.emulator import iai_wire as w
from worker.emulator.accounts import AccountBook
from worker.emulator.faults import NO_FAULT, FaultPlan
from worker.emulator.gallery import GalleryError
from worker.emulator.iai_actions import IaiActions, Payload
from worker.emulator.iai_auth import verify
from worker.emulator.iai_wire import IaiError, Params

if TYPE_CHECKING:
    from worker.emulator.server import Emulator

SEARCH_ACTIONS = frozenset({"SearchFaces", "SearchPersons"})


def _fields(names: str) -> frozenset[str]:
    return frozenset(names.split())


_SEARCH_FIELDS = _fields(
    "GroupIds Image Url MaxFaceNum MinFaceSize MaxPersonNum NeedPersonInfo QualityControl FaceMatchThreshold "
    "NeedRotateDetection"
)
#: Each action's request fields (the SDK's ``<Action>Request`` model); any other is ``UnknownParameter``.
FIELDS: dict[str, frozenset[str]] = {
    "SearchFaces": _SEARCH_FIELDS,
    "SearchPersons": _SEARCH_FIELDS,
    "CreateGroup": _fields("GroupName GroupId GroupExDescriptions Tag FaceModelVersion"),
    "GetGroupList": frozenset({"Offset", "Limit"}),
    "DeleteGroup": frozenset({"GroupId"}),
    "CreatePerson": _fields(
        "GroupId PersonName PersonId Gender PersonExDescriptionInfos Image Url UniquePersonControl QualityControl "
        "NeedRotateDetection"
    ),
    "GetPersonList": frozenset({"GroupId", "Offset", "Limit"}),
    "DeletePerson": frozenset({"PersonId"}),
    "GetPersonBaseInfo": frozenset({"PersonId"}),
    "DetectFace": _fields(
        "MaxFaceNum MinFaceSize Image Url NeedFaceAttributes NeedQualityDetection FaceModelVersion NeedRotateDetection"
    ),
    "GetPersonGroupInfo": frozenset({"PersonId", "Offset", "Limit"}),
    "CreateFace": _fields("PersonId Images Urls FaceMatchThreshold QualityControl NeedRotateDetection"),
    "DeleteFace": frozenset({"PersonId", "FaceIds"}),
}


def routing_error(action: str, version: str) -> IaiError | None:
    """Step 1 of the request path: the error for a missing or unknown action or version, else None."""
    if not action:
        return IaiError("MissingParameter", "The request is missing a required parameter `Action`.")
    if action not in FIELDS:
        return IaiError("InvalidAction", f"The action `{action[:64]}` does not exist.")
    if not version:
        return IaiError("MissingParameter", "The request is missing a required parameter `Version`.")
    if version != w.VERSION:  # 2018-03-01 also exists at Tencent; the emulator speaks 2020-03-03 only
        return IaiError("NoSuchVersion", f"The version `{version[:32]}` of iai does not exist.")
    return None


class _Unreadable(Exception):
    """The body did not arrive complete: answer InvalidParameter and close the connection."""


class _ClientGone(Exception):
    """The client left before its body arrived: there is no one to answer."""


class IaiApi:
    """The IAI handler of one :class:`~worker.emulator.server.Emulator`; ``clock`` is the TC3 check's clock."""

    def __init__(self, emulator: Emulator) -> None:
        self._em = emulator
        self._book = AccountBook(emulator.config.accounts)
        self.clock: Callable[[], float] = time.time
        self._actions = IaiActions(emulator.gallery, emulator.engine, emulator.detector, emulator.downloader)

    # --- the request path ---------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        action = request.headers.get("X-TC-Action", "")
        path = f"iai/{action if action in FIELDS else '?'}"  # unknown names are not counted one by one: bounded stats
        stats = self._em.stats
        stats.requests[path] += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        request_id = str(uuid.uuid4())
        try:
            routing = routing_error(action, request.headers.get("X-TC-Version", ""))
            if routing is not None:
                return self._respond(path, w.error_answer(routing, request_id), routing.code)
            faults = self._em.faults
            plan = faults.plan() if faults.applies_to(action not in SEARCH_ACTIONS, action) else NO_FAULT
            if plan is not NO_FAULT:
                early = await self._apply_fault(request, path, plan, request_id)
                if early is not None:
                    return early
            return await self._answer(request, action, path, plan, request_id)
        finally:
            stats.in_flight -= 1

    async def _answer(
        self, request: web.Request, action: str, path: str, plan: FaultPlan, rid: str
    ) -> web.StreamResponse:
        broken = False
        try:
            body, outcome = w.answer(await self._process(request, action), rid), "0"
        except IaiError as error:
            body, outcome = w.error_answer(error, rid), error.code
        except _Unreadable:
            unreadable = IaiError("InvalidParameter", "The request body did not arrive complete.")
            body, outcome, broken = w.error_answer(unreadable, rid), unreadable.code, True
        except _ClientGone:
            self._em.stats.answered(path, "client_gone", None)
            return web.Response(status=200, body=b"{}", content_type="application/json")  # nobody reads it
        if plan.action == "applied":  # carried out; a server fault answers instead
            self._em.stats.faults["applied"] += 1
            fault = IaiError(w.iai_code(plan.code))
            body, outcome = w.error_answer(fault, rid), fault.code
        if plan.action == "malformed":
            self._em.stats.faults["malformed"] += 1
            body = body[: max(1, len(body) // 2)]
        if plan.action == "late":
            await self._em.hold_answer()  # carried out; the answer comes late
        if plan.action == "slow":
            self._em.stats.faults["slow"] += 1
            self._em.stats.answered(path, outcome, 200)
            return await self._em._trickle(request, 200, body, plan)
        response = self._respond(path, body, outcome)
        if broken:
            response.force_close()  # what is left of a broken body may still come: start afresh
        return response

    def _respond(self, path: str, body: bytes, outcome: str) -> web.Response:
        self._em.stats.answered(path, outcome, 200)
        # Exactly "application/json": Tencent's SDK reads an error body only for that content type.
        return web.Response(status=200, body=body, content_type="application/json")

    async def _apply_fault(
        self, request: web.Request, path: str, plan: FaultPlan, rid: str
    ) -> web.StreamResponse | None:
        """v1's fault outcomes with IAI's codes; latency, drops and HTTP errors are v1's own handling."""
        if plan.action == "qps":
            self._em.stats.faults["qps"] += 1
            return self._respond(path, w.error_answer(IaiError("RequestLimitExceeded"), rid), "RequestLimitExceeded")
        if plan.action == "code":
            await self._em._apply_fault(request, path, dataclasses.replace(plan, action="none"))  # the latency
            self._em.stats.faults["code"] += 1
            error = IaiError(w.iai_code(plan.code))
            return self._respond(path, w.error_answer(error, rid), error.code)
        return await self._em._apply_fault(request, path, plan)  # latency, then a drop or an HTTP error status

    async def _read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > w.MAX_REQUEST_BYTES:
            raise IaiError("RequestSizeLimitExceeded")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._em.config.body_timeout_s):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > w.MAX_REQUEST_BYTES:
                        raise IaiError("RequestSizeLimitExceeded")
                    chunks.append(chunk)
        except (web.RequestPayloadError, TimeoutError) as exc:
            raise _Unreadable from exc
        except ConnectionError as exc:
            raise _ClientGone from exc
        return b"".join(chunks)

    async def _process(self, request: web.Request, action: str) -> Payload:
        body = await self._read_body(request)
        account = verify(
            self._book,
            authorization=request.headers.get("Authorization"),
            timestamp=request.headers.get("X-TC-Timestamp"),
            host=request.headers.get("Host", ""),
            content_type=request.headers.get("Content-Type", ""),
            body=body,
            now=self.clock(),
        )
        params = Params.parse(body, FIELDS[action])
        space = account.appid if self._em.config.iai_shared_gallery else f"iai:{account.appid}"
        try:
            return await self._actions.table[action](space, params)
        except GalleryError as exc:  # e.g. a group deleted while its search downloaded the image
            raise IaiError(w.iai_code(exc.code)) from exc
