"""The transport stays at the edge: below a service's gRPC servicer (api.py)
and the saga's gRPC gateways, nothing loads grpc, so the domain, the use cases
and the adapters run and are tested as plain Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("auth", "booking", "event", "payment", "notification")
# The gRPC edge of each service: the servicer, the entry point that serves it,
# and booking's gateways that wrap the event and payment stubs.
EDGE = {"api", "__main__", "grpc_gateways"}


def below_the_edge() -> list[str]:
    return sorted(
        f"{service}.{path.stem}"
        for service in SERVICES
        for path in (REPO / service).glob("*.py")
        if path.stem not in EDGE and path.stem != "__init__"
    )


def test_nothing_below_the_servicers_loads_grpc() -> None:
    modules = below_the_edge()
    assert {"booking.service", "booking.domain", "event.holds", "payment.repository"} <= set(
        modules
    )
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('grpc')}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]", f"grpc loaded by {modules}: {loaded.stdout}"


def test_no_domain_module_imports_grpc() -> None:
    for service in SERVICES:
        source = (REPO / service / "domain.py").read_text()
        assert "import grpc" not in source and "from grpc" not in source, service
