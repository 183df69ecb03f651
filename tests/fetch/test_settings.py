"""fetch_memory_mb: its default fits the chart, and a budget that cannot hold one image stops at start."""

from __future__ import annotations

import pytest

from worker import config


def test_the_default_budget_holds_the_largest_images_of_the_default_in_flight() -> None:
    settings = config.load(environ={})
    assert settings.fetch_memory_mb == 128
    # 64 slots × a reserved fetch_max_bytes each fit, so the default never makes a download wait.
    assert settings.max_in_flight * settings.fetch_max_bytes <= settings.fetch_memory_mb * config.MIB


def test_the_budget_is_read_from_the_environment() -> None:
    assert config.load(environ={"MDW_FETCH_MEMORY_MB": "64"}).fetch_memory_mb == 64


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"fetch_memory_mb": 1}, ("fetch_memory_mb", "fetch_max_bytes")),  # 1 MiB < the default 1,400,000 bytes
        ({"fetch_memory_mb": 1, "fetch_max_bytes": 1_048_577}, ("fetch_memory_mb", "fetch_max_bytes")),
        ({"fetch_memory_mb": 0}, ("fetch_memory_mb",)),
    ],
)
def test_a_budget_smaller_than_one_image_is_refused_naming_the_settings(
    overrides: dict[str, int], names: tuple[str, ...]
) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(overrides=overrides, environ={})
    assert all(name in str(err.value) for name in names), err.value


def test_a_budget_of_exactly_one_image_is_accepted() -> None:
    settings = config.load(overrides={"fetch_memory_mb": 1, "fetch_max_bytes": 1_048_576}, environ={})
    assert settings.fetch_memory_mb * config.MIB == settings.fetch_max_bytes
