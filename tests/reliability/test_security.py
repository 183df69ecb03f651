"""Security end to end: fetch-mode SSRF refusals, secrets never leaked, TLS verified, signatures enforced.

* Fetch mode (``MDW_IMAGE_MODE=fetch``) in a running worker: loopback, private, link-local, metadata and
  numeric-trick addresses are dead-lettered ``fetch_refused``; every redirect hop is checked again; no socket
  ever goes to a non-loopback address (a tripwire on ``socket`` in this process, where the worker's HTTP
  threads run). DNS rebinding is shown with the fetcher's public ``resolver`` seam.
* Credentials: a worker process with a known SecretId/SecretKey (and runs with a wrong key and a wrong id)
  never writes them to its logs, ``/metrics``, results or dead letters, nor in base64 form.
* TLS: the face-API client verifies certificates by default (a self-signed or unknown-CA server fails).
* The emulator enforces the v1 signature: tampered → 14, expired → 9, replayed single-use → 13.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
import requests

from tests.support.kafkatest import wait_until
from tests.support.netguard import Tripwire, install_tripwire
from tests.support.pipeline import ThreadWorker, settings_env
from tests.support.reliability import Record, event_value, produce_records
from tests.support.servers import loopback_server, serving
from worker import config
from worker.api.client import ClientOptions, MultidentifyClient
from worker.api.errors import ApiError
from worker.api.signature import sign
from worker.dev.harness.loopback import free_port, http_get
from worker.dev.harness.outputs import OutputReader
from worker.dev.harness.processes import ROOT, WorkerProcess
from worker.dev.harness.topics import Topics
from worker.dev.scenario import Scenario
from worker.emulator import DEV_ACCOUNT, Account, EmulatorHandle, start_in_thread
from worker.fetch import FetchOptions, ImageFetcher

# --- a tripwire on this process's sockets ------------------------------------------------------------------------


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tripwire]:
    """Every Python-level connect and name lookup is recorded; anything not loopback fails the test."""
    wire = install_tripwire(monkeypatch)
    yield wire
    wire.assert_clean()


# --- a scripted redirect server on 127.0.0.1 -----------------------------------------------------------------------


class _Redirects(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes: dict[str, str], image: bytes) -> None:
        self.routes = routes  # path → Location
        self.image = image
        super().__init__(("127.0.0.1", 0), _RedirectHandler)

    def server_bind(self) -> None:  # no reverse lookup of the bound name
        socket.socket.bind(self.socket, self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


class _RedirectHandler(BaseHTTPRequestHandler):
    server: _Redirects

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in self.server.routes:
            self.send_response(302)
            self.send_header("Location", self.server.routes[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/image.jpg":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(self.server.image)))
            self.end_headers()
            self.wfile.write(self.server.image)
            return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def redirect_server(routes: dict[str, str], image: bytes) -> Iterator[_Redirects]:
    with serving(_Redirects(routes, image)) as server:
        yield server


# --- fixtures ----------------------------------------------------------------------------------------------------

SECRET_ID = "AKIDreliabilitySecretId0123456789ABCDEF"
SECRET_KEY = "reliability-Secret-Key-0123456789abcdefXYZ"
APPID = "1250000777"
ACCOUNT = Account(APPID, SECRET_ID, SECRET_KEY)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorHandle, Scenario]]:
    images = tmp_path_factory.mktemp("security-images")
    with start_in_thread(images_dir=str(images), accounts=[DEV_ACCOUNT, ACCOUNT]) as handle:
        sc = Scenario(images, handle.base_url + "/images/")
        for account in (DEV_ACCOUNT, ACCOUNT):
            sc.enroll_at(handle.base_url, ["alice", "bob"], account)
        sc.add_known(4, stranger_every=0, seed=9900)
        yield handle, sc


def _urls(sc: Scenario) -> list[str]:
    return [orjson.loads(e.value)["image_url"] for e in sc.events if e.expect == "result"]


# --- fetch mode ------------------------------------------------------------------------------------------------


@pytest.mark.broker
def test_fetch_mode_refuses_internal_addresses_and_checks_every_redirect(
    kafka_bootstrap: str,
    stack: tuple[EmulatorHandle, Scenario],
    make_topics: Callable[..., Topics],
    tripwire: Tripwire,
) -> None:
    handle, sc = stack
    image_url = _urls(sc)[0]
    port = int(image_url.split(":")[2].split("/")[0])
    path = "/images/" + image_url.rsplit("/", 1)[1]
    image = (sc.images_dir / image_url.rsplit("/", 1)[1]).read_bytes()
    refused_direct = {
        "emulator-127.0.0.1": image_url,
        "localhost": f"http://localhost:{port}{path}",
        "ipv6-loopback": f"http://[::1]:{port}{path}",
        "v4-mapped-loopback": f"http://[::ffff:127.0.0.1]:{port}{path}",
        "hex-loopback": f"http://0x7f000001:{port}{path}",
        "decimal-loopback": f"http://2130706433:{port}{path}",
        "short-loopback": f"http://127.1:{port}{path}",
        "unspecified": f"http://0.0.0.0:{port}{path}",
        "aws-metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "tencent-metadata": "http://169.254.0.23/meta-data/",
        "alibaba-metadata": "http://100.100.100.200/latest/meta-data/",
        "aws-metadata-v6": "http://[fd00:ec2::254]/latest/meta-data/",
        "rfc1918-10": "http://10.0.0.1/x.jpg",
        "rfc1918-192": "http://192.168.1.1/x.jpg",
        "cgnat": "http://100.64.0.1/x.jpg",
        "link-local": "http://169.254.10.10/x.jpg",
    }
    with redirect_server(
        {
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            "/to-private": "http://10.1.2.3/x.jpg",
            "/to-file": "file:///etc/passwd",
            "/to-gopher": "gopher://127.0.0.1:6379/_INFO",
            "/to-other-loopback": f"http://127.0.0.2:{port}{path}",
            "/to-v6-loopback": f"http://[::1]:{port}{path}",
            "/to-allowed": "/image.jpg",
            "/hop1": "/hop2",
            "/hop2": "/to-metadata",
        },
        image,
    ) as redirects:
        base = f"http://127.0.0.1:{redirects.server_port}"
        with_allowed = {
            "redirect-to-metadata": (f"{base}/to-metadata", "fetch_refused"),
            "redirect-to-private": (f"{base}/to-private", "fetch_refused"),
            "redirect-to-file": (f"{base}/to-file", "fetch_refused"),
            "redirect-to-gopher": (f"{base}/to-gopher", "fetch_refused"),
            "redirect-to-127.0.0.2": (f"{base}/to-other-loopback", "fetch_refused"),
            "redirect-to-::1": (f"{base}/to-v6-loopback", "fetch_refused"),
            "two-hops-then-metadata": (f"{base}/hop1", "fetch_refused"),
            "redirect-to-allowed": (f"{base}/to-allowed", "result"),
            "allowed-direct": (f"{base}/image.jpg", "result"),
            "metadata-despite-allowed": ("http://169.254.169.254/latest/meta-data/", "fetch_refused"),
        }
        runs = [
            ({name: (url, "fetch_refused") for name, url in refused_direct.items()}, ""),
            (with_allowed, "127.0.0.1/32"),
        ]
        for cases, allowed in runs:
            topics = make_topics(1, results=1, dlq=1)
            names = list(cases)
            produce_records(
                kafka_bootstrap, topics.input, [Record(event_value(n, cases[n][0]), n.encode()) for n in names]
            )
            env = settings_env(
                kafka_bootstrap,
                handle.base_url,
                topics,
                image_mode="fetch",
                fetch_allowed_networks=allowed,
                max_attempts=1,
                fetch_timeout_s=3,
            )
            worker = ThreadWorker(env).start()
            collector = OutputReader(kafka_bootstrap, topics)
            try:
                want = len(names)
                collector.wait_for(lambda c, n=want: len(c.outputs) >= n, 60, "an output per fetch case")
            finally:
                assert worker.stop() == 0
                collector.close()
            got = {o.event_id: o.code for o in collector.outputs}
            assert got == {n: cases[n][1] for n in names}
            for o in collector.dead_letters():
                assert o.doc["error"]["class"] == "permanent", o.doc["error"]
    # Every Python connect went to loopback (the tripwire asserts it), and none to a refused address.
    refused_ips = {"169.254.169.254", "10.1.2.3", "127.0.0.2", "::1", "0.0.0.0", "::ffff:127.0.0.1"}
    assert not refused_ips & set(tripwire.connects), tripwire.connects


def test_dns_rebinding_through_a_redirect_is_refused(tripwire: Tripwire) -> None:
    """A name that first resolves to an allowed address, then (on the redirect) to the metadata address."""
    answers = {"rebind.test": [["127.0.0.1"], ["169.254.169.254"]], "mixed.test": [["127.0.0.1", "10.0.0.7"]]}
    served: dict[str, int] = {}

    def resolver(host: str, port: int) -> list[str]:
        seq = answers[host]
        n = served.get(host, 0)
        served[host] = n + 1
        return list(seq[min(n, len(seq) - 1)])

    with redirect_server({"/start": "/again"}, b"\xff\xd8\xff" + b"0" * 100) as srv:
        srv.routes["/start"] = f"http://rebind.test:{srv.server_port}/again"
        with ImageFetcher(FetchOptions(allowed_networks=("127.0.0.1/32",)), resolver=resolver) as fetcher:
            with pytest.raises(ApiError) as first:
                fetcher.fetch(f"http://rebind.test:{srv.server_port}/start")
            assert first.value.code == "fetch_refused" and "169.254.169.254" in first.value.message
            with pytest.raises(ApiError) as mixed:
                fetcher.fetch(f"http://mixed.test:{srv.server_port}/image.jpg")
            assert mixed.value.code == "fetch_refused" and "10.0.0.7" in mixed.value.message
    assert served["rebind.test"] == 2  # resolved again on the redirect, and refused before connecting
    assert "169.254.169.254" not in tripwire.connects and "10.0.0.7" not in tripwire.connects


# --- credentials -----------------------------------------------------------------------------------------------


def _forms(secret: str) -> list[str]:
    """The secret, and the middle of its base64 form at each of the three alignments (catches a logged header)."""
    forms = [secret]
    raw = secret.encode()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        forms.append(encoded[4 : 4 * ((shift + len(raw)) // 3) - 4])
    return [f for f in forms if len(f) >= 12]


def _leaks(text: str | bytes, secrets: list[str]) -> list[str]:
    blob = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return [f for s in secrets for f in _forms(s) if f in blob]


def test_the_leak_detector_sees_plain_and_base64_forms() -> None:
    header = sign(APPID, SECRET_ID, SECRET_KEY, now=1, lifetime=60)  # carries k=<SecretId> inside base64
    assert _leaks(f"Authorization: {header}", [SECRET_ID])
    for shift in range(3):
        assert _leaks(base64.b64encode(b"x" * shift + SECRET_KEY.encode()), [SECRET_KEY])
    assert _leaks(f"key={SECRET_KEY}", [SECRET_KEY]) and not _leaks("key=***", [SECRET_KEY])


@pytest.mark.broker
def test_credentials_never_reach_logs_metrics_or_records(
    kafka_bootstrap: str, stack: tuple[EmulatorHandle, Scenario], make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    handle, sc = stack
    urls = _urls(sc)
    wrong_key = "WRONG-reliability-key-9876543210zyxw"
    wrong_id = "AKIDwrongSecretIdNotKnownToTheService0"
    secrets = [SECRET_ID, SECRET_KEY, wrong_key, wrong_id]
    findings: dict[str, list[str]] = {}

    def run(label: str, secret_id: str, secret_key: str, expect_exit: int) -> None:
        topics = make_topics(2, results=1, dlq=1)
        values = [event_value(f"{label}-{i}", urls[i % len(urls)]) for i in range(6)]
        values += [b"not json", event_value(f"{label}-missing", sc.images_url + "nope.jpg")]
        produce_records(kafka_bootstrap, topics.input, [Record(v) for v in values])
        port = free_port()
        env = settings_env(
            kafka_bootstrap,
            handle.base_url,
            topics,
            appid=APPID,
            secret_id=secret_id,
            secret_key=secret_key,
            log_level="DEBUG",
            log_format="json",
            metrics_port=port,
            metrics_host="127.0.0.1",
        )
        worker = WorkerProcess(env, log_path=tmp_path / f"{label}.log")
        collector = OutputReader(kafka_bootstrap, topics)
        try:
            if expect_exit == 0:
                collector.wait_for(lambda c: len(c.outputs) >= len(values), 60, f"{label}: every output")
                wait_until(lambda: http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200, 10, what="/metrics")
                findings[f"{label} /metrics"] = _leaks(http_get(f"http://127.0.0.1:{port}/metrics")[1], secrets)
                findings[f"{label} /readyz"] = _leaks(http_get(f"http://127.0.0.1:{port}/readyz")[1], secrets)
                code = worker.terminate(60)
            else:
                code = worker.wait(60)
        finally:
            worker.stop()
        collector.drain()
        collector.close()
        log = worker.log_path.read_text(errors="replace")
        assert code == expect_exit, log[-2000:]
        if expect_exit:
            assert "MDW_SECRET" in log, log[-1000:]  # the message names the setting, not its value
            # Only the record refused before any call may have its dead letter; nothing reached the API's verdict.
            assert {o.code for o in collector.outputs} <= {"invalid_json"}, collector.summary()
        findings[f"{label} log"] = _leaks(log, secrets)
        for o in collector.outputs:
            blob = orjson.dumps(o.doc) + (o.key or b"") + b"".join((v or b"") + n.encode() for n, v in o.headers)
            findings.setdefault(f"{label} records", []).extend(_leaks(blob, secrets))
        assert collector.dead_letters() or expect_exit, "the good run must write dead letters too"

    run("good", SECRET_ID, SECRET_KEY, 0)
    run("wrong-key", SECRET_ID, wrong_key, 3)
    run("wrong-id", wrong_id, SECRET_KEY, 3)
    check = subprocess.run(
        [sys.executable, "-m", "worker", "check"],
        env={
            "PATH": "/usr/bin:/bin",
            **settings_env(kafka_bootstrap, handle.base_url, Topics("i", "r", "d"), secret_key=SECRET_KEY),
            "MDW_SECRET_ID": SECRET_ID,
        },
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    findings["check output"] = _leaks(check.stdout + check.stderr, secrets)
    leaked = {where: forms for where, forms in findings.items() if forms}
    assert leaked == {}, leaked


# --- TLS ---------------------------------------------------------------------------------------------------------


def _certdata() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("test")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("CPython's test certificates (test/certdata) are not installed")
    data = Path(next(iter(spec.submodule_search_locations))) / "certdata"
    if not (data / "keycert3.pem").exists():
        pytest.skip("CPython's test certificates (test/certdata) are not installed")
    return data


class _ApiHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = orjson.dumps({"code": 0, "message": "OK", "data": {"session_id": "", "results": []}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def https_api(certfile: Path) -> Iterator[int]:
    with serving(loopback_server(_ApiHandler), certfile) as server:
        yield int(server.server_address[1])


@pytest.mark.parametrize("certificate", ["keycert.pem", "keycert3.pem"], ids=["self-signed", "unknown-ca"])
def test_tls_verification_is_on_by_default(certificate: str) -> None:
    data = _certdata()
    assert config.load(environ={}).tls_verify is True
    with https_api(data / certificate) as port:
        url = f"https://localhost:{port}"
        with MultidentifyClient(ClientOptions(appid="1", secret_id="id", secret_key="key", base_url=url)) as client:
            with pytest.raises(ApiError) as failed:
                client.multidentify_url("http://127.0.0.1:9/x.jpg", ["demo"])
            assert failed.value.code == "connection"
            assert "CERTIFICATE_VERIFY_FAILED" in failed.value.message
        # Control: the same server passes with its CA (or the self-signed cert itself) as the trust anchor.
        anchor = data / ("pycacert.pem" if certificate == "keycert3.pem" else certificate)
        trusted = ClientOptions(appid="1", secret_id="id", secret_key="key", base_url=url, verify=str(anchor))
        with MultidentifyClient(trusted) as ok:
            assert ok.multidentify_url("http://127.0.0.1:9/x.jpg", ["demo"]).faces == ()


# --- signatures at the emulator ------------------------------------------------------------------------------------


def _post(base_url: str, header: str | None, appid: str = DEV_ACCOUNT.appid) -> int:
    body = orjson.dumps({"appid": appid, "group_id": "demo", "url": "http://127.0.0.1:9/x.jpg"})
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Authorization"] = header
    with requests.Session() as session:
        session.trust_env = False
        answer = session.post(base_url + "/face/multidentify", data=body, headers=headers, timeout=10)
    assert answer.status_code == 200
    return int(orjson.loads(answer.content)["code"])


def _flip(header: str, index: int) -> str:
    raw = bytearray(base64.b64decode(header))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_emulator_rejects_tampered_expired_and_replayed_signatures(stack: tuple[EmulatorHandle, Scenario]) -> None:
    handle, _ = stack
    a = DEV_ACCOUNT
    now = int(time.time())
    good = sign(a.appid, a.secret_id, a.secret_key, now=now, lifetime=600)
    # r= is the 6th field: flip a bit of one of its digits (stays ASCII, still parses).
    plain = base64.b64decode(good)[20:]
    r_digit = 20 + plain.index(b"&r=") + 3
    cases = {
        "tampered digest": (_flip(good, 0), 14),
        "tampered plain text": (_flip(good, r_digit), 14),
        "expired": (sign(a.appid, a.secret_id, a.secret_key, now=now - 7200, lifetime=3600), 9),
        "signed with another key": (sign(a.appid, a.secret_id, "not-the-key", now=now, lifetime=600), 14),
        "unknown appid": (sign("1999999999", a.secret_id, a.secret_key, now=now, lifetime=600), 10),
        "unknown secret id": (sign(a.appid, "AKIDnobody", a.secret_key, now=now, lifetime=600), 11),
        "another appid's secret id": (sign(a.appid, SECRET_ID, SECRET_KEY, now=now, lifetime=600), 12),
        "not base64": ("%%%not-base64%%%", 5),
        "missing": (None, 4),
    }
    got = {
        name: _post(handle.base_url, header, appid="1999999999" if name == "unknown appid" else a.appid)
        for name, (header, _) in cases.items()
    }
    assert got == {name: code for name, (_, code) in cases.items()}
    assert _post(handle.base_url, good) not in (4, 5, 9, 13, 14)  # control: the untouched header passes
    once = sign(a.appid, a.secret_id, a.secret_key, now=now, lifetime=0)  # e=0: single use
    assert _post(handle.base_url, once) not in (4, 5, 9, 13, 14)
    assert _post(handle.base_url, once) == 13
