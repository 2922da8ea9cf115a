"""Errors that cross the wire as canonical gRPC codes with rich details.

Domain code raises `ServiceError`; the server interceptor turns it into a
`google.rpc.Status` carrying an `ErrorInfo` (and `BadRequest` field violations
for bad input), which Envoy renders as a JSON body with the matching HTTP
status. Clients read those details back with `error_details()`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "ticketing.example.com"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# The status travels in trailers, which gRPC caps (16 KiB by default); a request
# with thousands of bad fields must still get its answer, so it gets the first few.
MAX_VIOLATIONS = 20
EXCERPT_CHARS = 40


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass
class ServiceError(Exception):
    """A failure the caller should see, with a stable UPPER_SNAKE reason."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"

    def to_status(self) -> status_pb2.Status:
        details = [
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata=dict(self.metadata)
            )
        ]
        if self.violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in self.violations
                    ]
                )
            )
        packed = []
        for detail in details:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)


def invalid_argument(
    violations: Iterable[FieldViolation], reason: str = "INVALID_ARGUMENT"
) -> ServiceError:
    violations = tuple(violations)[:MAX_VIOLATIONS]
    message = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, violations=violations)


def excerpt(raw: str) -> str:
    """A value quoted back in an error, cut short: an error echoing a 60 KB
    input would itself be too large to send."""
    return repr(raw if len(raw) <= EXCERPT_CHARS else raw[:EXCERPT_CHARS] + "...")


def bad_field(name: str, description: str) -> ServiceError:
    return invalid_argument([FieldViolation(name, description)])


def parse_uuid(raw: str, field: str) -> uuid.UUID:
    """An id from a request; INVALID_ARGUMENT naming the field if it is not one."""
    if not raw:
        raise bad_field(field, "is required")
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise bad_field(field, "is not a valid id") from exc


def not_found(what: str, ident: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.NOT_FOUND,
        f"{what.upper()}_NOT_FOUND",
        f"{what} {ident!r} not found",
        {f"{what}_id": ident},
    )


def unauthenticated(message: str = "a valid access token is required") -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", message)


def permission_denied(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", message)


class Violations:
    """Collects every field violation of a request before failing once."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, name: str, description: str) -> None:
        self._items.append(FieldViolation(name, description))

    def raise_if_any(self) -> None:
        if self._items:
            raise invalid_argument(self._items)


@dataclass(frozen=True)
class ErrorDetails:
    """What a client learns from a failed call's rich status."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """Decodes the google.rpc.Status a server attached to a failed call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    raw = next((v for k, v in (trailing or ()) if k == STATUS_DETAILS_KEY), None)
    if raw is None:
        return ErrorDetails(code, message or "")
    status = status_pb2.Status.FromString(raw)
    reason, metadata, violations = "", {}, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    return ErrorDetails(
        _CODES.get(status.code, code), status.message, reason, metadata, tuple(violations)
    )
