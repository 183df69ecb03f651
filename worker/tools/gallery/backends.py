"""The gallery's face API calls, one interface over v1 (:class:`MultidentifyClient`) and IAI (:class:`IaiClient`).

Contract:

- every read goes through :meth:`Backend.call`: a transient failure (rate limit, server fault, timeout) is retried
  under the worker's own retry policy (``max_attempts``, ``retry_deadline_s``, ``backoff_*``: the same settings
  as ``run``), a rate limit waiting at least the backoff (the gallery has no rate limiter to pace it); anything
  else is raised at once as the :class:`ApiError` it is;
- every write (create a group, a person, add a face: none is idempotent) goes through :meth:`Backend.write`, which
  retries only a failure that proves the write did not take effect (:func:`not_applied`: a refusal at the door — a
  rate limit, a concurrent write of the same person, the auth service unavailable —, HTTP 429, no connection made).
  Any other transient failure may come after the write landed (a server fault such as a backend timeout or an
  internal error, a timeout, a connection lost mid-call, an answer that cannot be read, a proxy's 502/503/504): its
  outcome is unknown (:func:`outcome_unknown`): it is raised at once, for the caller to re-read what the write would
  have changed;
- a photo the service takes but refuses per image (v1 ``addface``'s ``ret_codes``, IAI ``CreateFace``'s
  ``RetCode``) raises an :class:`ApiError` with that code, like a refusal of the whole request;
- one backend is shared by the enrolment threads (the clients are thread-safe, the backend holds no call state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import requests
import urllib3
from tenacity import RetryCallState, Retrying, retry_base

from worker.api import iai_wire
from worker.api.client import MAX_BODY_BYTES, MultidentifyClient
from worker.api.codes import ErrorClass, Origin, lookup, meaning
from worker.api.errors import ApiError
from worker.api.iai_client import IaiClient
from worker.core.outcomes import RetryPolicy, tenacity_retry, tenacity_stop, tenacity_wait

R = TypeVar("R")

#: IAI CreateFace's per-image RetCodes (Tencent's CreateFace documentation); v1's meanings differ for -1109.
IAI_FACE_RET_CODES: dict[int, str] = {
    -1101: "no face in the photo",
    -1102: "image decode failed",
    -1109: "face smaller than 34 px",
    -1601: "face quality below the quality control",
    -1604: "face not similar enough to the person's other faces",
}

#: Codes that mean "this person id is taken" when creating a person.
PERSON_EXISTS = frozenset({"-1302", "InvalidParameterValue.PersonIdAlreadyExist"})
#: Codes about the person (id or name), not the photo: once one answers a create, the person's other photos would
#: get it too, so they are refused with it without being sent.
PERSON_REFUSED = PERSON_EXISTS | frozenset(
    {
        "-1304",  # parameter too long
        "-1313",  # invalid characters in an id
        "InvalidParameterValue.PersonIdIllegal",
        "InvalidParameterValue.PersonIdTooLong",
        "InvalidParameterValue.PersonNameIllegal",
        "InvalidParameterValue.PersonNameTooLong",
    }
)
#: Codes that mean "no such person".
PERSON_MISSING = frozenset({"-1303", "InvalidParameterValue.PersonIdNotExist"})
#: v1 addface: "a near-identical face of this person is enrolled already".
NEAR_IDENTICAL = "-1312"
#: IAI CreateGroup: the group id is taken (by us, after an unknown outcome, or by anyone: either way it is there).
GROUP_EXISTS = "InvalidParameterValue.GroupIdAlreadyExist"
#: HTTP statuses without a JSON answer that say the request was not processed. Not 503: a proxy answers it after
#: forwarding the request too (Envoy's "upstream connect error or disconnect/reset before headers"), nor 502/504.
_HTTP_NOT_PROCESSED = frozenset({429})
#: Transient service codes that refuse the request before anything is done (besides the rate limits, which
#: :attr:`ApiError.rate_limited` names): another write of the same person is under way, or the auth front end could
#: not check the request. A server fault (v1 200-213 and -1200, IAI ``InternalError``,
#: ``FailedOperation.RequestTimeout``/``RpcFail``/``UnKnowError``/``ServerError``, ``ServiceUnavailable``, any
#: unlisted code) may come after the write landed: a backend timeout is the classic case.
SERVICE_NOT_APPLIED = frozenset(
    {
        "FailedOperation.ConflictOperation",  # concurrent operations on the same person
        "FailedOperation.CreateFaceConcurrent",  # concurrent CreateFace on the same person
        "ResourceInUse",
        "7",  # v1: signature encode failed, at the auth front end
        "8",  # v1: signature decode failed, at the auth front end
        "107",  # v1: auth service unavailable
        "108",
        "ResourceUnavailable.GetAuthInfoError",  # IAI: the auth information could not be obtained
    }
)


def not_applied(error: ApiError) -> bool:
    """A transient failure of a write that proves the write did not take effect, so sending it again is safe: the
    service refused it at the door (a rate limit, :data:`SERVICE_NOT_APPLIED`), HTTP 429, or the connection was never
    made (nothing was sent). Every other transient failure has an unknown outcome."""
    if not error.transient:
        return False
    if error.origin is Origin.SERVICE:
        return error.rate_limited or error.code in SERVICE_NOT_APPLIED
    if error.code.startswith("http_"):
        return error.http_status in _HTTP_NOT_PROCESSED
    if error.code in ("timeout", "connection"):
        return _never_sent(error.__cause__)
    return False  # bad_response: the service answered, and what it did cannot be read


def outcome_unknown(error: ApiError) -> bool:
    """A transient failure of a write that may have taken effect all the same (see :func:`not_applied`)."""
    return error.transient and not not_applied(error)


def _never_sent(cause: BaseException | None) -> bool:
    """The client's exception says no connection was made: a connect timeout, a refused or unresolvable address."""
    if isinstance(cause, requests.ConnectTimeout):
        return True
    if isinstance(cause, requests.ConnectionError):
        reason = cause.args[0] if cause.args else None
        reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError carries the cause
        return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)
    return False


@dataclass(frozen=True, slots=True)
class GroupRow:
    group_id: str
    group_name: str | None = None


@dataclass(frozen=True, slots=True)
class PersonRow:
    """A person as a listing shows them; ``face_ids``/``group_ids`` None where the API's listing does not say."""

    person_id: str
    person_name: str | None
    face_ids: tuple[str, ...] | None = None
    group_ids: tuple[str, ...] | None = None
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class PhotoData:
    """What is sent: the photo's bytes, or the URL the service downloads."""

    data: bytes | None = None
    url: str | None = None


class Backend(Protocol):
    api: str
    target_endpoint: str
    target_account: str

    def call(self, fn: Callable[[], R]) -> R: ...
    def write(self, fn: Callable[[], R]) -> R: ...
    def describe(self, error: ApiError) -> str: ...
    def size_refusal(self, size: int) -> ApiError | None: ...
    def can_count_faces(self) -> bool: ...
    def count_faces(self, photo: PhotoData, at_most: int) -> int: ...
    def groups(self) -> list[GroupRow]: ...
    def create_group(self, group_id: str) -> None: ...
    def person_ids(self, group_id: str) -> list[str]: ...
    def persons(self, group_id: str, person_ids: set[str] | None) -> dict[str, PersonRow]: ...
    def person(self, person_id: str) -> PersonRow: ...
    def create_person(self, group_id: str, person_id: str, name: str | None, photo: PhotoData) -> str: ...
    def add_face(self, person_id: str, photo: PhotoData) -> str: ...
    def delete_person(self, person_id: str) -> None: ...
    def close(self) -> None: ...


class _Retrying:
    """The retry half every backend shares."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._wait = tenacity_wait(policy)

    def call(self, fn: Callable[[], R]) -> R:
        """A read: every transient failure is retried."""
        retrying = Retrying(stop=tenacity_stop(self._policy), wait=self._wait_for, retry=tenacity_retry(), reraise=True)
        return retrying(fn)

    def write(self, fn: Callable[[], R]) -> R:
        """A write: retried only while each failure proves it did not take effect (:func:`not_applied`)."""
        retrying = Retrying(stop=tenacity_stop(self._policy), wait=self._wait_for, retry=_RetryWrite(), reraise=True)
        return retrying(fn)

    def _wait_for(self, state: RetryCallState) -> float:
        delay = self._wait(state)
        outcome = state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        if isinstance(error, ApiError) and error.rate_limited:
            # The worker's limiter paces its rate-limited retries; here nothing does, so back off as for a fault.
            delay = max(delay, self._policy.wait(state.attempt_number, None))
        return delay


class _RetryWrite(retry_base):
    """tenacity_retry's rule for a write: only what did not take effect, and one re-signed attempt."""

    def __call__(self, state: RetryCallState) -> bool:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        if not isinstance(error, ApiError):
            return False
        return not_applied(error) or (error.resign and state.attempt_number == 1)


def face_refusal(code: int, api_meaning: str) -> ApiError:
    """A per-image refusal of a call that succeeded as a whole: permanent, from the service."""
    return ApiError(str(code), ErrorClass.PERMANENT, api_meaning, origin=Origin.SERVICE)


def _registry_meaning(error: ApiError) -> str:
    """The registry's English meaning of a known key (the service's own message is often Chinese)."""
    info = lookup(error.code)
    return info.meaning if info is not None else error.message


class V1Backend(_Retrying):
    """v1: groups are created by the first ``newperson`` naming them; listings give ids only."""

    api = "v1"

    def __init__(self, client: MultidentifyClient, policy: RetryPolicy, *, endpoint: str, appid: str) -> None:
        super().__init__(policy)
        self._client = client
        self.target_endpoint = endpoint
        self.target_account = appid

    def describe(self, error: ApiError) -> str:
        return _registry_meaning(error)

    def size_refusal(self, size: int) -> ApiError | None:
        if size > MAX_BODY_BYTES:
            return ApiError.refused(23, f"{size} bytes, over the request body limit of {MAX_BODY_BYTES} (1.5 MB)")
        return None

    def can_count_faces(self) -> bool:
        return False  # the worker's v1 client has no detection call

    def count_faces(self, photo: PhotoData, at_most: int) -> int:
        raise NotImplementedError("v1: the worker's client has no face detection call")

    def groups(self) -> list[GroupRow]:
        return [GroupRow(g) for g in self.call(self._client.getgroupids)]

    def create_group(self, group_id: str) -> None:
        pass  # v1 has no such call: the first newperson naming the group creates it

    def person_ids(self, group_id: str) -> list[str]:
        try:
            return self.call(lambda: self._client.getpersonids(group_id))
        except ApiError as err:
            if err.code in ("-1306", "-1307"):  # a group with nobody in it does not exist for v1
                return []
            raise

    def persons(self, group_id: str, person_ids: set[str] | None) -> dict[str, PersonRow]:
        wanted = self.person_ids(group_id)
        return {pid: self.person(pid) for pid in wanted if person_ids is None or pid in person_ids}

    def person(self, person_id: str) -> PersonRow:
        data = self.call(lambda: self._client.getinfo(person_id))
        return PersonRow(
            person_id=str(data.get("person_id", person_id)),
            person_name=_opt_str(data.get("person_name")),
            face_ids=_str_tuple(data.get("face_ids")),
            group_ids=_str_tuple(data.get("group_ids")),
            tag=_opt_str(data.get("tag")),
        )

    def create_person(self, group_id: str, person_id: str, name: str | None, photo: PhotoData) -> str:
        data = self.write(
            lambda: self._client.newperson(
                person_id, [group_id], image=photo.data, url=photo.url, person_name=name or None
            )
        )
        return str(data.get("face_id", ""))

    def add_face(self, person_id: str, photo: PhotoData) -> str:
        if photo.url is not None:
            data = self.write(lambda: self._client.addface(person_id, urls=[photo.url or ""]))
        else:
            data = self.write(lambda: self._client.addface(person_id, images=[photo.data or b""]))
        codes = data.get("ret_codes") or [0]
        code = codes[0] if isinstance(codes, list) and codes and isinstance(codes[0], int) else 0
        face_ids = _str_tuple(data.get("face_ids")) or ()
        if code != 0 or not face_ids:
            code = code or -1101
            raise face_refusal(code, meaning(str(code)))
        return face_ids[0]

    def delete_person(self, person_id: str) -> None:
        _delete(self, lambda: self._client.delperson(person_id), person_id)

    def close(self) -> None:
        self._client.close()


class IaiBackend(_Retrying):
    """IAI: groups are created explicitly; ``GetPersonList`` gives every person's face ids in one listing."""

    api = "iai"

    def __init__(self, client: IaiClient, policy: RetryPolicy, *, endpoint: str, region: str) -> None:
        super().__init__(policy)
        self._client = client
        self.target_endpoint = endpoint
        self.target_account = region

    def describe(self, error: ApiError) -> str:
        if error.code.lstrip("-").isdigit():  # CreateFace's per-image RetCode: its own table, not v1's
            return IAI_FACE_RET_CODES.get(int(error.code), error.message)
        return _registry_meaning(error)

    def size_refusal(self, size: int) -> ApiError | None:
        encoded = 4 * ((size + 2) // 3)
        if encoded > iai_wire.MAX_IMAGE_BASE64_BYTES:
            return ApiError.refused("FailedOperation.ImageSizeExceed", f"{size} bytes, over 5 MB base64-encoded")
        return None

    def can_count_faces(self) -> bool:
        return True

    def count_faces(self, photo: PhotoData, at_most: int) -> int:
        """DetectFace with MaxFaceNum ``at_most``: how many faces, up to that (none: NoFaceInPhoto is raised)."""
        found = self.call(lambda: self._client.detect_faces(url=photo.url, image=photo.data, max_face_num=at_most))
        return len(found.faces)

    def groups(self) -> list[GroupRow]:
        return [GroupRow(g.group_id, g.group_name or None) for g in self.call(self._client.groups)]

    def create_group(self, group_id: str) -> None:
        try:
            self.write(lambda: self._client.create_group(group_id, group_id))
        except ApiError as err:
            if err.code == GROUP_EXISTS:
                return  # there, which is all the run needs
            if outcome_unknown(err) and any(g.group_id == group_id for g in self.groups()):
                return  # the unanswered create took effect
            raise

    def person_ids(self, group_id: str) -> list[str]:
        return [p.person_id for p in self.call(lambda: self._client.persons(group_id))]

    def persons(self, group_id: str, person_ids: set[str] | None) -> dict[str, PersonRow]:
        listed = self.call(lambda: self._client.persons(group_id))
        return {
            p.person_id: PersonRow(p.person_id, p.person_name or None, p.face_ids)
            for p in listed
            if person_ids is None or p.person_id in person_ids
        }

    def person(self, person_id: str) -> PersonRow:
        info = self.call(lambda: self._client.person_base_info(person_id))
        groups = self.call(lambda: self._client.person_groups(person_id))
        return PersonRow(person_id, info.person_name or None, info.face_ids, tuple(groups))

    def create_person(self, group_id: str, person_id: str, name: str | None, photo: PhotoData) -> str:
        created = self.write(
            lambda: self._client.create_person(group_id, person_id, name, url=photo.url, image=photo.data)
        )
        return created.face_id

    def add_face(self, person_id: str, photo: PhotoData) -> str:
        if photo.url is not None:
            urls = [photo.url]
            created = self.write(lambda: self._client.create_face(person_id, urls=urls))
        else:
            images = [photo.data or b""]
            created = self.write(lambda: self._client.create_face(person_id, images=images))
        code = created.ret_codes[0] if created.ret_codes else 0
        if code != 0 or not created.suc_face_ids:
            code = code or -1101
            raise face_refusal(code, IAI_FACE_RET_CODES.get(code, f"CreateFace RetCode {code}"))
        return created.suc_face_ids[0]

    def delete_person(self, person_id: str) -> None:
        _delete(self, lambda: self._client.delete_person(person_id), person_id)

    def close(self) -> None:
        self._client.close()


def _delete(backend: V1Backend | IaiBackend, fn: Callable[[], object], person_id: str) -> None:
    """A delete whose outcome is unknown is checked, not sent again (a second one would answer "no such person")."""
    try:
        backend.write(fn)
    except ApiError as err:
        if not outcome_unknown(err):
            raise
        try:
            backend.person(person_id)
        except ApiError as check:
            if check.code in PERSON_MISSING:
                return  # gone: the unanswered delete took effect
            raise err from None
        raise


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _str_tuple(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(str(v) for v in value)
