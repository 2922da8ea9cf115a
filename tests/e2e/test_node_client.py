"""The Node.js client in clients/node, generated from protos/ at run time,
against the test mesh."""

from __future__ import annotations

import os
import shutil
import subprocess

from scripts.mesh import REPO, Mesh
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD


def test_node_client_buys_a_ticket(mesh: Mesh) -> None:
    node = shutil.which("node")
    assert node, "Node.js is required (the README's setup installs its packages)"
    env = {
        **os.environ,
        "AUTH_ADDR": mesh.addr("auth"),
        "EVENT_ADDR": mesh.target("event"),
        "BOOKING_ADDR": mesh.target("booking"),
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    run = subprocess.run(
        [node, "--test", "clients/node/purchase.test.mjs"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# pass 1" in run.stdout and "# fail 0" in run.stdout
