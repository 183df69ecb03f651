"""The worker's environment: every ``MDW_*`` variable a harness sets, built in one place.

:func:`worker_env` takes where the worker runs (broker, API, topics and group, account) and further
settings by their names in :mod:`worker.config` (``max_in_flight=8``), and returns the variables that
``python -m worker run`` (or ``config.load(environ=...)``) reads. A setting name the worker does not know
fails here, naming it, rather than being ignored by the worker. Values are written the way the
configuration reads them: ``true``/``false`` for booleans, comma lists for sequences. ``api="iai"`` points the
worker's IAI client at the same URL (the emulator serves both APIs there) and leaves out the AppID IAI does not
use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from worker.config import BY_NAME, ApiName
from worker.dev.harness.topics import Topics
from worker.emulator import DEV_ACCOUNT, Account

SettingValue = str | int | float | bool | Sequence[str]


def env_value(value: SettingValue) -> str:
    """A setting's value as the worker reads it from the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return ",".join(value)


def setting_env(settings: Mapping[str, SettingValue]) -> dict[str, str]:
    """``{"max_in_flight": 8}`` → ``{"MDW_MAX_IN_FLIGHT": "8"}``; an unknown name raises ValueError."""
    unknown = sorted(set(settings) - set(BY_NAME))
    if unknown:
        raise ValueError(f"unknown worker settings {unknown}; see worker/config/ for the known ones")
    return {BY_NAME[name].env: env_value(value) for name, value in settings.items()}


def worker_env(
    bootstrap: str,
    api_url: str,
    topics: Topics | None = None,
    *,
    account: Account = DEV_ACCOUNT,
    group_ids: SettingValue | None = None,
    api: ApiName = "v1",
    settings: Mapping[str, SettingValue] | None = None,
) -> dict[str, str]:
    """The ``MDW_*`` variables of a worker on ``bootstrap`` calling ``api_url`` as ``account``.

    ``topics`` names its input, results and dead-letter topics and its consumer group (the worker's
    defaults without it); ``group_ids`` the face groups searched; ``api`` the face API called at ``api_url``
    (``iai``: ``iai_endpoint`` is ``api_url``); ``settings`` anything else, and they win.
    """
    chosen: dict[str, SettingValue] = {"bootstrap_servers": bootstrap}
    if api == "iai":
        chosen |= {"api": "iai", "iai_endpoint": api_url}
    else:
        chosen |= {"api_base_url": api_url, "appid": account.appid}
    chosen |= {"secret_id": account.secret_id, "secret_key": account.secret_key}
    if topics is not None:
        chosen |= {
            "input_topic": topics.input,
            "results_topic": topics.results,
            "dlq_topic": topics.dlq,
            "group_id": topics.group,
        }
    if group_ids is not None:
        chosen["group_ids"] = group_ids
    return setting_env({**chosen, **(settings or {})})
