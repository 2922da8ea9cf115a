"""Writes deploy/grafana/on-sale.json, the Grafana dashboard for an on-sale, from
the panels below (grafanalib), so the JSON in the repo is generated, never
hand-edited.   python scripts/dashboard.py   (or `make dashboard`)

Every query reads a metric the mesh exports: the services' own on their metrics
ports (runtime/metrics.py, booking/service.py, event/holds.py) and Envoy's
/stats/prometheus on the edge's admin port; tests/e2e/test_dashboard.py checks
each name against a live scrape. The queries assume a Prometheus that scrapes
each service as its own job (job="booking", ...).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from grafanalib import core
from grafanalib._gen import DashboardEncoder

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "deploy" / "grafana" / "on-sale.json"

# The Prometheus picked in the dashboard's `datasource` variable on import.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Recent enough that an import runs none of the migrations meant for old
# dashboards (timeseries panels and data source references are current).
SCHEMA_VERSION = 39
RATE = "[$__rate_interval]"
CREATE_BOOKING = 'grpc_method="/ticketing.booking.v1.BookingService/CreateBooking"'
# What Envoy's transcoder answers with HTTP 409: the seats were taken (ABORTED),
# or the request id was used for another booking (ALREADY_EXISTS).
CONFLICT_CODES = 'grpc_code=~"ABORTED|ALREADY_EXISTS"'

PANEL_WIDTH, PANEL_HEIGHT, PER_ROW = 12, 8, 2


def target(expr: str, legend: str, ref_id: str) -> core.Target:
    return core.Target(expr=expr, legendFormat=legend, refId=ref_id, datasource=DATASOURCE)


def latency(quantile: float) -> str:
    return (
        f"histogram_quantile({quantile}, sum by (le) "
        f"(rate(grpc_server_handling_seconds_bucket{{{CREATE_BOOKING}}}{RATE})))"
    )


def panels() -> list[tuple[str, str, str, list[core.Target]]]:
    """(title, unit, description, targets) of each panel, in reading order."""
    return [
        (
            "Confirmed bookings/s",
            "reqps",
            "Bookings paid for and confirmed, over every booking replica.",
            [
                target(
                    f'sum(rate(booking_outcomes_total{{outcome="confirmed"}}{RATE}))',
                    "confirmed",
                    "A",
                ),
                target(
                    "sum by (outcome) "
                    f'(rate(booking_outcomes_total{{outcome!="confirmed"}}{RATE}))',
                    "{{outcome}}",
                    "B",
                ),
            ],
        ),
        (
            "Booking latency",
            "s",
            "CreateBooking as the booking service answers it, p50 and p99.",
            [target(latency(0.5), "p50", "A"), target(latency(0.99), "p99", "B")],
        ),
        (
            "409 share of CreateBooking",
            "percentunit",
            "Bookings refused with 409 (seats taken, request id reused) over all of them.",
            [
                target(
                    f"sum(rate(grpc_server_handled_total{{{CREATE_BOOKING},{CONFLICT_CODES}}}"
                    f"{RATE})) / sum(rate(grpc_server_handled_total{{{CREATE_BOOKING}}}{RATE}))",
                    "409 share",
                    "A",
                )
            ],
        ),
        (
            "Seats held",
            "short",
            "Seats on hold right now over every event; each event replica counts them "
            "all in Redis every 10 s, hence max.",
            [target("max(seat_holds_active)", "held", "A")],
        ),
        (
            "Outbox backlog",
            "short",
            "Outbox rows not yet confirmed by RabbitMQ, per service; the replicas of "
            "a service share its database, hence max.",
            [target("max by (job) (outbox_backlog)", "{{job}}", "A")],
        ),
        (
            "Consumer lag p99",
            "s",
            "From a message's outbox row to its subscriber's handling it, per queue.",
            [
                target(
                    "histogram_quantile(0.99, sum by (le, queue) "
                    f"(rate(broker_message_lag_seconds_bucket{RATE})))",
                    "{{queue}}",
                    "A",
                )
            ],
        ),
        (
            "Envoy 5xx/s",
            "reqps",
            "5xx answers at the edge, and the 5xx each upstream cluster gave it.",
            [
                target(
                    "sum(rate(envoy_http_downstream_rq_xx"
                    f'{{envoy_http_conn_manager_prefix="edge",envoy_response_code_class="5"}}'
                    f"{RATE}))",
                    "edge",
                    "A",
                ),
                target(
                    "sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_xx"
                    f'{{envoy_response_code_class="5"}}{RATE}))',
                    "{{envoy_cluster_name}}",
                    "B",
                ),
            ],
        ),
        (
            "Rate-limited requests/s",
            "reqps",
            "Requests Envoy's local rate limit refused with 429 (login and register "
            "per client address).",
            [
                target(
                    "sum by (envoy_local_http_ratelimit_prefix) "
                    f"(rate(envoy_http_local_rate_limit_rate_limited{RATE}))",
                    "{{envoy_local_http_ratelimit_prefix}}",
                    "A",
                )
            ],
        ),
    ]


def dashboard() -> core.Dashboard:
    laid_out = []
    for index, (title, unit, description, targets) in enumerate(panels()):
        grid = core.GridPos(
            h=PANEL_HEIGHT,
            w=PANEL_WIDTH,
            x=(index % PER_ROW) * PANEL_WIDTH,
            y=(index // PER_ROW) * PANEL_HEIGHT,
        )
        laid_out.append(
            core.TimeSeries(
                id=index + 1,
                title=title,
                description=description,
                dataSource=DATASOURCE,
                targets=targets,
                unit=unit,
                gridPos=grid,
            )
        )
    datasource = core.Template(
        name="datasource",
        label="Prometheus",
        query="prometheus",
        type="datasource",
    )
    return core.Dashboard(
        title="Ticketing: on-sale",
        uid="ticketing-on-sale",
        description="The sale path during an on-sale: bookings, latency, conflicts, holds, "
        "messaging and the edge.",
        tags=["ticketing"],
        panels=laid_out,
        schemaVersion=SCHEMA_VERSION,
        refresh="10s",
        time=core.Time("now-30m", "now"),
        templating=core.Templating(list=[datasource]),
        timezone="utc",
    )


def render() -> str:
    data = dashboard().to_json_data()
    return json.dumps(data, cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


def expressions(document: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard's panels."""
    return [t["expr"] for panel in document["panels"] for t in panel["targets"] if t.get("expr")]


# PromQL's words that are not metric names: aggregation modifiers, vector
# matching, set operators and the like; and the functions, which are followed by "(".
PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (enough PromQL for our own queries)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may hold anything
    bare = re.sub(r"\{[^}]*\}", " ", bare)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # ranges
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", bare):
        word = match.group()
        follows = bare[match.end() :].lstrip()
        preceded = bare[: match.start()]
        if follows.startswith("(") or word.lower() in PROMQL_KEYWORDS:
            continue
        if re.search(r"[0-9.]$", preceded):  # an exponent or unit of a number (1e3)
            continue
        names.add(word)
    return names


SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Each `metric{...}` of an expression with its label matchers (label, op, value)."""
    return [(name, MATCHER.findall(body)) for name, body in SELECTOR.findall(expr)]


def main() -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())


if __name__ == "__main__":
    main()
