"""Shared runtime pieces that need no server: errors, pagination, access rules,
the interceptor, settings."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import status_pb2

from runtime import errors, pagination, status
from runtime.errors import Conflict, FieldViolation, Invalid, ServiceError, Unavailable
from runtime.interceptor import AccessRule, ServiceInterceptor, access_rules
from runtime.status import STATUS_DETAILS_KEY, error_details
from runtime.tls import WORKLOADS
from ticketing.auth.v1 import auth_pb2
from ticketing.common.v1 import access_pb2
from ticketing.event.v1 import event_pb2


class FakeRpcError(grpc.RpcError):
    def __init__(self, error: ServiceError) -> None:
        self._error = error

    def code(self) -> grpc.StatusCode:
        return status.grpc_code(self._error)

    def details(self) -> str:
        return self._error.message

    def trailing_metadata(self) -> tuple:
        return status.trailing_metadata(self._error)


def test_rich_status_round_trips() -> None:
    error = Conflict(
        "SEAT_UNAVAILABLE",
        "taken",
        {"seat_ids": "vip-1-1"},
        (FieldViolation("seat_ids[0]", "taken"),),
    )
    decoded = error_details(FakeRpcError(error))
    assert decoded.code is grpc.StatusCode.ABORTED
    assert decoded.reason == "SEAT_UNAVAILABLE"
    assert decoded.metadata == {"seat_ids": "vip-1-1"}
    assert decoded.violations == (FieldViolation("seat_ids[0]", "taken"),)
    # A gateway passes it on as the kind it was.
    again = status.service_error(FakeRpcError(error))
    assert type(again) is Conflict and again == error


def test_an_error_saying_when_to_retry_carries_retry_info_and_a_retry_after() -> None:
    from google.rpc import error_details_pb2, status_pb2

    error = Unavailable("BOOKING_PENDING", "settling", {"retry_after_seconds": "1"})
    trailing = dict(status.trailing_metadata(error))
    assert trailing["retry-after"] == "1"  # Envoy hands it on as the HTTP header
    sent = status_pb2.Status.FromString(trailing[status.STATUS_DETAILS_KEY])
    [retry_info] = [d for d in sent.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    unpacked = error_details_pb2.RetryInfo()
    retry_info.Unpack(unpacked)
    assert unpacked.retry_delay.seconds == 1
    assert "retry-after" not in dict(status.trailing_metadata(Unavailable("X", "no hint")))


def test_page_tokens_round_trip_and_garbage_is_invalid_argument() -> None:
    cursor = {"t": "2026-01-01T00:00:00+00:00", "id": "x"}
    assert pagination.decode_token(pagination.encode_token(cursor)) == cursor
    assert pagination.decode_token("") == {}
    for garbage in ("%%%", "bm90IGpzb24", pagination.encode_token([1])):  # type: ignore[arg-type]
        with pytest.raises(Invalid):
            pagination.decode_token(garbage)


def test_page_size_defaults_and_caps() -> None:
    assert pagination.page_size(0) == 20
    assert pagination.page_size(5) == 5
    assert pagination.page_size(10_000) == 100
    with pytest.raises(ServiceError):
        pagination.page_size(-1)


def test_every_rpc_declares_its_access_and_callers() -> None:
    rules = access_rules(
        [
            auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
            event_pb2.DESCRIPTOR.services_by_name["EventService"],
        ]
    )
    public = frozenset({"edge", "developer"})
    assert rules["/ticketing.auth.v1.AuthService/Login"] == AccessRule(
        access_pb2.ACCESS_PUBLIC, public
    )
    assert rules["/ticketing.auth.v1.AuthService/ListUsers"] == AccessRule(
        access_pb2.ACCESS_ADMIN, public
    )
    assert rules["/ticketing.event.v1.EventService/LockSeat"] == AccessRule(
        access_pb2.ACCESS_INTERNAL, frozenset({"booking"})
    )
    assert rules["/ticketing.auth.v1.AuthService/GetJwks"].callers == frozenset(WORKLOADS)
    assert all(rule.access != access_pb2.ACCESS_UNSPECIFIED for rule in rules.values())
    assert all(rule.callers <= set(WORKLOADS) for rule in rules.values())


def service_declaring(access: int, callers: list[str]) -> ServiceDescriptor:
    """A one-method service built at run time with the given access options."""
    pool = descriptor_pool.DescriptorPool()
    for known in (descriptor_pb2.DESCRIPTOR, access_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        known.CopyToProto(proto)
        pool.Add(proto)
    file = descriptor_pb2.FileDescriptorProto(
        name="probe.proto", package="probe", dependency=[access_pb2.DESCRIPTOR.name]
    )
    file.message_type.add(name="Empty")
    method = file.service.add(name="Probe").method.add(
        name="Call", input_type=".probe.Empty", output_type=".probe.Empty"
    )
    method.options.Extensions[access_pb2.access] = access
    method.options.Extensions[access_pb2.callers].workloads.extend(callers)
    pool.Add(file)
    return pool.FindServiceByName("probe.Probe")


def test_a_server_refuses_an_rpc_that_names_no_callers() -> None:
    assert access_rules([service_declaring(access_pb2.ACCESS_INTERNAL, ["booking"])])
    with pytest.raises(RuntimeError, match="names no callers"):
        access_rules([service_declaring(access_pb2.ACCESS_INTERNAL, [])])
    with pytest.raises(RuntimeError, match="declares no access rule"):
        access_rules([service_declaring(access_pb2.ACCESS_UNSPECIFIED, ["edge"])])


def test_every_error_kind_has_one_grpc_code() -> None:
    kinds = [k for k in vars(errors).values() if isinstance(k, type) and k.__base__ is ServiceError]
    assert sorted(k.__name__ for k in kinds) == sorted(k.__name__ for k in status.GRPC_CODES)
    assert len(set(status.GRPC_CODES.values())) == len(status.GRPC_CODES)
    with pytest.raises(TypeError, match="raise a kind"):
        ServiceError("REASON", "a bare ServiceError says nothing of its kind")


def test_driver_failures_are_unavailable_and_everything_else_a_bug() -> None:
    import psycopg
    import psycopg_pool
    import redis.exceptions
    import sqlalchemy.exc

    for exc in (
        psycopg.OperationalError("connection refused"),
        psycopg_pool.PoolTimeout("no connection in time"),
        sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("gone")),
    ):
        found = status.for_exception(exc)
        assert found is status.DATABASE_UNAVAILABLE
        assert status.grpc_code(found) is grpc.StatusCode.UNAVAILABLE
    assert status.for_exception(redis.exceptions.ConnectionError()) is status.STORE_UNAVAILABLE
    assert status.for_exception(KeyError("a bug")) is None
    refusal = Conflict("SEAT_UNAVAILABLE", "taken")
    assert status.for_exception(refusal) is refusal


def test_deadline_exceeded_reaches_a_gateway_as_unavailable() -> None:
    class Late(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.DEADLINE_EXCEEDED

        def details(self) -> str:
            return "Deadline Exceeded"

        def trailing_metadata(self) -> tuple:
            return ()

    late = status.service_error(Late())
    assert isinstance(late, errors.Unavailable) and late.reason == "DEADLINE_EXCEEDED"


class AbortingContext:
    """Just enough of grpc.aio.ServicerContext to see what a handler answers."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str, tuple] | None = None

    def invocation_metadata(self) -> tuple:
        return ()

    async def abort(self, code: grpc.StatusCode, message: str, trailing_metadata: tuple) -> None:
        self.aborted = (code, message, trailing_metadata)
        raise grpc.aio.AbortError()


def test_a_streaming_rpc_is_refused_before_its_handler_runs() -> None:
    import asyncio

    reached: list[str] = []

    async def stream(request_iterator, context):  # a handler that must never run
        reached.append("handler")
        yield b""

    streaming = grpc.stream_stream_rpc_method_handler(stream)
    rule = AccessRule(access_pb2.ACCESS_PUBLIC, frozenset({"developer"}))
    interceptor = ServiceInterceptor({"/probe.Probe/Chat": rule}, verifier=None)  # type: ignore[arg-type]

    async def call() -> AbortingContext:
        async def continuation(details):
            return streaming

        handler = await interceptor.intercept_service(continuation, _details("/probe.Probe/Chat"))
        assert handler.request_streaming and handler.response_streaming
        context = AbortingContext()
        with pytest.raises(grpc.aio.AbortError):
            await handler.stream_stream(iter(()), context)
        return context

    context = asyncio.run(call())
    assert reached == []
    assert context.aborted is not None
    code, _, trailing = context.aborted
    assert code is grpc.StatusCode.UNIMPLEMENTED
    decoded = status_pb2.Status.FromString(dict(trailing)[STATUS_DETAILS_KEY])
    assert decoded.code == grpc.StatusCode.UNIMPLEMENTED.value[0]
    # A method without a rule of ours (health, reflection) is left as it is.
    untouched = asyncio.run(
        interceptor.intercept_service(
            lambda details: _ready(streaming), _details("/grpc.health.v1.Health/Watch")
        )
    )
    assert untouched is streaming


async def _ready(value):
    return value


@dataclass(frozen=True)
class _details:
    method: str
    invocation_metadata: tuple = ()
