"""Offline checks of the Helm chart and the container image recipe.

The chart is rendered with helm-python-sdk (the Helm SDK, no cluster), every manifest is checked against the
Kubernetes 1.30 API schemas in strict mode (kubernetes-validate), the custom resources (ServiceMonitor, ScaledObject)
are checked field by field, and checkov scans the rendered output with only the waivers listed in .checkov.yaml.
The ConfigMap is loaded through the worker's own settings loader, so a value the chart renders is a value the worker
accepts. checkov lives in its own venv (CHECKOV_BIN, else <repo>/.venv-checkov/bin/checkov; `make test` builds it).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import orjson
import pytest
import yaml

from worker import config as worker_config

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "multidentify-worker"
K8S_VERSION = "1.30.0"
CRD_KINDS = {"ServiceMonitor", "ScaledObject", "TriggerAuthentication"}
# Settings the chart owns or that are secrets: never in `config:` nor rendered from it.
CHART_OWNED = {"drain_timeout_s", "metrics_port", "group_instance_id"}

SETTINGS = worker_config.SETTINGS
BY_NAME = {s.name: s for s in SETTINGS}

# After the drain the worker flushes (≤ 1 s each, three times), commits and closes the consumer; its watchdog ends
# the process drain_timeout_s + 4 s after the signal (worker/runtime/stopping.py). The chart keeps a wider margin
# for the last API call's connect + read timeout and a slow commit.
AFTER_DRAIN_S = 20

REQUIRED: dict[str, Any] = {
    "credentials": {"existingSecret": "mdw-credentials"},
    "config": {
        "bootstrap_servers": "kafka-0.kafka:9092,kafka-1.kafka:9092",
        "appid": "1250000000",
        "group_ids": ["staff"],
    },
}

SCHEDULING: dict[str, Any] = {
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "workers", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "preference": {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["workers"]}]},
                }
            ]
        }
    },
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
        {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"},
    ],
    "podAnnotations": {"team": "vision"},
    "podLabels": {"tier": "backend"},
    "commonLabels": {"cost-center": "cv"},
    "priorityClassName": "workers",
    "imagePullSecrets": [{"name": "regcred"}],
}

SASL: dict[str, Any] = {
    "credentials": {"saslPasswordKey": "sasl-password"},
    "config": {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "mdw",
        "ssl_ca_location": "/etc/kafka-ca/ca.crt",
    },
    "extraVolumes": [{"name": "kafka-ca", "configMap": {"name": "kafka-ca"}}],
    "extraVolumeMounts": [{"name": "kafka-ca", "mountPath": "/etc/kafka-ca", "readOnly": True}],
    "extraEnv": [{"name": "TZ", "value": "UTC"}],
}

KEDA: dict[str, Any] = {
    "keda": {
        "enabled": True,
        "minReplicaCount": 1,
        "maxReplicaCount": 12,
        "kafka": {"limitToPartitionsWithLag": True, "partitionLimitation": "0-11"},
        "authenticationRef": {"name": "kafka-sasl"},
        "fallback": {"failureThreshold": 3, "replicas": 2},
    }
}

NETWORK_POLICY: dict[str, Any] = {
    "networkPolicy": {
        "enabled": True,
        "kafka": {"ports": [9092, 9093], "to": [{"namespaceSelector": {"matchLabels": {"name": "kafka"}}}]},
        "api": {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]},
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    }
}

SERVICE_MONITOR: dict[str, Any] = {
    "serviceMonitor": {
        "enabled": True,
        "labels": {"release": "prometheus"},
        "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}],
    }
}

HPA: dict[str, Any] = {
    "autoscaling": {
        "enabled": True,
        "targetMemoryUtilizationPercentage": 80,
        "metrics": [
            {
                "type": "External",
                "external": {
                    "metric": {"name": "kafka_consumergroup_lag_sum", "selector": {"matchLabels": {"group": "mdw"}}},
                    "target": {"type": "AverageValue", "averageValue": "100"},
                },
            }
        ],
    }
}

# A pinned image pulled every time: the two image waivers are not needed then.
PINNED_IMAGE: dict[str, Any] = {"image": {"digest": "sha256:" + "a" * 64, "pullPolicy": "Always"}}


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of value layers, later wins (like repeated -f files)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def _non_default_config() -> dict[str, Any]:
    """A valid value for every setting the chart may carry, different from the worker default where possible."""
    special: dict[str, Any] = {
        "bootstrap_servers": "kafka:9092",
        "api_base_url": "https://emulator.example:8443",
        "iai_endpoint": "iai.ap-shanghai.tencentcloudapi.com",
        "iai_region": "ap-shanghai",
        "iai_max_face_num": 8,
        "appid": "1250000000",
        "group_ids": ["staff", "visitors"],
        "fetch_allowed_networks": ["10.0.0.0/8", "192.168.0.0/16"],
        "input_topic": "camera.images,minio.images",
        "input_formats": ["minio.images=s3"],
        "image_url_template": "https://minio.example:9000/{bucket}/{key}",
        "results_topic": "camera.faces",
        "dlq_topic": "camera.faces-dlq",
        "fetch_max_bytes": 1_400_000,
        "signature_lifetime_s": 7_776_000,
        "backoff_initial_s": 0.25,
        "backoff_max_s": 12.5,
        "metrics_host": "0.0.0.0",
        "kafka_common": {"client.id": "mdw-chart", "socket.keepalive.enable": True},
        "kafka_consumer": {"client.rack": "eu-west-1a", "fetch.min.bytes": 1024},
        "kafka_producer": {"linger.ms": 20, "compression.type": "zstd"},
    }
    out: dict[str, Any] = {}
    for s in SETTINGS:
        if s.secret or s.name in CHART_OWNED:
            continue
        if s.name in special:
            out[s.name] = special[s.name]
        elif s.kind == "choice":
            out[s.name] = next(c for c in s.choices if c != s.default)
        elif s.kind == "bool":
            out[s.name] = not s.default
        elif s.kind == "int":
            out[s.name] = int(s.default) + 1
        elif s.kind == "float":
            value = float(s.default) * 1.5 + 0.5
            out[s.name] = round(value if s.maximum is None or value <= s.maximum else (s.default + s.maximum) / 2, 3)
        else:
            out[s.name] = f"{s.name}-value"
    return out


SCENARIOS: dict[str, dict[str, Any]] = {
    "minimal": merge(REQUIRED),
    "keda": merge(REQUIRED, KEDA),
    "hpa": merge(REQUIRED, HPA),
    "network-policy": merge(REQUIRED, NETWORK_POLICY),
    "service-monitor": merge(REQUIRED, SERVICE_MONITOR),
    "sasl-tls": merge(REQUIRED, SASL),
    "scheduling": merge(REQUIRED, SCHEDULING),
    "existing-sa-no-pdb-no-service": merge(
        REQUIRED,
        {
            "serviceAccount": {"create": False, "name": "mdw-sa"},
            "podDisruptionBudget": {"enabled": False},
            "service": {"enabled": False},
        },
    ),
    "pdb-min-available": merge(REQUIRED, {"podDisruptionBudget": {"minAvailable": "50%"}}),
    "full-config": merge(REQUIRED, {"config": _non_default_config()}),
    "everything": merge(REQUIRED, SASL, SCHEDULING, KEDA, NETWORK_POLICY, SERVICE_MONITOR, PINNED_IMAGE),
    "everything-hpa": merge(REQUIRED, SASL, HPA, NETWORK_POLICY, SERVICE_MONITOR, PINNED_IMAGE),
    "static-membership": merge(
        REQUIRED, {"staticMembership": {"enabled": True}, "config": {"session_timeout_ms": 60_000}}
    ),
}


def render_raw(
    values: dict[str, Any], chart: Path = CHART, name: str = "mdw", namespace: str = "workers"
) -> dict[str, str]:
    with helm_python.Chart.load(str(chart)) as c:
        return c.render(values=values, name=name, namespace=namespace)


def render(values: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    """Rendered manifests (NOTES.txt excluded) as parsed documents."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render_raw(values, **kwargs).items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(values) for name, values in SCENARIOS.items()}


# ---------------------------------------------------------------- lint, required values


def test_lint_reports_no_warnings_or_errors() -> None:
    for values in (None, SCENARIOS["everything"]):
        result = helm_python.lint(str(CHART), values, strict=True, kube_version="v1.30.0")
        assert result["errors"] == []
        # severity 1 is INFO (e.g. "icon is recommended"); 2 WARNING, 3 ERROR.
        assert [m for m in result["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ({"credentials": {"existingSecret": ""}}, "credentials.existingSecret is required"),
        ({"config": {"bootstrap_servers": ""}}, "config.bootstrap_servers is required"),
        ({"config": {"appid": ""}}, "config.appid is required"),
        ({"config": {"group_ids": []}}, "config.group_ids is required"),
    ],
)
def test_render_names_each_missing_required_value(missing: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render(merge(REQUIRED, missing))


def test_iai_needs_no_appid_and_mounts_its_session_token_from_the_secret() -> None:
    iai = merge(REQUIRED, {"config": {"api": "iai", "appid": ""}, "credentials": {"iaiTokenKey": "iai-token"}})
    docs = render(iai)
    c = container(docs)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    (secret_volume,) = [v for v in pod["volumes"] if "secret" in v]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == secret_volume["name"]]
    files = {mount["mountPath"] + "/" + i["path"]: i["key"] for i in secret_volume["secret"]["items"]}
    assert files[env["MDW_IAI_TOKEN_FILE"]] == "iai-token"
    assert only(docs, "ConfigMap")["data"]["MDW_API"] == "iai"
    assert "MDW_IAI_TOKEN_FILE" not in {e["name"] for e in container(render(REQUIRED))["env"]}
    with pytest.raises(helm_python.HelmRenderError, match=r"config\.appid is required"):
        render(merge(REQUIRED, {"config": {"api": "v1", "appid": ""}}))


def test_default_values_alone_do_not_render() -> None:
    """The worker cannot run without credentials and a broker, so the chart refuses rather than crash-looping."""
    with pytest.raises(helm_python.HelmRenderError, match="is required"):
        render({})


# ---------------------------------------------------------------- Kubernetes API schemas and CRD fields


def _check_service_monitor(doc: dict[str, Any], deployment_labels: dict[str, str]) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    spec = doc["spec"]
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= deployment_labels.items()
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"[0-9]+(ms|s|m|h)", endpoint["interval"])
    assert spec["namespaceSelector"]["matchNames"] == ["workers"]  # the release namespace, where the Service is


def _check_scaled_object(doc: dict[str, Any], deployment_name: str) -> None:
    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    spec = doc["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name}
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    for key in ("bootstrapServers", "consumerGroup", "topic", "lagThreshold", "offsetResetPolicy"):
        assert meta[key], key
    # KEDA's trigger metadata is map[string]string: a bare number or bool is rejected by the CRD.
    assert all(isinstance(v, str) for v in meta.values()), meta
    assert meta["offsetResetPolicy"] in ("earliest", "latest")
    assert not (meta["allowIdleConsumers"] == "true" and meta["limitToPartitionsWithLag"] == "true")
    if "authenticationRef" in trigger:
        assert trigger["authenticationRef"]["kind"] in ("TriggerAuthentication", "ClusterTriggerAuthentication")
        assert trigger["authenticationRef"]["name"]
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:
        assert set(behavior) <= {"scaleUp", "scaleDown"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_manifests_are_valid_kubernetes_1_30(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered[scenario]
    deployment = only(docs, "Deployment")
    for doc in docs:
        assert doc["metadata"]["namespace"] == "workers", doc["kind"]  # never the implicit default namespace
        if doc["kind"] == "ServiceMonitor":
            _check_service_monitor(doc, deployment["spec"]["template"]["metadata"]["labels"])
        elif doc["kind"] == "ScaledObject":
            _check_scaled_object(doc, deployment["metadata"]["name"])
        elif doc["kind"] in CRD_KINDS:
            pytest.fail(f"unchecked custom resource {doc['kind']}")
        else:
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{scenario}: {doc['kind']} {'.'.join(map(str, exc.path))}: {exc.message}")


def test_optional_resources_follow_their_switches(rendered: dict[str, list[dict[str, Any]]]) -> None:
    base = {"Deployment", "ConfigMap", "ServiceAccount", "Service", "PodDisruptionBudget"}
    assert kinds(rendered["minimal"]) == base
    assert kinds(rendered["keda"]) == base | {"ScaledObject"}
    assert kinds(rendered["hpa"]) == base | {"HorizontalPodAutoscaler"}
    assert kinds(rendered["network-policy"]) == base | {"NetworkPolicy"}
    assert kinds(rendered["service-monitor"]) == base | {"ServiceMonitor"}
    assert kinds(rendered["existing-sa-no-pdb-no-service"]) == {"Deployment", "ConfigMap"}
    assert kinds(rendered["everything"]) == base | {"ScaledObject", "NetworkPolicy", "ServiceMonitor"}


# ---------------------------------------------------------------- the Deployment


def test_pod_runs_non_root_read_only_without_token(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for scenario, docs in rendered.items():
        pod = only(docs, "Deployment")["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, scenario
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = container(docs)["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
    sa = only(rendered["minimal"], "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert (
        only(rendered["minimal"], "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == sa["metadata"]["name"]
    )
    assert (
        only(rendered["existing-sa-no-pdb-no-service"], "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == "mdw-sa"
    )


def test_probes_hit_health_and_readiness_on_the_metrics_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    c = container(rendered["minimal"])
    (port,) = c["ports"]
    assert port == {"name": "metrics", "containerPort": 9400, "protocol": "TCP"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    moved = render(merge(REQUIRED, {"metrics": {"port": 9555}}))
    assert container(moved)["ports"][0]["containerPort"] == 9555
    assert only(moved, "ConfigMap")["data"]["MDW_METRICS_PORT"] == "9555"


def _grace(docs: list[dict[str, Any]]) -> Any:
    return only(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


def _settings(docs: list[dict[str, Any]]) -> worker_config.Settings:
    """What the worker makes of the rendered ConfigMap (settings it does not know yet are ignored, as it does)."""
    return worker_config.load(environ=only(docs, "ConfigMap")["data"])


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"drainTimeoutSeconds": 0},
        {"drainTimeoutSeconds": 1},
        {"drainTimeoutSeconds": 25.5, "config": {"connect_timeout_s": 1.5, "read_timeout_s": 30}},
        {"drainTimeoutSeconds": 600, "config": {"read_timeout_s": 120, "max_poll_interval_ms": 900_000}},
    ],
    ids=["defaults", "no-drain", "drain-1", "fractional-slow-api", "long-drain"],
)
def test_termination_grace_covers_the_worst_case_stop(values: dict[str, Any]) -> None:
    """Drain, then the last API call's connect + read timeout, then the flushes, commits and consumer close: the
    kubelet's SIGKILL must not come first, or the final commit is lost and the drained events are processed again."""
    docs = render(merge(REQUIRED, values))
    grace = _grace(docs)
    settings = _settings(docs)
    assert settings.drain_timeout_s == values.get("drainTimeoutSeconds", 25)
    worst = settings.drain_timeout_s + settings.connect_timeout_s + settings.read_timeout_s + AFTER_DRAIN_S
    assert isinstance(grace, int)
    assert worst <= grace < worst + 1  # derived from the settings, rounded up to whole seconds


def test_termination_grace_margin_and_an_explicit_grace_period() -> None:
    base = _grace(render(REQUIRED))
    assert _grace(render(merge(REQUIRED, {"terminationGraceMarginSeconds": AFTER_DRAIN_S + 30}))) == base + 30
    assert _grace(render(merge(REQUIRED, {"terminationGracePeriodSeconds": base + 100}))) == base + 100
    message = (
        f"terminationGracePeriodSeconds ({base - 1}) is shorter than the worker's worst-case stop ({base} s = "
        "drainTimeoutSeconds 25 + config.connect_timeout_s 3 + config.read_timeout_s 10, rounded up, "
        f"+ terminationGraceMarginSeconds {AFTER_DRAIN_S})"
    )
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render(merge(REQUIRED, {"terminationGracePeriodSeconds": base - 1}))


def _worker_env(values: dict[str, Any]) -> dict[str, str]:
    env = {f"MDW_{k.upper()}": str(v) for k, v in values.get("config", {}).items()}
    if "drainTimeoutSeconds" in values:
        env["MDW_DRAIN_TIMEOUT_S"] = str(values["drainTimeoutSeconds"])
    return env


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({}, []),
        ({"drainTimeoutSeconds": 280}, []),
        ({"drainTimeoutSeconds": 290}, ["drainTimeoutSeconds", "config.max_poll_interval_ms"]),
        ({"drainTimeoutSeconds": 600, "config": {"max_poll_interval_ms": 700_000}}, []),
        ({"config": {"revoke_timeout_s": 250}}, []),
        ({"config": {"revoke_timeout_s": 290}}, ["config.revoke_timeout_s", "config.max_poll_interval_ms"]),
        (
            {"config": {"read_timeout_s": 120, "max_poll_interval_ms": 120_000}},
            ["config.read_timeout_s", "config.max_poll_interval_ms"],
        ),
        (
            {"config": {"session_timeout_ms": 60_000, "max_poll_interval_ms": 50_000}},
            ["config.session_timeout_ms", "config.max_poll_interval_ms"],
        ),
    ],
)
def test_chart_refuses_what_the_worker_would_refuse_at_start(values: dict[str, Any], names: list[str]) -> None:
    """A revoke or the drain waits without polling the consumer; the worker refuses to start when that wait (plus
    one API call) reaches max_poll_interval_ms. The chart says so at install instead of rolling out a crash loop."""
    try:
        worker_config.load(environ=_worker_env(values))
        worker_refuses = False
    except worker_config.ConfigError:
        worker_refuses = True
    assert worker_refuses == bool(names)
    if not names:
        render(merge(REQUIRED, values))
        return
    with pytest.raises(helm_python.HelmRenderError) as err:
        render(merge(REQUIRED, values))
    assert all(name in str(err.value) for name in names), str(err.value)


@pytest.mark.parametrize(
    ("config", "resources", "expected"),
    [
        ({}, {}, ("256Mi", "512Mi")),
        ({"image_mode": "url", "fetch_memory_mb": 300}, {}, ("256Mi", "512Mi")),  # url mode holds no image bytes
        ({"image_mode": "fetch"}, {}, ("384Mi", "640Mi")),
        ({"image_mode": "fetch", "fetch_memory_mb": 300}, {}, ("556Mi", "812Mi")),
        ({"image_mode": "fetch"}, {"limits": {"memory": "2Gi"}}, ("384Mi", "2Gi")),
        ({"image_mode": "fetch"}, {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}}, ("1Gi", "1Gi")),
    ],
)
def test_memory_follows_the_image_mode_unless_set(
    config: dict[str, Any], resources: dict[str, Any], expected: tuple[str, str]
) -> None:
    """Fetch mode holds up to fetch_memory_mb MiB of image bytes on top of the worker's own baseline."""
    docs = render(merge(REQUIRED, {"config": config, "resources": resources}))
    got = container(docs)["resources"]
    assert (got["requests"]["memory"], got["limits"]["memory"]) == expected
    assert (got["requests"]["cpu"], got["limits"]["cpu"]) == ("100m", "1")
    # The worker is told the budget the pod was sized for.
    data = only(docs, "ConfigMap")["data"]
    assert data["MDW_FETCH_MEMORY_MB"] == str(config.get("fetch_memory_mb", BY_NAME["fetch_memory_mb"].default))


def test_a_fetch_mode_memory_limit_below_the_image_budget_is_refused() -> None:
    values = {"config": {"image_mode": "fetch", "fetch_memory_mb": 512}, "resources": {"limits": {"memory": "0.5Gi"}}}
    message = "resources.limits.memory (0.5Gi) is below 256Mi + config.fetch_memory_mb (512) = 768Mi"
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render(merge(REQUIRED, values))
    values["resources"] = {"limits": {"memory": "768Mi"}}
    assert container(render(merge(REQUIRED, values)))["resources"]["limits"]["memory"] == "768Mi"


def test_keda_reset_policy_follows_the_worker_setting() -> None:
    def policy(values: dict[str, Any]) -> str:
        meta = only(render(merge(REQUIRED, KEDA, values)), "ScaledObject")["spec"]["triggers"][0]["metadata"]
        return str(meta["offsetResetPolicy"])

    assert policy({}) == "earliest"
    assert policy({"config": {"auto_offset_reset": "latest"}}) == "latest"
    pinned = {"config": {"auto_offset_reset": "latest"}, "keda": {"kafka": {"offsetResetPolicy": "earliest"}}}
    assert policy(pinned) == "earliest"


def test_keda_scales_on_every_input_topic_when_the_worker_reads_several() -> None:
    def trigger(values: dict[str, Any]) -> dict[str, Any]:
        meta = only(render(merge(REQUIRED, KEDA, values)), "ScaledObject")["spec"]["triggers"][0]["metadata"]
        return dict(meta)

    assert trigger({})["topic"] == "images"
    # A list is no topic name: KEDA counts the lag of every topic the group consumes when `topic` is absent.
    several = {"config": {"input_topic": "images,camera.events", "input_formats": "camera.events=cloudevents"}}
    assert "topic" not in trigger(several)
    assert trigger(merge(several, {"keda": {"kafka": {"topic": "images"}}}))["topic"] == "images"


def test_a_replay_job_sends_each_dead_letter_back_to_its_own_topic_when_the_worker_reads_several() -> None:
    """Replay routes each dead letter back to the input topic it came from, so several input topics need no
    target; fromTopic selects one topic's dead letters, and one the worker no longer reads needs targetTopic (the
    replay would exit 2)."""

    def args(values: dict[str, Any]) -> list[str]:
        (c,) = only(render(merge(REQUIRED, several, values)), "Job")["spec"]["template"]["spec"]["containers"]
        return list(c["args"])

    several = {
        "config": {"input_topic": "images, camera.events", "input_formats": "camera.events=cloudevents"},
        "replay": {"enabled": True, "codes": ["-1308"]},
    }
    assert "--to" not in args({}) and "--from-topic" not in args({})
    picked = args({"replay": {"fromTopic": "camera.events"}})
    assert picked[picked.index("--from-topic") + 1] == "camera.events" and "--to" not in picked
    stray = {"replay": {"fromTopic": "old-images"}}
    with pytest.raises(helm_python.HelmRenderError, match=re.escape("replay.fromTopic old-images is not one of")):
        render(merge(REQUIRED, several, stray))
    moved = args(merge(stray, {"replay": {"targetTopic": "images"}}))
    assert moved[moved.index("--from-topic") + 1] == "old-images" and moved[moved.index("--to") + 1] == "images"


def test_credentials_are_files_from_the_existing_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for scenario in ("minimal", "sasl-tls"):
        docs = rendered[scenario]
        c = container(docs)
        pod = only(docs, "Deployment")["spec"]["template"]["spec"]
        env = {e["name"]: e for e in c["env"]}
        assert all("valueFrom" not in e for e in env.values()), "no secret values in the environment"
        (secret_volume,) = [v for v in pod["volumes"] if "secret" in v]
        assert secret_volume["secret"]["secretName"] == "mdw-credentials"
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == secret_volume["name"]]
        assert mount["readOnly"] is True
        files = {mount["mountPath"] + "/" + i["path"]: i["key"] for i in secret_volume["secret"]["items"]}
        assert files[env["MDW_SECRET_ID_FILE"]["value"]] == "secret-id"
        assert files[env["MDW_SECRET_KEY_FILE"]["value"]] == "secret-key"
        if scenario == "sasl-tls":
            assert files[env["MDW_SASL_PASSWORD_FILE"]["value"]] == "sasl-password"
        else:
            assert "MDW_SASL_PASSWORD_FILE" not in env and len(files) == 2
        # Readable by the pod's fsGroup (the worker's group), by nobody else.
        assert secret_volume["secret"]["defaultMode"] == 0o440
        assert pod["securityContext"]["fsGroup"] == c["securityContext"]["runAsGroup"]


def test_settings_come_from_the_configmap_with_a_rolling_checksum() -> None:
    docs = render(SCENARIOS["minimal"])
    c = container(docs)
    cm = only(docs, "ConfigMap")
    assert {"configMapRef": {"name": cm["metadata"]["name"]}} in c["envFrom"]
    annotations = only(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    changed = render(merge(SCENARIOS["minimal"], {"config": {"max_in_flight": 8}}))
    changed_annotations = only(changed, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    assert changed_annotations["checksum/config"] != annotations["checksum/config"]
    assert render(SCENARIOS["minimal"]) == docs  # deterministic: no spurious rollouts


def test_image_defaults_to_app_version_and_can_be_pinned() -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))["appVersion"]
    assert container(render(REQUIRED))["image"] == f"multidentify-worker:{app_version}"
    pinned = container(
        render(merge(REQUIRED, PINNED_IMAGE, {"image": {"repository": "reg.example/mdw", "tag": "1.2.3"}}))
    )
    assert pinned["image"] == "reg.example/mdw:1.2.3@sha256:" + "a" * 64
    assert pinned["imagePullPolicy"] == "Always"
    assert container(render(REQUIRED))["args"] == ["run"]


def test_autoscalers_own_the_replica_count(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert only(rendered["minimal"], "Deployment")["spec"]["replicas"] == 2
    assert "replicas" not in only(rendered["keda"], "Deployment")["spec"]
    assert "replicas" not in only(rendered["hpa"], "Deployment")["spec"]
    meta = only(rendered["keda"], "ScaledObject")["spec"]["triggers"][0]["metadata"]
    cfg = SCENARIOS["keda"]["config"]
    assert meta["bootstrapServers"] == cfg["bootstrap_servers"]
    assert meta["consumerGroup"] == "multidentify-worker" and meta["topic"] == "images"
    assert meta["allowIdleConsumers"] == "false" and meta["limitToPartitionsWithLag"] == "true"
    hpa = only(rendered["hpa"], "HorizontalPodAutoscaler")["spec"]
    assert [m["type"] for m in hpa["metrics"]] == ["Resource", "Resource", "External"]


def test_topology_spread_gets_the_selector_labels(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["scheduling"]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    selector = only(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert [t["labelSelector"]["matchLabels"] for t in pod["topologySpreadConstraints"]] == [selector, selector]
    assert pod["nodeSelector"] == SCHEDULING["nodeSelector"]
    assert pod["tolerations"] == SCHEDULING["tolerations"]
    assert pod["affinity"] == SCHEDULING["affinity"]
    assert pod["priorityClassName"] == "workers"


def test_network_policy_allows_only_kafka_api_dns_and_scrapes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    spec = only(rendered["network-policy"], "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"] == NETWORK_POLICY["networkPolicy"]["metricsFrom"]
    egress_ports = [sorted(p["port"] for p in rule["ports"]) for rule in spec["egress"]]
    assert egress_ports == [[9092, 9093], [443], [53, 53]]
    assert spec["egress"][0]["to"] == NETWORK_POLICY["networkPolicy"]["kafka"]["to"]


def test_pdb_takes_min_available_when_set(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert only(rendered["minimal"], "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    spec = only(rendered["pdb-min-available"], "PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == "50%" and "maxUnavailable" not in spec


# ---------------------------------------------------------------- the ConfigMap against the worker's settings


def _property_setting(key: str) -> str | None:
    """The properties setting (kafka_consumer, …) whose prefix ``key`` has, if any."""
    return next((s.name for s in SETTINGS if s.kind == "properties" and key.startswith(s.env + "_")), None)


def test_configmap_keys_are_real_non_secret_settings(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for scenario, docs in rendered.items():
        for key in only(docs, "ConfigMap")["data"]:
            assert key.startswith("MDW_"), key
            if _property_setting(key):
                continue  # a librdkafka property: the worker's loader checks it (test_every_setting_round_trips…)
            name = key.removeprefix("MDW_").lower()
            assert name in BY_NAME, f"{scenario}: {key} is not a worker setting"
            assert not BY_NAME[name].secret, f"{scenario}: secret {key} in a ConfigMap"


def test_every_setting_round_trips_through_the_configmap(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Each value the chart renders parses in the worker to the value the operator wrote (ints stay ints)."""
    data = only(rendered["full-config"], "ConfigMap")["data"]
    assert data["MDW_FETCH_MAX_BYTES"] == "1400000"  # not 1.4e+06
    settings = worker_config.load(environ=data)
    for name, value in SCENARIOS["full-config"]["config"].items():
        if name not in worker_config.BY_NAME:
            assert data[f"MDW_{name.upper()}"] == str(value), name  # a pending setting: passed on as written
            continue
        if isinstance(value, dict):  # librdkafka properties: as text, the way librdkafka takes them
            expected: Any = tuple((k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items())
            assert sorted(getattr(settings, name)) == sorted(expected), name
        else:
            expected = tuple(value) if isinstance(value, list) else value
            assert getattr(settings, name) == expected, name
        assert settings.sources[name] == "env", name


def config_schema_from_settings() -> dict[str, Any]:
    """The `config` part of values.schema.json as worker/config/ SETTINGS define it (types, limits, choices)."""
    patterns = {
        "input_topic": r"^[A-Za-z0-9._-]{1,249}( *, *[A-Za-z0-9._-]{1,249})*$",  # one topic or a list
        "results_topic": r"^[A-Za-z0-9._-]{1,249}$",
        "dlq_topic": r"^[A-Za-z0-9._-]{1,249}$",
        "api_base_url": r"^https?://[^\s/]+",
        "iai_endpoint": r"^(https?://)?[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$",
        "iai_region": r"^[a-z]{2,}-[a-z0-9]+(-[a-z0-9]+)*$",
    }
    props: dict[str, Any] = {}
    for s in SETTINGS:
        if s.secret or s.name in CHART_OWNED:
            continue
        prop: dict[str, Any] = {"description": f"{s.env_shown}: {s.help}"}
        if s.kind == "choice":
            prop.update(type=["string", "null"], enum=[*s.choices, None])
        elif s.kind == "bool":
            prop["type"] = ["boolean", "null"]
        elif s.kind in ("int", "float"):
            prop["type"] = ["integer" if s.kind == "int" else "number", "null"]
            if s.minimum is not None:
                prop["minimum"] = s.minimum
            if s.maximum is not None:
                prop["maximum"] = s.maximum
        elif s.kind == "properties":
            # A map of librdkafka properties; the secret ones and those the worker owns are refused by name, also
            # with librdkafka's topic. prefix, and so is a name not in lower case (librdkafka's names are; the worker
            # would read its variable back in lower case, past the secret check).
            owned = {*worker_config.OWNED_PROPERTIES, *worker_config.SETTING_PROPERTIES}
            refused = sorted(owned | {"topic." + n for n in owned})
            prop.update(
                type=["object", "null"],
                additionalProperties={"type": ["string", "number", "boolean"]},
                propertyNames={
                    "not": {
                        "anyOf": [
                            {"pattern": worker_config.SECRET_PROPERTY.pattern},
                            {"pattern": "[A-Z]"},
                            {"enum": refused},
                        ]
                    }
                },
            )
        elif s.kind == "list":
            item: dict[str, Any] = {"type": "string"}
            if s.name == "group_ids":
                item["pattern"] = r"^[^\s/]{1,64}$"
            prop.update(type=["array", "string", "null"], items=item)
        else:
            prop["type"] = ["string", "null"]
            if s.name in patterns:
                prop["pattern"] = patterns[s.name]
        props[s.name] = prop
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "worker settings rendered as MDW_<NAME> (see worker/config/); null keeps the worker default",
        "properties": props,
    }


def test_schema_config_section_matches_worker_settings() -> None:
    schema = orjson.loads((CHART / "values.schema.json").read_bytes())
    expected = config_schema_from_settings()
    assert schema["properties"]["config"] == expected, (
        "values.schema.json's config section drifted from worker/config/; replace it with:\n"
        + orjson.dumps(expected, option=orjson.OPT_INDENT_2).decode()
    )


# ---------------------------------------------------------------- values.schema.json rejects bad values

BAD_VALUES: dict[str, dict[str, Any]] = {
    "negative replicas": {"replicaCount": -1},
    "unknown top-level key": {"replicas": 3},
    "unknown nested key": {"image": {"registry": "x"}},
    "unknown setting": {"config": {"max_inflight": 3}},
    "bad ordering": {"config": {"ordering": "sorted"}},
    "bad log level": {"config": {"log_level": "TRACE"}},
    "setting below its minimum": {"config": {"max_in_flight": 0}},
    "setting above its maximum": {"config": {"fetch_max_bytes": 4_000_000}},
    "string for an int setting": {"config": {"max_in_flight": "64"}},
    "bad topic name": {"config": {"input_topic": "camera images"}},
    "bad group id": {"config": {"group_ids": ["a/b"]}},
    "bad API URL": {"config": {"api_base_url": "ftp://example"}},
    "secret in config": {"config": {"secret_key": "s3cr3t"}},
    "sasl password in config": {"config": {"sasl_password": "s3cr3t"}},
    "iai token in config": {"config": {"iai_token": "s3cr3t"}},
    "chart-owned setting in config": {"config": {"drain_timeout_s": 5}},
    "keda and hpa both": {"keda": {"enabled": True}, "autoscaling": {"enabled": True}},
    "idle consumers with lag limit": {
        "keda": {"enabled": True, "kafka": {"allowIdleConsumers": True, "limitToPartitionsWithLag": True}}
    },
    "bad offset reset policy": {"keda": {"kafka": {"offsetResetPolicy": "beginning"}}},
    "bad trigger auth kind": {"keda": {"authenticationRef": {"kind": "Secret"}}},
    "bad digest": {"image": {"digest": "latest"}},
    "bad pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "metrics port 0": {"metrics": {"port": 0}},
    "negative drain": {"drainTimeoutSeconds": -1},
    "servicemonitor without service": {"serviceMonitor": {"enabled": True}, "service": {"enabled": False}},
    "bad scrape interval": {"serviceMonitor": {"interval": "often"}},
    "unknown probe field": {"livenessProbe": {"httpGet": {"path": "/"}}},
    "bad network policy port": {"networkPolicy": {"kafka": {"ports": [70000]}}},
    "secret kafka property": {"config": {"kafka_common": {"sasl.oauthbearer.client.secret": "s3cr3t"}}},
    "secret kafka property in mixed case": {"config": {"kafka_common": {"ssl.key.Password": "hunter2"}}},
    "secret kafka property in upper case": {"config": {"kafka_common": {"SASL.OAUTHBEARER.CLIENT.SECRET": "x"}}},
    "kafka property not in lower case": {"config": {"kafka_consumer": {"Client.Rack": "a"}}},
    "owned kafka property with topic. prefix": {"config": {"kafka_producer": {"topic.acks": "1"}}},
    "kafka property a setting holds with topic. prefix": {
        "config": {"kafka_consumer": {"topic.auto.offset.reset": "latest"}}
    },
    "kafka isolation level": {"config": {"kafka_consumer": {"isolation.level": "read_uncommitted"}}},
    "key contents as a kafka property": {"config": {"kafka_common": {"ssl.key.pem": "-----BEGIN PRIVATE KEY-----"}}},
    "kafka property of the commit contract": {"config": {"kafka_consumer": {"enable.auto.commit": True}}},
    "kafka property a setting holds": {"config": {"kafka_consumer": {"group.id": "other"}}},
    "nested kafka property": {"config": {"kafka_consumer": {"client": {"rack": "a"}}}},
    "kafka properties not a map": {"config": {"kafka_consumer": "client.rack=a"}},
    "group instance id in config": {"config": {"group_instance_id": "worker-0"}},
    "unknown static membership key": {"staticMembership": {"enabled": True, "id": "x"}},
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(case: str) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(merge(REQUIRED, BAD_VALUES[case]))


def test_schema_accepts_every_scenario() -> None:
    with helm_python.Chart.load(str(CHART)) as c:
        for values in SCENARIOS.values():
            c.validate_schema(values)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"keda": {"enabled": True}, "autoscaling": {"enabled": True}}, "mutually exclusive"),
        ({"config": {"secret_id": "AKID"}}, "config.secret_id is a secret"),
        ({"config": {"metrics_port": 1}}, "config.metrics_port is set by the chart"),
        ({"serviceMonitor": {"enabled": True}, "service": {"enabled": False}}, "needs service.enabled"),
        ({"keda": {"enabled": True, "minReplicaCount": 5, "maxReplicaCount": 2}}, "keda.minReplicaCount"),
        ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "autoscaling.minReplicas"),
        (
            {"config": {"kafka_common": {"ssl.key.password": "x"}}},
            "config.kafka_common.ssl.key.password is a secret: the ConfigMap is no place for it; pass it with "
            "extraEnv from a Secret (name MDW_KAFKA_COMMON_SSL_KEY_PASSWORD",
        ),
        (
            {"config": {"kafka_common": {"ssl.key.Password": "hunter2"}}},
            "config.kafka_common.ssl.key.Password is a secret: the ConfigMap is no place for it",
        ),
        (
            {"config": {"kafka_common": {"SASL.OAUTHBEARER.CLIENT.SECRET": "hunter2"}}},
            "config.kafka_common.SASL.OAUTHBEARER.CLIENT.SECRET is a secret: the ConfigMap is no place for it; pass "
            "it with extraEnv from a Secret (name MDW_KAFKA_COMMON_SASL_OAUTHBEARER_CLIENT_SECRET",
        ),
        (
            {"config": {"kafka_consumer": {"Client.Rack": "a"}}},
            "config.kafka_consumer.Client.Rack: librdkafka property names are lower case (client.rack)",
        ),
        (
            {"config": {"input_topic": "images, face-dlq"}},
            "config.input_topic (images, face-dlq) lists config.dlq_topic (face-dlq)",
        ),
        (
            {"config": {"input_topic": "in", "results_topic": "in"}},
            "config.input_topic (in) lists config.results_topic (in)",
        ),
        ({"config": {"group_instance_id": "w"}}, "config.group_instance_id is set by the chart"),
        ({"staticMembership": {"enabled": True}}, "staticMembership.enabled needs config.session_timeout_ms"),
    ],
)
def test_templates_guard_even_without_the_schema(bad: dict[str, Any], message: str, tmp_path: Path) -> None:
    """`helm template --skip-schema-validation` or a forked chart must still not render a broken release."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "values.schema.json").unlink()
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render(merge(REQUIRED, bad), chart=chart)


def test_the_templates_secret_property_check_is_the_workers() -> None:
    """mdw.validate refuses the secret properties the worker masks: its pattern is SECRET_PROPERTY's (in a Go string,
    backslashes doubled), matched against the name in lower case as the worker reads the variable back."""
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    go_string = worker_config.SECRET_PROPERTY.pattern.replace("\\", "\\\\")
    assert f'regexMatch "{go_string}" (lower $property)' in helpers


# ---------------------------------------------------------------- documentation


def _documented_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Paths the README must list: recurse into chart-defined objects, stop at free-form Kubernetes objects."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and value and sub.get("additionalProperties") is False and "properties" in sub:
            yield from _documented_paths(value, sub, path + ".")
        else:
            yield path


def test_readme_lists_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    schema = orjson.loads((CHART / "values.schema.json").read_bytes())
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    missing = [p for p in _documented_paths(values, schema) if f"`{p}`" not in readme]
    assert missing == [], f"chart README does not list: {missing}"
    assert set(values) <= set(schema["properties"]), "values.yaml keys without a schema entry"


# ---------------------------------------------------------------- checkov


def _checkov_bin() -> Path:
    configured = os.environ.get("CHECKOV_BIN")
    if configured:
        path = Path(configured)
        assert path.is_file(), f"CHECKOV_BIN={configured} does not exist"
        return path
    path = REPO / ".venv-checkov" / "bin" / "checkov"
    if not path.is_file():
        message = f"checkov not found at {path} (set CHECKOV_BIN); `make test` installs it into .venv-checkov"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def checkov_waivers() -> dict[str, str]:
    """check id → reason, from the repository's .checkov.yaml (one `- ID  # reason` line each under `skip-check:`)."""
    waivers: dict[str, str] = {}
    in_skip = False
    for line in (REPO / ".checkov.yaml").read_text(encoding="utf-8").splitlines():
        if re.match(r"^skip-check:\s*$", line):
            in_skip = True
            continue
        if in_skip and (m := re.match(r"^\s+-\s+(CKV2?_[A-Z0-9_]+)\s*(?:#\s*(.*))?$", line)):
            waivers[m.group(1)] = (m.group(2) or "").strip()
        elif in_skip and line.strip() and not line.lstrip().startswith("#"):
            in_skip = False
    return waivers


def _scan(checkov: Path, directory: Path) -> list[dict[str, Any]]:
    """Failed checks of one checkov run over ``directory`` (Kubernetes manifests and the Dockerfile)."""
    proc = subprocess.run(
        [
            *(str(checkov), "-d", str(directory), "--framework", "kubernetes", "dockerfile"),
            *("--skip-download", "--quiet", "--compact", "-o", "json"),
        ],
        capture_output=True,
        timeout=240,
        check=False,
        cwd=directory,  # no stray .checkov.yaml applies: the waivers are filtered below, visibly
    )
    assert proc.returncode in (0, 1), proc.stderr.decode()[-2000:]
    report = orjson.loads(proc.stdout)
    failed: list[dict[str, Any]] = []
    for r in report if isinstance(report, list) else [report]:
        if "results" in r:  # a framework with nothing to scan prints a bare summary
            failed.extend(r["results"]["failed_checks"])
    return failed


def write_renderings(root: Path, scenarios: dict[str, dict[str, Any]], prefix: str) -> None:
    """Each scenario's rendering in its own directory under ``root``, for one checkov run over them all.

    Own directory, release and namespace per scenario, so graph checks (e.g. "is selected by a NetworkPolicy") of
    one scenario cannot be satisfied by another scenario's objects.
    """
    for index, (scenario, values) in enumerate(scenarios.items()):
        directory = root / scenario
        directory.mkdir()
        for path, text in render_raw(values, name=f"{prefix}{index}", namespace=f"{prefix}ns{index}").items():
            if not path.endswith("NOTES.txt") and text.strip():
                (directory / Path(path).name).write_text(text)


@pytest.fixture(scope="module")
def checkov_failures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Failed checks per scenario (and for "dockerfile"), from a single checkov run over every rendering."""
    checkov = _checkov_bin()
    root = tmp_path_factory.mktemp("rendered")
    write_renderings(root, SCENARIOS, "r")
    shutil.copy(REPO / "Dockerfile", root / "Dockerfile")
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in [*SCENARIOS, "dockerfile"]}
    for failure in _scan(checkov, root):
        first = Path(failure["file_path"].lstrip("/")).parts[0]
        out["dockerfile" if first == "Dockerfile" else first].append(failure)
    return out


def _describe(failed: list[dict[str, Any]]) -> list[str]:
    return sorted({f"{f['check_id']} {f['resource']} ({f.get('check_name', '')})" for f in failed})


def test_every_waiver_has_a_reason() -> None:
    waivers = checkov_waivers()
    assert waivers, ".checkov.yaml lists no waivers (or could not be parsed)"
    assert all(len(reason) > 20 for reason in waivers.values()), waivers


@pytest.mark.parametrize("scan", [*sorted(SCENARIOS), "dockerfile"])
def test_checkov_finds_nothing_beyond_the_waivers(scan: str, checkov_failures: dict[str, list[dict[str, Any]]]) -> None:
    waivers = checkov_waivers()
    unexpected = [f for f in checkov_failures[scan] if f["check_id"] not in waivers]
    assert unexpected == [], _describe(unexpected)


def test_hardened_values_need_only_the_unconditional_waivers(
    checkov_failures: dict[str, list[dict[str, Any]]],
) -> None:
    """With a digest, pull policy Always and a NetworkPolicy the conditional waivers are not used."""
    conditional = {"CKV_K8S_43", "CKV_K8S_15", "CKV2_K8S_6"}
    assert conditional <= set(checkov_waivers())
    assert {f["check_id"] for f in checkov_failures["minimal"]} & conditional, "the waived checks do fire by default"
    for scenario in ("everything", "everything-hpa"):
        used = {f["check_id"] for f in checkov_failures[scenario]} & conditional
        assert used == set(), f"{scenario}: {sorted(used)}"


# ---------------------------------------------------------------- the Dockerfile


def _stages(text: str) -> list[list[str]]:
    """Instructions per build stage, continuation lines joined and comments dropped."""
    logical = re.sub(r"\\\n", " ", text)
    stages: list[list[str]] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if re.match(r"(?i)^FROM\s", line):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_final_stage_is_slim_non_root_and_copies_only_the_venv() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    stages = _stages(text)
    assert len(stages) >= 2, "multi-stage build expected"
    builder, final = stages[0], stages[-1]
    base = re.sub(r"\s+AS\s+\S+$", "", final[0], flags=re.I).split()[-1]
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)$", text, flags=re.M))
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), base)
    assert base.startswith("python:3.11-slim"), base

    users = [i.split(None, 1)[1] for i in final if i.upper().startswith("USER ")]
    assert users, "final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, f"numeric non-root UID expected, got {users[-1]}"

    assert 'ENTRYPOINT ["multidentify-worker"]' in final
    assert 'CMD ["run"]' in final
    assert any(re.match(r"EXPOSE\s+9400\b", i) for i in final)

    copies = [i for i in final if i.upper().startswith(("COPY ", "ADD "))]
    assert copies, "the final stage must copy the venv from the builder"
    for instruction in copies:
        assert instruction.upper().startswith("COPY "), "ADD not allowed in the final stage"
        assert "--from=builder" in instruction, f"final stage copies from the build context: {instruction}"
        assert instruction.split()[-2:] == ["/opt/venv", "/opt/venv"], instruction

    final_text = " ".join(final).lower()
    for tool in ("build-essential", "gcc", "g++", "make ", "pip install", "git "):
        assert tool not in final_text, f"{tool!r} in the final stage"
    builder_text = " ".join(builder)
    assert "[emulator]" not in builder_text and "[dev]" not in builder_text, "extras must not be installed"

    # The record schemas are package data (worker/_schemas links to schemas/): both must be in the build context,
    # and the build fails unless the installed package loads every schema.
    assert any(re.match(r"COPY\s+schemas/?\s+schemas/?$", i) for i in builder), "builder must copy schemas/"
    assert any("schemas.validator" in i for i in builder if i.upper().startswith("RUN ")), "build must load the schemas"


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines() if line.strip()]
    rules = [line for line in lines if not line.startswith("#")]
    assert rules[0] == "*", "allow-list style: ignore everything, then re-include what the build needs"
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert {"pyproject.toml", "README.md", "worker", "schemas"} <= included
    assert not included & {".venv", ".venv-checkov", ".git", "tests", "bench", "helm", ".env"}


# ---------------------------------------------------------------- Kafka: librdkafka properties, static membership


def test_kafka_properties_become_one_variable_each_that_the_worker_reads_back() -> None:
    values = {
        "config": {
            "kafka_common": {"client.id": "mdw-eu", "socket.keepalive.enable": True},
            "kafka_consumer": {"client.rack": "eu-west-1a", "fetch.max.bytes": 33_554_432},
            "kafka_producer": {"linger.ms": 20},
        }
    }
    docs = render(merge(REQUIRED, values))
    data = only(docs, "ConfigMap")["data"]
    assert data["MDW_KAFKA_COMMON_CLIENT_ID"] == "mdw-eu"
    assert data["MDW_KAFKA_COMMON_SOCKET_KEEPALIVE_ENABLE"] == "true"
    assert data["MDW_KAFKA_CONSUMER_CLIENT_RACK"] == "eu-west-1a"
    assert data["MDW_KAFKA_CONSUMER_FETCH_MAX_BYTES"] == "33554432"  # not 3.3554432e+07
    assert data["MDW_KAFKA_PRODUCER_LINGER_MS"] == "20"
    assert not any(k in data for k in ("MDW_KAFKA_COMMON", "MDW_KAFKA_CONSUMER", "MDW_KAFKA_PRODUCER"))
    settings = _settings(docs)  # the worker's loader, librdkafka's own check included
    assert settings.properties("consumer") == {
        "client.id": "mdw-eu",
        "socket.keepalive.enable": "true",
        "client.rack": "eu-west-1a",
        "fetch.max.bytes": "33554432",
    }
    assert settings.properties("producer") == {
        "client.id": "mdw-eu",
        "socket.keepalive.enable": "true",
        "linger.ms": "20",
    }


def test_the_chart_spells_property_variables_as_the_worker_does() -> None:
    """'_' → '__', '-' → '___', '.' → '_', upper case: the chart's template and config.property_env agree."""
    names = ["a.b", "x_y.z", "x-y.z", "a_b-c.d_e"]
    data = only(render(merge(REQUIRED, {"config": {"kafka_consumer": dict.fromkeys(names, "v")}})), "ConfigMap")["data"]
    for name in names:
        assert data[worker_config.property_env("kafka_consumer", name)] == "v", name


def test_static_membership_gives_each_pod_its_own_name_as_instance_id(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Unique among the replicas (pod names are) and kept across a container restart (the pod keeps its name)."""
    env = {e["name"]: e for e in container(rendered["static-membership"])["env"]}
    assert env["MDW_GROUP_INSTANCE_ID"] == {
        "name": "MDW_GROUP_INSTANCE_ID",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    for scenario in ("minimal", "everything"):
        assert "MDW_GROUP_INSTANCE_ID" not in {e["name"] for e in container(rendered[scenario])["env"]}
    # What the worker makes of it in a pod named by the Deployment: its consumer joins with that instance id.
    from worker.runtime import kafka

    data = only(rendered["static-membership"], "ConfigMap")["data"]
    settings = worker_config.load(environ={**data, "MDW_GROUP_INSTANCE_ID": "mdw-multidentify-worker-7d9c5b-x2x4q"})
    assert settings.session_timeout_ms == 60_000
    assert kafka.consumer_config(settings)["group.instance.id"] == "mdw-multidentify-worker-7d9c5b-x2x4q"
