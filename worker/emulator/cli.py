"""Command line of the emulator: ``python -m worker.emulator`` and the ``multidentify-worker emulator`` subcommand.

Prints one line ``EMULATOR http://HOST:PORT`` when ready (with ``--engine dlib``: once its processes have
loaded the models) (also written to ``--ready-file``); SIGTERM or
SIGINT stop it cleanly (exit 0). Accounts: ``--account APPID:SECRET_ID:SECRET_KEY`` (repeatable) and/or
``--accounts-file F``; with neither, the development account DEV_ACCOUNT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from worker.emulator.accounts import DEV_ACCOUNT, load_accounts_file, parse_account
from worker.emulator.config import MAX_BODY_BYTES, EmulatorConfig
from worker.emulator.engine import ENGINES
from worker.emulator.runner import BANNER
from worker.emulator.server import Emulator
from worker.emulator.serving import serve_forever


def _json_arg(value: str) -> Any:
    """A JSON text, or ``@path`` to a JSON file."""
    text = Path(value[1:]).read_bytes() if value.startswith("@") else value.encode()
    return orjson.loads(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's flags to ``parser`` (a top-level parser or a subcommand's)."""
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port to bind; 0 = any free port (default 0)")
    parser.add_argument("--ready-file", help="write the 'EMULATOR URL' line to this file once listening")
    parser.add_argument(
        "--account", action="append", default=[], metavar="APPID:SECRET_ID:SECRET_KEY", help="an account (repeatable)"
    )
    parser.add_argument("--accounts-file", help='JSON: [{"appid":…,"secret_id":…,"secret_key":…}, …]')
    parser.add_argument("--db", help="SQLite file for the gallery (default :memory:, lost at exit)")
    parser.add_argument("--latency-ms", type=float, help="fixed latency added to multidentify/identify")
    parser.add_argument("--faults", type=_json_arg, help="fault configuration as JSON or @file (see /__admin/faults)")
    parser.add_argument("--images-dir", help="also serve this directory's files under /images/")
    parser.add_argument(
        "--youtu-http-status", action="store_true", default=None, help="answer code 23 with HTTP 413, 15 with 429"
    )
    parser.add_argument("--max-body-bytes", type=int, help=f"request body limit (default {MAX_BODY_BYTES})")
    parser.add_argument(
        "--body-timeout", type=float, help="seconds a request body may take to arrive; then code 3 (default 30)"
    )
    parser.add_argument("--max-groups", type=int, help="groups per appid (default 5000)")
    parser.add_argument("--max-persons-per-group", type=int, help="persons per group (default 20000)")
    parser.add_argument("--max-faces-per-person", type=int, help="faces per person (default 20)")
    parser.add_argument("--download-timeout", type=float, help="url image download timeout in seconds (default 10)")
    parser.add_argument(
        "--url-cache-ttl", type=float, help="reuse downloaded url images for this many seconds (default 0 = off)"
    )
    parser.add_argument(
        "--iai-shared-gallery",
        action="store_true",
        default=None,
        help="IAI (POST /) works on the v1 gallery of the same AppID (default: its own, as at Tencent)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        help="face engine: synthetic (default; the project's drawn faces) or dlib (real photos; the 'faces' extra)",
    )
    parser.add_argument("--engine-workers", type=int, help="processes of the dlib engine (default 0 = one per core)")
    parser.add_argument("--config", type=_json_arg, help="all options as one JSON object or @file (flags override)")


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    options: dict[str, Any] = dict(args.config or {})
    for flag, key in (
        ("host", "host"),
        ("port", "port"),
        ("db", "db"),
        ("images_dir", "images_dir"),
        ("youtu_http_status", "youtu_http_status"),
        ("max_body_bytes", "max_body_bytes"),
        ("body_timeout", "body_timeout_s"),
        ("download_timeout", "download_timeout_s"),
        ("url_cache_ttl", "url_cache_ttl_s"),
        ("iai_shared_gallery", "iai_shared_gallery"),
        ("engine", "engine"),
        ("engine_workers", "engine_workers"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            options[key] = value
    accounts = [parse_account(spec) for spec in args.account]
    if args.accounts_file:
        accounts += load_accounts_file(args.accounts_file)
    if accounts:
        options["accounts"] = accounts
    elif "accounts" not in options:
        options["accounts"] = [DEV_ACCOUNT]
    if args.faults is not None:
        options["faults"] = args.faults
    if args.latency_ms is not None:
        options["latency_ms"] = args.latency_ms
    limits = dict(options.get("limits") or {})
    for flag in ("max_groups", "max_persons_per_group", "max_faces_per_person"):
        value = getattr(args, flag, None)
        if value is not None:
            limits[flag] = value
    if limits:
        options["limits"] = limits
    return EmulatorConfig.from_options(**options)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (2 for a bad configuration: a setting, a gallery file of
    another engine, an engine that cannot load)."""
    try:
        config = config_from_args(args)
        emulator = Emulator(config)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"emulator: bad configuration: {exc}", file=sys.stderr)
        return 2
    return serve_forever(emulator.make_app, config.host, config.port, BANNER, args.ready_file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.emulator",
        description="Local emulator of Tencent's face APIs: v1 (multidentify) and IAI (API 3.0, SearchFaces).",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
