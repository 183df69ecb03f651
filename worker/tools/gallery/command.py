"""``multidentify-worker gallery``: list, show, enrol and delete the persons the worker identifies.

Uses the worker's own configuration (flags, ``MDW_*`` environment, ``--config`` file; ``api`` chooses v1 or IAI)
and its clients, and the worker's retry policy for transient failures. Every subcommand prints one JSON document
on stdout with ``--json``; otherwise text for people, and a progress bar on stderr when stderr is a terminal.

Exit codes (:class:`GalleryExit`)::

    0  done: everything enrolled, skipped or deleted as asked
    1  something was refused: a photo (the summary lists each with its code), or a person that does not exist
    2  invalid configuration, usage or source (the message names the setting, the file and line), or another run
       holds the ledger (``enrol``: one run per ledger, see :meth:`worker.tools.gallery.ledger.Writer.lock`)
    3  the API refused the configuration or credentials (the message names the setting to check)
    4  calls failed on transient errors (rate limit, timeouts) after the retry policy: run it again later

Precedence: 3, then 4, then 1 (a run with refused photos and failed calls exits 4: a rerun is worth it).
"""

from __future__ import annotations

import argparse
import enum
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from worker import config
from worker.api.errors import ApiError, ErrorClass, config_error_reason
from worker.tools.gallery import ledger as ledger_mod
from worker.tools.gallery.backends import PERSON_MISSING, Backend, IaiBackend, V1Backend
from worker.tools.gallery.enrol import MAX_WORKERS, Aborted, Outcome, execute, load_photos
from worker.tools.gallery.plan import PersonTask, Plan, plan_enrolment
from worker.tools.gallery.sources import Entry, SourceError, read_source

STATUSES = ("enrolled", "skipped", "refused", "failed", "planned")


class GalleryExit(enum.IntEnum):
    OK = 0
    REFUSED = 1
    INVALID = 2
    CONFIG_REFUSED = 3
    UNAVAILABLE = 4


class _Usage(Exception):
    """A usage or configuration problem found after parsing: printed, exit 2 (``code``: the JSON error's)."""

    def __init__(self, message: str, code: str = "invalid_usage") -> None:
        super().__init__(message)
        self.code = code


# -- arguments --------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    config.add_flags(common, groups=["api"])
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout (no progress bar)")
    sub = parser.add_subparsers(dest="gallery_command", required=True, metavar="SUBCOMMAND")

    sub.add_parser("groups", parents=[common], help="list the groups of the account")

    persons = sub.add_parser("persons", parents=[common], help="list the persons of a group")
    persons.add_argument("group")
    persons.add_argument(
        "--details", action="store_true", help="v1: also read each person's name and faces (one call per person)"
    )

    show = sub.add_parser("show", parents=[common], help="one person: name, groups, face ids")
    show.add_argument("person_id")

    enrol = sub.add_parser(
        "enrol",
        parents=[common],
        help="create the persons of a folder or manifest in a group and add their photos (idempotent)",
    )
    enrol.add_argument("group")
    enrol.add_argument("source", type=Path, help="a folder (one sub-folder per person) or a .csv/.jsonl manifest")
    _add_write_flags(enrol)
    enrol.add_argument("--create-group", action="store_true", help="create the group when it does not exist")
    enrol.add_argument(
        "--ledger",
        type=Path,
        help="the ledger of enrolled photos (default: SOURCE/.gallery-ledger.jsonl, or MANIFEST.ledger.jsonl)",
    )

    add = sub.add_parser("add-faces", parents=[common], help="add photos (paths or URLs) to an existing person")
    add.add_argument("person_id")
    add.add_argument("photos", nargs="+", metavar="PHOTO")
    _add_write_flags(add)

    delete = sub.add_parser("delete", parents=[common], help="delete persons (and their faces) from every group")
    delete.add_argument("person_ids", nargs="+", metavar="PERSON_ID")
    delete.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    delete.add_argument("--yes", action="store_true", help="do not ask (asked only when stdin is a terminal)")
    delete.add_argument("--missing-ok", action="store_true", help="a person that does not exist is not an error")


def _add_write_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="say what would be done; call no write API")
    parser.add_argument(
        "--workers", type=int, default=4, help=f"persons enrolled at once (1 to {MAX_WORKERS}, default 4)"
    )
    parser.add_argument(
        "--single-face",
        action="store_true",
        help="refuse a photo with more than one face before enrolling it (api iai: one DetectFace call per photo)",
    )


# -- running ----------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    try:
        settings = config.load(overrides=config.overrides_from_args(args), config_file=args.config_file)
        _check_credentials(settings)
        backend = make_backend(settings)
    except (config.ConfigError, _Usage, ValueError) as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        _emit(args, {"error": {"code": "invalid_configuration", "message": str(exc)}})
        return GalleryExit.INVALID
    try:
        command: Callable[[argparse.Namespace, Backend, config.Settings], int] = _COMMANDS[args.gallery_command]
        return command(args, backend, settings)
    except _Usage as exc:
        print(f"gallery: {exc}", file=sys.stderr)
        _emit(args, {"error": {"code": exc.code, "message": str(exc)}})
        return GalleryExit.INVALID
    except Aborted as exc:
        return _config_refused(args, exc.error)
    except ApiError as err:
        if err.error_class is ErrorClass.CONFIG:
            return _config_refused(args, err)
        print(f"gallery: the API call failed: {err}", file=sys.stderr)
        _emit(args, {"error": {"code": err.code, "message": err.message, "class": str(err.error_class)}})
        return GalleryExit.UNAVAILABLE if err.transient else GalleryExit.REFUSED
    finally:
        backend.close()


def _config_refused(args: argparse.Namespace, err: ApiError) -> int:
    reason = config_error_reason(err)
    print(f"gallery: {reason}", file=sys.stderr)
    _emit(args, {"error": {"code": err.code, "message": err.message, "class": "config", "reason": reason}})
    return GalleryExit.CONFIG_REFUSED


def _check_credentials(settings: config.Settings) -> None:
    needed = ["secret_id", "secret_key"] + (["appid"] if settings.api == "v1" else [])
    missing = [n for n in needed if not getattr(settings, n)]
    if missing:
        names = ", ".join(f"{n} ({config.BY_NAME[n].env})" for n in missing)
        raise _Usage(f"the gallery needs {names}")


def make_backend(settings: config.Settings) -> Backend:
    """The backend of ``settings.api``, with the worker's clients and retry policy (built as `run` builds them)."""
    from worker.api.client import MultidentifyClient
    from worker.api.iai_client import IaiClient
    from worker.runtime.app import client_options, iai_options, retry_policy

    policy = retry_policy(settings)
    if settings.api == "iai":
        return IaiBackend(
            IaiClient(iai_options(settings)), policy, endpoint=settings.iai_endpoint, region=settings.iai_region
        )
    return V1Backend(
        MultidentifyClient(client_options(settings)), policy, endpoint=settings.api_base_url, appid=settings.appid
    )


def _emit(args: argparse.Namespace, document: dict[str, Any]) -> None:
    if args.json:
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def _cmd_groups(args: argparse.Namespace, backend: Backend, settings: config.Settings) -> int:
    groups = backend.groups()
    if args.json:
        _emit(
            args, {"api": backend.api, "groups": [{"group_id": g.group_id, "group_name": g.group_name} for g in groups]}
        )
    else:
        for g in groups:
            print(g.group_id if g.group_name in (None, g.group_id) else f"{g.group_id}\t{g.group_name}")
        print(f"{len(groups)} groups", file=sys.stderr)
    return GalleryExit.OK


def _cmd_persons(args: argparse.Namespace, backend: Backend, settings: config.Settings) -> int:
    rows: list[dict[str, Any]]
    if backend.api == "v1" and not args.details:
        rows = [{"person_id": pid, "person_name": None, "faces": None} for pid in backend.person_ids(args.group)]
    else:
        rows = [
            {
                "person_id": p.person_id,
                "person_name": p.person_name,
                "faces": None if p.face_ids is None else len(p.face_ids),
            }
            for p in backend.persons(args.group, None).values()
        ]
    if args.json:
        _emit(args, {"api": backend.api, "group": args.group, "persons": rows})
    else:
        for row in rows:
            extra = [str(row[k]) for k in ("person_name", "faces") if row[k] is not None]
            print("\t".join([str(row["person_id"]), *extra]))
        print(f"{len(rows)} persons in {args.group}", file=sys.stderr)
    return GalleryExit.OK


def _cmd_show(args: argparse.Namespace, backend: Backend, settings: config.Settings) -> int:
    try:
        person = backend.person(args.person_id)
    except ApiError as err:
        if err.code not in PERSON_MISSING:
            raise
        print(f"gallery: no person {args.person_id!r} ({err.code})", file=sys.stderr)
        _emit(args, {"api": backend.api, "person": None, "error": {"code": err.code, "message": err.message}})
        return GalleryExit.REFUSED
    doc = {
        "person_id": person.person_id,
        "person_name": person.person_name,
        "group_ids": list(person.group_ids or ()),
        "face_ids": list(person.face_ids or ()),
    }
    if person.tag is not None:
        doc["tag"] = person.tag
    if args.json:
        _emit(args, {"api": backend.api, "person": doc})
    else:
        for name, value in doc.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            print(f"{name:<12} {shown if shown not in (None, '') else '-'}")
    return GalleryExit.OK


def _cmd_delete(args: argparse.Namespace, backend: Backend, settings: config.Settings) -> int:
    ids = list(dict.fromkeys(args.person_ids))
    if not args.dry_run and not args.yes and not args.json and sys.stdin.isatty():
        answer = input(f"delete {len(ids)} person(s) and all their faces from every group: {', '.join(ids)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return GalleryExit.OK
    rows = []
    for pid in ids:
        try:
            if args.dry_run:
                backend.person(pid)  # a read: does the person exist?
            else:
                backend.delete_person(pid)
            rows.append({"person_id": pid, "status": "would_delete" if args.dry_run else "deleted"})
        except ApiError as err:
            if err.code not in PERSON_MISSING:
                raise
            rows.append({"person_id": pid, "status": "not_found", "code": err.code})
    missing = sum(1 for r in rows if r["status"] == "not_found")
    code = GalleryExit.REFUSED if missing and not args.missing_ok else GalleryExit.OK
    if args.json:
        _emit(args, {"api": backend.api, "dry_run": args.dry_run, "persons": rows, "exit_code": int(code)})
    else:
        for row in rows:
            print(f"{row['person_id']}\t{row['status']}")
    return code


def _cmd_enrol(args: argparse.Namespace, backend: Backend, settings: config.Settings) -> int:
    _check_write_flags(args, backend)
    try:
        entries = read_source(args.source)
    except SourceError as exc:
        raise _Usage(str(exc)) from None
    ledger_path: Path = args.ledger or ledger_mod.default_path(args.source)
    target = ledger_mod.target_of(backend.api, backend.target_endpoint, backend.target_account)
    group_known = any(g.group_id == args.group for g in backend.groups())
    if not group_known and not args.create_group:
        raise _Usage(f"group {args.group!r} does not exist (add --create-group to create it)")
    photos = load_photos(entries, backend)
    writer = None if args.dry_run else ledger_mod.Writer(ledger_path, target)
    try:
        if writer is not None:
            writer.lock()  # before reading the ledger: a second run would plan the same photos
        names = {e.person_id for e in entries if e.group in (None, args.group)}
        existing = backend.persons(args.group, names) if group_known else {}
        state = ledger_mod.read(ledger_path, target)
        if state.unreadable:
            # Usually the fragment of a run killed mid-record; anything more is damage the operator should see.
            print(
                f"gallery: the ledger {ledger_path} has {state.unreadable} unreadable line(s), the first at line "
                f"{state.first_unreadable}: skipped (a run killed mid-record leaves one)",
                file=sys.stderr,
            )
        plan = plan_enrolment(
            args.group, photos, {pid: row.face_ids or () for pid, row in existing.items()}, state.faces, state.pending
        )
        if not group_known and not args.dry_run and plan.to_send:
            backend.create_group(args.group)
        outcomes = _execute(args, plan, backend, writer, workers=args.workers)
    except ledger_mod.LedgerLocked as exc:
        raise _Usage(str(exc), "ledger_locked") from None
    finally:
        if writer is not None:
            writer.close()
    extra = {
        "group": args.group,
        "group_created": not group_known and not args.dry_run and plan.to_send > 0,
        "ledger": str(ledger_path),
        "ledger_unreadable": state.unreadable,
        "left_out": plan.left_out,
    }
    return _report(args, backend, outcomes, extra)


def _cmd_add_faces(args: argparse.Namespace, backend: Backend, settings: config.Settings) -> int:
    _check_write_flags(args, backend)
    entries = [
        Entry(args.person_id, None, None if _is_url(p) else Path(p), p if _is_url(p) else None, p) for p in args.photos
    ]
    try:
        person = backend.person(args.person_id)
    except ApiError as err:
        if err.code not in PERSON_MISSING:
            raise
        print(f"gallery: no person {args.person_id!r} ({err.code}); `gallery enrol` creates persons", file=sys.stderr)
        _emit(args, {"api": backend.api, "error": {"code": err.code, "message": err.message}})
        return GalleryExit.REFUSED
    photos = load_photos(entries, backend)
    send = tuple(p for p in photos if p.refusal is None)
    refused = tuple(p for p in photos if p.refusal is not None)
    task = PersonTask(args.person_id, None, create=False, send=send, refused=refused, faces=person.face_ids or ())
    plan = Plan(group="", tasks=(task,))
    outcomes = _execute(args, plan, backend, None, workers=1)
    return _report(args, backend, outcomes, {"person_id": args.person_id})


_COMMANDS: dict[str, Callable[[argparse.Namespace, Backend, config.Settings], int]] = {
    "groups": _cmd_groups,
    "persons": _cmd_persons,
    "show": _cmd_show,
    "enrol": _cmd_enrol,
    "add-faces": _cmd_add_faces,
    "delete": _cmd_delete,
}


def _check_write_flags(args: argparse.Namespace, backend: Backend) -> None:
    if not 1 <= args.workers <= MAX_WORKERS:
        raise _Usage(f"--workers must be from 1 to {MAX_WORKERS}, not {args.workers}")
    if args.single_face and not backend.can_count_faces():
        raise _Usage(f"--single-face needs api iai (DetectFace); api {backend.api} has no detection call here")


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def _execute(
    args: argparse.Namespace, plan: Plan, backend: Backend, writer: ledger_mod.Writer | None, *, workers: int
) -> list[Outcome]:
    """The plan carried out, with a progress bar on stderr only when stderr is a terminal and the output not JSON."""
    from tqdm import tqdm

    total = sum(len(t.send) + len(t.skipped) + len(t.refused) for t in plan.tasks)
    lock = threading.Lock()
    quiet = args.json or not sys.stderr.isatty()
    with tqdm(total=total, unit="photo", file=sys.stderr, disable=quiet, leave=False) as bar:

        def on_photo(outcome: Outcome) -> None:
            with lock:  # tqdm's counter is updated from the enrolment threads
                bar.update(1)

        return execute(
            plan,
            backend,
            writer=writer,
            dry_run=args.dry_run,
            workers=workers,
            on_photo=on_photo,
            single_face=args.single_face,
        )


# -- the summary ------------------------------------------------------------------------------------------------------


def summarize(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """Counts per status (every status present, 0 when none) and the persons created."""
    counts = Counter(o.status for o in outcomes)
    summary = {status: counts.get(status, 0) for status in STATUSES}
    summary["persons_created"] = sum(1 for o in outcomes if o.created_person)
    return summary


def exit_code(summary: dict[str, int]) -> GalleryExit:
    """4 when calls failed (a rerun may help), else 1 when photos were refused, else 0."""
    if summary["failed"]:
        return GalleryExit.UNAVAILABLE
    if summary["refused"]:
        return GalleryExit.REFUSED
    return GalleryExit.OK


def _report(args: argparse.Namespace, backend: Backend, outcomes: list[Outcome], extra: dict[str, Any]) -> int:
    summary = summarize(outcomes)
    code = exit_code(summary)
    if args.json:
        document = {
            "api": backend.api,
            "dry_run": bool(args.dry_run),
            **extra,
            "summary": summary,
            "photos": [o.to_json() for o in outcomes],
            "exit_code": int(code),
        }
        _emit(args, document)
        return code
    out = sys.stdout
    if args.dry_run:
        for o in outcomes:
            if o.status == "planned":
                print(f"would {o.reason}: {o.person_id}  {o.where}", file=out)
    where = f"group {extra['group']}" if "group" in extra else f"person {extra.get('person_id')}"
    verb = "would enrol" if args.dry_run else "enrolled"
    count = summary["planned"] if args.dry_run else summary["enrolled"]
    print(
        f"{where} (api {backend.api}): {verb} {count}, skipped {summary['skipped']}, refused {summary['refused']}, "
        f"failed {summary['failed']}; persons created {summary['persons_created']}",
        file=out,
    )
    problems = [o for o in outcomes if o.status in ("refused", "failed")]
    if problems:
        print(f"{'refused' if not summary['failed'] else 'refused or failed'}:", file=out)
        width = max(len(o.where) for o in problems)
        for o in problems:
            print(f"  {o.where.ljust(width)}  {o.status:<7}  {o.code}  {o.meaning}", file=out)
    return code
