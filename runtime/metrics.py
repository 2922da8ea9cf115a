"""Prometheus metrics shared by every service, served on its metrics port."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

RPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time to answer an RPC, by method and status code.",
    ["grpc_method", "grpc_code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs answered, by method and status code.",
    ["grpc_method", "grpc_code"],
)
OUTBOX_BACKLOG = Gauge("outbox_backlog", "Outbox messages not yet confirmed by the broker.")
MESSAGES_CONSUMED = Counter(
    "broker_messages_consumed_total",
    "Broker messages handled, by queue and outcome.",
    ["queue", "outcome"],
)
MESSAGE_LAG = Histogram(
    "broker_message_lag_seconds",
    "From a message's outbox row to its subscriber's handling it, by queue.",
    ["queue"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def observe_rpc(method: str, code: str, seconds: float) -> None:
    RPC_LATENCY.labels(method, code).observe(seconds)
    RPC_HANDLED.labels(method, code).inc()


def serve(port: int, addr: str) -> None:
    """Exposes /metrics on addr:port; port 0 turns it off."""
    if not port:
        return
    try:
        start_http_server(port, addr=addr)
    except OSError as exc:  # metrics are worth a warning, not an outage
        log.warning("no metrics: cannot listen on port %d: %s", port, exc)
        return
    log.info("metrics on http://%s:%d/metrics", addr, port)
