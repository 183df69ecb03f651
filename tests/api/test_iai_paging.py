"""IaiClient's listings read every page: offsets advance by what was read, and the loop ends on an empty page, on
the total the service reports, or after MAX_PAGES pages (the bound of a listing that never ends).

The service is a function of the request body the client really builds, answering with the body the real parser
reads, so only the HTTP exchange is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from worker.api import iai_client
from worker.api.iai_client import IaiClient, IaiOptions
from worker.api.iai_wire import Action


def _client(answer: Callable[[Action, dict[str, Any]], dict[str, Any]], asked: list[tuple[int, int]]) -> IaiClient:
    client = IaiClient(IaiOptions(secret_id="id", secret_key="key", endpoint="http://127.0.0.1:9"))

    def call(action: Action, body: bytes, parse: Callable[[bytes, int], Any]) -> Any:
        request = orjson.loads(body)
        asked.append((request["Offset"], request["Limit"]))
        response = {**answer(action, request), "RequestId": "r"}
        return parse(orjson.dumps({"Response": response}), 200)

    client._call = call  # type: ignore[method-assign]
    return client


def _slice(items: list[str], request: dict[str, Any]) -> list[str]:
    return items[request["Offset"] : request["Offset"] + request["Limit"]]


def test_groups_are_read_page_by_page_up_to_the_reported_total() -> None:
    names = [f"g{i}" for i in range(2345)]
    asked: list[tuple[int, int]] = []

    def answer(action: Action, request: dict[str, Any]) -> dict[str, Any]:
        assert action is Action.GET_GROUP_LIST
        page = [{"GroupId": g, "GroupName": g} for g in _slice(names, request)]
        return {"GroupInfos": page, "GroupNum": len(names)}

    found = _client(answer, asked).groups()
    assert [g.group_id for g in found] == names
    assert asked == [(0, 1000), (1000, 1000), (2000, 1000)]  # the total stops it: no fourth, empty page


def test_persons_stop_at_an_empty_page_when_no_total_is_reported() -> None:
    ids = [f"p{i}" for i in range(1500)]
    asked: list[tuple[int, int]] = []

    def answer(action: Action, request: dict[str, Any]) -> dict[str, Any]:
        assert action is Action.GET_PERSON_LIST and request["GroupId"] == "staff"
        page = [{"PersonId": p, "PersonName": p, "FaceIds": []} for p in _slice(ids, request)]
        return {"PersonInfos": page}

    found = _client(answer, asked).persons("staff")
    assert [p.person_id for p in found] == ids
    assert asked == [(0, 1000), (1000, 1000), (1500, 1000)]


def test_a_person_s_groups_are_read_in_pages_of_the_smaller_limit() -> None:
    groups = [f"g{i}" for i in range(250)]
    asked: list[tuple[int, int]] = []

    def answer(action: Action, request: dict[str, Any]) -> dict[str, Any]:
        assert action is Action.GET_PERSON_GROUP_INFO and request["PersonId"] == "alice"
        return {"PersonGroupInfos": [{"GroupId": g} for g in _slice(groups, request)], "GroupNum": len(groups)}

    assert _client(answer, asked).person_groups("alice") == groups
    assert asked == [(0, 100), (100, 100), (200, 100)]


def test_a_listing_that_never_ends_is_cut_at_max_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iai_client, "MAX_PAGES", 3)
    asked: list[tuple[int, int]] = []

    def answer(action: Action, request: dict[str, Any]) -> dict[str, Any]:  # always a full page, no total
        return {"GroupInfos": [{"GroupId": f"g{request['Offset'] + i}", "GroupName": "g"} for i in range(1000)]}

    assert len(_client(answer, asked).groups()) == 3000
    assert len(asked) == 3
