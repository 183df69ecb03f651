"""The chart's monitoring and automation parts: the Grafana dashboard, the PrometheusRule, the replay Job.

- The alert rules are taken from the rendered PrometheusRule (one source: templates/prometheusrule.yaml) and checked
  with the real Prometheus tool: ``promtool check rules``, then ``promtool test rules`` with, for every alert, series
  that make it fire (at the expected time, with the expected labels and annotations) and healthy series that do not.
- The dashboard JSON (dashboards/multidentify-worker.json, shipped as a ConfigMap for the Grafana sidecar) parses,
  has its variables, and every panel has a query.
- Every metric named by a panel query or an alert expression is declared (``# TYPE``) by a real worker process's
  /metrics after it processed events, a dead letter among them.
- The new manifests are valid Kubernetes 1.30 (strict), pass checkov with only the repository's waivers, and the
  replay Job's arguments parse, through the worker's own CLI parser, to the options the values asked for.

promtool comes from Debian's ``prometheus`` package (PROMTOOL, else on PATH; ``make test`` unpacks it into .venv/bin).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import orjson
import pytest
import yaml

from tests.helm.test_chart import (
    CHART,
    K8S_VERSION,
    NETWORK_POLICY,
    PINNED_IMAGE,
    REQUIRED,
    SASL,
    SCHEDULING,
    SERVICE_MONITOR,
    _checkov_bin,
    _describe,
    _scan,
    checkov_waivers,
    container,
    merge,
    only,
    render,
    write_renderings,
)
from worker.tools import replay as replay_tool

DASHBOARD_FILE = CHART / "dashboards" / "multidentify-worker.json"
NAMESPACE = "workers"
JOB = "mdw-multidentify-worker"  # the full name of release "mdw": the job the ServiceMonitor's targets get

MONITORING: dict[str, Any] = {
    "grafanaDashboard": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "replay": {"enabled": True},
}
REPLAY_OPTIONS: dict[str, Any] = {
    "replay": {
        "enabled": True,
        "dryRun": False,
        "codes": ["15", -1308, "FailedOperation.ImageDownloadError"],  # a YAML number is a code too
        "since": "2026-11-30T00:00:00Z",
        "until": "1796169600000",
        "partition": 3,
        "fromOffset": 100,
        "toOffset": 250,
        "fromTopic": "camera.events",
        "targetTopic": "images-replayed",
        "group": "replay-ops",
        "restart": True,
        "maxReplays": 5,
        "rate": 2.5,
        "limit": 1000,
        "timeoutSeconds": 900,
        "allowMissingKey": True,
        "backoffLimit": 3,
        "ttlSecondsAfterFinished": None,
    }
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "monitoring": merge(REQUIRED, SERVICE_MONITOR, MONITORING),
    "monitoring-hardened": merge(
        REQUIRED,
        SASL,
        SCHEDULING,
        NETWORK_POLICY,
        SERVICE_MONITOR,
        PINNED_IMAGE,
        MONITORING,
        REPLAY_OPTIONS,
        {
            "grafanaDashboard": {"namespace": "monitoring", "folder": "Workers", "labels": {"dash": "yes"}},
            "prometheusRule": {"labels": {"release": "prometheus"}, "additionalLabels": {"team": "vision"}},
        },
    ),
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(values) for name, values in SCENARIOS.items()}


def _crd_free(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] not in {"ServiceMonitor", "PrometheusRule"}]


# ---------------------------------------------------------------- switches, lint, Kubernetes schemas


def test_everything_is_off_by_default() -> None:
    kinds = {d["kind"] for d in render(REQUIRED)}
    assert "PrometheusRule" not in kinds and "Job" not in kinds
    assert [d["metadata"]["name"] for d in render(REQUIRED) if d["kind"] == "ConfigMap"] == [JOB]


def test_lint_reports_no_warnings_or_errors() -> None:
    for values in SCENARIOS.values():
        result = helm_python.lint(str(CHART), values, strict=True, kube_version="v1.30.0")
        assert result["errors"] == []
        assert [m for m in result["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_manifests_are_valid_kubernetes_1_30(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered[scenario]
    assert {"Job", "PrometheusRule"} <= {d["kind"] for d in docs}
    for doc in _crd_free(docs):
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{scenario}: {doc['kind']} {'.'.join(map(str, exc.path))}: {exc.message}")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_prometheus_rule_fields(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    doc = only(rendered[scenario], "PrometheusRule")
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["metadata"]["namespace"] == NAMESPACE
    assert set(doc["spec"]) == {"groups"}
    for group in doc["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"MultidentifyWorker[A-Za-z]+", rule["alert"])
            assert re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", rule["for"])
            assert rule["labels"]["severity"] in ("critical", "warning", "info")
            assert all(isinstance(v, str) for v in rule["labels"].values())
            assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
            assert rule["annotations"]["runbook_url"] == f"docs/monitoring.md#{rule['alert'].lower()}"
    if scenario == "monitoring-hardened":
        assert doc["metadata"]["labels"]["release"] == "prometheus"
        assert all(r["labels"]["team"] == "vision" for r in rules_of(doc))


# ---------------------------------------------------------------- checkov


@pytest.fixture(scope="module")
def checkov_failures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    checkov = _checkov_bin()
    root = tmp_path_factory.mktemp("rendered-monitoring")
    write_renderings(root, SCENARIOS, "m")
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in SCENARIOS}
    for failure in _scan(checkov, root):
        out[Path(failure["file_path"].lstrip("/")).parts[0]].append(failure)
    return out


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_checkov_finds_nothing_beyond_the_waivers(
    scenario: str, checkov_failures: dict[str, list[dict[str, Any]]]
) -> None:
    unexpected = [f for f in checkov_failures[scenario] if f["check_id"] not in checkov_waivers()]
    assert unexpected == [], _describe(unexpected)


def test_hardened_values_need_only_the_unconditional_waivers(
    checkov_failures: dict[str, list[dict[str, Any]]],
) -> None:
    """The replay Job is hardened like the Deployment: with a digest, pull policy Always and NetworkPolicies on,
    no conditional waiver is used (the Job's pod has a NetworkPolicy of its own)."""
    used = {f["check_id"] for f in checkov_failures["monitoring-hardened"]} & {"CKV_K8S_43", "CKV_K8S_15", "CKV2_K8S_6"}
    assert used == set(), _describe(checkov_failures["monitoring-hardened"])


# ---------------------------------------------------------------- the Grafana dashboard


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(DASHBOARD_FILE.read_bytes())
    return doc


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows excluded), also those nested in collapsed rows."""
    for panel in doc["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in panels(dashboard()) for t in p["targets"]]


def test_dashboard_has_its_variables_and_a_query_in_every_panel() -> None:
    doc = dashboard()
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 36
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job", "pod"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    shown = list(panels(doc))
    assert len(shown) >= 15
    for panel in shown:
        assert panel["title"] and panel.get("description"), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.strip() and target["refId"], panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            # Every selector of a worker metric is scoped by the dashboard's variables.
            for selector in re.findall(r"mdw_[a-z0-9_]+(\{[^}]*\})?", expr):
                assert 'namespace="$namespace"' in selector and 'job=~"$job"' in selector, (panel["title"], expr)
    titles = " ".join(p["title"].lower() for p in shown)
    for topic in ("consumed", "dead letters by code", "latency", "in flight", "lag", "rate limit", "breaker",
                  "commit gap", "guard", "ready"):  # fmt: skip
        assert topic in titles, topic


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (plain,) = [d for d in rendered["monitoring"] if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]]
    assert plain["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert plain["metadata"]["namespace"] == NAMESPACE
    assert "annotations" not in plain["metadata"]
    assert orjson.loads(plain["data"]["multidentify-worker.json"]) == dashboard()
    (tuned,) = [
        d for d in rendered["monitoring-hardened"] if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]
    ]
    assert tuned["metadata"]["namespace"] == "monitoring"
    assert tuned["metadata"]["labels"]["dash"] == "yes" and "grafana_dashboard" in tuned["metadata"]["labels"]
    assert tuned["metadata"]["annotations"] == {"grafana_folder": "Workers"}


# ---------------------------------------------------------------- promtool: check and unit-test the alerts


def _promtool() -> str:
    configured = os.environ.get("PROMTOOL")
    path = configured or shutil.which("promtool")
    if path is None or not Path(path).is_file():
        message = "promtool not found (set PROMTOOL); `make test` unpacks it from Debian's prometheus into .venv/bin"
        if configured or os.environ.get("CI"):  # named (as `make test` does) but missing: a broken install, not a skip
            pytest.fail(f"{message}: {configured!r}" if configured else message)
        pytest.skip(message)
    return str(Path(path).resolve())  # absolute: promtool runs with the rule files' folder as its working directory


def rules_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in doc["spec"]["groups"] for r in g["rules"]]


def rule_groups(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rule groups of the rendered PrometheusRule, as a Prometheus rule file."""
    doc = only(render(values or SCENARIOS["monitoring"]), "PrometheusRule")
    return {"groups": doc["spec"]["groups"]}


def _run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    promtool = _promtool()
    for values in SCENARIOS.values():
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(values), sort_keys=False))
        proc = _run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"SUCCESS: {len(rules_of({'spec': rule_groups(values)}))} rules found" in proc.stdout


TARGET = {"namespace": NAMESPACE, "job": JOB, "pod": "mdw-0", "instance": "10.0.0.1:9400"}
OTHER = {**TARGET, "pod": "mdw-1", "instance": "10.0.0.2:9400"}
ELSEWHERE = {**TARGET, "namespace": "other", "job": "other-worker"}  # another release: never counts


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def pick(labels: dict[str, str], *names: str) -> dict[str, str]:
    return {n: labels[n] for n in names}


# Each case: the alert, input series (1 m apart), when to look, and the labels it fires with (None: it must not fire)
# plus the text of $value in its annotations.
Case = tuple[str, str, list[dict[str, str]], str, dict[str, str] | None, str]
TP = {"topic": "images", "partition": "0"}
CASES: list[Case] = [
    # -- breaker: not closed from 2m; fires once it has not closed for 5m, not before. A long outage cycles open →
    # half-open (a probe fails) → open: every scrape that lands on a probe must not restart the 5 minutes. Open 3
    # minutes then closed does not fire, nor does another release's breaker.
    ("MultidentifyWorkerBreakerOpen", "open 6m", [series("mdw_breaker_state", TARGET, "0 0 2x20")], "8m",
     pick(TARGET, "namespace", "job", "pod"), "2"),
    ("MultidentifyWorkerBreakerOpen", "open 4m", [series("mdw_breaker_state", TARGET, "0 0 2x20")], "6m", None, ""),
    ("MultidentifyWorkerBreakerOpen", "an outage: open, probing, open … for 20m",
     [series("mdw_breaker_state", TARGET, "0 0 2 1 2 2 1 2 1 2 2 1 2 1 2 2 1 2 1 2 2 1 2")], "20m",
     pick(TARGET, "namespace", "job", "pod"), "2"),
    ("MultidentifyWorkerBreakerOpen", "open 3m, then closed; another release's breaker",
     [series("mdw_breaker_state", TARGET, "0x5 2 2 2 0x20"), series("mdw_breaker_state", ELSEWHERE, "2x30")],
     "25m", None, ""),
    # -- dead letters: half the outputs for 20m (1/s); few on a quiet topic, or 1% of a busy one, do not.
    ("MultidentifyWorkerDeadLetterRateHigh", "50% at 1/s",
     [series("mdw_dead_letters_total", {**TARGET, "code": "-1308"}, "0+60x40"),
      series("mdw_results_total", TARGET, "0+60x40")], "25m", pick(TARGET, "namespace", "job"), "50%"),
    ("MultidentifyWorkerDeadLetterRateHigh", "a few on a quiet topic",
     [series("mdw_dead_letters_total", {**TARGET, "code": "-1308"}, "0+1x40"),
      series("mdw_results_total", TARGET, "0+6x40")], "30m", None, ""),
    ("MultidentifyWorkerDeadLetterRateHigh", "1% of a busy topic",
     [series("mdw_dead_letters_total", {**TARGET, "code": "-1308"}, "0+60x40"),
      series("mdw_results_total", TARGET, "0+6000x40"),
      series("mdw_dead_letters_total", {**ELSEWHERE, "code": "15"}, "0+600x40")], "30m", None, ""),
    # -- lag: above 1000 from 6m and growing; fires after 15m more; a high but shrinking lag does not.
    ("MultidentifyWorkerLagGrowing", "growing past 1000",
     [series("mdw_consumer_lag", {**TARGET, **TP}, "500+100x40")], "30m",
     {"namespace": NAMESPACE, "job": JOB, "topic": "images"}, "3.5k"),
    ("MultidentifyWorkerLagGrowing", "not yet 15m", [series("mdw_consumer_lag", {**TARGET, **TP}, "500+100x40")],
     "19m", None, ""),
    ("MultidentifyWorkerLagGrowing", "high but shrinking, or growing but low",
     [series("mdw_consumer_lag", {**TARGET, **TP}, "9000-100x40"),
      series("mdw_consumer_lag", {**OTHER, "topic": "other", "partition": "1"}, "0+10x40")], "35m", None, ""),
    # -- DLQ guard: tripped from 2m, also when it flaps through its trials; once, long ago, is over.
    ("MultidentifyWorkerDeadLetterGuardTripped", "tripped", [series("mdw_dlq_guard_tripped", TARGET, "0 0 1x10")],
     "4m", pick(TARGET, "namespace", "job", "pod"), "1"),
    ("MultidentifyWorkerDeadLetterGuardTripped", "holding between short trials",
     [series("mdw_dlq_guard_tripped", TARGET, "0 0 1 0 1 1 0 1 1 1 0 1x10")], "10m",  # in a trial at 10m
     pick(TARGET, "namespace", "job", "pod"), "1"),
    ("MultidentifyWorkerDeadLetterGuardTripped", "once, long ago",
     [series("mdw_dlq_guard_tripped", TARGET, "0 1 0x30")], "20m", None, ""),
    # -- commits: a gap and a committed offset that stands still (or never was committed) for 5m+; an advancing
    #    offset, or no gap, is fine.
    ("MultidentifyWorkerCommitStuck", "gap, offset stands still",
     [series("mdw_commit_gap", {**TARGET, **TP}, "5x30"), series("mdw_committed_offset", {**TARGET, **TP}, "100x30")],
     "10m", {**TARGET, **TP}, "5"),
    ("MultidentifyWorkerCommitStuck", "gap, never committed", [series("mdw_commit_gap", {**TARGET, **TP}, "3x30")],
     "10m", {**TARGET, **TP}, "3"),
    ("MultidentifyWorkerCommitStuck", "committing, or nothing to commit",
     [series("mdw_commit_gap", {**TARGET, **TP}, "5x30"),
      series("mdw_committed_offset", {**TARGET, **TP}, "100+10x30"),
      series("mdw_commit_gap", {**OTHER, **TP, "partition": "1"}, "0x30"),
      series("mdw_committed_offset", {**OTHER, **TP, "partition": "1"}, "100x30")], "20m", None, ""),
    # -- readiness: not ready from 2m, for 15m.
    ("MultidentifyWorkerNotReady", "not ready", [series("mdw_ready", TARGET, "1 1 0x30")], "20m",
     pick(TARGET, "namespace", "job", "pod"), "0"),
    ("MultidentifyWorkerNotReady", "ready", [series("mdw_ready", TARGET, "1x30")], "20m", None, ""),
    # -- down: the scrape fails from 2m (mdw_up has no samples then), or the pipeline stopped.
    ("MultidentifyWorkerDown", "scrape fails", [series("up", TARGET, "1 1 0x10"), series("mdw_up", TARGET, "1 1")],
     "8m", pick(TARGET, "namespace", "job", "pod"), "0"),
    ("MultidentifyWorkerDown", "pipeline stopped", [series("up", TARGET, "1x10"), series("mdw_up", TARGET, "1 1 0x10")],
     "8m", pick(TARGET, "namespace", "job", "pod"), "0"),
    ("MultidentifyWorkerDown", "up", [series("up", TARGET, "1x20"), series("mdw_up", TARGET, "1x20")], "15m", None, ""),
    # -- no replica: every one stopped from 2m, or none ever scraped; one of two up is fine.
    ("MultidentifyWorkerNoReplicasUp", "all stopped",
     [series("mdw_up", TARGET, "1 1 0x20"), series("mdw_up", OTHER, "1 1 0x20"), series("mdw_up", ELSEWHERE, "1x30")],
     "8m", {"namespace": NAMESPACE}, "1"),
    ("MultidentifyWorkerNoReplicasUp", "never scraped", [series("mdw_up", ELSEWHERE, "1x30")], "6m",
     {"namespace": NAMESPACE}, "1"),
    ("MultidentifyWorkerNoReplicasUp", "one of two up",
     [series("mdw_up", TARGET, "1x30"), series("mdw_up", OTHER, "0x30")], "20m", None, ""),
]  # fmt: skip


def expand(template: str, labels: dict[str, str], value: str) -> str:
    """Prometheus' expansion of the few template forms the annotations use."""
    text = re.sub(r"\{\{ \$labels\.([a-z_]+) \}\}", lambda m: labels.get(m.group(1), "<no value>"), template)
    text = re.sub(r"\{\{ \$value( \| humanize(Percentage)?)? \}\}", value, text)
    assert "{{" not in text, f"unexpanded template form in {template!r}"
    return text


def promtool_tests(rules: dict[str, Any]) -> dict[str, Any]:
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    tests = []
    for alert, _why, inputs, at, labels, value in CASES:
        rule = by_name[alert]
        expected = []
        if labels is not None:
            all_labels = {**labels, **rule["labels"]}
            annotations = {k: expand(v, all_labels, value) for k, v in rule["annotations"].items()}
            expected.append({"exp_labels": all_labels, "exp_annotations": annotations})
        tests.append(
            {
                "interval": "1m",
                "input_series": inputs,
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
            }
        )
    return {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}


def test_every_alert_has_a_firing_and_a_healthy_case() -> None:
    alerts = {r["alert"] for g in rule_groups()["groups"] for r in g["rules"]}
    assert len(alerts) == 8
    assert {c[0] for c in CASES if c[4] is not None} == alerts
    assert {c[0] for c in CASES if c[4] is None} == alerts


def test_promtool_unit_tests_fire_each_alert_when_expected_and_only_then(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = rule_groups()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(promtool_tests(rules), sort_keys=False))
    proc = _run(promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_thresholds_and_durations_come_from_the_values(tmp_path: Path) -> None:
    """A stricter configuration changes when the same series alert: the rules follow prometheusRule.alerts."""
    promtool = _promtool()
    values = merge(
        SCENARIOS["monitoring"],
        {
            "prometheusRule": {
                "alerts": {
                    "breakerOpen": {"for": "1m", "severity": "page"},
                    "lagGrowing": {"threshold": 100000},
                    "notReady": {"enabled": False},
                }
            }
        },
    )
    rules = rule_groups(values)
    names = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert "MultidentifyWorkerNotReady" not in names and len(names) == 7
    assert names["MultidentifyWorkerBreakerOpen"]["labels"]["severity"] == "page"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    breaker = names["MultidentifyWorkerBreakerOpen"]
    fires_at_4m = {**pick(TARGET, "namespace", "job", "pod"), **breaker["labels"]}
    suite = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [series("mdw_breaker_state", TARGET, "0 0 2x20")],
                "alert_rule_test": [
                    {
                        "eval_time": "4m",
                        "alertname": "MultidentifyWorkerBreakerOpen",
                        "exp_alerts": [
                            {
                                "exp_labels": fires_at_4m,
                                "exp_annotations": {
                                    k: expand(v, fires_at_4m, "2") for k, v in breaker["annotations"].items()
                                },
                            }
                        ],
                    }
                ],
            },
            {
                "interval": "1m",
                "input_series": [series("mdw_consumer_lag", {**TARGET, **TP}, "500+100x40")],
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": "MultidentifyWorkerLagGrowing", "exp_alerts": []}
                ],
            },
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    proc = _run(promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_selector_override_scopes_every_expression() -> None:
    rules = rule_groups(merge(SCENARIOS["monitoring"], {"prometheusRule": {"selector": 'cluster="eu", app="mdw"'}}))
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        selectors = re.findall(r"\b(?:mdw_[a-z0-9_]+|up)\{([^}]*)\}", rule["expr"])
        assert selectors, rule["alert"]
        assert all(s == 'cluster="eu", app="mdw"' for s in selectors), rule["expr"]
    for rule in (r for g in rule_groups()["groups"] for r in g["rules"]):
        for selector in re.findall(r"\b(?:mdw_[a-z0-9_]+|up)\{([^}]*)\}", rule["expr"]):
            assert selector == f'namespace="{NAMESPACE}", job="{JOB}"', rule["expr"]


# ---------------------------------------------------------------- the replay Job


def _replay_job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return only(docs, "Job")


def _parsed_args(job: dict[str, Any]) -> argparse.Namespace:
    from worker.cli import build_parser

    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert all(isinstance(a, str) for a in c["args"]), c["args"]
    return build_parser().parse_args(c["args"])


def test_replay_job_arguments_parse_to_the_options_the_values_ask_for(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    args = _parsed_args(_replay_job(rendered["monitoring"]))
    assert args.command == "replay" and args.json
    defaults = replay_tool.options_from_args(args)
    assert defaults.dry_run and defaults.rate == 10 and defaults.timeout_s == 300 and defaults.max_replays == 3
    assert defaults.selection == replay_tool.Selection() and defaults.samples == 5 and defaults.limit is None

    r = REPLAY_OPTIONS["replay"]
    options = replay_tool.options_from_args(_parsed_args(_replay_job(rendered["monitoring-hardened"])))
    sel = options.selection
    assert sel.codes == frozenset(str(c) for c in r["codes"])
    assert sel.since_ms == 1_795_996_800_000 and sel.until_ms == int(r["until"])
    assert (sel.partition, sel.from_offset, sel.to_offset, sel.from_topic) == (3, 100, 250, "camera.events")
    assert not options.dry_run and options.restart and options.allow_missing_key
    assert (options.target_topic, options.group) == ("images-replayed", "replay-ops")
    assert (options.max_replays, options.rate, options.limit, options.timeout_s) == (5, 2.5, 1000, 900)


def test_replay_job_runs_like_the_worker_once_per_install_or_upgrade(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for scenario, docs in rendered.items():
        job = _replay_job(docs)
        spec = job["spec"]
        pod = spec["template"]["spec"]
        worker_pod = only(docs, "Deployment")["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        worker = container(docs)
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
        assert job["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"
        assert pod["restartPolicy"] == "Never"
        # The same image, settings, secret files, security and scheduling as the worker.
        assert c["image"] == worker["image"] and c["imagePullPolicy"] == worker["imagePullPolicy"]
        assert c["envFrom"] == worker["envFrom"]
        secret_env = [e for e in worker["env"] if e["name"].endswith("_FILE")]
        assert [e for e in c["env"] if e["name"].endswith("_FILE")] == secret_env, scenario
        assert c["securityContext"] == worker["securityContext"]
        assert c["volumeMounts"] == worker["volumeMounts"]
        for key in ("securityContext", "volumes", "serviceAccountName", "automountServiceAccountToken",
                    "imagePullSecrets", "nodeSelector", "tolerations", "affinity", "priorityClassName"):  # fmt: skip
            assert pod.get(key) == worker_pod.get(key), (scenario, key)
        # Its exit code 2 (bad arguments or settings) ends the Job at once; other failures are retried.
        (rule,) = spec["podFailurePolicy"]["rules"]
        assert rule == {
            "action": "FailJob",
            "onExitCodes": {"containerName": c["name"], "operator": "In", "values": [2]},
        }
        timeout = replay_tool.options_from_args(_parsed_args(job)).timeout_s
        assert spec["activeDeadlineSeconds"] > (spec["backoffLimit"] + 1) * (timeout + replay_tool.FINAL_FLUSH_S)
        # The worker's Service, PDB and NetworkPolicy never select the replay pod.
        labels = spec["template"]["metadata"]["labels"]
        for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
            for doc in docs:
                if doc["kind"] == kind and not doc["metadata"]["name"].endswith("-replay"):
                    selector = doc["spec"].get("selector", doc["spec"].get("podSelector"))
                    match = selector.get("matchLabels", selector)
                    assert not match.items() <= labels.items(), (scenario, kind)
    hardened = rendered["monitoring-hardened"]
    spec = _replay_job(hardened)["spec"]
    assert spec["backoffLimit"] == 3 and "ttlSecondsAfterFinished" not in spec
    assert _replay_job(rendered["monitoring"])["spec"]["ttlSecondsAfterFinished"] == 86400
    (policy,) = [d for d in hardened if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-replay")]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert "ingress" not in policy["spec"] and policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert [sorted(p["port"] for p in rule["ports"]) for rule in policy["spec"]["egress"]] == [[9092, 9093], [53, 53]]


BAD_VALUES: dict[str, dict[str, Any]] = {
    "unknown dashboard key": {"grafanaDashboard": {"folderName": "x"}},
    "non-string label": {"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}},
    "unknown alert": {"prometheusRule": {"alerts": {"apiSlow": {"enabled": True}}}},
    "bad for": {"prometheusRule": {"alerts": {"breakerOpen": {"for": "five minutes"}}}},
    "ratio above 1": {"prometheusRule": {"alerts": {"deadLetterRatio": {"ratio": 5}}}},
    "unknown replay key": {"replay": {"code": ["15"]}},
    "negative partition": {"replay": {"partition": -1}},
    "zero max replays": {"replay": {"maxReplays": 0}},
    "negative rate": {"replay": {"rate": -1}},
    "zero limit": {"replay": {"limit": 0}},
    "bad target topic": {"replay": {"targetTopic": "a topic"}},
    "bad from topic": {"replay": {"fromTopic": "a,b"}},
    "bad since": {"replay": {"since": "yesterday"}},
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(case: str) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(merge(SCENARIOS["monitoring"], BAD_VALUES[case]))


def test_offsets_without_a_partition_are_refused_even_without_the_schema(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "values.schema.json").unlink()
    bad = merge(SCENARIOS["monitoring"], {"replay": {"fromOffset": 5}})
    with pytest.raises(helm_python.HelmRenderError, match=re.escape("replay.fromOffset/replay.toOffset need")):
        render(bad, chart=chart)


def test_a_rule_without_alerts_is_refused() -> None:
    off = {
        name: {"enabled": False}
        for name in yaml.safe_load((CHART / "values.yaml").read_text())["prometheusRule"]["alerts"]
    }
    with pytest.raises(helm_python.HelmRenderError, match=re.escape("every alert of prometheusRule.alerts disabled")):
        render(merge(SCENARIOS["monitoring"], {"prometheusRule": {"alerts": off}}))


def test_readme_names_every_alert() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    docs = (CHART.parents[1] / "docs" / "monitoring.md").read_text(encoding="utf-8")
    for rule in (r for g in rule_groups()["groups"] for r in g["rules"]):
        assert f"`{rule['alert']}`" in readme, rule["alert"]
        # the runbook_url anchor exists: a heading named after the alert
        assert re.search(rf"^#+ {rule['alert']}$", docs, flags=re.M), rule["alert"]


# ---------------------------------------------------------------- every metric the queries name exists

METRIC = re.compile(r"\bmdw_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expressions: list[str]) -> set[str]:
    return {m for expr in expressions for m in METRIC.findall(expr)}


def declared_families(exposition: str) -> dict[str, str]:
    """name → type from the ``# TYPE`` lines (counters are declared with their _total name)."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.M))


def undeclared(names: set[str], families: dict[str, str]) -> set[str]:
    missing = set()
    for name in names:
        if name in families:
            continue
        base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base is not None and families.get(base) in ("histogram", "summary"):
            continue
        missing.add(name)
    return missing


def test_metric_name_parsing() -> None:
    """The parser finds names next to braces, brackets and parentheses, and resolves histogram suffixes."""
    found = metric_names(['sum by (le) (rate(mdw_a_seconds_bucket{x="1"}[5m])) / mdw_b_total + (mdw_c)'])
    assert found == {"mdw_a_seconds_bucket", "mdw_b_total", "mdw_c"}
    families = {"mdw_a_seconds": "histogram", "mdw_b_total": "counter", "mdw_c": "gauge", "mdw_d": "gauge"}
    assert undeclared(found, families) == set()
    assert undeclared({"mdw_b", "mdw_c_bucket", "mdw_d_total"}, families) == {"mdw_b", "mdw_c_bucket", "mdw_d_total"}


@pytest.mark.broker
def test_every_metric_in_the_dashboard_and_the_alerts_is_exported_by_a_real_worker(
    kafka_bootstrap: str, make_topics: Callable[..., Any], tmp_path: Path
) -> None:
    from tests.support.kafkatest import produce_all, wait_until
    from tests.support.pipeline import enrolled_emulator, settings_env
    from worker.dev.harness.loopback import free_port
    from worker.dev.harness.processes import WorkerProcess

    queries = dashboard_queries()
    alerts = [r["expr"] for g in rule_groups()["groups"] for r in g["rules"]]
    names = metric_names(queries + alerts)
    assert all(METRIC.search(q) for q in queries), "a panel query without a worker metric"
    assert all(METRIC.search(e) for e in alerts), "an alert without a worker metric"

    images = tmp_path / "images"
    images.mkdir()
    with enrolled_emulator(images, ["alice"]) as (emulator, sc):
        sc.add_known(3, stranger_every=0, seed=9300)
        sc.add_malformed()  # a dead letter (invalid_json)
        topics = make_topics(2, results=1, dlq=1)
        env = settings_env(kafka_bootstrap, emulator.base_url, topics, metrics_port=free_port())
        worker = WorkerProcess(env, log_path=tmp_path / "worker.log")
        try:
            wait_until(lambda: worker.ready() or not worker.alive(), timeout=60, what="the worker to be ready")
            assert worker.alive(), worker.tail()
            produce_all(kafka_bootstrap, topics.input, [(e.key, e.value) for e in sc.events])

            def done() -> str:
                text = worker.metrics()
                finished = "mdw_results_total 3.0" in text and 'mdw_dead_letters_total{code="invalid_json"} 1.0' in text
                return text if finished else ""

            exposition = wait_until(done, timeout=60, what="3 results and 1 dead letter in /metrics")
        finally:
            assert worker.stop(30) == 0, worker.tail()
    families = declared_families(exposition)
    assert undeclared(names, families) == set(), sorted(families)
    # the families the dashboard exists for are all used
    assert {"mdw_api_latency_seconds_bucket", "mdw_dead_letters_total", "mdw_commit_gap", "mdw_ready"} <= names
