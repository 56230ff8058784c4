"""The Kubernetes manifests and the Grafana dashboard, checked without a cluster.

No cluster runs here, so the manifests are parsed and held to what a cluster and the
relay need: names and kinds, selectors that match the pod labels, probes on /healthz
and /readyz, one port everywhere (the ConfigMap's server.address, containerPort, the
Services' targetPort), the queue claim mounted where RELAY_QUEUE_PATH points, a grace
period longer than the preStop pause plus shutdown_grace, and every ${VAR} of the
config provided by the Secret or the pod. The dashboard may only query metrics the
relay exports (relay/telemetry.py and Runtime._gauges in relay/server/serve.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.config import load
from tests.support import REPO_ROOT

K8S = REPO_ROOT / "configs" / "kubernetes"
DASHBOARD = REPO_ROOT / "configs" / "grafana" / "relay-dashboard.json"
DOCS = REPO_ROOT / "docs" / "operations.md"
Manifest = dict[str, Any]


def manifests() -> list[tuple[Path, Manifest]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((path, doc))
    return found


def one(kind: str, name: str | None = None) -> Manifest:
    matches = [doc for _, doc in manifests() if doc["kind"] == kind
               and (name is None or doc["metadata"]["name"] == name)]
    assert len(matches) == 1, f"want one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="module")
def sts() -> Manifest:
    return one("StatefulSet")


@pytest.fixture(scope="module")
def container(sts: Manifest) -> Manifest:
    containers = sts["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["relay"]
    return containers[0]  # type: ignore[no-any-return]


def pod_labels(sts: Manifest) -> dict[str, str]:
    return sts["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def relay_toml() -> str:
    return one("ConfigMap", "relay-config")["data"]["relay.toml"]  # type: ignore[no-any-return]


def secret_keys() -> set[str]:
    secret = one("Secret", "relay-secrets")
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


def container_env(container: Manifest) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def resolve_port(container: Manifest, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    assert port in named, f"port name {port!r} is not a containerPort name ({sorted(named)})"
    return int(named[port])


def duration_seconds(text: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


# --- every manifest ---------------------------------------------------------------------------


def test_every_manifest_parses_and_names_its_kind() -> None:
    found = manifests()
    kinds = {doc["kind"] for _, doc in found}
    assert {"StatefulSet", "Service", "PodDisruptionBudget", "Secret", "ConfigMap",
            "HorizontalPodAutoscaler", "Kustomization"} <= kinds
    for path, doc in found:
        assert (isinstance(doc.get("apiVersion"), str) and "/" in doc["apiVersion"]) or doc["apiVersion"] == "v1", path
        if doc["kind"] != "Kustomization":
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), path


def test_kustomization_applies_everything_but_the_example_secret() -> None:
    kustomization = one("Kustomization")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk
    assert any(image["name"] == "relay" for image in kustomization["images"])


def test_selectors_match_the_pod_template_labels(sts: Manifest) -> None:
    labels = pod_labels(sts)
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for service in (doc for _, doc in manifests() if doc["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= labels.items(), service["metadata"]["name"]


def test_the_statefulset_is_governed_by_a_headless_service(sts: Manifest) -> None:
    headless = one("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    service = one("Service", "relay")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_one_port_from_the_config_to_the_container_to_the_services(container: Manifest) -> None:
    address = re.search(r'^address\s*=\s*"([^"]+)"', relay_toml(), re.M)
    assert address, "the ConfigMap's relay.toml has no server.address"
    config_port = int(address.group(1).rpartition(":")[2])
    assert [p["containerPort"] for p in container["ports"]] == [config_port]
    for service in (doc for _, doc in manifests() if doc["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert resolve_port(container, port["targetPort"]) == config_port, service["metadata"]["name"]
    assert one("Service", "relay")["spec"]["ports"][0]["port"] == 8080


def test_probes_are_healthz_for_liveness_and_readyz_for_readiness(container: Manifest) -> None:
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in container:
            assert resolve_port(container, container[probe]["httpGet"]["port"]) == container["ports"][0]["containerPort"]


def test_each_replica_has_its_own_claim_mounted_where_the_queue_lives(sts: Manifest, container: Manifest) -> None:
    claims = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
    assert len(claims) == 1
    (claim_name, claim), = claims.items()
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert claim_name in mounts
    queue_path = container_env(container)["RELAY_QUEUE_PATH"]
    assert Path(queue_path).is_relative_to(mounts[claim_name]), (queue_path, mounts[claim_name])
    retention = sts["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention == {"whenScaled": "Retain", "whenDeleted": "Retain"}, "claims hold acknowledged data"


def test_the_config_queue_path_is_the_one_on_the_claim(container: Manifest, tmp_path: Path) -> None:
    config = load_configmap(container, tmp_path)
    assert config.queue.path == container_env(container)["RELAY_QUEUE_PATH"]


def load_configmap(container: Manifest, tmp_path: Path) -> Any:
    path = tmp_path / "relay.toml"
    path.write_text(relay_toml())
    env = {key: "x" * 16 for key in secret_keys()} | container_env(container)
    return load(path, env=env)


def test_every_variable_of_the_config_comes_from_the_secret_or_the_pod(container: Manifest,
                                                                        tmp_path: Path) -> None:
    needed = set(re.findall(r"\$\{([A-Za-z_]\w*)\}", relay_toml()))  # no :-default
    provided = secret_keys() | set(container_env(container))
    assert needed <= provided, f"unset in the pod: {sorted(needed - provided)}"
    assert [ref["secretRef"]["name"] for ref in container["envFrom"]] == ["relay-secrets"]
    config = load_configmap(container, tmp_path)  # a valid config, keys and all
    assert all(source.tokens for source in config.sources.values()), "every source wants a token in a cluster"


def test_config_is_mounted_where_the_args_point(sts: Manifest, container: Manifest) -> None:
    args = container["args"]
    config_path = Path(args[args.index("-c") + 1])
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    assert volumes[mount["name"]]["configMap"]["name"] == "relay-config"
    assert config_path.name in one("ConfigMap", "relay-config")["data"]


def test_grace_period_outlasts_the_prestop_pause_and_the_drain(sts: Manifest, container: Manifest,
                                                              tmp_path: Path) -> None:
    grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    shutdown_grace = load_configmap(container, tmp_path).server.shutdown_grace
    pre_stop = container["lifecycle"]["preStop"]
    pause = float(pre_stop["exec"]["command"][-1]) if "exec" in pre_stop else float(pre_stop["sleep"]["seconds"])
    assert grace > pause + shutdown_grace, (grace, pause, shutdown_grace)


def test_runs_as_the_images_non_root_user(sts: Manifest, container: Manifest) -> None:
    pod = sts["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    image_user = re.search(r"^USER\s+(\d+)", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    assert image_user and int(image_user.group(1)) == pod["runAsUser"] == pod["fsGroup"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_hpa_scales_the_statefulset(sts: Manifest) -> None:
    hpa = one("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", sts["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] <= sts["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])


# --- the metrics the dashboard and the docs name ----------------------------------------------


def exported_metrics() -> set[str]:
    """Every sample name the relay exposes, read from the code that defines them.

    Counters and histograms are declared in relay/telemetry.py; the gauges computed at
    scrape time are yielded by Runtime._gauges (`yield "relay_...", doc, labels, value`)."""
    names: set[str] = set()
    for path in sorted((REPO_ROOT / "relay").rglob("*.py")):
        source = path.read_text()
        for kind, name in re.findall(r'\b(Counter|Histogram|Gauge|Summary|GaugeMetricFamily)\(\s*"(relay_\w+)"',
                                     source):
            base = name.removesuffix("_total")
            names |= {
                "Counter": {base + "_total"},
                "Histogram": {name + "_bucket", name + "_sum", name + "_count"},
                "Summary": {name + "_sum", name + "_count"},
            }.get(kind, {name})
        names |= set(re.findall(r'\byield\s+\(?\s*"(relay_\w+)"', source))
    assert len(names) > 10, "could not read the metric definitions"
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[str]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        yield query.get("query", "") if isinstance(query, dict) else str(query or "")


def test_dashboard_queries_only_metrics_the_relay_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    known = exported_metrics()
    queried = {name for expr in dashboard_exprs(dashboard) for name in re.findall(r"\brelay_\w+", expr)}
    assert queried, "the dashboard queries nothing"
    assert queried <= known, f"not exported by the relay: {sorted(queried - known)}"


def test_dashboard_covers_what_operators_watch() -> None:
    exprs = "\n".join(dashboard_exprs(json.loads(DASHBOARD.read_text())))
    for wanted in ("rate(relay_requests_total", "rate(relay_entries_accepted_total",
                   "sum by (source, reason) (rate(relay_entries_rejected_total",
                   "relay_queue_entries", "relay_queue_bytes", "sum by (sink, code) (rate(relay_upstream_batches_total",
                   "histogram_quantile(0.99", "relay_upstream_request_duration_seconds_bucket",
                   "relay_upstream_retries_total", "relay_dead_letter_entries_added_total"):
        assert wanted in exprs, wanted


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
    boxes = [(p["title"], p["gridPos"]) for p in dashboard["panels"]]
    for i, (title_a, a) in enumerate(boxes):
        for title_b, b in boxes[i + 1:]:
            apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                     or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
            assert apart, f"panels overlap: {title_a!r} and {title_b!r}"


def test_operations_doc_describes_every_exported_metric() -> None:
    text = DOCS.read_text()
    families = {re.sub(r"_(bucket|sum|count)$", "", name) if "duration" in name else name
                for name in exported_metrics()}
    missing = sorted(name for name in families if f"`{name}" not in text)
    assert not missing, f"add these metrics to the list in docs/operations.md: {missing}"
