"""What a write's failure proves, the ledger's states and lock, the plan's reconciliation of unknown outcomes, and the
enrolment's handling of them — pure or with a scripted backend, plus the failure classes as the worker's real
clients raise them (a refused port, the emulator's late answer and dropped connection)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import urllib3

from worker.api.client import ClientOptions, MultidentifyClient
from worker.api.codes import ErrorClass, Origin
from worker.api.errors import ApiError
from worker.core.outcomes import RetryPolicy
from worker.emulator import DEV_ACCOUNT, EmulatorHandle, synth
from worker.tools.gallery import ledger as ledger_mod
from worker.tools.gallery.backends import (
    GroupRow,
    PersonRow,
    PhotoData,
    V1Backend,
    _Retrying,
    not_applied,
    outcome_unknown,
)
from worker.tools.gallery.enrol import HELD, execute
from worker.tools.gallery.plan import (
    AMBIGUOUS_OUTCOME,
    NEAR_DUPLICATE,
    RECOVERED,
    Photo,
    photo_key,
    plan_enrolment,
    unclaimed_faces,
)
from worker.tools.gallery.sources import Entry

# -- what a failure proves --------------------------------------------------------------------------------------------


def caused(error: ApiError, cause: BaseException) -> ApiError:
    error.__cause__ = cause
    return error


def test_only_failures_that_prove_nothing_was_done_are_safe_to_send_again() -> None:
    refused_port = requests.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.NewConnectionError(None, "refused"))  # type: ignore[arg-type]
    )
    reset = requests.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError()))
    safe = [
        ApiError.from_service(15, "rate limited"),  # refused at the door: nothing was done
        ApiError.from_service(107, "auth service unavailable"),  # refused before the request was looked at
        ApiError.from_iai("RequestLimitExceeded", ""),
        ApiError.from_iai("RequestLimitExceeded.UinLimitExceeded", ""),
        ApiError.from_iai("FailedOperation.RequestLimitExceeded", ""),
        ApiError.from_iai("FailedOperation.ConflictOperation", ""),  # another write of the person is under way
        ApiError.from_iai("FailedOperation.CreateFaceConcurrent", ""),
        ApiError.from_iai("ResourceInUse", ""),
        ApiError.local("http_429", "slow down", http_status=429),
        caused(ApiError.local("timeout", "connect"), requests.ConnectTimeout()),
        caused(ApiError.local("connection", "refused"), refused_port),
    ]
    unknown = [
        # The service answered, but with a fault of its own: the write may have landed before it (a backend
        # timeout is the classic case: the face was stored, the answer lost).
        ApiError.from_service(213, "internal error"),
        ApiError.from_service(203, "internal processing timeout"),
        ApiError.from_service(-1200, "feature storage error"),
        ApiError.from_service(99999, "a code the registry does not list"),
        ApiError.from_iai("InternalError", ""),
        ApiError.from_iai("FailedOperation.RequestTimeout", ""),
        ApiError.from_iai("FailedOperation.RpcFail", ""),
        ApiError.from_iai("FailedOperation.UnKnowError", ""),
        ApiError.from_iai("FailedOperation.ServerError", ""),
        ApiError.from_iai("ServiceUnavailable", ""),
        ApiError.from_iai("FailedOperation.SomethingNew", ""),
        # A proxy answers 503 after forwarding the request as well (Envoy's "upstream connect error or
        # disconnect/reset before headers").
        ApiError.local("http_503", "unavailable", http_status=503),
        caused(ApiError.local("timeout", "read"), requests.ReadTimeout()),
        ApiError.local("timeout", "the body did not arrive in time"),  # raised while reading the answer: no cause
        caused(ApiError.local("connection", "reset"), reset),
        ApiError.local("http_502", "bad gateway", http_status=502),
        ApiError.local("http_504", "gateway timeout", http_status=504),
        ApiError.local("http_500", "an HTML 500", http_status=500),
        ApiError.local("bad_response", "not an envelope"),
    ]
    assert [not_applied(e) for e in safe] == [True] * len(safe)
    assert [outcome_unknown(e) for e in unknown] == [True] * len(unknown)
    assert [not_applied(e) for e in unknown] == [False] * len(unknown)
    refusal = ApiError.from_service(-1101, "no face")
    assert not not_applied(refusal) and not outcome_unknown(refusal)  # a refusal is neither: it is final


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def v1_backend(base_url: str, *, attempts: int = 3, read_timeout: float = 10.0) -> V1Backend:
    options = ClientOptions(
        appid=DEV_ACCOUNT.appid,
        secret_id=DEV_ACCOUNT.secret_id,
        secret_key=DEV_ACCOUNT.secret_key,
        base_url=base_url,
        connect_timeout=2.0,
        read_timeout=read_timeout,
    )
    policy = RetryPolicy.instant(max_attempts=attempts)
    return V1Backend(MultidentifyClient(options), policy, endpoint=base_url, appid=DEV_ACCOUNT.appid)


def test_the_clients_failures_are_classified_as_they_really_are(emu: EmulatorHandle) -> None:
    """A refused port is safe to retry (and retried); a read timeout and a connection dropped after sending are not
    (sent once, raised at once)."""
    image = synth.render_scene([("zed", (40, 40, 120, 120))], (200, 200))
    refused = v1_backend(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ApiError) as err:
            refused.write(lambda: refused._client.newperson("zed", ["g"], image=image))
        assert err.value.code == "connection" and not_applied(err.value)
    finally:
        refused.close()

    emu.reset(gallery=True)
    backend = v1_backend(emu.base_url, read_timeout=0.5)
    try:
        emu.admin({"late_answer_rate": 1.0, "late_answer_ms": 2000, "actions": ["newperson"]})
        with pytest.raises(ApiError) as late:
            backend.create_person("g", "zed", None, PhotoData(data=image))
        assert late.value.code == "timeout" and outcome_unknown(late.value)
        emu.admin({"drop_rate": 1.0, "actions": ["addface"]})
        with pytest.raises(ApiError) as dropped:
            backend.add_face(
                "zed", PhotoData(data=synth.render_scene([("zed", (40, 40, 120, 120))], (200, 200), seed=2))
            )
        assert dropped.value.code == "connection" and outcome_unknown(dropped.value)
        requests_seen = emu.stats()["requests"]
        assert requests_seen["/face/newperson"] == 1 and requests_seen["/face/addface"] == 1  # neither sent again
        emu.admin({"error_rates": {"15": 1.0}, "actions": ["addface"]})
        with pytest.raises(ApiError) as limited:
            backend.add_face("zed", PhotoData(data=image))
        assert limited.value.code == "15" and emu.stats()["requests"]["/face/addface"] == 1 + 3  # retried: safe
    finally:
        backend.close()
        emu.reset(gallery=True)


# -- the ledger -------------------------------------------------------------------------------------------------------


def test_the_last_record_of_a_photo_decides_its_state(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    writer = ledger_mod.Writer(path, "t")
    writer.record(group="g", person_id="a", key="k1", face_id="f1", source="a/1")  # the format before pending existed
    writer.pending(group="g", person_id="a", key="k2", faces_before=["f1"], source="a/2")  # open: outcome unknown
    writer.pending(group="g", person_id="a", key="k3", faces_before=["f1"], source="a/3")
    writer.record(group="g", person_id="a", key="k3", face_id="f3", source="a/3")  # answered
    writer.pending(group="g", person_id="a", key="k4", faces_before=["f1", "f3"], source="a/4")
    writer.not_added(group="g", person_id="a", key="k4", code="-1101", source="a/4")  # refused
    writer.pending(group="g", person_id="a", key="k1", faces_before=[], source="a/1")  # f1 was deleted: sent again
    writer.close()
    with path.open("ab") as file:
        file.write(b'{"target": "t", "person_id": "a", "key": "k9", "fa')  # a torn last line
    other = ledger_mod.Writer(path, "other-account")
    other.pending(group="g", person_id="a", key="k3", faces_before=[], source="a/3")
    other.close()
    state = ledger_mod.read(path, "t")
    assert state.faces == {("a", "k3"): "f3"}
    assert state.pending == {("a", "k2"): ("f1",), ("a", "k1"): ()}


def test_one_run_at_a_time_holds_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.jsonl"
    first = ledger_mod.Writer(path, "t")
    first.lock()
    second = ledger_mod.Writer(path, "t")
    with pytest.raises(ledger_mod.LedgerLocked) as locked:
        second.lock()
    assert str(path) in str(locked.value) and "another run" in str(locked.value)
    first.close()
    second.lock()  # released with the first run's close
    second.record(group="g", person_id="a", key="k", face_id="f", source="a/1")
    second.close()
    assert ledger_mod.read(path, "t").faces == {("a", "k"): "f"}


def test_a_torn_last_line_does_not_swallow_the_next_run_s_first_record(tmp_path: Path) -> None:
    """A run killed mid-line leaves a fragment without its newline: the next run's first record (its pending one)
    starts on a line of its own, so a write whose outcome is then unknown is reconciled, not sent again."""
    path = tmp_path / "ledger.jsonl"
    first = ledger_mod.Writer(path, "t")
    first.record(group="g", person_id="a", key="k1", face_id="f1", source="a/1")
    first.close()
    for locked in (True, False):  # the run's lock, and a writer opened by its first record
        with path.open("ab") as file:
            file.write(b'{"target": "t", "person_id": "a", "key": "k2", "fa')  # killed mid-record
        second = ledger_mod.Writer(path, "t")
        if locked:
            second.lock()
        second.pending(group="g", person_id="a", key=f"k{3 + locked}", faces_before=["f1"], source="a/3")
        second.close()
    state = ledger_mod.read(path, "t")
    assert state.faces == {("a", "k1"): "f1"}
    assert state.pending == {("a", "k4"): ("f1",), ("a", "k3"): ("f1",)}
    assert state.unreadable == 2  # the fragments, reported (the command warns), not silently dropped


def test_an_overlong_line_is_skipped_in_bounded_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_mod, "MAX_LINE_BYTES", 400)
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(b"x" * 2000 + b"\n")
    writer = ledger_mod.Writer(path, "t")
    writer.record(group="g", person_id="a", key="k", face_id="f", source="a/1")
    writer.close()
    path.write_bytes(path.read_bytes() + b"y" * 1000)  # and one at the end, without its newline
    state = ledger_mod.read(path, "t")
    assert state.faces == {("a", "k"): "f"} and (state.unreadable, state.first_unreadable) == (2, 1)


def test_every_record_is_read_however_long_the_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No bound on lines: records past it would be forgotten (an enrolled photo looks new, a pending write is sent
    again). The state is one entry per photo of the target, however many lines other targets fill."""
    monkeypatch.setattr(ledger_mod, "MAX_RECORDS", 10, raising=False)  # a line bound, were there one: small
    path = tmp_path / "ledger.jsonl"
    other = ledger_mod.Writer(path, "other-account")
    for n in range(30):
        other.record(group="g", person_id="a", key=f"k{n}", face_id=f"o{n}", source="a/x")
    other.close()
    writer = ledger_mod.Writer(path, "t")
    for n in range(5):  # the same photo over and over: one state entry
        writer.pending(group="g", person_id="a", key="k", faces_before=[f"f{n}"], source="a/1")
    writer.record(group="g", person_id="b", key="k", face_id="fb", source="b/1")
    writer.close()
    state = ledger_mod.read(path, "t")
    assert state.pending == {("a", "k"): ("f4",)} and state.faces == {("b", "k"): "fb"}
    assert state.unreadable == 0


# -- the plan ---------------------------------------------------------------------------------------------------------


def photo(person: str, name: str) -> Photo:
    return Photo(Entry(person, None, Path(f"/src/{person}/{name}"), None, f"{person}/{name}"), photo_key(name.encode()))


def test_unclaimed_faces_are_those_gained_since_and_named_by_no_record() -> None:
    assert unclaimed_faces(["f1", "f2", "f3"], ["f1"], {"f2"}) == ("f3",)
    assert unclaimed_faces(["f1"], ["f1"], ()) == ()
    assert unclaimed_faces(["f2", "f3"], [], ()) == ("f2", "f3")


def test_a_pending_write_is_adopted_sent_again_or_refused_by_what_the_person_gained() -> None:
    one, none, two = photo("a", "1"), photo("b", "1"), photo("c", "1")
    both = photo("a", "2")
    assert both.key is not None and one.key is not None and none.key is not None and two.key is not None
    ledger = {("a", both.key): "fa2"}
    pending: dict[tuple[str, str], tuple[str, ...]] = {
        ("a", one.key): ("fa0",),  # a gained fa1 (fa2 is both's): fa1 is one's
        ("b", none.key): ("fb0",),  # b gained nothing: the write did not take effect
        ("c", two.key): (),  # c holds two faces no record names: which is this photo's?
    }
    existing = {"a": ["fa0", "fa1", "fa2"], "b": ["fb0"], "c": ["fc1", "fc2"]}
    plan = plan_enrolment("g", [one, both, none, two], existing, ledger, pending)
    a, b, c = plan.tasks
    assert [(s.photo, s.reason, s.face_id) for s in a.skipped] == [
        (one, RECOVERED, "fa1"),
        (both, "already enrolled", "fa2"),
    ]
    assert a.send == () and a.faces == ("fa0", "fa1", "fa2")
    assert b.send == (none,) and b.pending == frozenset({none.key}) and not b.create
    assert c.send == () and [p.refusal.code for p in c.refused if p.refusal] == [AMBIGUOUS_OUTCOME]
    # a pending create of a person the group does not hold: not created, so created now
    fresh = plan_enrolment("g", [none], {}, {}, {("b", none.key): ()})
    assert fresh.tasks[0].create and fresh.tasks[0].pending == frozenset({none.key})


# -- the enrolment, with a scripted backend ---------------------------------------------------------------------------


def timeout() -> ApiError:
    return caused(ApiError.local("timeout", "read"), requests.ReadTimeout())


@dataclass
class Scripted:
    """A backend whose writes answer from a script, each an effect (applied or not) and an answer (a face id or an
    error); ``person`` reads what was applied."""

    script: list[tuple[bool, str | ApiError]]
    faces: dict[str, list[str]] = field(default_factory=dict)
    group: str = "g"
    reads_fail: bool = False
    sent: list[str] = field(default_factory=list)
    api: str = "v1"
    target_endpoint: str = "http://emulator"
    target_account: str = "1"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _write(self, person_id: str, what: str) -> str:
        with self._lock:
            applied, answer = self.script.pop(0)
            self.sent.append(what)
            face = f"f{len(self.sent)}"
            if applied:
                self.faces.setdefault(person_id, []).append(face)
        if isinstance(answer, ApiError):
            raise answer
        return face

    def create_person(self, group_id: str, person_id: str, name: str | None, photo: PhotoData) -> str:
        return self._write(person_id, f"create {person_id}")

    def add_face(self, person_id: str, photo: PhotoData) -> str:
        return self._write(person_id, f"add {person_id}")

    def person(self, person_id: str) -> PersonRow:
        if self.reads_fail:
            raise ApiError.local("timeout", "the read failed too")
        if person_id not in self.faces:
            raise ApiError.from_service(-1303, "no such person")
        return PersonRow(person_id, None, tuple(self.faces[person_id]), (self.group,))

    def describe(self, error: ApiError) -> str:
        return error.message

    def call(self, fn: Callable[[], object]) -> object:
        return fn()

    write = call

    def size_refusal(self, size: int) -> ApiError | None:
        return None

    def can_count_faces(self) -> bool:
        return False

    def count_faces(self, photo: PhotoData, at_most: int) -> int:
        raise NotImplementedError

    def groups(self) -> list[GroupRow]:
        return [GroupRow(self.group)]

    def create_group(self, group_id: str) -> None:
        pass

    def person_ids(self, group_id: str) -> list[str]:
        return list(self.faces)

    def persons(self, group_id: str, person_ids: set[str] | None) -> dict[str, PersonRow]:
        return {p: self.person(p) for p in self.faces}

    def delete_person(self, person_id: str) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def photos(tmp_path: Path) -> Iterator[list[Photo]]:
    found = []
    for name in ("1", "2", "3"):
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(name.encode())
        found.append(Photo(Entry("a", None, path, None, f"a/{name}"), photo_key(name.encode())))
    yield found


def run(
    backend: Scripted,
    photos: list[Photo],
    tmp_path: Path,
    pending: dict[tuple[str, str], tuple[str, ...]] | None = None,
) -> tuple[list[tuple[str, str | None, str | None]], ledger_mod.State]:
    path = tmp_path / "ledger.jsonl"
    existing = {p: list(f) for p, f in backend.faces.items()}
    state = ledger_mod.read(path, "t")
    plan = plan_enrolment("g", photos, existing, state.faces, {**state.pending, **(pending or {})})
    writer = ledger_mod.Writer(path, "t")
    try:
        outcomes = execute(plan, backend, writer=writer, workers=1)  # type: ignore[arg-type]
    finally:
        writer.close()
    return [(o.status, o.code, o.reason) for o in outcomes], ledger_mod.read(path, "t")


def test_an_unknown_outcome_found_applied_is_enrolled_and_the_person_carries_on(
    photos: list[Photo], tmp_path: Path
) -> None:
    backend = Scripted([(True, "ok"), (True, timeout()), (True, "ok")])
    outcomes, state = run(backend, photos, tmp_path)
    assert outcomes == [("enrolled", None, None)] * 3
    assert backend.sent == ["create a", "add a", "add a"]  # nothing sent twice
    assert sorted(state.faces.values()) == backend.faces["a"] and state.pending == {}


def test_an_unknown_outcome_not_found_is_failed_and_holds_the_person_s_other_photos(
    photos: list[Photo], tmp_path: Path
) -> None:
    backend = Scripted([(True, "ok"), (False, timeout())])
    outcomes, state = run(backend, photos, tmp_path)
    assert outcomes == [("enrolled", None, None), ("failed", "timeout", None), ("failed", HELD, None)]
    assert backend.sent == ["create a", "add a"]
    assert list(state.pending) == [("a", photos[1].key)]  # the next run re-reads before sending it again

    # It landed late after all: the rerun adopts it, and sends the held photo.
    backend.faces["a"].append("late")
    backend.script = [(True, "ok")]
    outcomes, state = run(backend, photos, tmp_path)
    assert outcomes == [("skipped", None, "already enrolled"), ("skipped", None, RECOVERED), ("enrolled", None, None)]
    assert state.faces[("a", str(photos[1].key))] == "late" and state.pending == {}


def test_an_unknown_outcome_with_an_unreadable_person_stays_unknown(photos: list[Photo], tmp_path: Path) -> None:
    backend = Scripted([(True, timeout())], reads_fail=True)
    outcomes, state = run(backend, photos[:1], tmp_path)
    assert outcomes == [("failed", "timeout", None)] and list(state.pending) == [("a", photos[0].key)]


def test_v1_near_identical_refusal_means_enrolled_only_for_a_pending_photo(photos: list[Photo], tmp_path: Path) -> None:
    near = ApiError.from_service(-1312, "near-identical face")
    backend = Scripted([(False, near), (False, near)], faces={"a": ["f0"]})
    pending = {("a", str(photos[0].key)): ("f0",)}  # an earlier write of 1.jpg whose outcome is unknown
    outcomes, state = run(backend, photos[:2], tmp_path, pending)
    assert outcomes == [("skipped", None, NEAR_DUPLICATE), ("refused", "-1312", None)]
    assert list(state.pending) == [("a", photos[0].key)]  # still open: the next run decides the same way


def test_a_create_answered_person_exists_with_the_person_in_the_group_adds_instead(
    photos: list[Photo], tmp_path: Path
) -> None:
    exists = ApiError.from_service(-1302, "person exists")
    backend = Scripted([(False, exists), (True, "ok")])
    backend.faces["a"] = []  # created meanwhile (no face yet), after the plan found no such person
    path = tmp_path / "ledger.jsonl"
    plan = plan_enrolment("g", photos[:1], {}, {})
    assert plan.tasks[0].create
    writer = ledger_mod.Writer(path, "t")
    outcomes = execute(plan, backend, writer=writer, workers=1)  # type: ignore[arg-type]
    writer.close()
    assert [(o.status, o.created_person) for o in outcomes] == [("enrolled", False)]
    assert backend.sent == ["create a", "add a"]


class RetryingScripted(Scripted):
    """Scripted, with each write going through the backends' own write retry (as V1Backend and IaiBackend do)."""

    def __init__(self, script: list[tuple[bool, str | ApiError]]) -> None:
        super().__init__(script)
        self._retrying = _Retrying(RetryPolicy.instant(max_attempts=3))

    def create_person(self, group_id: str, person_id: str, name: str | None, photo: PhotoData) -> str:
        return self._retrying.write(lambda: self._write(person_id, f"create {person_id}"))

    def add_face(self, person_id: str, photo: PhotoData) -> str:
        return self._retrying.write(lambda: self._write(person_id, f"add {person_id}"))


@pytest.mark.parametrize(
    "fault",
    [
        ApiError.from_iai("InternalError", ""),
        ApiError.from_iai("FailedOperation.RequestTimeout", ""),
        ApiError.from_service(213, "internal error"),
    ],
    ids=lambda e: e.code,
)
def test_a_write_applied_then_answered_with_a_server_fault_is_reconciled_not_sent_again(
    fault: ApiError, photos: list[Photo], tmp_path: Path
) -> None:
    """The face was stored and the service then answered a fault of its own: sent again it would be a second face
    (and the last answer, a fault again, would close the photo ``not_added``: the next run would send it once more)."""
    applied_then_fault = (True, fault)
    backend = RetryingScripted([(True, "ok"), applied_then_fault, applied_then_fault, applied_then_fault])
    outcomes, state = run(backend, photos[:2], tmp_path)
    assert backend.sent == ["create a", "add a"], "a write whose outcome is unknown was sent again"
    assert outcomes == [("enrolled", None, None)] * 2
    assert sorted(state.faces.values()) == sorted(backend.faces["a"]) and state.pending == {}


def test_a_write_refused_as_a_concurrent_operation_is_sent_again(photos: list[Photo], tmp_path: Path) -> None:
    busy = ApiError.from_iai("FailedOperation.ConflictOperation", "")
    backend = RetryingScripted([(True, "ok"), (False, busy), (True, "ok")])
    outcomes, state = run(backend, photos[:2], tmp_path)
    assert backend.sent == ["create a", "add a", "add a"] and outcomes == [("enrolled", None, None)] * 2
    assert len(backend.faces["a"]) == 2 and state.pending == {}


def test_origin_of_a_hand_built_error_does_not_make_it_safe() -> None:
    internal = ApiError("internal_error", ErrorClass.PERMANENT, "a bug", origin=Origin.CLIENT)
    assert not not_applied(internal) and not outcome_unknown(internal)
