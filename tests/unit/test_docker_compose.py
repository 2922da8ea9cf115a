"""docker-compose.yml stays valid and complete, though no Docker engine runs here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import yaml

from scripts.mesh import REPO, SERVICES


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is needed (Debian: apt-get install docker-compose)"
    return subprocess.run(
        [binary, "-f", str(REPO / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env} if env else None,
    )


def test_compose_file_is_valid() -> None:
    checked = compose("config", "-q")
    assert checked.returncode == 0, checked.stderr


def test_compose_runs_the_whole_stack_with_health_checks_and_restarts() -> None:
    rendered = compose("config")
    assert rendered.returncode == 0, rendered.stderr
    services = yaml.safe_load(rendered.stdout)["services"]
    expected = {"certs", "postgres", "redis", "rabbitmq", "mailpit", "envoy", *SERVICES}
    assert set(services) == expected
    # `certs` is a one-shot job the services wait for, not a long-running service.
    assert services.pop("certs")["restart"] == "no"
    for name, service in services.items():
        assert service.get("healthcheck"), f"{name} has no health check"
        assert service.get("restart") == "unless-stopped", f"{name} is not restarted"
    assert json.dumps(services["notification"]["environment"]).count("mailpit") == 1


def test_compose_gives_every_workload_its_mesh_certificates() -> None:
    rendered = compose("config")
    assert rendered.returncode == 0, rendered.stderr
    services = yaml.safe_load(rendered.stdout)["services"]
    for name in (*SERVICES, "envoy"):
        service = services[name]
        assert service["environment"]["TLS_DIR"] == "/data/tls", name
        assert any("/data/tls" in str(volume) for volume in service["volumes"]), name
    for name in SERVICES:  # Envoy waits for the services, so for the certificates too
        depends = services[name]["depends_on"]["certs"]
        assert depends["condition"] == "service_completed_successfully", name


def test_compose_traces_every_workload_to_one_collector_or_none() -> None:
    """One OTEL_EXPORTER_OTLP_ENDPOINT for the services and Envoy: a trace with
    some hops sent elsewhere, or missing, is what tracing is for finding."""
    for endpoint in ("", "http://jaeger:4317"):
        rendered = compose("config", env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        assert rendered.returncode == 0, rendered.stderr
        services = yaml.safe_load(rendered.stdout)["services"]
        for name in (*SERVICES, "envoy"):
            environment = services[name]["environment"]
            assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint, name
