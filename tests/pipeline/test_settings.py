"""Settings that change what a running worker does, checked through `build_pipeline` on the real broker:
TLS for image downloads (`fetch_tls_verify`, apart from the API's `tls_verify`), where a partition without a
committed offset starts (`auto_offset_reset`), and the consumer's poll-interval budget (`max_poll_interval_ms`)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import orjson
import pytest
from PIL import Image

from tests.support.kafkatest import produce_all, wait_until
from tests.support.pipeline import enrolled_emulator, settings_env, thread_worker, validate_all
from tests.support.servers import loopback_server, serving
from worker import config
from worker.dev.harness.outputs import OutputReader, read_outputs
from worker.dev.harness.topics import Topics
from worker.emulator import EmulatorHandle
from worker.runtime import kafka


@pytest.fixture
def topics(make_topics: Callable[..., Topics]) -> Topics:
    return make_topics(2, results=1, dlq=1)


def _event(event_id: str, url: str) -> bytes:
    return orjson.dumps({"event_id": event_id, "image_url": url})


# --- fetch mode: the image host's certificate ---------------------------------------------------------------------


def _self_signed(tmp: Path) -> Path:
    """A certificate + key (one PEM file) for "localhost" that no CA vouches for."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        import importlib.util

        spec = importlib.util.find_spec("test")
        if spec is not None and spec.submodule_search_locations:
            pem = Path(next(iter(spec.submodule_search_locations))) / "certdata" / "keycert.pem"
            if pem.exists():
                return pem  # CPython's self-signed "localhost" test certificate
        pytest.skip("neither the cryptography package nor CPython's test certificates are available")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = tmp / "self-signed.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pem


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 180, 160)).save(out, "JPEG")
    return out.getvalue()


class _ImageHandler(BaseHTTPRequestHandler):
    body = _jpeg()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def https_image_url(tmp_path: Path) -> Iterator[str]:
    """An image on an HTTPS server (127.0.0.1, OS-assigned port) whose certificate is self-signed."""
    with serving(loopback_server(_ImageHandler), _self_signed(tmp_path)) as server:
        yield f"https://localhost:{server.server_address[1]}/face.jpg"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with enrolled_emulator(tmp_path_factory.mktemp("images"), ["alice"]) as (handle, _):
        yield handle


@pytest.mark.broker
@pytest.mark.parametrize(
    ("tls_settings", "downloaded"),
    [
        ({"tls_verify": "false"}, False),  # the API's setting: image hosts are still verified
        ({"fetch_tls_verify": "false"}, True),  # the control: the same download succeeds when told not to verify
    ],
    ids=["tls_verify-false", "fetch_tls_verify-false"],
)
def test_tls_verify_applies_to_the_api_only_and_fetch_tls_verify_to_image_downloads(
    kafka_bootstrap: str,
    topics: Topics,
    emulator: EmulatorHandle,
    https_image_url: str,
    tls_settings: dict[str, str],
    downloaded: bool,
) -> None:
    produce_all(kafka_bootstrap, topics.input, [(b"cam-1", _event("e-tls", https_image_url))])
    env = settings_env(
        kafka_bootstrap,
        emulator.base_url,
        topics,
        image_mode="fetch",
        fetch_allowed_networks="127.0.0.0/8",  # the test server is on loopback
        **tls_settings,
    )
    with thread_worker(env) as w:
        wait_until(
            lambda: w.pipeline.stats.results + sum(w.pipeline.stats.dead_letters.values()) >= 1,
            timeout=60,
            what="the event's output",
        )
        assert w.stop() == 0
    out = read_outputs(kafka_bootstrap, topics)
    validate_all(out)
    dead = [o for o in out if o.kind == "dlq"]
    codes = [o.code for o in dead]
    if downloaded:
        # The image reached the API (a plain colour has no face, or it is a result): no certificate failure.
        assert "fetch_tls" not in codes and len(out) == 1, codes
    else:
        assert codes == ["fetch_tls"], [o.code for o in out]
        assert "certificate" in dead[0].doc["error"]["message"].lower()


# --- auto_offset_reset ----------------------------------------------------------------------------------------------


@pytest.mark.broker
def test_latest_starts_a_new_group_at_the_end_and_skips_the_backlog(kafka_bootstrap: str, topics: Topics) -> None:
    # One record per batch: Tansu's "latest" offset is wrong after a multi-record batch (a broker quirk).
    for i in range(5):
        produce_all(kafka_bootstrap, topics.input, [(b"k", f"old-{i} (not JSON)".encode())], partition=i % 2)
    # Invalid events are dead-lettered without an API call: no API is needed to see which events were consumed.
    env = settings_env(kafka_bootstrap, "http://127.0.0.1:9", topics, auto_offset_reset="latest")
    outputs = OutputReader(kafka_bootstrap, topics)
    try:
        with thread_worker(env) as w:
            # The start position is fixed once the worker has its partitions; events published before that may be
            # skipped too, so publish new ones (bounded) until one comes out.
            sent = 0

            def one_more_then_any_output() -> bool:
                nonlocal sent
                outputs.poll()
                if outputs.count():
                    return True
                new = [(b"k", f"new-{sent} (not JSON)".encode())]
                produce_all(kafka_bootstrap, topics.input, new, partition=sent % 2)
                sent += 1
                return False

            wait_until(one_more_then_any_output, timeout=60, interval=0.3, what="a new event's dead letter")
            assert w.stop() == 0
    finally:
        outputs.close()
    out = read_outputs(kafka_bootstrap, topics)
    originals = [base64.b64decode(o.doc["original"]["value_base64"]) for o in out if o.kind == "dlq"]
    assert originals, "no output at all"
    assert all(v.startswith(b"new-") for v in originals), originals


# --- max_poll_interval_ms -------------------------------------------------------------------------------------------


def test_consumer_config_takes_the_reset_policy_and_poll_interval_from_the_settings() -> None:
    settings = config.load(
        environ={"MDW_AUTO_OFFSET_RESET": "latest", "MDW_MAX_POLL_INTERVAL_MS": "600000", "MDW_DRAIN_TIMEOUT_S": "400"}
    )
    conf = kafka.consumer_config(settings)
    assert conf["auto.offset.reset"] == "latest"
    assert conf["max.poll.interval.ms"] == 600_000
    default = kafka.consumer_config(config.load(environ={}))
    assert default["auto.offset.reset"] == "earliest"
    assert default["max.poll.interval.ms"] == 300_000
    # librdkafka accepts what the settings allow (it refuses an interval below the session timeout itself).
    from confluent_kafka import Consumer

    with contextlib.closing(Consumer({**conf, "bootstrap.servers": "127.0.0.1:9"})):
        pass
