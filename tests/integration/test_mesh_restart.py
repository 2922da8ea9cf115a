"""`make restart SERVICE=...` (scripts/mesh.py restart): one service of a
running mesh stops (draining) and starts again with the environment it was
started with; every other process keeps running, and Envoy routes to the new
one as soon as it serves."""

from __future__ import annotations

import subprocess
from pathlib import Path

from scripts.mesh import PYTHON, REPO, Mesh
from tests.support import Edge, register_and_login, wait_for


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw if b"=" in entry)


def test_restart_starts_one_service_again_as_it_was(mesh: Mesh, edge: Edge) -> None:
    before = {name: p.pid for name, p in mesh.processes.items() if p.poll() is None}
    old = before["auth"]
    restarted = subprocess.run(
        [PYTHON, "scripts/mesh.py", "restart", "auth", "--state", str(mesh.state)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The test's Mesh no longer owns the process: the pid file names the new one.
    mesh.processes.pop("auth")
    try:
        assert restarted.returncode == 0, restarted.stderr
        new = int((mesh.state / "run" / "auth.pid").read_text())
        assert new != old and not Path(f"/proc/{old}").exists()
        # As it was started: the test mesh's databases, ports and keys, not make up's.
        env = environ(new)
        for name in ("AUTH_DATABASE_URL", "AUTH_GRPC_ADDR", "AUTH_KEYS_DIR", "TLS_DIR"):
            assert env[name] == mesh.env[name]
        assert all(
            Path(f"/proc/{pid}").exists() for name, pid in before.items() if name != "auth"
        ), "another process was touched"
        # Envoy reaches the new process.
        reply = wait_for(
            lambda: (r := edge.get("/v1/auth/jwks")).status == 200 and r,
            "auth behind Envoy",
            timeout=20,
        )
        assert reply.body["keys"]
        register_and_login(edge, "restarted")
        assert (mesh.state / "run" / "auth.json").stat().st_mode & 0o077 == 0
    finally:
        mesh.stop("auth")  # by its pid file
        mesh.start_again("auth")  # the test's Mesh owns it again


def test_restart_of_a_service_not_running_says_so(tmp_path: Path) -> None:
    refused = subprocess.run(
        [PYTHON, "scripts/mesh.py", "restart", "booking", "--state", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0 and "booking is not running" in refused.stderr
