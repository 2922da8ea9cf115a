"""The on-sale dashboard against the live mesh: every query's metric exists in
what the services and Envoy export, with the labels it selects on; and the
metrics it shows move as a sale goes on."""

from __future__ import annotations

import json
import re
import urllib.request
from collections import defaultdict

import pytest

from scripts import dashboard
from scripts.mesh import Mesh
from tests.support import Edge, book, event_body, register_and_login, wait_for

CREATE_BOOKING = "/ticketing.booking.v1.BookingService/CreateBooking"

Samples = dict[str, list[tuple[dict[str, str], float]]]


# A sample line of the text exposition format, as a Prometheus reads it (the
# parser of prometheus_client would rename Envoy's counters with a _total).
SAMPLE = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    samples: Samples = defaultdict(list)
    for line in text.splitlines():
        sample = SAMPLE.fullmatch(line.strip())
        if sample and not line.startswith("#"):
            name, labels, value = sample.groups()
            samples[name].append((dict(LABEL.findall(labels or "")), float(value)))
    return samples


def scrape_service(mesh: Mesh, service: str) -> Samples:
    return scrape(f"http://127.0.0.1:{mesh.env[f'{service.upper()}_METRICS_PORT']}/metrics")


def scrape_all(mesh: Mesh) -> Samples:
    merged: Samples = defaultdict(list)
    urls = [f"http://127.0.0.1:{mesh.env['EDGE_ADMIN_PORT']}/stats/prometheus"]
    urls += [
        f"http://127.0.0.1:{mesh.env[f'{service.upper()}_METRICS_PORT']}/metrics"
        for service in mesh.implemented()
    ]
    for url in urls:
        for name, series in scrape(url).items():
            merged[name] += series
    return merged


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for got, value in samples.get(name, [])
        if all(got.get(key) == want for key, want in labels.items())
    )


def matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    checks = {
        "=": lambda got, want: got == want,
        "!=": lambda got, want: got != want,
        "=~": lambda got, want: re.fullmatch(want, got) is not None,
        "!~": lambda got, want: re.fullmatch(want, got) is None,
    }
    return all(checks[op](labels.get(key, ""), want) for key, op, want in matchers)


# Envoy makes a cluster's series of a response class on its first such answer
# (no 5xx, no series), where the edge's downstream ones all exist from the start.
LAZY_SERIES = {"envoy_cluster_upstream_rq_xx"}


@pytest.fixture(scope="module")
def sale(edge: Edge, organizer: str, mesh: Mesh) -> Samples:
    """The metrics before one booking and a 409 for its seat."""
    before = scrape_all(mesh)
    event = edge.post("/v1/events", event_body(title="Dashboard night"), token=organizer).body
    buyer = register_and_login(edge, "dashboard")
    first = book(edge, buyer.access_token, event["event_id"], ["standard-1-1"])
    assert first.status == 200, first.body
    taken = book(edge, buyer.access_token, event["event_id"], ["standard-1-1"])
    assert taken.status == 409, taken.body
    return before


def test_every_query_reads_a_metric_that_exists(sale: Samples, mesh: Mesh) -> None:
    document = json.loads(dashboard.OUTPUT.read_text())
    expressions = dashboard.expressions(document)
    assert len(document["panels"]) == 8 and len(expressions) >= 8
    # The confirmation's messages, so every subscriber has measured a lag.
    wait_for(
        lambda: total(scrape_all(mesh), "broker_message_lag_seconds_count", queue="notification"),
        "a notification to be handled",
    )
    exported = scrape_all(mesh)
    for expr in expressions:
        names = dashboard.metric_names(expr)
        assert names, expr
        for name in names:
            assert name in exported, f"{name} (in {expr}) is exported by no service nor Envoy"
        for name, wanted in dashboard.selectors(expr):
            series = [labels for labels, _ in exported[name]]
            for label, _, _ in wanted:
                assert any(label in labels for labels in series), f"{name} has no {label}"
            if name not in LAZY_SERIES:
                assert any(matches(labels, wanted) for labels in series), (
                    f"no {name} series has {wanted} (in {expr})"
                )


def test_a_booking_and_a_conflict_move_the_sale_panels(sale: Samples, mesh: Mesh) -> None:
    booking = scrape_service(mesh, "booking")
    assert total(booking, "booking_outcomes_total", outcome="confirmed") >= 1 + total(
        sale, "booking_outcomes_total", outcome="confirmed"
    )
    # The 409 for the taken seat is ABORTED, one of the codes the 409 panel counts.
    conflict_codes = re.search(r'grpc_code=~"([^"]+)"', dashboard.CONFLICT_CODES).group(1)
    assert re.fullmatch(conflict_codes, "ABORTED")
    for code in ("OK", "ABORTED"):
        labels = {"grpc_method": CREATE_BOOKING, "grpc_code": code}
        assert total(booking, "grpc_server_handled_total", **labels) >= 1 + total(
            sale, "grpc_server_handled_total", **labels
        ), code
    assert total(booking, "grpc_server_handling_seconds_count", grpc_method=CREATE_BOOKING) >= 2


def test_the_consumer_lag_of_a_confirmation_is_measured(sale: Samples, mesh: Mesh) -> None:
    def lag(samples: Samples, suffix: str) -> float:
        return total(samples, f"broker_message_lag_seconds{suffix}", queue="notification")

    def measured() -> Samples | None:
        samples = scrape_service(mesh, "notification")
        return samples if lag(samples, "_count") > lag(sale, "_count") else None

    after = wait_for(measured, "the confirmation's lag to be measured")
    handled = lag(after, "_count") - lag(sale, "_count")
    # Measured from the outbox row to the millisecond: seconds, not the epoch.
    assert 0 < (lag(after, "_sum") - lag(sale, "_sum")) / handled < 30


def test_seats_held_counts_a_hold(edge: Edge, organizer: str, mesh: Mesh) -> None:
    event = edge.post("/v1/events", event_body(title="Held night"), token=organizer).body
    buyer = register_and_login(edge, "holder")
    seats = ["standard-1-1", "standard-1-2", "standard-1-3"]
    made = edge.post(
        f"/v1/events/{event['event_id']}/holds", {"seat_ids": seats}, token=buyer.access_token
    )
    assert made.status == 200, made.body
    # The gauge is recounted every 10 s; other tests' holds may count too.
    wait_for(
        lambda: total(scrape_service(mesh, "event"), "seat_holds_active") >= len(seats),
        "the held seats to be counted",
    )
    released = edge.call("DELETE", f"/v1/holds/{made.body['hold_id']}", token=buyer.access_token)
    assert released.status == 200, released.body
