"""Shared runtime pieces that need no server: errors, pagination, access rules."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor

from runtime import pagination
from runtime.errors import STATUS_DETAILS_KEY, FieldViolation, ServiceError, error_details
from runtime.interceptor import AccessRule, access_rules
from runtime.tls import WORKLOADS
from ticketing.auth.v1 import auth_pb2
from ticketing.common.v1 import access_pb2
from ticketing.event.v1 import event_pb2


class FakeRpcError(grpc.RpcError):
    def __init__(self, error: ServiceError) -> None:
        self._error = error

    def code(self) -> grpc.StatusCode:
        return self._error.code

    def details(self) -> str:
        return self._error.message

    def trailing_metadata(self) -> tuple:
        return ((STATUS_DETAILS_KEY, self._error.to_status().SerializeToString()),)


def test_rich_status_round_trips() -> None:
    error = ServiceError(
        grpc.StatusCode.ABORTED,
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


def test_page_tokens_round_trip_and_garbage_is_invalid_argument() -> None:
    cursor = {"t": "2026-01-01T00:00:00+00:00", "id": "x"}
    assert pagination.decode_token(pagination.encode_token(cursor)) == cursor
    assert pagination.decode_token("") == {}
    for garbage in ("%%%", "bm90IGpzb24", pagination.encode_token([1])):  # type: ignore[arg-type]
        with pytest.raises(ServiceError) as caught:
            pagination.decode_token(garbage)
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT


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
