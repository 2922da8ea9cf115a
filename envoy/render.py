"""Renders the Envoy configuration from the contracts.

The routes are not written by hand: every RPC with a `google.api.http`
annotation is routed to its service, and its `ticketing.common.v1.access`
rule decides whether `jwt_authn` demands a token. RPCs without an HTTP
binding (LockSeat, Charge, ...) get no route, so through Envoy they are 404.
A method no RPC binds on a known path is 405 with an `Allow` header.

    python envoy/render.py > var/envoy.json

Addresses come from the same environment variables the services read
(`AUTH_GRPC_ADDR=127.0.0.1:3001`; a comma-separated list for replicas).
Edge settings: EDGE_PORT, EDGE_LISTEN_ADDRESS, EDGE_ADMIN_PORT, EDGE_ADMIN_ADDRESS,
CORS_ALLOWED_ORIGINS (comma-separated), AUTH_RATE_LIMIT_PER_MINUTE (login and
register, per Envoy), MAX_REQUEST_BYTES, JWKS_CACHE_SECONDS, and
OTEL_EXPORTER_OTLP_ENDPOINT (runtime.tracing): when set, Envoy traces the
requests (every one, or TRACING_SAMPLE_PERCENT of those that come without a
trace) to that collector and hands the services its `traceparent`.

Envoy talks to the services over mutual TLS as the `edge` workload, with the
files of runtime.tls (TLS_DIR, or TLS_CA_FILE / TLS_CERT_FILE / TLS_KEY_FILE).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2, status_pb2

from runtime import tracing
from runtime.config import REPO_ROOT, SERVICES, ConfigError, Env, grpc_addr, retry_policy
from runtime.contracts import PROTO_SERVICES, http_binding
from runtime.status import ERROR_DOMAIN
from runtime.tls import TlsFiles, spiffe_id
from ticketing.common.v1 import access_pb2

# What Envoy answers by itself, per HTTP status: the gRPC code (for a gRPC
# caller's grpc-status and every error body's `code`), the ErrorInfo reason
# and the message. An HTTP caller gets google.rpc.Status JSON; a gRPC or
# gRPC-Web caller a real gRPC status (see local_reply_config).
LOCAL_REPLIES: dict[int, tuple[int, str, str]] = {
    400: (3, "INVALID_REQUEST", "the request is malformed"),
    401: (16, "UNAUTHENTICATED", "a valid access token is required"),
    403: (7, "PERMISSION_DENIED", "the access token does not allow this"),
    # Through Envoy, an RPC with no public route does not exist: UNIMPLEMENTED.
    404: (12, "NO_ROUTE", "no such route"),
    405: (12, "METHOD_NOT_ALLOWED", "the path does not take this method"),
    413: (3, "REQUEST_TOO_LARGE", "the request body is too large"),
    429: (8, "RATE_LIMITED", "too many requests, try again later"),
    503: (14, "UNAVAILABLE", "the service is unavailable"),
    504: (4, "DEADLINE_EXCEEDED", "the service did not answer in time"),
}
# The code an HTTP caller's JSON says where it differs (an unknown URL is NOT_FOUND).
HTTP_CODES = {404: 5}
JWT_PROVIDER = "ticketing"
RATE_LIMITED = {"/ticketing.auth.v1.AuthService/Login", "/ticketing.auth.v1.AuthService/Register"}
# The routes that run the booking saga: their timeout derives from the saga's
# retry policy (runtime.retry), read from the same variables booking reads.
SAGA_ROUTES = (
    "/ticketing.booking.v1.BookingService/CreateBooking",
    "/ticketing.booking.v1.BookingService/CancelBooking",
)
SLOW_ROUTES = {"/ticketing.event.v1.EventService/CreateEvent": 30}  # seconds
# Requests safe to send again even after they reached a service that then
# died: reads, and CreateBooking, which its request_id makes the same booking.
IDEMPOTENT_ROUTES = {"/ticketing.booking.v1.BookingService/CreateBooking"}
# How often Envoy asks each service whether it serves; a draining service says
# NOT_SERVING this long before it stops listening (runtime.server, DRAIN_SECONDS).
HEALTH_CHECK_INTERVAL_SECONDS = 1
DEFAULT_TIMEOUT = 10
# Every setting read here, checked once the config is rendered.
ENV = Env()
CORS_HEADERS = "authorization,content-type,x-request-id,x-grpc-web,x-user-agent,grpc-timeout"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
CORS_EXPOSED = "grpc-status,grpc-message,grpc-status-details-bin,x-request-id"


def extension(name: str) -> str:
    """The @type of an Envoy extension's config message."""
    return f"type.googleapis.com/envoy.extensions.{name}"


def path_regex(template: str) -> str:
    """'/v1/users/{user_id}:setRole' -> '^/v1/users/[^/]+:setRole$'."""
    literals = re.split(r"\{[^}]+\}", template)
    return "^" + "[^/]+".join(re.escape(part) for part in literals) + "$"


def http_routes() -> list[dict[str, Any]]:
    """Routes for the HTTP paths: each bound method to its service, so that
    filters running before the transcoder (CORS answering a /v1/... preflight)
    find a route and the transcoder then moves the request onto its gRPC route;
    any other method answered 405 with the methods the path takes."""
    templates: dict[str, set[str]] = {}
    services = {}
    for service, _, verb, bound_template, _ in public_methods():
        # `{event.event_id}` and `{event_id}` are one path with several methods.
        template = re.sub(r"\{[^}.]+\.([^}]+)\}", r"{\1}", bound_template)
        templates.setdefault(template, set()).add(verb)
        services[template] = service
    # A CORS preflight needs a route to a cluster (the CORS filter passes over
    # direct responses), whatever method it asks about.
    preflight = [
        {"name": ":method", "string_match": {"exact": "OPTIONS"}},
        {"name": "access-control-request-method", "present_match": True},
    ]
    bound = [
        {
            "match": {"safe_regex": {"regex": path_regex(template)}, "headers": headers},
            "route": {"cluster": services[template], "timeout": f"{DEFAULT_TIMEOUT}s"},
        }
        for template in sorted(templates)
        for headers in [
            *(
                [{"name": ":method", "string_match": {"exact": verb}}]
                for verb in sorted(templates[template])
            ),
            preflight,
        ]
    ]
    # The most literal template first: '/v1/bookings/x:cancel' is refused with
    # the methods of '{booking_id}:cancel', not of '{booking_id}'.
    by_specificity = sorted(templates, key=lambda t: (-len(re.sub(r"\{[^}]+\}", "", t)), t))
    refused = [
        {
            "match": {"safe_regex": {"regex": path_regex(template)}},
            "direct_response": {"status": 405, "body": {"inline_string": "method not allowed"}},
            "typed_per_filter_config": transcoder_disabled(),
            "response_headers_to_add": [
                {"header": {"key": "allow", "value": ", ".join(sorted(templates[template]))}}
            ],
        }
        for template in by_specificity
    ]
    return bound + refused


def transcoder_disabled() -> dict[str, Any]:
    """For a route that is no RPC: the transcoder would refuse it as an unknown method."""
    return {
        "envoy.filters.http.grpc_json_transcoder": {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
            "disabled": True,
        }
    }


def grpc_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def public_methods() -> list[tuple[str, MethodDescriptor, str, str, int]]:
    """(service, method, HTTP verb, path template, access) of every routed RPC."""
    found = []
    for service, descriptor in PROTO_SERVICES.items():
        for method in descriptor.methods:
            binding = http_binding(method)
            if binding:
                verb, template, _ = binding
                access = method.GetOptions().Extensions[access_pb2.access]
                found.append((service, method, verb, template, access))
    return found


def upstream_tls(service: str, identity: TlsFiles) -> dict[str, Any]:
    """Mutual TLS to `service`: Envoy presents the edge certificate and accepts
    only a peer whose SPIFFE id is the service's. Health checks use it too."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": extension("transport_sockets.tls.v3.UpstreamTlsContext"),
            "sni": service,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(identity.cert)},
                        "private_key": {"filename": str(identity.key)},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": str(identity.ca)},
                    "match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"exact": spiffe_id(service)}}
                    ],
                },
            },
        },
    }


def cluster(service: str, identity: TlsFiles) -> dict[str, Any]:
    endpoints = []
    for addr in grpc_addr(service, ENV).split(","):
        host, _, port = addr.strip().rpartition(":")
        endpoints.append(
            {
                "endpoint": {
                    "address": {"socket_address": {"address": host, "port_value": int(port)}}
                }
            }
        )
    return {
        "name": service,
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": extension("upstreams.http.v3.HttpProtocolOptions"),
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {"cluster_name": service, "endpoints": [{"lb_endpoints": endpoints}]},
        "transport_socket": upstream_tls(service, identity),
        # One NOT_SERVING answer takes a draining replica out of the rotation.
        "health_checks": [
            {
                "timeout": "1s",
                "interval": f"{HEALTH_CHECK_INTERVAL_SECONDS}s",
                "no_traffic_interval": f"{HEALTH_CHECK_INTERVAL_SECONDS}s",
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": PROTO_SERVICES[service].full_name},
            }
        ],
        # A replica that stops answering (killed) is ejected at its second failed
        # connection, before its health check notices; HTTP statuses (a 503
        # BOOKING_PENDING is an answer) never eject anyone.
        "outlier_detection": {
            "consecutive_gateway_failure": 2,
            "enforcing_consecutive_gateway_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_success_rate": 0,
            "interval": "1s",
            "base_ejection_time": "2s",
            "max_ejection_percent": 100,
        },
        # Retries ride through a restart under load: Envoy's default allows 3 at once.
        "circuit_breakers": {"thresholds": [{"max_retries": 1024}]},
    }


def retry_policy_for(path: str, read_only: bool) -> dict[str, Any]:
    """A request that never reached a service (refused connection or stream) is
    sent again, to another replica if there is one; an idempotent one also
    when the service died with it in hand. Backing off for a few seconds in
    all covers a restart."""
    retry_on = "connect-failure,refused-stream,reset-before-request"
    if read_only or path in IDEMPOTENT_ROUTES:
        retry_on += ",reset"
    return {
        "retry_on": retry_on,
        "num_retries": 8,
        "retry_back_off": {"base_interval": "0.25s", "max_interval": "1s"},
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": extension("retry.host.previous_hosts.v3.PreviousHostsPredicate")
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }


def rate_limit(per_minute: int) -> dict[str, Any]:
    """Per client address: one client flooding logins cannot lock anyone else out."""
    always = {
        "default_value": {"numerator": 100, "denominator": "HUNDRED"},
        "runtime_key": "auth_rate_limit",
    }
    bucket = {"max_tokens": per_minute, "tokens_per_fill": per_minute, "fill_interval": "60s"}
    return {
        "envoy.filters.http.local_ratelimit": {
            "@type": extension("filters.http.local_ratelimit.v3.LocalRateLimit"),
            "stat_prefix": "auth_rate_limit",
            # A request without an address to key on (none ever, in practice).
            "token_bucket": bucket,
            # An entry without a value is a wildcard: a bucket for every address seen.
            "descriptors": [{"entries": [{"key": "remote_address"}], "token_bucket": bucket}],
            "max_dynamic_descriptors": 100_000,
            # Else every request also draws on the shared bucket above.
            "always_consume_default_token_bucket": False,
            "filter_enabled": always,
            "filter_enforced": always,
        }
    }


def routes() -> list[dict[str, Any]]:
    # The transcoder rewrites /v1/... to the gRPC path and clears the route
    # cache, so gRPC, gRPC-Web and HTTP/JSON callers meet the same routes.
    per_minute = ENV.integer("AUTH_RATE_LIMIT_PER_MINUTE", 60, minimum=1)
    timeouts = route_timeouts()
    table = []
    for service, method, verb, _, _ in public_methods():
        path = grpc_path(method)
        route: dict[str, Any] = {
            "match": {"path": path},
            "route": {
                "cluster": service,
                "timeout": f"{timeouts.get(path, DEFAULT_TIMEOUT)}s",
                "retry_policy": retry_policy_for(path, verb == "GET"),
            },
        }
        if path in RATE_LIMITED:
            route["typed_per_filter_config"] = rate_limit(per_minute)
            # The descriptor each request brings: its client's address.
            route["route"]["rate_limits"] = [{"actions": [{"remote_address": {}}]}]
        table.append(route)
    # Where the served image keeps it (not this checkout's path: scripts/k8s.py sets /app's).
    openapi = ENV.text("ENVOY_OPENAPI_DOCUMENT", str(REPO_ROOT / "gen" / "openapi.json"))
    table.append(
        {
            "match": {"path": "/openapi.json"},
            "direct_response": {"status": 200, "body": {"filename": openapi}},
            "typed_per_filter_config": transcoder_disabled(),
            "response_headers_to_add": [
                {"header": {"key": "content-type", "value": "application/json"}}
            ],
        }
    )
    table += http_routes()
    # Everything else: 404.
    table.append(
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_string": "no such route"}},
        }
    )
    return table


def jwt_rules() -> list[dict[str, Any]]:
    rules = []
    for _, method, verb, template, access in public_methods():
        if access == access_pb2.ACCESS_PUBLIC:
            continue
        rules.append(
            {"match": {"path": grpc_path(method)}, "requires": {"provider_name": JWT_PROVIDER}}
        )
        rules.append(
            {
                "match": {
                    "safe_regex": {"regex": path_regex(template)},
                    "headers": [{"name": ":method", "string_match": {"exact": verb}}],
                },
                "requires": {"provider_name": JWT_PROVIDER},
            }
        )
    return rules


def jwt_filter(edge_port: int) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": extension("filters.http.jwt_authn.v3.JwtAuthentication"),
            "providers": {
                JWT_PROVIDER: {
                    "issuer": ENV.text("JWT_ISSUER", "ticketing-auth"),
                    "audiences": [ENV.text("JWT_AUDIENCE", "ticketing")],
                    "remote_jwks": {
                        # Envoy fetches the JWKS through its own listener, transcoded
                        # from AuthService.GetJwks. A short cache picks up a new key soon.
                        "http_uri": {
                            "uri": f"http://127.0.0.1:{edge_port}/v1/auth/jwks",
                            "cluster": "edge_self",
                            "timeout": "2s",
                        },
                        "cache_duration": f"{ENV.integer('JWKS_CACHE_SECONDS', 30, minimum=1)}s",
                        # The listener must not wait for the JWKS: it is fetched through it.
                        "async_fetch": {"fast_listener": True},
                        "retry_policy": {"num_retries": 5},
                    },
                    # Services verify the token again, so it must reach them.
                    "forward": True,
                    "claim_to_headers": [
                        {"header_name": "x-user-id", "claim_name": "sub"},
                        {"header_name": "x-user-role", "claim_name": "role"},
                    ],
                }
            },
            "rules": jwt_rules(),
        },
    }


def max_request_bytes() -> int:
    return ENV.integer("MAX_REQUEST_BYTES", 65536, minimum=1024)


def transcoder_filter(descriptor_path: Path) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": extension("filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder"),
            "proto_descriptor": str(descriptor_path),
            "services": [d.full_name for d in PROTO_SERVICES.values()],
            "print_options": {
                "add_whitespace": False,
                "always_print_primitive_fields": True,
                "always_print_enums_as_ints": False,
                "preserve_proto_field_names": True,
            },
            "convert_grpc_status": True,
            "max_request_body_size": max_request_bytes(),
            "request_validation_options": {
                "reject_unknown_method": True,
                "reject_unknown_query_parameters": True,
                "reject_binding_body_field_collisions": True,
            },
        },
    }


def cors_policy() -> dict[str, Any]:
    origins = ENV.text("CORS_ALLOWED_ORIGINS", "http://localhost:3000,http://127.0.0.1:3000")
    return {
        "envoy.filters.http.cors": {
            "@type": extension("filters.http.cors.v3.CorsPolicy"),
            "allow_origin_string_match": [
                {"exact": origin.strip()} for origin in origins.split(",") if origin.strip()
            ],
            "allow_methods": "GET,POST,PUT,PATCH,DELETE,OPTIONS",
            "allow_headers": CORS_HEADERS,
            "expose_headers": CORS_EXPOSED,
            "max_age": "600",
        }
    }


def status_details(code: int, reason: str, message: str) -> str:
    """grpc-status-details-bin: a google.rpc.Status with one ErrorInfo, base64."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
    details = any_pb2.Any()
    details.Pack(info)
    status = status_pb2.Status(code=code, message=message, details=[details])
    return base64.b64encode(status.SerializeToString()).decode()


def local_reply_config() -> dict[str, Any]:
    """Envoy's own error answers (jwt_authn, the rate limiter, the body limit,
    no route, ...). A gRPC or gRPC-Web caller (its content-type is
    application/grpc by now: the grpc_web filter rewrote it) gets a
    trailers-only reply (HTTP 200, no body) whose grpc-status is the code,
    grpc-message the plain message, and grpc-status-details-bin a
    google.rpc.Status of both with the ErrorInfo, as the services send. It is
    marked application/grpc, so neither Envoy nor the grpc_web filter derives
    another grpc-status from the HTTP status. Any other caller gets
    google.rpc.Status JSON with the same ErrorInfo and Envoy's own message
    ("Jwt is missing"). Envoy's 200s (the OpenAPI document) are untouched."""

    def json_body(code: int, reason: str | None) -> dict[str, Any]:
        details = (
            []
            if reason is None
            else [{"@type": ERROR_INFO_TYPE, "reason": reason, "domain": ERROR_DOMAIN}]
        )
        return {
            "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": details},
            "content_type": "application/json",
        }

    def status_is(op: str, status: int) -> dict[str, Any]:
        return {
            "status_code_filter": {
                "comparison": {
                    "op": op,
                    "value": {"default_value": status, "runtime_key": f"lr_{op}_{status}"},
                }
            }
        }

    # A gRPC caller: gRPC content (the grpc_web filter has made gRPC-Web
    # requests gRPC by now), and not an HTTP/JSON request that the transcoder
    # has rewritten to gRPC (it keeps the URL in x-envoy-original-path).
    grpc_caller = {
        "and_filter": {
            "filters": [
                {
                    "header_filter": {
                        "header": {
                            "name": "content-type",
                            "string_match": {"prefix": "application/grpc"},
                        }
                    }
                },
                {
                    "header_filter": {
                        "header": {
                            "name": "x-envoy-original-path",
                            "present_match": True,
                            "invert_match": True,
                        }
                    }
                },
            ]
        }
    }

    def header(key: str, value: str) -> dict[str, Any]:
        return {
            "header": {"key": key, "value": value},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }

    grpc_mappers = [
        {
            "filter": {"and_filter": {"filters": [grpc_caller, status_is("EQ", status)]}},
            # A gRPC reply is HTTP 200 whatever its grpc-status (Envoy sets it
            # for gRPC callers; gRPC-Web ones would keep the 401).
            "status_code": 200,
            "body": {"inline_string": ""},
            "headers_to_add": [
                header("content-type", "application/grpc"),
                header("grpc-status", str(code)),
                header("grpc-message", message),
                header("grpc-status-details-bin", status_details(code, reason, message)),
            ],
        }
        for status, (code, reason, message) in LOCAL_REPLIES.items()
    ]
    http_mappers = [
        {
            "filter": status_is("EQ", status),
            "body_format_override": json_body(HTTP_CODES.get(status, code), reason),
        }
        for status, (code, reason, _) in LOCAL_REPLIES.items()
    ]
    return {
        "mappers": [
            *grpc_mappers,
            *http_mappers,
            {"filter": status_is("GE", 400), "body_format_override": json_body(2, None)},
        ],
    }


OTEL_CLUSTER = "otel_collector"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def tracing_settings(sample_percent: float) -> dict[str, Any]:
    """The connection manager's settings that trace requests (to the collector's
    cluster, over OTLP/gRPC) as the `edge` service: `sample_percent` of those
    that come without a trace, and those whose `traceparent` is sampled. The
    router sends each request's span on to the service as `traceparent`, the
    decision in its flags."""
    return {
        "tracing": {
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                    "grpc_service": {"envoy_grpc": {"cluster_name": OTEL_CLUSTER}, "timeout": "2s"},
                    "service_name": "edge",
                    # The tracer's own sampler decides: with the request id
                    # kept out of sampling (below), the connection manager's
                    # random_sampling at 10% still traced every request, so it
                    # is left at its default.
                    "sampler": otel_sampler(
                        "parent_based",
                        wrapped_sampler=otel_sampler(
                            "trace_id_ratio_based",
                            sampling_percentage={
                                "numerator": round(sample_percent * 10_000),
                                "denominator": "MILLION",
                            },
                        ),
                    ),
                },
            },
        },
        # Envoy otherwise writes its sampling decision into the x-request-id (a
        # changed digit of the UUID): the client's own id must reach the logs as sent.
        "request_id_extension": {
            "typed_config": {
                "@type": extension("request_id.uuid.v3.UuidRequestIdConfig"),
                "pack_trace_reason": False,
                "use_request_id_for_trace_sampling": False,
            }
        },
    }


def otel_sampler(name: str, **settings: Any) -> dict[str, Any]:
    """Envoy's OpenTelemetry sampler extension `name`, e.g. parent_based."""
    kind = "".join(part.title() for part in name.split("_"))
    return {
        "name": f"envoy.tracers.opentelemetry.samplers.{name}",
        "typed_config": {
            "@type": extension(f"tracers.opentelemetry.samplers.v3.{kind}SamplerConfig"),
            **settings,
        },
    }


def otel_cluster(collector: str) -> dict[str, Any]:
    host, port = tracing.host_port(collector)
    socket_address = {"address": host, "port_value": port}
    cluster: dict[str, Any] = {
        "name": OTEL_CLUSTER,
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": extension("upstreams.http.v3.HttpProtocolOptions"),
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": OTEL_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": socket_address}}}]}
            ],
        },
    }
    if collector.startswith("https://"):
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": extension("transport_sockets.tls.v3.UpstreamTlsContext"),
                "sni": host,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": {"trusted_ca": {"filename": SYSTEM_CA_BUNDLE}},
                },
            },
        }
    return cluster


def filter_(name: str, config_type: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "typed_config": {"@type": extension(config_type), **config}}


def config(descriptor_path: Path) -> dict[str, Any]:
    edge_port = ENV.integer("EDGE_PORT", 8080, minimum=1, maximum=65535)
    admin_port = ENV.integer("EDGE_ADMIN_PORT", 9901, minimum=1, maximum=65535)
    listen = ENV.text("EDGE_LISTEN_ADDRESS", "127.0.0.1")
    identity = TlsFiles.for_workload("edge")
    collector = tracing.endpoint(ENV)
    hcm = {
        "@type": extension("filters.network.http_connection_manager.v3.HttpConnectionManager"),
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        "generate_request_id": True,
        # The client address rate limits key on: the peer's, or, behind
        # EDGE_TRUSTED_HOPS proxies of our own, the one they put in
        # x-forwarded-for (never a value a client can simply send).
        "use_remote_address": True,
        "xff_num_trusted_hops": ENV.integer("EDGE_TRUSTED_HOPS", 0, minimum=0),
        # A client's own x-request-id still names its request in every log.
        "preserve_external_request_id": True,
        # The transcoder forwards the URL in x-envoy-original-path, and the services'
        # gRPC refuses request metadata over 16 KiB with RESOURCE_EXHAUSTED (a 429
        # full of gRPC internals); so a longer URL is refused here, as a 431.
        "max_request_headers_kb": 12,
        # A method Envoy does not know (QUERY, say) reaches the routes and gets
        # its 405, rather than a 400 from the HTTP/1 parser.
        "http_protocol_options": {"allow_custom_methods": True},
        "always_set_request_id_in_response": True,
        "route_config": {
            "name": "ticketing",
            "max_direct_response_body_size_bytes": 1 << 20,
            "virtual_hosts": [
                {
                    "name": "ticketing",
                    "domains": ["*"],
                    "routes": routes(),
                    "typed_per_filter_config": cors_policy(),
                }
            ],
        },
        "local_reply_config": local_reply_config(),
        "http_filters": [
            filter_("envoy.filters.http.cors", "filters.http.cors.v3.Cors"),
            filter_("envoy.filters.http.grpc_web", "filters.http.grpc_web.v3.GrpcWeb"),
            jwt_filter(edge_port),
            transcoder_filter(descriptor_path),
            # The same body limit for gRPC and gRPC-Web requests, which the
            # transcoder passes through unmeasured (every public RPC is unary).
            filter_(
                "envoy.filters.http.buffer",
                "filters.http.buffer.v3.Buffer",
                max_request_bytes=max_request_bytes(),
            ),
            filter_(
                "envoy.filters.http.local_ratelimit",
                "filters.http.local_ratelimit.v3.LocalRateLimit",
                stat_prefix="edge_rl",
            ),
            filter_("envoy.filters.http.router", "filters.http.router.v3.Router"),
        ],
        **(tracing_settings(tracing.sample_percent(ENV)) if collector else {}),
    }
    return {
        "admin": {
            "address": {
                "socket_address": {
                    "address": ENV.text("EDGE_ADMIN_ADDRESS", "127.0.0.1"),
                    "port_value": admin_port,
                }
            }
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "edge",
                    "address": {"socket_address": {"address": listen, "port_value": edge_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                *(cluster(service, identity) for service in SERVICES),
                {
                    "name": "edge_self",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "edge_self",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": edge_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                },
                *([otel_cluster(collector)] if collector else []),
            ],
        },
    }


def route_timeouts() -> dict[str, int]:
    """Seconds per gRPC path; other routes get DEFAULT_TIMEOUT."""
    saga = retry_policy(ENV).edge_timeout_seconds
    return {**SLOW_ROUTES, **dict.fromkeys(SAGA_ROUTES, saga)}


def main() -> None:
    descriptor = Path(
        ENV.text("ENVOY_DESCRIPTOR_SET", str(REPO_ROOT / "gen" / "descriptors.binpb"))
    )
    rendered = config(descriptor)
    try:
        ENV.check()
    except ConfigError as exc:
        raise SystemExit(f"envoy/render.py: bad settings: {exc}") from None
    json.dump(rendered, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
