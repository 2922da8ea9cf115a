"""Renders the Envoy configuration from the contracts.

The routes are not written by hand: every RPC with a `google.api.http`
annotation is routed to its service, and its `ticketing.common.v1.access`
rule decides whether `jwt_authn` demands a token. RPCs without an HTTP
binding (LockSeat, Charge, ...) get no route, so through Envoy they are 404.

    python envoy/render.py > var/envoy.json

Addresses come from the same environment variables the services read
(`AUTH_GRPC_ADDR=127.0.0.1:3001`; a comma-separated list for replicas).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from google.api import annotations_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from runtime.config import REPO_ROOT, SERVICES, env_int, env_str, grpc_addr
from ticketing.auth.v1 import auth_pb2
from ticketing.booking.v1 import booking_pb2
from ticketing.common.v1 import access_pb2
from ticketing.event.v1 import event_pb2
from ticketing.notification.v1 import notification_pb2
from ticketing.payment.v1 import payment_pb2

PROTO_SERVICES: dict[str, ServiceDescriptor] = {
    "auth": auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    "booking": booking_pb2.DESCRIPTOR.services_by_name["BookingService"],
    "event": event_pb2.DESCRIPTOR.services_by_name["EventService"],
    "payment": payment_pb2.DESCRIPTOR.services_by_name["PaymentService"],
    "notification": notification_pb2.DESCRIPTOR.services_by_name["NotificationService"],
}
assert set(PROTO_SERVICES) == set(SERVICES)

# gRPC code for each HTTP status Envoy may answer by itself, so that every
# error body has the google.rpc.Status shape {code, message, details}.
LOCAL_REPLY_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 413: 3, 429: 8, 503: 14, 504: 4}
JWT_PROVIDER = "ticketing"


def extension(name: str) -> str:
    """The @type of an Envoy extension's config message."""
    return f"type.googleapis.com/envoy.extensions.{name}"


def http_binding(method: MethodDescriptor) -> tuple[str, str] | None:
    """(HTTP verb, path template) of a method, or None if it is not public."""
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    if verb is None or verb == "custom":
        return None
    return verb.upper(), getattr(rule, verb)


def path_regex(template: str) -> str:
    """'/v1/users/{user_id}:setRole' -> '^/v1/users/[^/]+:setRole$'."""
    literals = re.split(r"\{[^}]+\}", template)
    return "^" + "[^/]+".join(re.escape(part) for part in literals) + "$"


def public_methods() -> list[tuple[str, MethodDescriptor, str, str, int]]:
    found = []
    for service, descriptor in PROTO_SERVICES.items():
        for method in descriptor.methods:
            binding = http_binding(method)
            if binding:
                access = method.GetOptions().Extensions[access_pb2.access]
                found.append((service, method, *binding, access))
    return found


def cluster(service: str) -> dict[str, Any]:
    endpoints = []
    for addr in grpc_addr(service).split(","):
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
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "2s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": PROTO_SERVICES[service].full_name},
            }
        ],
    }


def routes() -> list[dict[str, Any]]:
    # The transcoder rewrites /v1/... to the gRPC path and clears the route
    # cache, so gRPC and HTTP/JSON callers meet the same exact-path routes.
    return [
        {
            "match": {"path": f"/{method.containing_service.full_name}/{method.name}"},
            "route": {"cluster": service, "timeout": "15s"},
        }
        for service, method, _, _, _ in public_methods()
    ]


def jwt_rules() -> list[dict[str, Any]]:
    rules = []
    for _, method, verb, template, access in public_methods():
        if access == access_pb2.ACCESS_PUBLIC:
            continue
        grpc_path = f"/{method.containing_service.full_name}/{method.name}"
        rules.append({"match": {"path": grpc_path}, "requires": {"provider_name": JWT_PROVIDER}})
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
                    "issuer": env_str("JWT_ISSUER", "ticketing-auth"),
                    "audiences": [env_str("JWT_AUDIENCE", "ticketing")],
                    "remote_jwks": {
                        # Envoy fetches the JWKS through its own listener, transcoded
                        # from AuthService.GetJwks.
                        "http_uri": {
                            "uri": f"http://127.0.0.1:{edge_port}/v1/auth/jwks",
                            "cluster": "edge_self",
                            "timeout": "2s",
                        },
                        "cache_duration": "60s",
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
            "request_validation_options": {
                "reject_unknown_method": True,
                "reject_unknown_query_parameters": True,
                "reject_binding_body_field_collisions": True,
            },
        },
    }


def local_reply_config() -> dict[str, Any]:
    def body(code: int) -> dict[str, Any]:
        return {
            "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []},
            "content_type": "application/json",
        }

    return {
        "mappers": [
            {
                "filter": {
                    "status_code_filter": {
                        "comparison": {
                            "op": "EQ",
                            "value": {"default_value": status, "runtime_key": f"lr_{status}"},
                        }
                    }
                },
                "body_format_override": body(code),
            }
            for status, code in LOCAL_REPLY_CODES.items()
        ],
        "body_format": body(2),
    }


def config(descriptor_path: Path) -> dict[str, Any]:
    edge_port = env_int("EDGE_PORT", 8080)
    admin_port = env_int("EDGE_ADMIN_PORT", 9901)
    listen = env_str("EDGE_LISTEN_ADDRESS", "127.0.0.1")
    hcm = {
        "@type": extension("filters.network.http_connection_manager.v3.HttpConnectionManager"),
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        "generate_request_id": True,
        "always_set_request_id_in_response": True,
        "route_config": {
            "name": "ticketing",
            "virtual_hosts": [{"name": "ticketing", "domains": ["*"], "routes": routes()}],
        },
        "local_reply_config": local_reply_config(),
        "http_filters": [
            jwt_filter(edge_port),
            transcoder_filter(descriptor_path),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": extension("filters.http.router.v3.Router")},
            },
        ],
    }
    return {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
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
                *(cluster(service) for service in SERVICES),
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
            ],
        },
    }


def main() -> None:
    descriptor = Path(env_str("ENVOY_DESCRIPTOR_SET", str(REPO_ROOT / "gen" / "descriptors.binpb")))
    json.dump(config(descriptor), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
