"""``multidentify-worker`` — one command, one subcommand per job.

Subcommand modules are imported lazily so that ``run`` in a slim container never imports the
emulator's dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

import orjson

from worker import __version__, config
from worker.runtime.exits import ExitCode


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        settings = config.load(
            overrides=config.overrides_from_args(args),
            config_file=args.config_file,
            require_credentials=args.for_run,
        )
    except config.ConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return ExitCode.INVALID_CONFIG
    from worker.ops import tracing

    try:
        tracing.check(os.environ)  # OTEL_* variables: `run` refuses what it cannot honour, so `check` does too
    except tracing.TracingConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return ExitCode.INVALID_CONFIG
    masked = settings.masked()
    if args.json:
        print(orjson.dumps(masked, option=orjson.OPT_INDENT_2).decode())
    else:
        width = max(len(name) for name in masked)
        for name, value in masked.items():
            print(f"{name.ljust(width)}  {value!s:<40}  ({settings.sources[name]})")
    print("configuration is valid", file=sys.stderr)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        settings = config.load(
            overrides=config.overrides_from_args(args), config_file=args.config_file, require_credentials=True
        )
    except config.ConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return ExitCode.INVALID_CONFIG
    from worker.runtime.app import run
    from worker.runtime.stopping import exit_process

    # The pipeline has drained, committed and closed: end here, not in interpreter shutdown (see exit_process).
    exit_process(run(settings))


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.real_faces:
        from worker.dev.real_demo import run_real_demo

        return run_real_demo(sys.stdout, api=args.api, out_dir=args.out)
    if args.out is not None:
        print("demo: --out goes with --real-faces (the synthetic demo draws nothing)", file=sys.stderr)
        return 2
    from worker.dev.demo import run_demo

    return run_demo(api=args.api)


def _cmd_config_table(args: argparse.Namespace) -> int:
    print(config.markdown_table())
    return 0


def _cmd_devstack(args: argparse.Namespace) -> int:
    from worker.dev import devstack

    return devstack.main_devstack(args.partitions, args.topics, api=args.api)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multidentify-worker",
        description="Kafka worker for Tencent Cloud face identification (multidentify).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate the configuration and print it with secrets masked")
    config.add_flags(check)
    check.add_argument("--for-run", action="store_true", help="also require what `run` needs (credentials, groups)")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(func=_cmd_check)

    run = sub.add_parser("run", help="run the worker: consume, identify, publish results and dead letters")
    config.add_flags(run)
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="run the whole system end to end on an embedded stack (about 30 s)")
    _add_api_choice(demo, "the face API the workers call; iai enrols through CreateGroup/CreatePerson")
    demo.add_argument(
        "--real-faces",
        action="store_true",
        help="real photos of real people (the dlib engine): who is found where, as text and annotated images",
    )
    demo.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="with --real-faces: where the annotated photos and index.html go"
        " (default: a new temporary folder, printed at the end)",
    )
    demo.set_defaults(func=_cmd_demo)

    table = sub.add_parser("config-table", help="print the configuration table (markdown) the README embeds")
    table.set_defaults(func=_cmd_config_table)

    dev = sub.add_parser("devstack", help="run the embedded broker (and emulator) until Ctrl-C")
    dev.add_argument("--partitions", type=int, default=4)
    dev.add_argument("--topics", nargs="*", default=["images", "face-results", "face-dlq"])
    _add_api_choice(dev, "the face API of the MDW_* exports it prints (the emulator serves both)")
    dev.set_defaults(func=_cmd_devstack)

    for name, module, text in (
        ("replay", "replay", "re-publish dead letters to the input topic each came from (by code, time, offsets)"),
        ("produce", "produce", "publish image events from a JSON-lines file, stdin or a folder of images"),
        ("tail", "tail", "follow the results or the dead-letter topic, one readable line per record"),
        ("gallery", "gallery.command", "list, show, enrol and delete the persons identified (v1 or IAI)"),
    ):
        tool = importlib.import_module(f"worker.tools.{module}")
        tool_parser = sub.add_parser(name, help=text)
        tool.add_arguments(tool_parser)
        tool_parser.set_defaults(func=tool.run)
    _add_emulator(sub)
    return parser


def _add_api_choice(parser: argparse.ArgumentParser, text: str) -> None:
    """``--api v1|iai`` for the development commands: the choices of the worker's own ``api`` setting."""
    choices = typing.get_args(config.ApiName)
    parser.add_argument("--api", choices=choices, default=config.BY_NAME["api"].default, help=f"{text} (default v1)")


def _add_emulator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The emulator needs the `emulator` extra (aiohttp, Pillow, numpy); a slim install says so instead."""
    try:
        from worker.emulator import cli as emulator_cli
    except ImportError as exc:
        missing = exc.name

        def _unavailable(args: argparse.Namespace) -> int:
            print(
                f"the emulator needs `pip install multidentify-worker[emulator]` ({missing} is missing)",
                file=sys.stderr,
            )
            return ExitCode.INVALID_CONFIG

        stub = sub.add_parser("emulator", help="run the API emulator (needs the emulator extra)")
        stub.set_defaults(func=_unavailable)
        return
    emu = sub.add_parser("emulator", help="run the local wire-compatible multidentify API emulator")
    emulator_cli.add_arguments(emu)
    emu.set_defaults(func=emulator_cli.run)


def main(argv: Sequence[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv)[:1] == ["run"]:
        # Before the parser imports every subcommand (most of a second): a SIGTERM meanwhile asks for a stop.
        from worker.runtime.stopping import install_stop_handlers

        install_stop_handlers()
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
