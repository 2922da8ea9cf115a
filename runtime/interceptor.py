"""The one server interceptor every service runs.

For each unary RPC it: adopts or mints the request id, refuses callers whose
mesh identity the RPC does not name (`ticketing.common.v1.callers`), enforces
the RPC's declared access rule (`ticketing.common.v1.access`), maps errors
to rich statuses by the one table of `runtime.status` (a `ServiceError`'s kind,
or a driver's failure such as the database being down), hides unexpected
exceptions behind INTERNAL, and writes one structured log line and the RPC
metrics. A streaming RPC of ours is refused outright: its access rule would
not be enforced, so it fails closed until the interceptor learns to wrap it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from runtime import metrics, status, validation
from runtime.errors import (
    Invalid,
    PermissionDenied,
    ServiceError,
    Unimplemented,
    permission_denied,
    unauthenticated,
)
from runtime.identity import Caller, Role, TokenVerifier, bearer_token, current_caller
from runtime.logs import request_id_var
from runtime.tls import peer_workload
from ticketing.common.v1 import access_pb2

log = logging.getLogger("rpc")

REQUEST_ID_HEADER = "x-request-id"
SLOW_RPC_SECONDS = 0.25
STREAMING_REFUSED = Unimplemented(
    "STREAMING_NOT_SUPPORTED", "this server enforces access rules on unary RPCs only"
)
_ROLES_FOR_ACCESS = {
    access_pb2.ACCESS_SIGNED_IN: None,
    access_pb2.ACCESS_ORGANIZER: (Role.ORGANIZER, Role.ADMIN),
    access_pb2.ACCESS_ADMIN: (Role.ADMIN,),
}


@dataclass(frozen=True)
class AccessRule:
    access: int  # an access_pb2.Access value
    callers: frozenset[str]  # workloads that may call, by their SPIFFE id's last part


def access_rules(services: Iterable[ServiceDescriptor]) -> dict[str, AccessRule]:
    """Maps '/pkg.Service/Method' to its declared rule; every RPC must declare an
    access and name its callers, or the server does not start."""
    rules = {}
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            access = options.Extensions[access_pb2.access]
            callers = frozenset(options.Extensions[access_pb2.callers].workloads)
            if access == access_pb2.ACCESS_UNSPECIFIED:
                raise RuntimeError(f"{service.full_name}.{method.name} declares no access rule")
            if not callers:
                raise RuntimeError(f"{service.full_name}.{method.name} names no callers")
            rules[f"/{service.full_name}/{method.name}"] = AccessRule(access, callers)
    return rules


def caller_not_allowed(workload: str | None) -> ServiceError:
    return PermissionDenied(
        "CALLER_NOT_ALLOWED",
        f"workload {workload or '(none)'} may not call this method",
        metadata={"caller": workload or ""},
    )


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, rules: dict[str, AccessRule], verifier: TokenVerifier) -> None:
        self._rules = rules
        self._verifier = verifier
        # One wrapped handler per method, made on its first call, not per RPC.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        wrapped = self._wrapped.get(details.method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        rule = self._rules.get(details.method)
        # Health checks and reflection are not ours to wrap: any workload of the
        # mesh (one with a certificate from its CA) may use them.
        if handler is None or rule is None:
            return handler
        if handler.unary_unary is None:
            log.error("refusing %s: streaming RPCs are not wrapped", details.method)
            wrapped = self._wrapped[details.method] = _refusing(handler)
            return wrapped
        wrapped = self._wrapped[details.method] = grpc.unary_unary_rpc_method_handler(
            self._wrap(details.method, rule, handler.unary_unary),
            request_deserializer=validation.tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        return wrapped

    def _wrap(
        self, method: str, rule: AccessRule, inner: Callable[[Any, grpc.aio.ServicerContext], Any]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            metadata = context.invocation_metadata()
            request_id = _header(metadata, REQUEST_ID_HEADER) or uuid.uuid4().hex
            id_token = request_id_var.set(request_id)
            code = grpc.StatusCode.OK
            who: Caller | None = None
            failure: ServiceError | None = None
            try:
                workload = peer_workload(context)
                if workload not in rule.callers:
                    raise caller_not_allowed(workload)
                who = await self._authenticate(rule.access, metadata)
                current_caller.set(who)
                validation.check_request(request, metadata)
                return await inner(request, context)
            except ServiceError as err:
                if not isinstance(err, Invalid):
                    log.info("refused: %s", err)
                failure = err
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception as exc:
                failure = status.for_exception(exc)
                if failure is None:
                    log.exception("unhandled error in %s", method)
                    # No details: they are for the logs, not the caller.
                    failure = status.INTERNAL_ERROR
                else:  # a driver's failure, the database down say: retryable
                    log.warning("%s in %s: %s", failure.reason, method, exc)
            finally:
                code = status.grpc_code(failure) if failure else code
                elapsed = time.perf_counter() - started
                metrics.observe_rpc(method, code.name, elapsed)
                # Every RPC is counted in the metrics; the log keeps the ones worth
                # reading (failures and slow calls), unless LOG_LEVEL=DEBUG.
                level = logging.DEBUG
                if code is not grpc.StatusCode.OK or elapsed > SLOW_RPC_SECONDS:
                    level = logging.INFO
                if log.isEnabledFor(level):
                    log.log(
                        level,
                        "%s %s %.1fms",
                        method,
                        code.name,
                        elapsed * 1000,
                        extra={"user_id": who.user_id if who else None},
                    )
                request_id_var.reset(id_token)
            await _abort(context, failure)

        return behavior

    async def _authenticate(
        self, access: int, metadata: tuple[tuple[str, str | bytes], ...] | None
    ) -> Caller | None:
        if access == access_pb2.ACCESS_PUBLIC:
            # Anyone may call; a signed-in caller may see more (their drafts). A
            # token that cannot be verified counts as none: the call needs none.
            token = bearer_token(metadata)
            if token is None:
                return None
            try:
                return await self._verifier.verify(token)
            except ServiceError:
                return None
        if access not in _ROLES_FOR_ACCESS:
            return None  # mesh-internal RPCs need no user
        token = bearer_token(metadata)
        if token is None:
            raise unauthenticated()
        who = await self._verifier.verify(token)
        allowed = _ROLES_FOR_ACCESS[access]
        if allowed is not None and who.role not in allowed:
            raise permission_denied(f"requires role {' or '.join(r.value for r in allowed)}")
        return who


async def _abort(context: grpc.aio.ServicerContext, failure: ServiceError) -> None:
    await context.abort(
        status.grpc_code(failure),
        failure.message,
        trailing_metadata=status.trailing_metadata(failure),
    )


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that refuses every call."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await _abort(context, STREAMING_REFUSED)

    make = (
        grpc.stream_stream_rpc_method_handler
        if handler.request_streaming and handler.response_streaming
        else grpc.stream_unary_rpc_method_handler
        if handler.request_streaming
        else grpc.unary_stream_rpc_method_handler
    )
    return make(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _header(metadata: tuple[tuple[str, str | bytes], ...] | None, name: str) -> str | None:
    for key, value in metadata or ():
        if key == name and isinstance(value, str):
            return value
    return None
