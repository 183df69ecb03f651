"""``make bench``: every scenario of the benchmark suite, side by side, in one run on this machine.

    python bench/run_all.py [--quick] [--only latency,cpu,…] [--soak [--soak-minutes 10]] [--out DIR]

Full runs write ``bench/results/<date>-<scenario>.md`` per scenario and, when every default scenario ran,
``bench/results/latest.md`` (targets met or missed, with links). ``latency`` and ``quota`` run for both face
APIs: ``latency-iai`` and ``quota-iai`` are the same scenarios against IAI. ``--quick`` uses short windows (≈ 7 min
in all; the figures are indicative only) and writes nothing unless ``--out`` is given. The soak (10 min of
steady load) is opt-in: ``--soak`` adds it, ``--only soak`` runs it alone. ``fetchmem`` runs when
``bench/bench_fetch_memory.py`` exists. Figures are printed and written, never asserted: a missed target
is reported with its reason, the exit code is 0 unless a scenario could not run at all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import bench_backlog
import bench_cpu
import bench_failover
import bench_fleet_quota
import bench_latency
import bench_long_faults
import bench_quota
import bench_scaleout
import bench_soak
from machine import machine_info, pin_orchestrator, wait_for_idle
from report import RESULTS_DIR, Check, ScenarioReport, checks_table, machine_md, print_report, write_report

Runner = Callable[[bool], ScenarioReport]  # run(quick) of a bench_<name> module

SCENARIOS: dict[str, Runner] = {
    "latency": bench_latency.run,
    "latency-iai": lambda quick: bench_latency.run(quick, api="iai"),
    "cpu": bench_cpu.run,
    "quota": bench_quota.run,
    "quota-iai": lambda quick: bench_quota.run(quick, api="iai"),
    "fleetquota": bench_fleet_quota.run,
    "backlog": bench_backlog.run,
    "scaleout": bench_scaleout.run,
    "failover": bench_failover.run,
    "longfaults": bench_long_faults.run,
}
if (Path(__file__).parent / "bench_fetch_memory.py").exists():  # written separately; same run(quick) contract
    SCENARIOS["fetchmem"] = importlib.import_module("bench_fetch_memory").run
OPT_IN = ("soak",)  # never part of the default run


def _failed(name: str, exc: BaseException) -> ScenarioReport:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return ScenarioReport(
        name=name,
        title=f"{name}: could not run",
        headers=["error"],
        table=[[text.replace("|", "\\|")[:500]]],
        checks=[Check(name, "scenario ran", "error", False, text[:200])],
    )


def latest_md(reports: list[ScenarioReport], files: list[Path], machine: dict[str, str], seconds: float) -> str:
    checks = [c for r in reports for c in r.checks]
    met = sum(1 for c in checks if c.met is True)
    missed = sum(1 for c in checks if c.met is False)
    lines = [
        "# Benchmark results (latest full run)",
        "",
        f"`make bench` (= `python bench/run_all.py`), {seconds / 60:.1f} min, {met} targets met, {missed} missed. "
        "Every figure comes from this one run on this machine; ratios matter more than absolute figures.",
        "",
        "## Targets",
        "",
        checks_table(checks),
        "",
        "## Per scenario",
        "",
    ]
    lines += [f"- [{r.title}]({f.name})" for r, f in zip(reports, files, strict=True)]
    lines += ["", "## Machine", "", machine_md(machine), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, ≈ 7 min; figures indicative only")
    parser.add_argument("--only", default="", help="comma list of: " + ",".join([*SCENARIOS, *OPT_IN]))
    parser.add_argument("--soak", action="store_true", help="also run the soak (opt-in; --quick: 3 min)")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="soak length, ≥ 3 (default 10)")
    parser.add_argument("--out", type=Path, default=None, help="where result files go (default: bench/results/)")
    args = parser.parse_args(argv)
    runners: dict[str, Runner] = {
        **SCENARIOS,
        "soak": lambda quick: bench_soak.run(quick, minutes=args.soak_minutes),
    }
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    if args.soak and "soak" not in names:
        names.append("soak")
    unknown = [n for n in names if n not in runners]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {list(runners)}")
    out = args.out or (None if args.quick else RESULTS_DIR)

    layout = pin_orchestrator()
    machine = machine_info(layout)
    print(f"bench: {', '.join(names)}{' (quick)' if args.quick else ''}; {layout}", flush=True)
    started = time.monotonic()
    reports: list[ScenarioReport] = []
    files: list[Path] = []
    broken = 0
    for name in names:
        busy = wait_for_idle(max_wait=30 if args.quick else 60)
        t0 = time.monotonic()
        try:
            report = runners[name](args.quick)
        except Exception as exc:  # one broken scenario must not hide the others' figures
            traceback.print_exc()
            report = _failed(name, exc)
            broken += 1
        report.seconds = time.monotonic() - t0
        report.notes.append(f"Machine load before the scenario: {busy:.2f} cores busy (other sessions included).")
        reports.append(report)
        print_report(report)
        if out is not None:
            files.append(write_report(report, machine, args.quick, out))
            print(f"written: {files[-1]}", flush=True)
    total = time.monotonic() - started
    print(f"\nbench: {total / 60:.1f} min", flush=True)
    checks = [c for r in reports for c in r.checks]
    print(checks_table(checks))
    if out is not None and not args.quick and set(SCENARIOS) <= set(names):
        latest = out / "latest.md"
        latest.write_text(latest_md(reports, files, machine, total))
        print(f"written: {latest}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
