"""Runs the whole mesh on one machine: backing services, the five gRPC
services, Envoy and an SMTP sink. `make up` / `make down` call it, and the
test suite uses the same code to run its own mesh on free ports.

    python scripts/mesh.py backing   # start PostgreSQL/Redis/RabbitMQ if down
    python scripts/mesh.py up [--replicas N]
    python scripts/mesh.py restart SERVICE [--kill]   # one service, as it was started
    python scripts/mesh.py down
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runtime needs the virtualenv; `backing` does not
    import grpc

    from runtime.tls import TlsFiles

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SERVICES = ("auth", "event", "payment", "booking", "notification")  # start order
DEFAULT_PORTS = {
    "auth": 3001,
    "booking": 3002,
    "event": 3003,
    "payment": 3004,
    "notification": 3005,
}

BACKING_SERVICES = {
    "PostgreSQL": (
        5432,
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main start",
    ),
    "Redis": (
        6379,
        'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
    ),
    "RabbitMQ": (5672, "rabbitmq-server -detached"),
}


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for(check: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def ensure_backing_services() -> None:
    for name, (port, command) in BACKING_SERVICES.items():
        if port_open(port):
            continue
        print(f"starting {name}: {command}", flush=True)
        subprocess.run(command, shell=True, check=False)
        wait_for(lambda port=port: port_open(port), name, 90)


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never the same one twice in this process: the
    services bind with SO_REUSEPORT, so two of them given one port would share
    it without an error (and Envoy would find event answering for auth)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def envoy_clusters_healthy(admin_port: int, clusters: list[str]) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{admin_port}/clusters?format=json", timeout=1
        ) as reply:
            status = json.load(reply)
    except OSError:
        return False
    healthy = set()
    for cluster in status.get("cluster_statuses", []):
        hosts = cluster.get("host_statuses", [])
        if hosts and all(
            h.get("health_status", {}).get("eds_health_status") == "HEALTHY"
            and not h.get("health_status", {}).get("failed_active_health_check")
            for h in hosts
        ):
            healthy.add(cluster["name"])
    return set(clusters) <= healthy


def render_envoy_config(config: Path, env: Mapping[str, str]) -> None:
    """Writes Envoy's config for the environment `env` (envoy/render.py) to `config`."""
    with open(config, "w") as out:
        subprocess.run(
            [PYTHON, str(REPO / "envoy" / "render.py")], env=env, cwd=REPO, stdout=out, check=True
        )


@dataclass
class Mesh:
    """A set of processes sharing one environment, logs and pid files in `state`."""

    state: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.state / "log"

    def service_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def addr(self, service: str) -> str:
        return self.env.get(f"{service.upper()}_GRPC_ADDR", f"127.0.0.1:{DEFAULT_PORTS[service]}")

    def target(self, service: str) -> str:
        """A gRPC channel target reaching every replica of `service`."""
        addresses = self.addr(service).split(",")
        return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)

    @property
    def tls_dir(self) -> Path:
        return Path(self.env.get("TLS_DIR") or REPO / "var" / "tls")

    def identity(self, workload: str = "developer") -> TlsFiles:
        """The certificate and key `workload` presents in this mesh."""
        from runtime.tls import TlsFiles

        return TlsFiles.for_workload(workload, self.tls_dir)

    def channel(
        self, service: str, workload: str = "developer", addr: str | None = None
    ) -> grpc.Channel:
        """A channel to `service` (or to one of its processes at `addr`), presenting
        `workload`'s certificate."""
        from runtime import tls

        return tls.channel(addr or self.target(service), service, self.identity(workload))

    def run(self, *argv: str) -> None:
        subprocess.run(argv, env=self.service_env(), cwd=REPO, check=True)

    def spawn(
        self, name: str, *argv: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        full_env = {**self.service_env(), **(env or {})}
        run = self.state / "run"
        run.mkdir(parents=True, exist_ok=True)
        # How it was started, so `restart` starts it again exactly so. The
        # environment may hold settings nobody else should read: owner only.
        spec = run / f"{name}.json"
        spec.touch(mode=0o600)
        spec.write_text(json.dumps({"argv": list(argv), "env": full_env}))
        return self._launch(name, list(argv), full_env)

    def _launch(
        self, name: str, argv: list[str], env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        (self.state / "run" / f"{name}.pid").write_text(str(process.pid))
        return process

    def start_again(
        self, name: str, timeout: float = 30, env: Mapping[str, str] | None = None
    ) -> None:
        """Starts a stopped process as it was last started (argv and environment,
        with `env` over it this once: the record keeps the original), and waits
        until it serves."""
        spec = json.loads((self.state / "run" / f"{name}.json").read_text())
        spec["env"] = {**spec["env"], **(env or {})}
        if name.startswith("envoy"):
            self._launch_envoy(name, spec, timeout)
            return
        self._launch(name, spec["argv"], spec["env"])
        service = name.split("-")[0]
        if service not in SERVICES:
            return
        from runtime.healthcheck import serving
        from runtime.tls import TlsFiles

        env = spec["env"]
        addr = (
            env.get("GRPC_LISTEN_ADDR")
            or env.get(f"{service.upper()}_GRPC_ADDR", f"127.0.0.1:{DEFAULT_PORTS[service]}")
        ).split(",")[0]
        developer = TlsFiles.for_workload("developer", Path(env.get("TLS_DIR") or self.tls_dir))
        wait_for(
            lambda: serving(addr, identity=developer) or self._exited(name),
            f"{name} on {addr}",
            timeout,
        )
        if self._exited(name):
            raise RuntimeError(f"{name} exited; see {self.logs / (name + '.log')}")

    def _launch_envoy(self, name: str, spec: dict, timeout: float) -> None:
        """Envoy again, with its config rendered anew when its environment was
        changed (else from the file it was started with), once its clusters are healthy."""
        argv, env = spec["argv"], spec["env"]
        original = json.loads((self.state / "run" / f"{name}.json").read_text())["env"]
        if env != original:
            config = self.state / f"{name}-changed.json"
            render_envoy_config(config, env)
            rendered = str(self.state / f"{name}.json")  # as start_envoy wrote it
            argv = [str(config) if arg == rendered else arg for arg in argv]
        self._launch(name, argv, env)
        self._wait_for_envoy(name, env, timeout)

    def restart(
        self, name: str, sig: int = signal.SIGTERM, env: Mapping[str, str] | None = None
    ) -> None:
        """Stops one process (draining it, with SIGTERM) and starts it again as it
        was, or with `env` over its environment this once."""
        self.stop(name, sig)
        self.start_again(name, env=env)

    def implemented(self) -> list[str]:
        return [s for s in SERVICES if (REPO / s / "__main__.py").exists()]

    def migrate(self) -> None:
        for service in self.implemented():
            self.run(PYTHON, "-m", service, "migrate")

    def start_service(
        self,
        service: str,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> str:
        """Starts a service process and waits until it is healthy; returns its address.

        `name` and `env` run an extra instance (a replica, or one wired through
        a fault proxy) beside the usual one.
        """
        if name and name != service:  # an extra instance: the usual one has the metrics port
            env = {f"{service.upper()}_METRICS_PORT": "0", **(env or {})}
        name = name or service
        self.spawn(name, PYTHON, "-m", service, env=env)
        from runtime.healthcheck import serving  # needs the virtualenv; `backing` does not

        env = env or {}
        addr = (
            env.get("GRPC_LISTEN_ADDR")
            or env.get(f"{service.upper()}_GRPC_ADDR")
            or self.addr(service).split(",")[0]
        )
        developer = self.identity()
        wait_for(
            lambda: serving(addr, identity=developer) or self._exited(name),
            f"{name} on {addr}",
            timeout,
        )
        if self._exited(name):
            raise RuntimeError(f"{name} exited; see {self.logs / (name + '.log')}")
        return addr

    def scale(self, service: str, replicas: int, ports: list[int]) -> None:
        """Runs `service` as several processes on `ports`; every client (Envoy, the
        other services) balances over all of them. Call before starting anything."""
        self.env[f"{service.upper()}_GRPC_ADDR"] = ",".join(f"127.0.0.1:{p}" for p in ports)
        self.replicas[service] = replicas

    def start_all(self, service: str) -> None:
        """Starts a service and its replicas (see scale)."""
        addresses = self.addr(service).split(",")
        metrics = int(
            self.env.get(f"{service.upper()}_METRICS_PORT", DEFAULT_PORTS[service] + 6100)
        )
        for i in range(self.replicas.get(service, 1)):
            self.start_service(
                service,
                name=service if i == 0 else f"{service}-{i + 1}",
                env={
                    "GRPC_LISTEN_ADDR": addresses[i],
                    f"{service.upper()}_METRICS_PORT": str(metrics + 10 * i if metrics else 0),
                },
            )

    def start_envoy(
        self, name: str = "envoy", env: Mapping[str, str] | None = None, timeout: float = 30
    ) -> None:
        """Renders the config and starts Envoy; `name` and `env` run a second one."""
        env = {**self.service_env(), **(env or {})}
        config = self.state / f"{name}.json"
        render_envoy_config(config, env)
        envoy = shutil.which("envoy", path=env["PATH"]) or "envoy"
        # Envoy stops when its parent exits (parent-death signal), so it runs
        # under a shell that outlives `make up`.
        self.spawn(
            name,
            "sh",
            "-c",
            '"$@"; exit $?',
            "envoy",
            envoy,
            "-c",
            str(config),
            "--log-level",
            "warn",
            "--disable-hot-restart",
            env=env,
        )
        self._wait_for_envoy(name, env, timeout)

    def _wait_for_envoy(self, name: str, env: Mapping[str, str], timeout: float) -> None:
        admin = int(env.get("EDGE_ADMIN_PORT", "9901"))
        edge = int(env.get("EDGE_PORT", "8080"))
        wait_for(
            lambda: (
                (envoy_clusters_healthy(admin, self.implemented()) and port_open(edge))
                or self._exited(name)
            ),
            f"{name} and healthy clusters",
            timeout,
        )
        if self._exited(name):
            raise RuntimeError(f"{name} exited; see {self.logs / (name + '.log')}")

    def start_smtp_sink(self) -> None:
        port = self.env.get("SMTP_PORT", "1025")
        self.spawn(
            "smtp",
            PYTHON,
            str(REPO / "scripts" / "mail_sink.py"),
            "--port",
            port,
            "--dir",
            str(self.state / "mail"),
        )
        wait_for(lambda: port_open(int(port)), "the SMTP sink", 10)

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """Stops a process this mesh started, or (from its pid file) one an earlier
        `up` started; SIGKILL if it has not exited after `timeout`."""
        process = self.processes.pop(name, None)
        pid_file = self.state / "run" / f"{name}.pid"
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        elif pid_file.exists():
            pid = int(pid_file.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
                try:
                    wait_for(lambda: not _alive(pid), f"{name} to exit", timeout)
                except TimeoutError:
                    os.killpg(pid, signal.SIGKILL)
                    wait_for(lambda: not _alive(pid), f"{name} to die", timeout)
        pid_file.unlink(missing_ok=True)

    def stop_all(self) -> None:
        """Signals every process at once (each drains on its own), then waits."""
        names = list(reversed(list(self.processes)))
        for name in names:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.processes[name].pid, signal.SIGTERM)
        for name in names:
            self.stop(name)

    def _exited(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is not None


def _alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by its parent, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def restart(state: Path, service: str, sig: int = signal.SIGTERM) -> None:
    """Restarts every process of one service of the mesh `up` started (a replica at
    a time, so the others keep serving), each with the argv and environment it
    was started with; nothing else is touched."""
    names = sorted(
        p.stem
        for p in (state / "run").glob("*.json")
        if p.stem == service or re.fullmatch(rf"{re.escape(service)}-\d+", p.stem)
    )
    if not names or not (state / "run" / f"{names[0]}.pid").exists():
        raise SystemExit(f"{service} is not running in the mesh of {state} (make up first)")
    mesh = Mesh(state)
    for name in names:
        with timed(f"{name} restarted"):
            mesh.restart(name, sig)


def stop_from_pid_files(state: Path) -> None:
    for pid_file in sorted((state / "run").glob("*.pid")):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            print(f"stopped {pid_file.stem}")
        pid_file.unlink()


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"{what} in {time.monotonic() - started:.1f}s", flush=True)


SCALED_SERVICES = ("event", "booking")  # the hot path of a sale


def up(state: Path, replicas: int = 1) -> None:
    stop_from_pid_files(state)
    mesh = Mesh(state)
    for service in SCALED_SERVICES if replicas > 1 else ():
        base = DEFAULT_PORTS[service]
        mesh.scale(service, replicas, [base + 10 * i for i in range(replicas)])
    with timed("backing services ready"):
        ensure_backing_services()
    with timed("databases migrated"):
        mesh.migrate()
    with timed("services healthy"):
        mesh.start_smtp_sink()
        for service in mesh.implemented():
            mesh.start_all(service)
    with timed("Envoy ready"):
        mesh.start_envoy()
    scrape = ", ".join(f"{s} :{DEFAULT_PORTS[s] + 6100}" for s in mesh.implemented())
    print(f"""
The mesh is up ({", ".join(mesh.implemented())}).
  HTTP/JSON and gRPC via Envoy  http://127.0.0.1:8080   e.g. curl http://127.0.0.1:8080/v1/auth/jwks
  gRPC straight to a service    {", ".join(f"{s} {mesh.addr(s)}" for s in mesh.implemented())}
  Envoy admin and stats         http://127.0.0.1:9901/stats  (Prometheus: /stats/prometheus)
  Prometheus /metrics           {scrape}
  SMTP sink, every email kept   127.0.0.1:1025 -> {state / "mail"}/*.eml
  Logs                          {mesh.logs}/*.log  (make logs)
Restart one service with: make restart SERVICE=booking   Stop it with: make down""")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["backing", "up", "restart", "down"])
    parser.add_argument("service", nargs="?", choices=SERVICES, help="for restart")
    parser.add_argument(
        "--kill", action="store_true", help="restart with SIGKILL instead of a graceful drain"
    )
    parser.add_argument("--state", type=Path, default=REPO / "var")
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="processes each of the event and booking services run as",
    )
    args = parser.parse_args()
    if args.command == "backing":
        ensure_backing_services()
    elif args.command == "up":
        up(args.state, args.replicas)
    elif args.command == "restart":
        if args.service is None:
            parser.error("restart needs a service: " + ", ".join(SERVICES))
        restart(args.state, args.service, signal.SIGKILL if args.kill else signal.SIGTERM)
    else:
        stop_from_pid_files(args.state)


if __name__ == "__main__":
    main()
