"""deploy/kubernetes, checked without a cluster: the base is what scripts/k8s.py
renders from the settings, the dev overlay renders with `kubectl kustomize`,
passes the schemas of a current Kubernetes (kubernetes-validate) and checkov's
scan, and every workload keeps to what the mesh needs (probes, limits, a
non-root and read-only container, a disruption budget, a drain the kubelet
waits for, the network reaching each port only from its callers)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from booking.settings import BookingSettings
from runtime.config import DEFAULT_PORTS, SERVICES, Env, Settings, retry_policy
from scripts import k8s

REPO = Path(__file__).resolve().parents[2]
DEV = REPO / "deploy" / "kubernetes" / "overlays" / "dev"
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
BOOKING_ROUTE = "/ticketing.booking.v1.BookingService/CreateBooking"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed (make tools: Debian's kubernetes-client)"
    out = subprocess.run(
        [kubectl, "kustomize", str(DEV)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    path = tmp_path_factory.mktemp("k8s") / "dev.yaml"
    path.write_text(out.stdout)
    return path


@pytest.fixture(scope="module")
def documents(rendered: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered.read_text()) if d]


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def config_map(documents: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    # The generator's hash suffix names the ConfigMap; the workloads name it too.
    (found,) = [
        d["data"]
        for d in documents
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(prefix + "-")
    ]
    return found


def test_the_base_is_what_scripts_k8s_renders_from_the_settings() -> None:
    assert k8s.stale() == [], "run: python scripts/k8s.py render"


def test_the_manifests_pass_a_current_kubernetes_schema(documents: list[dict[str, Any]]) -> None:
    version = kubernetes_validate.latest_version()
    assert int(version.split(".")[1]) >= 33, version  # grpc probes, preStop sleep
    for document in documents:
        # strict: a misspelt or misplaced field is an error, not silently dropped
        kubernetes_validate.validate(document, version, strict=True)


def test_checkov_finds_nothing_unjustified(rendered: Path, documents: list[dict[str, Any]]) -> None:
    assert CHECKOV.exists(), "make setup installs checkov in .venv-checkov"
    # --skip-download: offline, no policies fetched, no platform.
    options = ["--framework", "kubernetes", "--skip-download", "--compact", "--quiet", "-o", "json"]
    scan = subprocess.run(
        [str(CHECKOV), "-f", str(rendered), *options],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(scan.stdout)
    summary = report["summary"]
    failed = [
        (c["check_id"], c["resource"]) for c in report.get("results", {}).get("failed_checks", [])
    ]
    assert summary["failed"] == 0 and scan.returncode == 0, failed
    assert summary["passed"] > 500 and summary["parsing_errors"] == 0, summary
    # Every skip says why, on the resource it excuses.
    for document in documents:
        for key, value in document["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, why = value.partition("=")
                assert re.fullmatch(r"CKV2?_K8S_\d+", check) and len(why) > 20, value


def test_every_deployment_is_probed_limited_unprivileged_and_budgeted(
    documents: list[dict[str, Any]],
) -> None:
    deployments = of_kind(documents, "Deployment")
    assert set(deployments) == {*SERVICES, "edge"}
    budgets = of_kind(documents, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            assert container["readinessProbe"] and container["livenessProbe"], name
            limits = container["resources"]["limits"]
            assert limits["cpu"] and limits["memory"], name
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, name
            assert security["runAsUser"] >= 10000, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in security["capabilities"], name
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(
            budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
            for budget in budgets.values()
        ), f"{name} has no PodDisruptionBudget"
    autoscaled = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in of_kind(documents, "HorizontalPodAutoscaler").values()
    }
    assert autoscaled == {"event", "booking"}


def test_services_are_probed_on_their_plaintext_health_port(
    documents: list[dict[str, Any]],
) -> None:
    settings = config_map(documents, k8s.SETTINGS)
    for service in SERVICES:
        (container,) = of_kind(documents, "Deployment")[service]["spec"]["template"]["spec"][
            "containers"
        ]
        port = int(settings[f"{service.upper()}_HEALTH_PORT"])
        assert container["readinessProbe"]["grpc"] == {"port": port}
        # Liveness asks a name that stays SERVING through the drain (runtime.server).
        assert container["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}
        assert Settings.load(service, settings).health_port == port


def test_grace_periods_cover_the_drain_the_settings_give(documents: list[dict[str, Any]]) -> None:
    """The kubelet's SIGTERM-to-SIGKILL wait covers the preStop and the drain
    the settings in the manifests make (runtime.server; booking's runs settle
    within the saga's budget, Envoy holds a booking for its route timeout)."""
    settings = config_map(documents, k8s.SETTINGS)
    deployments = of_kind(documents, "Deployment")
    for service in SERVICES:
        spec = deployments[service]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        loaded = Settings.load(service, settings)
        drain = loaded.drain_seconds + loaded.shutdown_grace_seconds
        if service == "booking":
            drain += BookingSettings.load("booking", settings).retry.saga_budget_seconds
        assert spec["terminationGracePeriodSeconds"] > pre_stop + drain, service

    envoy = json.loads(config_map(documents, "envoy-config")["envoy.json"])
    routes = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    timeouts = {
        r["match"].get("path"): r["route"]["timeout"]
        for r in routes["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        if "route" in r and "timeout" in r["route"]
    }
    edge_timeout = retry_policy(Env(settings)).edge_timeout_seconds
    assert timeouts[BOOKING_ROUTE] == f"{edge_timeout}s"
    assert edge_timeout > BookingSettings.load("booking", settings).retry.saga_budget_seconds
    edge = deployments["edge"]["spec"]["template"]["spec"]
    (command,) = [c["lifecycle"]["preStop"]["exec"]["command"] for c in edge["containers"]]
    sleeps = sum(float(s) for s in re.findall(r"time\.sleep\(([\d.]+)\)", command[-1]))
    assert sleeps >= edge_timeout
    assert edge["terminationGracePeriodSeconds"] > sleeps


def test_envoy_reaches_the_services_by_their_cluster_names(
    documents: list[dict[str, Any]],
) -> None:
    envoy = json.loads(config_map(documents, "envoy-config")["envoy.json"])
    clusters = {c["name"]: c for c in envoy["static_resources"]["clusters"]}
    for service in SERVICES:
        (endpoint,) = clusters[service]["load_assignment"]["endpoints"][0]["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        assert address == {"address": service, "port_value": DEFAULT_PORTS[service]}
        # Headless: DNS answers with every pod, which Envoy balances and health-checks.
        assert of_kind(documents, "Service")[service]["spec"]["clusterIP"] == "None"
    tls = clusters["auth"]["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["tls_certificates"][0]["certificate_chain"]["filename"].startswith(k8s.TLS_MOUNT)


def test_only_the_callers_of_a_port_reach_it(documents: list[dict[str, Any]]) -> None:
    policies = of_kind(documents, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
    }
    expected = {
        "auth": {"edge", "booking", "event", "payment", "notification"},
        "booking": {"edge"},
        "event": {"edge", "booking"},
        "payment": {"edge", "booking"},
        "notification": {"edge"},
    }
    for service, callers in expected.items():
        rules = policies[service]["spec"]["ingress"]
        (grpc_rule,) = [r for r in rules if r["ports"][0]["port"] == DEFAULT_PORTS[service]]
        assert {
            s["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for s in grpc_rule["from"]
        } == callers
        # Every other open port is the health-only one or the scraper's metrics.
        others = {r["ports"][0]["port"] for r in rules} - {DEFAULT_PORTS[service]}
        assert others == {k8s.HEALTH_PORT, k8s.METRICS_PORT}, service
    (edge_rule,) = policies["edge"]["spec"]["ingress"]
    assert edge_rule["ports"] == [{"protocol": "TCP", "port": k8s.EDGE_PORT}]


def bench_row(measure: str) -> str:
    for line in (REPO / "bench" / "latest.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith(measure):
            return cells[2]
    raise AssertionError(f"bench/latest.md has no {measure!r} row")


def quantity(value: str) -> float:
    """CPU in cores, memory in MB (as the bench reports RSS)."""
    if value.endswith("m"):
        return int(value[:-1]) / 1000
    if value.endswith("Mi"):
        return int(value[:-2]) * 1.048576
    return float(value)


def test_resources_cover_what_the_bench_measured(documents: list[dict[str, Any]]) -> None:
    deployments = of_kind(documents, "Deployment")

    def resources(name: str) -> dict[str, Any]:
        return deployments[name]["spec"]["template"]["spec"]["containers"][0]["resources"]

    rss = dict(
        (name, float(mb))
        for name, mb in re.findall(r"(\w+) ([\d.]+)", bench_row("peak RSS after 200 logins"))
    )
    assert set(rss) == set(SERVICES)
    for service, peak in rss.items():
        assert quantity(resources(service)["requests"]["memory"]) >= peak, service
        assert quantity(resources(service)["limits"]["memory"]) >= 1.5 * peak, service
    target = int(re.search(r"target ≥ (\d+)", "confirmed bookings/s (target ≥ 200)")[1])
    assert bench_row(f"confirmed bookings/s (target ≥ {target})")
    cpu = bench_row("sale path, CPU per booking").split(":", 1)[1]
    per_booking = {name: float(ms) for name, ms in re.findall(r"(\w+) ([\d.]+)", cpu)}
    for name, workload in (
        ("booking", "booking"),
        ("event", "event"),
        ("payment", "payment"),
        ("envoy", "edge"),
    ):
        cores = per_booking[name] * target / 1000
        assert quantity(resources(workload)["requests"]["cpu"]) >= cores, workload


def test_the_secrets_come_from_make_keys_certs_and_none_is_committed(
    documents: list[dict[str, Any]], tmp_path: Path
) -> None:
    assert not of_kind(documents, "Secret"), "a Secret's values would be in the repo"
    mounted = {
        volume["secret"]["secretName"]
        for deployment in of_kind(documents, "Deployment").values()
        for volume in deployment["spec"]["template"]["spec"]["volumes"]
        if "secret" in volume
    }
    from_env = {
        source["secretRef"]["name"]
        for deployment in of_kind(documents, "Deployment").values()
        for container in deployment["spec"]["template"]["spec"]["containers"]
        for source in container.get("envFrom", [])
        if "secretRef" in source
    }
    made = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "scripts/k8s.py", "secrets"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"ADMIN_PASSWORD": "x" * 24, "PATH": "/usr/bin:/bin"},
    )
    assert made.returncode == 0, made.stderr
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all(made.stdout)}
    # The backing services' URLs come from their operators (README); the rest from here.
    assert set(secrets) == mounted | from_env - {k8s.BACKING_SECRET}
    assert set(secrets["tls-booking"]["data"]) == {"ca.pem", "booking.pem", "booking.key"}
    assert "ca.key" not in json.dumps(secrets), "the CA's key stays with whoever issues"


def test_the_image_runs_as_the_user_the_manifests_name() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(rf"^USER {k8s.UID}$", dockerfile, re.M)
    assert f"WORKDIR {k8s.APP_DIR}" in dockerfile
