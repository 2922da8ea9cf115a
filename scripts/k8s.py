"""The Kubernetes manifests of the mesh (deploy/kubernetes), rendered from the
same settings the services read, and the Secrets they mount.

    python scripts/k8s.py render     # writes deploy/kubernetes/base (committed)
    python scripts/k8s.py check      # exit 1 if the committed base is stale
    python scripts/k8s.py secrets    # Secret manifests from `make keys certs`, on stdout

The base is generated rather than written by hand because its numbers derive
from the code: each termination grace period from DRAIN_SECONDS,
SHUTDOWN_GRACE_SECONDS and, for booking, the saga's budget (runtime.retry);
Envoy's from its CreateBooking timeout; Envoy's config is envoy/render.py's
output for the cluster's addresses. The Secrets' values never enter the repo:
`secrets` reads them from var/keys and var/tls and prints them for kubectl.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from runtime.config import DEFAULT_PORTS, SERVICES, Env, Settings, retry_policy

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "deploy" / "kubernetes" / "base"
IMAGE = "ticketing-mesh"
APP_DIR = "/app"  # the Dockerfile's WORKDIR
UID = 10001  # the Dockerfile's USER
HEALTH_PORT = 8081  # every pod's plaintext health-only port (runtime.server probe_port)
METRICS_PORT = 9464
EDGE_PORT = 8080
EDGE_ADMIN_PORT = 9901
TLS_MOUNT = "/etc/ticketing/tls"
AUTH_KEYS_MOUNT = "/etc/ticketing/keys/auth"
TICKET_KEYS_MOUNT = "/etc/ticketing/keys/tickets"
ENVOY_CONFIG_MOUNT = "/etc/envoy"
# Before SIGTERM: the pod has left the Service's endpoints and CoreDNS's answers
# (their TTL is 5 s), and the clients that resolve by DNS (booking's channels,
# Envoy's STRICT_DNS clusters refresh every 5 s) have stopped dialling it.
PRESTOP_SECONDS = 5
# What the kubelet waits beyond the drain it can compute, for the process to exit.
EXIT_MARGIN_SECONDS = 5
BACKING_SECRET = "ticketing-backing"  # PG_URL, REDIS_URL, AMQP_URL (README: operators)
ADMIN_SECRET = "ticketing-admin"
SETTINGS = "ticketing-settings"
# Who calls each service's RPC port (the network layer under DESIGN §13's
# per-RPC rules): every workload fetches auth's JWKS; only booking calls
# event's and payment's internal RPCs; the edge reaches every public one.
CALLERS = {
    "auth": ("edge", *(s for s in SERVICES if s != "auth")),
    "booking": ("edge",),
    "event": ("edge", "booking"),
    "payment": ("edge", "booking"),
    "notification": ("edge",),
}
SCALED = ("event", "booking")  # the sale's hot path: HorizontalPodAutoscalers
# Requests from bench/latest.md (make bench on 2 cores): memory above the peak
# RSS of the memory section, CPU above the sale path's CPU per booking times
# the 200 bookings/s target (event, booking, payment, envoy), the rest by
# their share of the sale. Limits: twice the memory request; one core for a
# Python service (one event loop cannot use more), two where threads work too
# (auth's argon2 pool, Envoy's workers, booking's and event's outbox relay and
# consumer threads beside the loop). tests/unit/test_kubernetes.py holds
# them to the bench's numbers.
RESOURCES = {
    "auth": ("300m", "2", "192Mi", "384Mi"),
    "booking": ("1200m", "2", "192Mi", "384Mi"),
    "event": ("1100m", "2", "160Mi", "320Mi"),
    "payment": ("450m", "1", "160Mi", "320Mi"),
    "notification": ("300m", "1", "192Mi", "384Mi"),
    "edge": ("300m", "2", "128Mi", "256Mi"),
}
# What the cluster's settings are: the services' defaults, the cluster's
# addresses, and the listeners open to the pod network.
CLUSTER_SETTINGS = {
    **{f"{s.upper()}_GRPC_ADDR": f"{s}:{DEFAULT_PORTS[s]}" for s in SERVICES},
    **{f"{s.upper()}_HEALTH_PORT": str(HEALTH_PORT) for s in SERVICES},
    **{f"{s.upper()}_METRICS_PORT": str(METRICS_PORT) for s in SERVICES},
    "HEALTH_LISTEN_ADDRESS": "0.0.0.0",
    "METRICS_LISTEN_ADDRESS": "0.0.0.0",
    "ENVIRONMENT": "production",
    "LOG_LEVEL": "INFO",
    "DRAIN_SECONDS": "2",
    "SHUTDOWN_GRACE_SECONDS": "10",
    "DOWNSTREAM_TIMEOUT_SECONDS": "5",
    "RETRY_WINDOW_SECONDS": "10",
    "HOLD_TTL_SECONDS": "300",
    "TLS_DIR": TLS_MOUNT,
    "AUTH_KEYS_DIR": AUTH_KEYS_MOUNT,
    "TICKET_KEYS_DIR": TICKET_KEYS_MOUNT,
    "SMTP_HOST": "smtp",
    "SMTP_PORT": "25",
    "ENVOY_DESCRIPTOR_SET": f"{APP_DIR}/gen/descriptors.binpb",
    "ENVOY_OPENAPI_DOCUMENT": f"{APP_DIR}/gen/openapi.json",
    "EDGE_PORT": str(EDGE_PORT),
    "EDGE_LISTEN_ADDRESS": "0.0.0.0",
    "EDGE_ADMIN_PORT": str(EDGE_ADMIN_PORT),
}
# checkov findings that do not apply, with why (each becomes an annotation of
# the resource, checkov's own way of skipping a check in a Kubernetes manifest).
WORKLOAD_SKIPS = {
    "CKV_K8S_43": "the image is built from this repo; an overlay that ships a release "
    "pins it by digest (kustomize images: digest)",
    "CKV_K8S_35": "PG_URL, REDIS_URL and AMQP_URL are read from the environment (runtime.config); "
    "the key material is mounted as files",
}


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "ticketing",
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def metadata(name: str, component: str, skips: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels(name, component)}
    if skips:
        meta["annotations"] = {
            f"checkov.io/skip{i}": f"{check}={why}"
            for i, (check, why) in enumerate(sorted(skips.items()), 1)
        }
    return meta


def settings_env() -> dict[str, str]:
    return dict(CLUSTER_SETTINGS)


def drain_seconds(service: str, environ: dict[str, str]) -> float:
    """From SIGTERM to exit at most (runtime.server): NOT_SERVING for
    DRAIN_SECONDS, in-flight RPCs for SHUTDOWN_GRACE_SECONDS, and booking's
    runs still settling for the saga's budget (booking.service working())."""
    base = Settings.load(service, environ)
    settling = retry_policy(Env(environ)).saga_budget_seconds if service == "booking" else 0
    return base.drain_seconds + base.shutdown_grace_seconds + settling


def grace_seconds(service: str, environ: dict[str, str]) -> int:
    if service == "edge":
        # Envoy holds a CreateBooking for its route timeout; it stops taking
        # connections in its preStop and exits at SIGTERM.
        busy: float = retry_policy(Env(environ)).edge_timeout_seconds
    else:
        busy = drain_seconds(service, environ)
    return math.ceil(PRESTOP_SECONDS + busy + EXIT_MARGIN_SECONDS)


def security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,  # the mounted Secrets' files are the service's group's
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(name: str) -> dict[str, Any]:
    cpu, cpu_limit, memory, memory_limit = RESOURCES[name]
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


def secret_volume(name: str, secret: str, mount: str) -> tuple[dict[str, Any], dict[str, Any]]:
    volume = {"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}}
    return volume, {"name": name, "mountPath": mount, "readOnly": True}


def key_volumes(workload: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The workload's mesh certificate, and the signing keys it uses."""
    found = [secret_volume("tls", f"tls-{workload}", TLS_MOUNT)]
    if workload == "auth":
        found.append(secret_volume("auth-keys", "auth-keys", AUTH_KEYS_MOUNT))
    if workload in ("booking", "notification"):
        found.append(secret_volume("ticket-keys", "ticket-keys", TICKET_KEYS_MOUNT))
    found.append(
        ({"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}, {"name": "tmp", "mountPath": "/tmp"})
    )
    return found


def env_from(service: str) -> list[dict[str, Any]]:
    sources: list[dict[str, Any]] = [
        {"configMapRef": {"name": SETTINGS}},
        {"secretRef": {"name": BACKING_SECRET}},
    ]
    if service == "auth":
        sources.append({"secretRef": {"name": ADMIN_SECRET}})
    return sources


def container(service: str, args: list[str]) -> dict[str, Any]:
    port = DEFAULT_PORTS[service]
    return {
        "name": service,
        "image": f"{IMAGE}:latest",
        "imagePullPolicy": "Always",
        "args": args,
        "envFrom": env_from(service),
        # Its own address, on every interface of the pod; peers use the Service's name.
        "env": [{"name": "GRPC_LISTEN_ADDR", "value": f"0.0.0.0:{port}"}],
        "resources": resources(service),
        "securityContext": security_context(),
        "volumeMounts": [mount for _, mount in key_volumes(service)],
    }


def pod_spec(containers: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        "containers": containers,
        "volumes": volumes,
    }


def service_deployment(service: str, environ: dict[str, str]) -> dict[str, Any]:
    main = container(service, ["python", "-m", service])
    main["ports"] = [
        {"name": "grpc", "containerPort": DEFAULT_PORTS[service]},
        {"name": "health", "containerPort": HEALTH_PORT},
        {"name": "metrics", "containerPort": METRICS_PORT},
    ]
    # "" turns NOT_SERVING when the drain starts; LIVENESS stays SERVING until
    # the process exits, so a draining pod is not restarted as dead.
    main["readinessProbe"] = {
        "grpc": {"port": HEALTH_PORT},
        "periodSeconds": 2,
        "failureThreshold": 1,
        "timeoutSeconds": 2,
    }
    main["startupProbe"] = {
        "grpc": {"port": HEALTH_PORT, "service": "liveness"},
        "periodSeconds": 2,
        "failureThreshold": 60,
        "timeoutSeconds": 2,
    }
    main["livenessProbe"] = {
        "grpc": {"port": HEALTH_PORT, "service": "liveness"},
        "periodSeconds": 10,
        "failureThreshold": 3,
        "timeoutSeconds": 5,
    }
    main["lifecycle"] = {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}}
    spec = pod_spec([main], [volume for volume, _ in key_volumes(service)])
    spec["terminationGracePeriodSeconds"] = grace_seconds(service, environ)
    return deployment(service, "service", spec)


def deployment(name: str, component: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, component, WORKLOAD_SKIPS),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": selector(name)},
            # A new pod serves before an old one goes: capacity never drops.
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels(name, component)}, "spec": spec},
        },
    }


def edge_deployment(environ: dict[str, str]) -> dict[str, Any]:
    ready = (
        "import urllib.request; urllib.request.urlopen("
        f"'http://127.0.0.1:{EDGE_ADMIN_PORT}/ready', timeout=2)"
    )
    timeout = retry_policy(Env(environ)).edge_timeout_seconds
    # Stop taking connections (the admin port is the pod's own, on loopback),
    # then let the bookings in flight finish within their route timeout.
    drain = (
        f"import time, urllib.request; time.sleep({PRESTOP_SECONDS}); urllib.request.urlopen("
        f"urllib.request.Request('http://127.0.0.1:{EDGE_ADMIN_PORT}/drain_listeners?graceful',"
        f" method='POST'), timeout=2); time.sleep({timeout})"
    )
    envoy = {
        "name": "envoy",
        "image": f"{IMAGE}:latest",
        "imagePullPolicy": "Always",
        "args": [
            "envoy",
            "-c",
            f"{ENVOY_CONFIG_MOUNT}/envoy.json",
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--concurrency",
            "2",
            "--drain-strategy",
            "immediate",
            "--drain-time-s",
            str(PRESTOP_SECONDS),
        ],
        "ports": [{"name": "http", "containerPort": EDGE_PORT}],
        # The admin interface listens on loopback only, so its probe runs in the pod.
        "readinessProbe": {
            "exec": {"command": ["python", "-c", ready]},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": EDGE_PORT},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["python", "-c", drain]}}},
        "resources": resources("edge"),
        "securityContext": security_context(),
        "volumeMounts": [
            *(mount for _, mount in key_volumes("edge")),
            {"name": "envoy-config", "mountPath": ENVOY_CONFIG_MOUNT, "readOnly": True},
        ],
    }
    volumes = [
        *(volume for volume, _ in key_volumes("edge")),
        {"name": "envoy-config", "configMap": {"name": "envoy-config"}},
    ]
    spec = pod_spec([envoy], volumes)
    spec["terminationGracePeriodSeconds"] = grace_seconds("edge", environ)
    return deployment("edge", "edge", spec)


def service(name: str, component: str, port: int, headless: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": selector(name),
        "ports": [{"name": "grpc" if headless else "http", "port": port, "targetPort": port}],
    }
    if headless:
        # The pods' own addresses in DNS: gRPC clients and Envoy balance per
        # call over them, where one HTTP/2 connection to a virtual IP would
        # stick to one pod.
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, component),
        "spec": spec,
    }


def disruption_budget(name: str, component: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(name, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name)}},
    }


def autoscaler(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(name, "service"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 2,
            "maxReplicas": 8,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def migration_job(service: str) -> dict[str, Any]:
    main = container(service, ["python", "-m", service, "migrate"])
    main["resources"] = resources(service)
    spec = pod_spec([main], [volume for volume, _ in key_volumes(service)])
    spec["restartPolicy"] = "OnFailure"
    name = f"{service}-migrate"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(name, "migration", WORKLOAD_SKIPS),
        "spec": {
            "backoffLimit": 10,
            # Gone an hour after it succeeded, so the next apply (a new image)
            # runs it again rather than failing on an immutable Job.
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": labels(name, "migration")}, "spec": spec},
        },
    }


def ingress_rule(port: int | str, sources: list[dict[str, Any]] | None) -> dict[str, Any]:
    rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port}]}
    if sources is not None:
        rule["from"] = sources
    return rule


def network_policy(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, "network"),
        "spec": {
            "podSelector": {"matchLabels": selector(name)},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def service_policy(service: str) -> dict[str, Any]:
    callers = [{"podSelector": {"matchLabels": selector(c)}} for c in CALLERS[service]]
    scraper = [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    return network_policy(
        service,
        [
            ingress_rule(DEFAULT_PORTS[service], callers),
            # The kubelet's probes come from the node; the port answers health alone.
            ingress_rule(HEALTH_PORT, None),
            ingress_rule(METRICS_PORT, scraper),
        ],
    )


def default_deny() -> dict[str, Any]:
    """No ingress to any pod of the namespace but what a policy above allows."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata("default-deny-ingress", "network"),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def envoy_config(environ: dict[str, str]) -> str:
    """envoy/render.py's output for the cluster: the Services' names, the
    mounted certificate, the image's descriptor set."""
    env = {"PATH": os.environ.get("PATH", ""), **environ}
    rendered = subprocess.run(
        [sys.executable, "envoy/render.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if rendered.returncode:
        raise SystemExit(rendered.stderr)
    return rendered.stdout


def dump(documents: list[dict[str, Any]]) -> str:
    header = "# Generated by scripts/k8s.py render: edit that, not this.\n"
    return header + yaml.safe_dump_all(documents, sort_keys=False, width=100)


def kustomization(environ: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"{name}.yaml" for name in (*SERVICES, "edge", "network")],
        "configMapGenerator": [
            {"name": SETTINGS, "literals": [f"{k}={v}" for k, v in environ.items()]},
            {"name": "envoy-config", "files": ["envoy.json"]},
        ],
    }


def base_files() -> dict[str, str]:
    environ = settings_env()
    files: dict[str, str] = {}
    for name in SERVICES:
        documents = [
            service_deployment(name, environ),
            service(name, "service", DEFAULT_PORTS[name], headless=True),
            disruption_budget(name, "service"),
            *([autoscaler(name)] if name in SCALED else []),
            migration_job(name),
        ]
        files[f"{name}.yaml"] = dump(documents)
    files["edge.yaml"] = dump(
        [
            edge_deployment(environ),
            service("edge", "edge", EDGE_PORT, headless=False),
            disruption_budget("edge", "edge"),
        ]
    )
    edge_policy = network_policy("edge", [ingress_rule(EDGE_PORT, None)])
    files["network.yaml"] = dump(
        [default_deny(), edge_policy, *(service_policy(s) for s in SERVICES)]
    )
    files["envoy.json"] = envoy_config(environ)
    files["kustomization.yaml"] = dump([kustomization(environ)])
    return files


def render() -> None:
    BASE.mkdir(parents=True, exist_ok=True)
    for name, text in base_files().items():
        (BASE / name).write_text(text)


def stale() -> list[str]:
    on_disk = {p.name for p in BASE.iterdir()} if BASE.exists() else set()
    rendered = base_files()
    changed = [
        n
        for n, text in rendered.items()
        if not (BASE / n).exists() or (BASE / n).read_text() != text
    ]
    return sorted({*changed, *(on_disk - set(rendered))})


def secret(name: str, files: dict[str, bytes], component: str = "keys") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(name, component),
        "type": "Opaque",
        "data": {key: base64.b64encode(value).decode() for key, value in sorted(files.items())},
    }


def secret_documents(
    keys: Path, tls: Path, admin_email: str, admin_password: str
) -> list[dict[str, Any]]:
    """The Secrets the manifests mount, from `make keys certs`' files."""
    documents = []
    for workload in (*SERVICES, "edge"):
        names = ("ca.pem", f"{workload}.pem", f"{workload}.key")
        documents.append(secret(f"tls-{workload}", {n: (tls / n).read_bytes() for n in names}))
    auth_keys = {p.name: p.read_bytes() for p in sorted(keys.iterdir()) if p.is_file()}
    ticket_keys = {
        p.name: p.read_bytes() for p in sorted((keys / "tickets").iterdir()) if p.is_file()
    }
    documents.append(secret("auth-keys", auth_keys))
    documents.append(secret("ticket-keys", ticket_keys))
    admin = {"ADMIN_EMAIL": admin_email.encode(), "ADMIN_PASSWORD": admin_password.encode()}
    documents.append(secret(ADMIN_SECRET, admin, "admin"))
    return documents


def main() -> None:
    parser = argparse.ArgumentParser(prog="python scripts/k8s.py")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("render")
    commands.add_parser("check")
    made = commands.add_parser("secrets")
    made.add_argument("--keys", type=Path, default=REPO / "var" / "keys")
    made.add_argument("--tls", type=Path, default=REPO / "var" / "tls")
    made.add_argument("--admin-email", default="admin@example.com")
    args = parser.parse_args()
    if args.command == "render":
        render()
    elif args.command == "check":
        if changed := stale():
            raise SystemExit(
                f"deploy/kubernetes/base is stale ({', '.join(changed)}): "
                "python scripts/k8s.py render"
            )
    else:
        # A password of its own unless ADMIN_PASSWORD is set: kubectl get secret shows it.
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(24)
        sys.stdout.write(
            yaml.safe_dump_all(secret_documents(args.keys, args.tls, args.admin_email, password))
        )


if __name__ == "__main__":
    main()
