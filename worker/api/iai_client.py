"""HTTP client for Tencent's face API IAI (API 3.0, 2020-03-03): SearchFaces and the calls the worker and demo need.

The IAI twin of :class:`worker.api.client.MultidentifyClient`, with the same contract and the same HTTP stack
(:class:`worker.api.transport.HttpTransport`: one pool, connect + read timeout for a whole call):

- every failure is an :class:`ApiError` (an IAI code such as ``FailedOperation.ImageDownloadError``, or
  ``timeout`` / ``connection`` / ``http_<status>`` / ``bad_response``); nothing is retried here except one
  re-signed attempt after ``AuthFailure.SignatureExpire`` (the registry's ``resign``);
- requests the service would refuse are refused locally with its own code and nothing is sent
  (:mod:`worker.api.iai_wire`);
- every call is signed with the timestamp of its own send (TC3 signatures are per request);
- one client is shared by many threads: it holds no per-call state.

``identify_url`` / ``identify_image`` search every face of an image (``MaxFaceNum`` from
:class:`~worker.api.iai_wire.SearchOptions`, 10 by default: IAI's own default is the largest face only).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import requests

from worker.api import iai_answers, iai_wire
from worker.api.errors import ApiError
from worker.api.iai_answers import GroupInfo, PersonInfo
from worker.api.iai_wire import Action, Credentials, SearchOptions
from worker.api.models import IdentifyResult
from worker.api.transport import HttpTransport

R = TypeVar("R")
P = TypeVar("P")  # a page of a listing
T = TypeVar("T")  # an item of a listing
Image = bytes | bytearray | memoryview

#: Pages of GetGroupList / GetPersonList read at most (1,000 entries each): the bound of every listing loop.
MAX_PAGES = 100


@dataclasses.dataclass(frozen=True)
class IaiOptions:
    """What an :class:`IaiClient` is configured with. Built from the settings in one place
    (``worker.runtime.app.iai_options``); ``endpoint`` is a host or an http(s) URL (``iai_endpoint``)."""

    secret_id: str = dataclasses.field(repr=False)
    secret_key: str = dataclasses.field(repr=False)
    token: str = dataclasses.field(default="", repr=False)
    endpoint: str = iai_wire.DEFAULT_ENDPOINT
    region: str = "ap-guangzhou"
    search: SearchOptions = dataclasses.field(default_factory=SearchOptions)
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    pool_size: int = 64
    verify: bool | str = True
    user_agent: str | None = None
    language: str | None = None  # "en-US" for English error messages; None: the service's default (zh-CN)

    def __post_init__(self) -> None:
        iai_wire.parse_endpoint(self.endpoint)  # ValueError naming iai_endpoint


class IaiClient:
    """Calls IAI over one pooled session; safe to share between threads (see the module's contract)."""

    def __init__(
        self,
        options: IaiOptions,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        endpoint = iai_wire.parse_endpoint(options.endpoint)
        self._credentials = Credentials(options.secret_id, options.secret_key, options.token or None)
        self._region = options.region
        self._search = options.search
        self._language = options.language
        self._clock = clock
        self._http = HttpTransport.configured(endpoint.url, options, session=session, clock=clock)

    # -- search (the worker's FaceApi) ------------------------------------------------------------------

    def identify_url(self, url: str, group_ids: Sequence[str], session_id: str | None = None) -> IdentifyResult:
        """SearchFaces on the image at ``url`` (downloaded by the service). ``session_id`` has no IAI field:
        the answer's ``RequestId`` names the call."""
        body = iai_wire.search_faces_body(group_ids, self._search, url=url)
        return self._call(Action.SEARCH_FACES, body, iai_answers.parse_search_faces)

    def identify_image(self, image: Image, group_ids: Sequence[str], session_id: str | None = None) -> IdentifyResult:
        """SearchFaces on ``image`` (sent base64-encoded; refused over 5 MB encoded)."""
        body = iai_wire.search_faces_body(group_ids, self._search, image=image)
        return self._call(Action.SEARCH_FACES, body, iai_answers.parse_search_faces)

    def check_configuration(self, group_ids: Sequence[str]) -> None:
        """A known-good call with the same credentials: list the account's groups and check the configured ones
        exist and share one face model. Raises ApiError (a config code when the credentials or groups are wrong)."""
        iai_answers.check_groups(group_ids, self.groups())

    # -- management (enrolment, the demo and the tests) -------------------------------------------------

    def groups(self) -> list[GroupInfo]:
        """Every group of the account (GetGroupList, page by page, at most :data:`MAX_PAGES` pages)."""
        return self._every_page(
            Action.GET_GROUP_LIST,
            lambda offset: iai_wire.get_group_list_body(offset=offset),
            iai_answers.parse_group_list,
            lambda page: (page.groups, page.total),
        )

    def persons(self, group_id: str) -> list[PersonInfo]:
        """Every person of ``group_id`` (GetPersonList, page by page, at most :data:`MAX_PAGES` pages)."""
        return self._every_page(
            Action.GET_PERSON_LIST,
            lambda offset: iai_wire.get_person_list_body(group_id, offset=offset),
            iai_answers.parse_person_list,
            lambda page: (page.persons, page.person_num),
        )

    def create_group(self, group_id: str, group_name: str | None = None) -> iai_answers.CreatedGroup:
        body = iai_wire.create_group_body(group_id, group_name or group_id)
        return self._call(Action.CREATE_GROUP, body, iai_answers.parse_create_group)

    def create_person(
        self,
        group_id: str,
        person_id: str,
        person_name: str | None = None,
        *,
        url: str | None = None,
        image: Image | None = None,
    ) -> iai_answers.CreatedPerson:
        body = iai_wire.create_person_body(group_id, person_id, person_name or person_id, url=url, image=image)
        return self._call(Action.CREATE_PERSON, body, iai_answers.parse_create_person)

    def create_face(
        self, person_id: str, *, urls: Sequence[str] = (), images: Sequence[Image] = ()
    ) -> iai_answers.CreatedFaces:
        body = iai_wire.create_face_body(person_id, urls=urls, images=images)
        return self._call(Action.CREATE_FACE, body, iai_answers.parse_create_face)

    def detect_faces(
        self, *, url: str | None = None, image: Image | None = None, max_face_num: int = 1
    ) -> iai_answers.DetectedFaces:
        """The faces of an image, largest first, at most ``max_face_num`` (DetectFace; none:
        ``InvalidParameterValue.NoFaceInPhoto``)."""
        body = iai_wire.detect_face_body(url=url, image=image, max_face_num=max_face_num)
        return self._call(Action.DETECT_FACE, body, iai_answers.parse_detect_face)

    def person_base_info(self, person_id: str) -> iai_answers.PersonBaseInfo:
        """A person's name and face ids (GetPersonBaseInfo)."""
        body = iai_wire.get_person_base_info_body(person_id)
        return self._call(Action.GET_PERSON_BASE_INFO, body, iai_answers.parse_person_base_info)

    def person_groups(self, person_id: str) -> list[str]:
        """Every group ``person_id`` is in (GetPersonGroupInfo, page by page, at most :data:`MAX_PAGES` pages)."""
        return self._every_page(
            Action.GET_PERSON_GROUP_INFO,
            lambda offset: iai_wire.get_person_group_info_body(person_id, offset=offset),
            iai_answers.parse_person_group_info,
            lambda page: (page.group_ids, page.total),
        )

    def delete_person(self, person_id: str) -> None:
        """Delete ``person_id`` from every group, with its faces (DeletePerson)."""
        self._call(Action.DELETE_PERSON, iai_wire.delete_person_body(person_id), iai_answers.parse_empty)

    def delete_faces(self, person_id: str, face_ids: Sequence[str]) -> iai_answers.DeletedFaces:
        """Delete faces of ``person_id`` (DeleteFace); the service keeps at least one face per person."""
        body = iai_wire.delete_face_body(person_id, face_ids)
        return self._call(Action.DELETE_FACE, body, iai_answers.parse_delete_face)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> IaiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never show the secrets
        return f"IaiClient(endpoint={self._http.base_url!r}, region={self._region!r})"

    # -- plumbing -----------------------------------------------------------------------------------------

    def _every_page(
        self,
        action: Action,
        body_at: Callable[[int], bytes],
        parse: Callable[[bytes, int], P],
        items_of: Callable[[P], tuple[Sequence[T], int | None]],
    ) -> list[T]:
        """Every item of a paged listing: pages from offset 0 until one is empty or the listing's total is reached,
        at most :data:`MAX_PAGES` of them. ``items_of`` gives a page's items and the total it reports (or None)."""
        found: list[T] = []
        for _ in range(MAX_PAGES):
            items, total = items_of(self._call(action, body_at(len(found)), parse))
            found.extend(items)
            if not items or (total is not None and len(found) >= total):
                break
        return found

    def _call(self, action: Action, body: bytes, parse: Callable[[bytes, int], R]) -> R:
        for attempt in (1, 2):
            headers = iai_wire.request_headers(
                action,
                body,
                host=self._http.host,
                region=self._region,
                credentials=self._credentials,
                timestamp=int(self._clock()),
                language=self._language,
            )
            answer = self._http.send(self._http.prepare("/", headers, body))
            try:
                return parse(answer.body, answer.status)
            except ApiError as err:
                if err.retry_after is None:
                    err.retry_after = answer.retry_after
                if err.resign and attempt == 1:  # SignatureExpire: signed again with the time of the new send
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover
