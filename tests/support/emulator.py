"""The emulator for tests: one fixture that runs it, the dev signature, and a raw HTTP caller (hand-built requests).

``emu`` (registered for every test by ``tests/conftest.py``) is the emulator in a thread of the test process,
one per test module, with the development account and no faults; a test that changes its faults or its
gallery resets them (``emu.reset()``) when it is done.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import requests

from worker.api.signature import sign
from worker.emulator import DEV_ACCOUNT, EmulatorHandle, start_in_thread

APPID = DEV_ACCOUNT.appid


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    """The emulator in a thread, for the tests of one module; stopped by its handle at the module's end."""
    with start_in_thread() as handle:
        yield handle


def dev_auth(lifetime: int = 300, now: int | None = None) -> str:
    return sign(
        DEV_ACCOUNT.appid,
        DEV_ACCOUNT.secret_id,
        DEV_ACCOUNT.secret_key,
        now=int(time.time()) if now is None else now,
        lifetime=lifetime,
    )


@dataclass
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def code(self) -> int:
        return int(self.body["code"])

    @property
    def data(self) -> dict[str, Any]:
        return self.body["data"]  # type: ignore[no-any-return]


class Caller:
    """Hand-built requests to one emulator (requests.Session, keep-alive, no environment proxies)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.trust_env = False

    def raw(self, action: str, **kwargs: Any) -> requests.Response:
        return self.session.post(f"{self.base_url}/face/{action}", timeout=30, **kwargs)

    def json(self, action: str, body: dict[str, Any], *, auth: str | None = None, **kwargs: Any) -> Answer:
        headers = {"Authorization": dev_auth() if auth is None else auth, "Content-Type": "application/json"}
        response = self.raw(action, data=orjson.dumps(body), headers=headers, **kwargs)
        return Answer(response.status_code, orjson.loads(response.content))

    def multipart(
        self,
        action: str,
        fields: dict[str, str] | list[tuple[str, str]],
        files: list[tuple[str, tuple[str, bytes, str]]],
        *,
        auth: str | None = None,
    ) -> Answer:
        response = self.raw(action, data=fields, files=files, headers={"Authorization": auth or dev_auth()})
        return Answer(response.status_code, orjson.loads(response.content))

    def newperson(self, person_id: str, groups: list[str], image: bytes, **extra: str) -> Answer:
        fields = [("appid", APPID), ("person_id", person_id), *((f"group_ids[{i}]", g) for i, g in enumerate(groups))]
        fields += list(extra.items())
        return self.multipart("newperson", fields, [("image", ("face.jpg", image, "image/jpeg"))])

    def multidentify(self, image: bytes, groups: list[str], **extra: str) -> Answer:
        fields = [("appid", APPID), *((f"group_ids[{i}]", g) for i, g in enumerate(groups)), *extra.items()]
        return self.multipart("multidentify", fields, [("image", ("scene.jpg", image, "image/jpeg"))])

    def close(self) -> None:
        self.session.close()
