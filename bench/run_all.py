"""``make bench``: every scenario of the benchmark suite, side by side, in one run on this machine.

    python bench/run_all.py [--quick] [--only latency,cpu,quota,backlog,scaleout,failover] [--out DIR]

Full runs write ``bench/results/<date>-<scenario>.md`` per scenario and, when every scenario ran,
``bench/results/latest.md`` (targets met or missed, with links). ``--quick`` uses short windows (≈ 3 min
in all; the figures are indicative only) and writes nothing unless ``--out`` is given. Figures are
printed and written, never asserted: a missed target is reported with its reason, the exit code is 0
unless a scenario could not run at all.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

import bench_backlog
import bench_cpu
import bench_failover
import bench_latency
import bench_quota
import bench_scaleout
from common import (
    RESULTS_DIR,
    Check,
    ScenarioReport,
    checks_table,
    machine_info,
    machine_md,
    pin_orchestrator,
    print_report,
    wait_for_idle,
    write_report,
)

SCENARIOS: dict[str, ModuleType] = {
    "latency": bench_latency,
    "cpu": bench_cpu,
    "quota": bench_quota,
    "backlog": bench_backlog,
    "scaleout": bench_scaleout,
    "failover": bench_failover,
}


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
    parser.add_argument("--quick", action="store_true", help="short windows, ≈ 3 min; figures indicative only")
    parser.add_argument("--only", default="", help="comma list of: " + ",".join(SCENARIOS))
    parser.add_argument("--out", type=Path, default=None, help="where result files go (default: bench/results/)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {list(SCENARIOS)}")
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
            report = SCENARIOS[name].run(args.quick)
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
    if out is not None and not args.quick and names == list(SCENARIOS):
        latest = out / "latest.md"
        latest.write_text(latest_md(reports, files, machine, total))
        print(f"written: {latest}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
