"""Identifier: one event to an outcome (retries, breaker, rate limits, config errors) with a scripted API."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from worker.api.errors import ApiError
from worker.api.models import IdentifyResult
from worker.core.breaker import CircuitBreaker
from worker.core.outcomes import RetryPolicy
from worker.core.ratelimit import AimdRateLimiter
from worker.core.records import Event, Source
from worker.runtime.identify import Identifier, Kind, Task
from worker.runtime.observer import Observer

OK = IdentifyResult(faces=(), request_id="", http_status=200)


class ScriptedApi:
    """Answers from ``script`` (an ApiError to raise, or OK) call after call; then ``then`` forever."""

    def __init__(
        self, script: Sequence[ApiError | IdentifyResult], then: ApiError | IdentifyResult = OK, delay: float = 0.0
    ) -> None:
        self.script = list(script)
        self.then = then
        self.delay = delay  # seconds per call, so that concurrent events interleave like real calls
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.lock = threading.Lock()
        self.check: ApiError | None = None  # what check_configuration raises (None: the configuration is fine)
        self.together: threading.Barrier | None = None
        self.checks = 0

    def _answer(self) -> IdentifyResult:
        if self.together is not None and len(self.calls) <= self.together.parties:
            self.together.wait(10)  # the first calls answer together: every event has called before any retries
        time.sleep(self.delay)
        with self.lock:
            answer = self.script.pop(0) if self.script else self.then
        if isinstance(answer, ApiError):
            raise answer
        return answer

    def identify_url(self, url: str, group_ids: Sequence[str], session_id: str | None = None) -> IdentifyResult:
        self.calls.append((url, tuple(group_ids)))
        return self._answer()

    def identify_image(self, image: bytes, group_ids: Sequence[str], session_id: str | None = None) -> IdentifyResult:
        raise AssertionError("url mode only")

    def check_configuration(self, group_ids: Sequence[str]) -> None:
        self.checks += 1
        if self.check is not None:
            raise self.check


def _task(group_ids: tuple[str, ...] | None = None, event_id: str = "e1") -> Task:
    event = Event(event_id=event_id, image_url="http://img.test/a.jpg", group_ids=group_ids)
    return Task(
        event=event, raw=b"{}", source=Source("in", 0, 7), tp=("in", 0), epoch=1, replay_count=0, consumed_at=0.0
    )


def _identifier(
    api: ScriptedApi,
    *,
    breaker: CircuitBreaker | None = None,
    limiter: AimdRateLimiter | None = None,
    attempts: int = 3,
    confirm_ttl_s: float = 5.0,
) -> Identifier:
    return Identifier(
        api,
        default_groups=("default-group",),
        policy=RetryPolicy.instant(max_attempts=attempts),
        limiter=limiter or AimdRateLimiter(0),
        breaker=breaker or CircuitBreaker(window=10, min_calls=4, open_s=0.05),
        observer=Observer(),
        breaker_poll_s=0.005,
        confirm_ttl_s=confirm_ttl_s,
    )


def never() -> bool:
    return False


def err(code: int) -> ApiError:
    return ApiError.from_service(code, "")


def test_success_after_transient_failures_counts_attempts() -> None:
    api = ScriptedApi([err(213), ApiError.local("timeout", "slow")])
    done = _identifier(api).run(_task(), never)
    assert done.kind is Kind.RESULT and done.attempts == 3
    assert done.first_failure_ms is not None and done.last_failure_ms is not None
    assert api.calls[0] == ("http://img.test/a.jpg", ("default-group",))


def test_isolated_transient_failure_is_dead_lettered_after_the_attempts() -> None:
    breaker = CircuitBreaker(window=50, min_calls=20, open_s=10)
    for _ in range(40):
        breaker.record(True)  # the API answers everyone else
    api = ScriptedApi([], then=err(213))
    done = _identifier(api, breaker=breaker).run(_task(), never)
    assert done.kind is Kind.DEAD_LETTER and done.error is not None and done.error.code == "213"
    assert len(api.calls) == 3 and not breaker.is_open


def _run_concurrently(identifier: Identifier, tasks: list[Task], cancelled: Callable[[], bool] = never) -> list[Kind]:
    kinds: list[Kind] = []
    threads = [threading.Thread(target=lambda t=t: kinds.append(identifier.run(t, cancelled).kind)) for t in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return kinds


def test_outage_holds_the_events_until_the_api_recovers() -> None:
    # Every call fails for a while: events exhaust their attempts while the others fail too, so they wait
    # instead of going to the DLQ; when the API answers again they all get results.
    api = ScriptedApi([err(213)] * 16, delay=0.01)
    api.together = threading.Barrier(4)  # concurrent events, also on a busy machine
    breaker = CircuitBreaker(window=10, min_calls=4, open_s=0.05)
    identifier = _identifier(api, breaker=breaker)
    kinds = _run_concurrently(identifier, [_task(event_id=f"e{i}") for i in range(4)])
    assert kinds == [Kind.RESULT] * 4
    assert len(api.calls) >= 16 + 4 and breaker.state.value == "closed"


def test_one_event_failing_alone_is_dead_lettered_not_held() -> None:
    # A poison event while traffic is low: all recent failures are its own, so it is not an outage.
    api = ScriptedApi([], then=err(213))
    breaker = CircuitBreaker(window=10, min_calls=4, open_s=60)  # more calls than one event's 3 attempts
    done = _identifier(api, breaker=breaker).run(_task(), never)
    assert done.kind is Kind.DEAD_LETTER and len(api.calls) == 3
    assert not breaker.is_open


def test_rate_limit_answers_never_dead_letter_nor_open_the_breaker() -> None:
    api = ScriptedApi([err(15)] * 10)
    breaker = CircuitBreaker(window=10, min_calls=4, open_s=60)
    limiter = AimdRateLimiter(1000)
    done = _identifier(api, breaker=breaker, limiter=limiter).run(_task(), never)
    assert done.kind is Kind.RESULT and len(api.calls) == 11
    assert not breaker.is_open
    assert limiter.rate < 1000  # slowed down


@pytest.mark.parametrize("code", [4, 5, 6, 10, 11, 12, 14, 16, 24])
def test_configuration_codes_stop_the_pipeline_without_retry_once_the_check_confirms_them(code: int) -> None:
    api = ScriptedApi([err(code)])
    api.check = err(code)
    done = _identifier(api).run(_task(), never)
    assert done.kind is Kind.STOP and len(api.calls) == 1 and api.checks == 1


@pytest.mark.parametrize("code", [3, 4, 14, -1310])
def test_configuration_codes_are_dead_lettered_when_the_check_passes(code: int) -> None:
    api = ScriptedApi([err(code)])
    done = _identifier(api).run(_task(), never)
    assert done.kind is Kind.DEAD_LETTER and api.checks == 1
    assert done.error is not None and done.error.code == str(code) and done.error.error_class == "permanent"


def test_a_configuration_check_that_cannot_tell_holds_the_event_and_asks_again() -> None:
    api = ScriptedApi([], then=err(14))
    api.check = err(213)  # the check itself fails transiently
    identifier = _identifier(api, confirm_ttl_s=0.01)
    kinds: list[Kind] = []
    runner = threading.Thread(target=lambda: kinds.append(identifier.run(_task(), never).kind))
    runner.start()
    deadline = time.monotonic() + 10
    while api.checks < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert kinds == [] and api.checks >= 2  # held, not dead-lettered, not stopped
    api.check = None  # now it can tell: the configuration is fine, the answer was about this event
    runner.join(10)
    assert kinds == [Kind.DEAD_LETTER]


def test_unknown_group_is_a_config_error_for_default_groups_but_the_event_s_fault_for_its_own() -> None:
    api = ScriptedApi([err(-1306)])
    api.check = err(-1306)
    assert _identifier(api).run(_task(), never).kind is Kind.STOP
    done = _identifier(ScriptedApi([err(-1306)])).run(_task(group_ids=("its-own",)), never)
    assert done.kind is Kind.DEAD_LETTER and done.error is not None
    assert done.error.code == "-1306" and "its-own" in done.error.message


def test_permanent_image_errors_are_dead_lettered_at_once() -> None:
    for code in (-1101, -1102, -1308, -1400, 23):
        api = ScriptedApi([err(code)])
        done = _identifier(api).run(_task(), never)
        assert done.kind is Kind.DEAD_LETTER and len(api.calls) == 1


def test_a_revoked_partition_cancels_held_events() -> None:
    api = ScriptedApi([], then=err(213), delay=0.01)
    breaker = CircuitBreaker(window=10, min_calls=4, open_s=60)  # stays open: the events would wait forever
    stop = threading.Event()
    identifier = _identifier(api, breaker=breaker)
    kinds: list[Kind] = []
    runner = threading.Thread(
        target=lambda: kinds.extend(
            _run_concurrently(identifier, [_task(event_id="a"), _task(event_id="b")], stop.is_set)
        )
    )
    runner.start()
    runner.join(0.3)
    assert runner.is_alive() and breaker.is_open  # held, not dead-lettered
    stop.set()
    runner.join(5)
    assert kinds == [Kind.CANCELLED, Kind.CANCELLED]


def test_codes_9_and_13_stop_after_the_clients_re_signed_retry() -> None:
    for code in (9, 13):
        api = ScriptedApi([err(code)])
        api.check = err(code)
        done = _identifier(api).run(_task(), never)
        assert done.kind is Kind.STOP and len(api.calls) == 1
