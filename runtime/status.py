"""Errors as gRPC statuses: the one table from error kinds (and the drivers'
errors) to gRPC codes, and the rich `google.rpc.Status` each carries.

A server turns a `ServiceError` into a status with an `ErrorInfo` (and
`BadRequest` field violations for bad input); Envoy renders that as a JSON
body with the matching HTTP status. A client reads it back with
`error_details()`, and a gateway turns it into the kind it stands for with
`service_error()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
import psycopg
import redis.exceptions
import sqlalchemy.exc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from runtime import errors
from runtime.errors import FieldViolation, ServiceError

ERROR_DOMAIN = "ticketing.example.com"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

GRPC_CODES: Mapping[type[ServiceError], grpc.StatusCode] = {
    errors.Invalid: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}
_KINDS = {code: kind for kind, code in GRPC_CODES.items()}
# A call that ran out of time may or may not have done its work: retry.
_KINDS[grpc.StatusCode.DEADLINE_EXCEEDED] = errors.Unavailable

DATABASE_UNAVAILABLE = errors.Unavailable(
    "DATABASE_UNAVAILABLE", "the database is unavailable; retry"
)
STORE_UNAVAILABLE = errors.Unavailable("STORE_UNAVAILABLE", "a data store is unavailable; retry")
INTERNAL_ERROR = errors.Internal("INTERNAL", "internal error")
# An error whose metadata says when to try again (whole seconds) gets a
# google.rpc.RetryInfo and a retry-after header too.
RETRY_AFTER_KEY = "retry_after_seconds"

# What a driver's failure means to the caller when no adapter said otherwise:
# the database down or out of connections, Redis away. Everything else
# unexpected is a bug, INTERNAL_ERROR.
DRIVER_ERRORS: tuple[tuple[tuple[type[BaseException], ...], ServiceError], ...] = (
    ((psycopg.OperationalError, sqlalchemy.exc.OperationalError), DATABASE_UNAVAILABLE),
    ((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError), STORE_UNAVAILABLE),
)


def grpc_code(error: ServiceError) -> grpc.StatusCode:
    """The code of the error's kind (or of the kind it refines)."""
    for kind in type(error).__mro__:
        code = GRPC_CODES.get(kind)
        if code is not None:
            return code
    raise TypeError(f"{type(error).__name__} is no kind of runtime.errors.ServiceError")


def for_exception(exc: BaseException) -> ServiceError | None:
    """The error a caller should see for `exc`; None if it is a bug."""
    if isinstance(exc, ServiceError):
        return exc
    for types, error in DRIVER_ERRORS:
        if isinstance(exc, types):
            return error
    return None


def to_status(error: ServiceError) -> status_pb2.Status:
    details = [
        error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=dict(error.metadata)
        )
    ]
    retry_after = error.metadata.get(RETRY_AFTER_KEY, "")
    if retry_after.isdigit():
        details.append(
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(retry_after)))
        )
    if error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return status_pb2.Status(code=grpc_code(error).value[0], message=error.message, details=packed)


def trailing_metadata(error: ServiceError) -> tuple[tuple[str, str | bytes], ...]:
    """The rich status, and a `retry-after` (Envoy passes it on as the HTTP header)
    when the error says when to try again."""
    found: tuple[tuple[str, str | bytes], ...] = (
        (STATUS_DETAILS_KEY, to_status(error).SerializeToString()),
    )
    retry_after = error.metadata.get(RETRY_AFTER_KEY, "")
    if retry_after.isdigit():
        found += (("retry-after", retry_after),)
    return found


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


def service_error(error: grpc.RpcError) -> ServiceError:
    """The kind a failed call stands for, with its reason, metadata and violations
    as the server sent them: a refusal a gateway can pass on as it was. A code
    without a kind of its own (UNKNOWN, CANCELLED, ...) is Internal."""
    details = error_details(error)
    kind = _KINDS.get(details.code, errors.Internal)
    return kind(
        details.reason or details.code.name,
        details.message,
        details.metadata,
        details.violations,
    )
