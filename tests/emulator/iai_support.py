"""Hand-built IAI requests for the emulator tests: TC3-signed with worker.api.tc3, sent with requests (no SDK).

``IaiCaller.call(action, fields)`` signs and sends one request and returns its answer; ``headers`` builds the
signed headers with any part changed (timestamp, keys, signed host, service), so a test can break exactly one.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests

from worker.api import tc3
from worker.emulator import DEV_ACCOUNT, EmulatorHandle, synth

VERSION = "2020-03-03"
JSON = "application/json"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def photo(name: str, seed: int = 1, side: int = 120, size: tuple[int, int] = (200, 200)) -> bytes:
    """One face of ``name``, ``side`` pixels wide, in the middle of the image."""
    x, y = (size[0] - side) // 2, (size[1] - side) // 2
    return synth.render_scene([(name, (x, y, side, side))], size, seed=seed)


def publish(emu: EmulatorHandle, name: str, data: bytes) -> str:
    """Write an image where the emulator serves it (its ``images_dir``); returns its URL."""
    assert emu.config.images_dir
    (Path(emu.config.images_dir) / name).write_bytes(data)
    return f"{emu.base_url}/images/{name}"


@dataclass
class IaiAnswer:
    status: int
    content_type: str
    doc: dict[str, Any]

    @property
    def response(self) -> dict[str, Any]:
        return self.doc["Response"]  # type: ignore[no-any-return]

    @property
    def code(self) -> str | None:
        """The error code, or None for a success."""
        error = self.response.get("Error")
        return None if error is None else str(error["Code"])


class IaiCaller:
    """Signed IAI requests to one emulator (keep-alive session, no environment proxies)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.host = urlsplit(base_url).netloc  # what requests sends as Host, port included
        self.session = requests.Session()
        self.session.trust_env = False

    def headers(
        self,
        action: str,
        body: bytes,
        *,
        timestamp: int | None = None,
        secret_id: str = DEV_ACCOUNT.secret_id,
        secret_key: str = DEV_ACCOUNT.secret_key,
        signed_host: str | None = None,
        service: str = "iai",
    ) -> dict[str, str]:
        ts = int(time.time()) if timestamp is None else timestamp
        auth = tc3.authorization(
            secret_id, secret_key, service=service, host=signed_host or self.host, content_type=JSON, body=body,
            timestamp=ts,
        )  # fmt: skip
        return {
            "Host": self.host,
            "Content-Type": JSON,
            "X-TC-Action": action,
            "X-TC-Version": VERSION,
            "X-TC-Timestamp": str(ts),
            "X-TC-Region": "ap-guangzhou",
            "Authorization": auth,
        }

    def send(self, body: bytes, headers: dict[str, str], timeout: float = 30) -> IaiAnswer:
        response = self.session.post(self.base_url + "/", data=body, headers=headers, timeout=timeout)
        return IaiAnswer(response.status_code, response.headers.get("Content-Type", ""), orjson.loads(response.content))

    def call(self, action: str, fields: dict[str, Any] | None = None, **sign: Any) -> IaiAnswer:
        body = orjson.dumps(fields or {})
        return self.send(body, self.headers(action, body, **sign))

    def ok(self, action: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.call(action, fields)
        assert answer.code is None, answer.doc
        return answer.response

    def error(self, action: str, fields: dict[str, Any] | None = None, **sign: Any) -> str:
        answer = self.call(action, fields, **sign)
        assert answer.status == 200 and answer.content_type == JSON, answer
        assert answer.code is not None, answer.doc
        return answer.code

    def close(self) -> None:
        self.session.close()
