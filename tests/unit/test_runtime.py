"""Shared runtime pieces that need no server: errors, pagination, access rules."""

from __future__ import annotations

import grpc
import pytest

from runtime import pagination
from runtime.errors import STATUS_DETAILS_KEY, FieldViolation, ServiceError, error_details
from runtime.interceptor import access_rules
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


def test_every_rpc_declares_its_access() -> None:
    rules = access_rules(
        [
            auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
            event_pb2.DESCRIPTOR.services_by_name["EventService"],
        ]
    )
    assert rules["/ticketing.auth.v1.AuthService/Login"] == access_pb2.ACCESS_PUBLIC
    assert rules["/ticketing.auth.v1.AuthService/ListUsers"] == access_pb2.ACCESS_ADMIN
    assert rules["/ticketing.event.v1.EventService/LockSeat"] == access_pb2.ACCESS_INTERNAL
    assert access_pb2.ACCESS_UNSPECIFIED not in rules.values()
