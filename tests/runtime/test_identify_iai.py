"""The Identifier decides on IAI's string codes as it does on v1's integers: rate limits slow the worker without
opening the breaker, configuration codes stop it once confirmed, group codes are the event's fault for its own
groups. Only the registry (worker.api.codes) knows the codes; nothing in the runtime names one."""

from __future__ import annotations

import pytest

from tests.runtime.test_identify import ScriptedApi, _identifier, _task, never
from worker.api.errors import ApiError
from worker.core.breaker import CircuitBreaker
from worker.core.ratelimit import AimdRateLimiter
from worker.runtime.identify import Kind


def iai(code: str) -> ApiError:
    return ApiError.from_iai(code, "", "req-1", 200)


@pytest.mark.parametrize(
    "code",
    ["RequestLimitExceeded", "RequestLimitExceeded.UinLimitExceeded", "FailedOperation.RequestLimitExceeded"],
)
def test_rate_limit_answers_never_dead_letter_nor_open_the_breaker(code: str) -> None:
    api = ScriptedApi([iai(code)] * 10)
    breaker = CircuitBreaker(window=10, min_calls=4, open_s=60)
    limiter = AimdRateLimiter(1000)
    done = _identifier(api, breaker=breaker, limiter=limiter).run(_task(), never)
    assert done.kind is Kind.RESULT and len(api.calls) == 11
    assert not breaker.is_open
    assert limiter.rate < 1000  # slowed down


@pytest.mark.parametrize("code", ["InvalidParameterValue.GroupIdNotExist", "InvalidParameterValue.NoFaceInGroups"])
def test_group_codes_are_config_for_default_groups_but_the_event_s_fault_for_its_own(code: str) -> None:
    api = ScriptedApi([iai(code)])
    api.check = iai(code)
    assert _identifier(api).run(_task(), never).kind is Kind.STOP
    done = _identifier(ScriptedApi([iai(code)])).run(_task(group_ids=("its-own",)), never)
    assert done.kind is Kind.DEAD_LETTER and done.error is not None
    assert done.error.code == code and done.error.error_class == "permanent" and "its-own" in done.error.message


@pytest.mark.parametrize("code", ["AuthFailure.SignatureFailure", "ResourceUnavailable.InArrears", "AuthFailure.New"])
def test_configuration_codes_stop_once_the_check_confirms_them(code: str) -> None:
    api = ScriptedApi([iai(code)])
    api.check = iai(code)
    done = _identifier(api).run(_task(), never)
    assert done.kind is Kind.STOP and len(api.calls) == 1 and api.checks == 1


@pytest.mark.parametrize("code", ["FailedOperation.ImageDownloadError", "InvalidParameterValue.NoFaceInPhoto"])
def test_image_codes_are_dead_lettered_at_once(code: str) -> None:
    api = ScriptedApi([iai(code)])
    done = _identifier(api).run(_task(), never)
    assert done.kind is Kind.DEAD_LETTER and len(api.calls) == 1 and api.checks == 0
    assert done.error is not None and done.error.code == code


def test_server_faults_are_retried() -> None:
    api = ScriptedApi([iai("InternalError"), iai("FailedOperation.ServerError")])
    done = _identifier(api).run(_task(), never)
    assert done.kind is Kind.RESULT and done.attempts == 3
