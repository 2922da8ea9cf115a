"""Errors the caller should see, as kinds free of any transport.

Domain code, use cases and adapters raise a kind (`Invalid`, `NotFound`,
`Conflict`, `Unavailable`, ...) with a stable UPPER_SNAKE reason, a message,
metadata and, for bad input, field violations. What a kind becomes on the
wire is decided in one place, `runtime.status` (a gRPC code with a
`google.rpc.Status` carrying an `ErrorInfo` and `BadRequest`), which the
server interceptor applies and Envoy renders as JSON with the matching HTTP
status. Nothing here knows about gRPC.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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
    """A failure the caller should see. Raise one of its kinds, never it."""

    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()

    def __post_init__(self) -> None:
        if type(self) is ServiceError:
            raise TypeError("raise a kind of ServiceError (Invalid, NotFound, Conflict, ...)")

    def __str__(self) -> str:
        return f"{type(self).__name__} {self.reason}: {self.message}"


class Invalid(ServiceError):
    """The request is wrong whatever the state (bad input, field violations)."""


class Unauthenticated(ServiceError):
    """No caller, or one whose credentials do not hold."""


class PermissionDenied(ServiceError):
    """A known caller who may not do this."""


class NotFound(ServiceError):
    """No such thing (or one the caller may not know exists)."""


class AlreadyExists(ServiceError):
    """What the request would create exists already."""


class Conflict(ServiceError):
    """Someone else got there first (a seat taken); another try may succeed."""


class FailedPrecondition(ServiceError):
    """The state of things does not allow it (a started event, a declined card)."""


class ResourceExhausted(ServiceError):
    """Too many attempts; the metadata may say when to try again."""


class Unavailable(ServiceError):
    """A dependency is away or the outcome is not known yet; retry."""


class Unimplemented(ServiceError):
    """This server cannot do that."""


class Internal(ServiceError):
    """A bug; the details are in the logs, never in the answer."""


def invalid_argument(
    violations: Iterable[FieldViolation], reason: str = "INVALID_ARGUMENT"
) -> Invalid:
    violations = tuple(violations)[:MAX_VIOLATIONS]
    message = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return Invalid(reason, message, violations=violations)


def excerpt(raw: str) -> str:
    """A value quoted back in an error, cut short: an error echoing a 60 KB
    input would itself be too large to send."""
    return repr(raw if len(raw) <= EXCERPT_CHARS else raw[:EXCERPT_CHARS] + "...")


def bad_field(name: str, description: str) -> Invalid:
    return invalid_argument([FieldViolation(name, description)])


def parse_uuid(raw: str, field: str) -> uuid.UUID:
    """An id from a request; Invalid naming the field if it is not one."""
    if not raw:
        raise bad_field(field, "is required")
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise bad_field(field, "is not a valid id") from exc


def not_found(what: str, ident: str) -> NotFound:
    return NotFound(
        f"{what.upper()}_NOT_FOUND", f"{what} {ident!r} not found", {f"{what}_id": ident}
    )


def unauthenticated(message: str = "a valid access token is required") -> Unauthenticated:
    return Unauthenticated("UNAUTHENTICATED", message)


def permission_denied(message: str) -> PermissionDenied:
    return PermissionDenied("PERMISSION_DENIED", message)


class Violations:
    """Collects every field violation of a request before failing once."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, name: str, description: str) -> None:
        self._items.append(FieldViolation(name, description))

    def raise_if_any(self) -> None:
        if self._items:
            raise invalid_argument(self._items)
