"""Identifier: failures of the image download (fetch mode) are told from the face API's by origin, not spelling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.api.codes import Origin
from worker.api.errors import ApiError, ErrorClass
from worker.api.models import IdentifyResult
from worker.core.breaker import CircuitBreaker
from worker.core.outcomes import RetryPolicy
from worker.core.ratelimit import AimdRateLimiter
from worker.core.records import Event, Source
from worker.runtime.identify import Identifier, Kind, Task
from worker.runtime.observer import Observer


class FailingFetcher:
    def __init__(self, error: ApiError) -> None:
        self.error = error
        self.calls = 0

    def fetch(self, url: str, cancelled: Any = None) -> Any:
        self.calls += 1
        raise self.error


class NoApi:
    def identify_url(self, url: str, group_ids: Sequence[str], session_id: str | None = None) -> IdentifyResult:
        raise AssertionError("fetch mode only")

    def identify_image(self, image: bytes, group_ids: Sequence[str], session_id: str | None = None) -> IdentifyResult:
        raise AssertionError("the download failed: the API is never called")

    def check_configuration(self, group_ids: Sequence[str]) -> None:
        raise AssertionError("no configuration code here")


class Calls(Observer):
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def api_call(self, outcome: str, latency_s: float) -> None:
        self.outcomes.append(outcome)


def test_a_fetch_error_never_counts_as_an_api_call_whatever_its_key() -> None:
    # The key is spelled like the client's own timeout: only the origin says the image server failed.
    error = ApiError("timeout", ErrorClass.TRANSIENT, "the image server is slow", origin=Origin.FETCH)
    fetcher, observer = FailingFetcher(error), Calls()
    breaker = CircuitBreaker(window=10, min_calls=2, open_s=60)
    identifier = Identifier(
        NoApi(),
        default_groups=("g",),
        policy=RetryPolicy.instant(max_attempts=3),
        limiter=AimdRateLimiter(0),
        breaker=breaker,
        observer=observer,
        fetcher=fetcher,
        breaker_poll_s=0.005,
    )
    event = Event(event_id="e1", image_url="http://img.test/a.jpg")
    task = Task(
        event=event, raw=b"{}", source=Source("in", 0, 7), tp=("in", 0), epoch=1, replay_count=0, consumed_at=0.0
    )
    done = identifier.run(task, lambda: False)
    assert done.kind is Kind.DEAD_LETTER and done.error is not None and done.error.code == "timeout"
    assert fetcher.calls == 3
    assert observer.outcomes == []  # no API call was made
    assert breaker.allow()  # three image-server failures say nothing about the API
