"""The client's and the fetcher's options are built from the settings in one place: every value lands where it
belongs (a swapped pair, say the API's and the image hosts' TLS verification, would pass every other test)."""

from __future__ import annotations

from worker import config
from worker.api.client import ClientOptions
from worker.fetch import FetchOptions
from worker.runtime.app import client_options, fetch_options

SETTINGS = config.load(
    overrides={
        "appid": "1250000001",
        "secret_id": "AKIDoptions",
        "secret_key": "options-key",
        "api_base_url": "http://api.test:8080",
        "bucket": "bkt",
        "signature_lifetime_s": 600,
        "connect_timeout_s": 2.5,
        "read_timeout_s": 7.0,
        "tls_verify": False,
        "max_in_flight": 12,
        "image_mode": "fetch",
        "fetch_max_bytes": 1_000_000,
        "fetch_timeout_s": 2.0,
        "fetch_tls_verify": True,
        "fetch_allowed_networks": "10.1.0.0/16,127.0.0.1/32",
    },
    environ={},
)


def test_client_options_carry_the_api_settings() -> None:
    assert client_options(SETTINGS) == ClientOptions(
        appid="1250000001",
        secret_id="AKIDoptions",
        secret_key="options-key",
        base_url="http://api.test:8080",
        bucket="bkt",
        signature_lifetime=600,
        connect_timeout=2.5,
        read_timeout=7.0,
        pool_size=13,  # one per HTTP thread and one for the breaker's probe
        verify=False,
    )


def test_fetch_options_carry_the_fetch_settings() -> None:
    assert fetch_options(SETTINGS) == FetchOptions(
        max_bytes=1_000_000,
        connect_timeout=2.0,  # never longer than the whole download may take
        read_timeout=2.0,
        total_timeout=2.0,
        allowed_networks=("10.1.0.0/16", "127.0.0.1/32"),
        verify=True,
        pool_size=12,
    )
