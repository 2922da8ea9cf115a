"""docker-compose.yml stays valid and complete, though no Docker engine runs here."""

from __future__ import annotations

import json
import shutil
import subprocess

import yaml

from scripts.mesh import REPO, SERVICES


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is needed (Debian: apt-get install docker-compose)"
    return subprocess.run(
        [binary, "-f", str(REPO / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_is_valid() -> None:
    checked = compose("config", "-q")
    assert checked.returncode == 0, checked.stderr


def test_compose_runs_the_whole_stack_with_health_checks_and_restarts() -> None:
    rendered = compose("config")
    assert rendered.returncode == 0, rendered.stderr
    services = yaml.safe_load(rendered.stdout)["services"]
    expected = {"postgres", "redis", "rabbitmq", "mailpit", "envoy", *SERVICES}
    assert set(services) == expected
    for name, service in services.items():
        assert service.get("healthcheck"), f"{name} has no health check"
        assert service.get("restart") == "unless-stopped", f"{name} is not restarted"
    assert json.dumps(services["notification"]["environment"]).count("mailpit") == 1
