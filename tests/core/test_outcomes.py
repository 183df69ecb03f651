"""The error → outcome table, the retry policy and its tenacity adapters."""

from __future__ import annotations

import random
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import tenacity
from tenacity import Retrying

from worker.api.errors import CODES, ApiError, ErrorClass
from worker.core import outcomes
from worker.core.outcomes import (
    Decision,
    Outcome,
    RetryPolicy,
    decide,
    tenacity_retry,
    tenacity_stop,
    tenacity_wait,
)

POLICY = RetryPolicy(jitter=False)


def _err(code: int) -> ApiError:
    return ApiError.from_service(code, "", 200)


@pytest.fixture(autouse=True)
def _no_test_mode() -> Iterator[None]:
    outcomes.set_testing(False)
    yield
    outcomes.set_testing(False)


@pytest.mark.parametrize("code", [c for c, info in CODES.items() if info.error_class is ErrorClass.CONFIG])
def test_config_errors_stop(code: int) -> None:
    error = _err(code)
    decision = decide(error, attempt=2, elapsed_s=0, policy=POLICY, breaker_open=False)
    assert decision.outcome is Outcome.STOP


def test_resign_codes_get_one_immediate_retry_then_stop() -> None:
    for code in (9, 13):
        assert decide(_err(code), attempt=1, elapsed_s=0, policy=POLICY, breaker_open=False) == Decision(
            Outcome.RETRY, 0.0
        )
        assert decide(_err(code), attempt=2, elapsed_s=0, policy=POLICY, breaker_open=False).outcome is Outcome.STOP
    assert decide(_err(14), attempt=1, elapsed_s=0, policy=POLICY, breaker_open=False).outcome is Outcome.STOP


@pytest.mark.parametrize("code", [-1101, -1102, -1308, -1400, 23, 21])
def test_permanent_errors_dead_letter_at_once(code: int) -> None:
    for breaker_open in (False, True):
        decision = decide(_err(code), attempt=1, elapsed_s=0, policy=POLICY, breaker_open=breaker_open)
        assert decision == Decision(Outcome.DEAD_LETTER, 0.0)


@pytest.mark.parametrize(
    "error",
    [
        _err(107),
        _err(108),
        _err(213),
        _err(-1200),
        ApiError.local("timeout", "t"),
        ApiError.local("connection", "c"),
        ApiError.local("http_503", "s", http_status=503),
    ],
)
def test_transient_errors_retry_then_dead_letter_or_hold(error: ApiError) -> None:
    assert decide(error, attempt=1, elapsed_s=0, policy=POLICY, breaker_open=False) == Decision(Outcome.RETRY, 0.2)
    assert decide(error, attempt=4, elapsed_s=0, policy=POLICY, breaker_open=False) == Decision(Outcome.RETRY, 1.6)
    exhausted = decide(error, attempt=5, elapsed_s=0, policy=POLICY, breaker_open=False)
    assert exhausted.outcome is Outcome.DEAD_LETTER
    held = decide(error, attempt=5, elapsed_s=0, policy=POLICY, breaker_open=True)
    assert held == Decision(Outcome.HOLD, POLICY.wait(5, error))  # held events back off like retries


def test_deadline_ends_retries_when_the_next_call_would_start_too_late() -> None:
    assert decide(_err(213), attempt=2, elapsed_s=59.5, policy=POLICY, breaker_open=False).outcome is Outcome.RETRY
    assert decide(_err(213), attempt=2, elapsed_s=59.7, policy=POLICY, breaker_open=False).outcome is (
        Outcome.DEAD_LETTER
    )


def test_backoff_is_exponential_capped_and_jittered() -> None:
    assert [POLICY.wait(n) for n in range(1, 9)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    assert POLICY.wait(10_000) == 10.0
    jittered = RetryPolicy()
    rng = random.Random(1)
    samples = [jittered.wait(3, None, rng) for _ in range(200)]
    assert all(0 <= s <= 0.8 for s in samples) and len(set(samples)) > 100


def test_retry_after_is_a_floor_with_a_cap() -> None:
    error = ApiError.local("http_503", "busy", http_status=503)
    error.retry_after = 4.0
    assert POLICY.wait(1, error) == 4.0
    error.retry_after = 300.0
    assert POLICY.wait(1, error) == 30.0
    error.retry_after = 0.1
    assert POLICY.wait(3, error) == 0.8


@pytest.mark.parametrize("error", [_err(15), ApiError.local("http_429", "slow down", http_status=429)])
def test_rate_limit_answers_wait_only_for_their_retry_after(error: ApiError) -> None:
    # The worker-wide limiter paces them: a backoff of the event's own would only leave its slot idle.
    assert POLICY.wait(4, error) == 0.0
    assert decide(error, attempt=1, elapsed_s=0, policy=POLICY, breaker_open=False) == Decision(Outcome.RETRY, 0.0)
    assert decide(error, attempt=5, elapsed_s=0, policy=POLICY, breaker_open=True) == Decision(Outcome.HOLD, 0.0)
    error.retry_after = 300.0
    assert POLICY.wait(1, error) == 30.0


def test_test_modes_make_waits_zero_but_keep_the_caps() -> None:
    instant = RetryPolicy.instant(max_attempts=2)
    error = _err(15)
    error.retry_after = 5.0
    assert instant.wait(3, error) == 0.0
    assert decide(error, attempt=2, elapsed_s=0, policy=instant, breaker_open=False).outcome is Outcome.DEAD_LETTER
    outcomes.set_testing(True)
    assert POLICY.wait(6, error) == 0.0
    assert decide(error, attempt=1, elapsed_s=0, policy=POLICY, breaker_open=False) == Decision(Outcome.RETRY, 0.0)
    assert decide(error, attempt=5, elapsed_s=0, policy=POLICY, breaker_open=True) == Decision(Outcome.HOLD, 0.0)


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(deadline_s=-1)


# --- tenacity adapters -----------------------------------------------------------------------------------


class _Flaky:
    """Raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: ApiError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def _retrying(policy: RetryPolicy, sleeps: list[float], rng: random.Random | None = None) -> Retrying:
    return Retrying(
        wait=tenacity_wait(policy, rng),
        stop=tenacity_stop(policy),
        retry=tenacity_retry(),
        sleep=sleeps.append,
        reraise=True,
    )


def test_tenacity_retries_transient_errors_with_the_policy_waits() -> None:
    sleeps: list[float] = []
    flaky = _Flaky(_err(107), _err(213), _err(-1200))
    assert _retrying(POLICY, sleeps)(flaky) == "ok"
    assert flaky.calls == 4
    assert sleeps == [POLICY.wait(1), POLICY.wait(2), POLICY.wait(3)]


def test_tenacity_jitter_matches_policy_wait_for_the_same_rng() -> None:
    policy = RetryPolicy()
    sleeps: list[float] = []
    _retrying(policy, sleeps, random.Random(7))(_Flaky(_err(213), _err(213), _err(213)))
    rng = random.Random(7)
    assert sleeps == [policy.wait(n, None, rng) for n in (1, 2, 3)]


def test_tenacity_stops_after_max_attempts_and_reraises_the_last_error() -> None:
    sleeps: list[float] = []
    flaky = _Flaky(*[_err(213)] * 10)
    with pytest.raises(ApiError) as info:
        _retrying(POLICY, sleeps)(flaky)
    assert info.value.code == "213" and flaky.calls == POLICY.max_attempts


def test_tenacity_stops_before_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(tenacity, "time", SimpleNamespace(monotonic=lambda: now[0]))  # tenacity's clock only

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    sleeps: list[float] = []
    flaky = _Flaky(*[_err(213)] * 10)
    policy = RetryPolicy(jitter=False, deadline_s=1.0)
    with pytest.raises(ApiError):
        Retrying(
            wait=tenacity_wait(policy), stop=tenacity_stop(policy), retry=tenacity_retry(), sleep=sleep, reraise=True
        )(flaky)
    assert flaky.calls == 3  # waits 0.2 + 0.4 fit; the third wait (0.8) would start past 1 s
    assert sleeps == [0.2, 0.4]


def test_tenacity_does_not_retry_permanent_or_config_but_resigns_once() -> None:
    for code in (-1101, 14):
        flaky = _Flaky(_err(code))
        with pytest.raises(ApiError):
            _retrying(POLICY, [])(flaky)
        assert flaky.calls == 1
    sleeps: list[float] = []
    flaky = _Flaky(_err(9))
    assert _retrying(POLICY, sleeps)(flaky) == "ok" and sleeps == [0.0]
    flaky = _Flaky(_err(9), _err(9))
    with pytest.raises(ApiError):
        _retrying(POLICY, [])(flaky)
    assert flaky.calls == 2


def test_tenacity_honours_retry_after_and_test_mode() -> None:
    error = _err(15)
    error.retry_after = 3.0
    sleeps: list[float] = []
    _retrying(POLICY, sleeps)(_Flaky(error))
    assert sleeps == [3.0]
    outcomes.set_testing(True)
    sleeps = []
    _retrying(POLICY, sleeps)(_Flaky(_err(15), _err(15)))
    assert sleeps == [0.0, 0.0]
