"""Who is calling: access-token verification and the caller of the current RPC.

Every service verifies the bearer token itself (grpcurl users reach services
without passing Envoy), with public keys looked up by key id (runtime.jwks
fetches them from the auth service). Nothing here knows about gRPC: the
domain and use cases read the caller from here.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt

from runtime.errors import FailedPrecondition, unauthenticated

log = logging.getLogger(__name__)

ALGORITHM = "ES256"


class Role(enum.StrEnum):
    USER = "user"
    ORGANIZER = "organizer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    user_id: str
    role: Role
    email: str
    # Whether the token says the address was proved with an emailed code; a
    # token that does not say counts as unverified.
    email_verified: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "current_caller", default=None
)


def optional_caller() -> Caller | None:
    """The caller of a public RPC: who signed in, or None for anyone."""
    return current_caller.get()


def caller() -> Caller:
    """The signed-in caller of the current RPC (the interceptor has checked)."""
    found = current_caller.get()
    if found is None:
        raise unauthenticated()
    return found


def require_verified_email(who: Caller) -> None:
    """Refuses a caller whose token does not say their email is verified (for
    the services run with REQUIRE_VERIFIED_EMAIL)."""
    if not who.email_verified:
        raise FailedPrecondition(
            "EMAIL_NOT_VERIFIED",
            "verify your email first (POST /v1/auth/verifyEmail), then refresh your token",
        )


KeyLookup = Callable[[str], Awaitable[Any | None]]


class TokenVerifier:
    # A buyer's token arrives on every call of a sale, and checking an ES256
    # signature costs more than the rest of a small RPC; a token verified once
    # is trusted until it expires.
    CACHE_SIZE = 10_000

    def __init__(
        self,
        key_for: KeyLookup,
        issuer: str,
        audience: str,
        not_before: Callable[[str], float] = lambda user_id: 0.0,
    ) -> None:
        self._key_for = key_for
        self._issuer = issuer
        self._audience = audience
        # When the user's sessions were last revoked (runtime.revocation).
        self._not_before = not_before
        self._verified: dict[str, tuple[Caller, float, float]] = {}

    async def verify(self, token: str) -> Caller:
        known = self._verified.get(token)
        if known is None or known[1] <= time.time():
            known = await self._verify_signature(token)
            if len(self._verified) >= self.CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = known
        who, _, issued = known
        if issued < self._not_before(who.user_id):
            raise unauthenticated("access token revoked; sign in again")
        return who

    async def _verify_signature(self, token: str) -> tuple[Caller, float, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise unauthenticated("malformed access token") from exc
        if header.get("alg") != ALGORITHM:
            raise unauthenticated(f"access tokens must be signed with {ALGORITHM}")
        key = await self._key_for(str(header.get("kid", "")))
        if key is None:
            raise unauthenticated("access token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
            who = Caller(
                claims["sub"],
                Role(claims.get("role")),
                claims.get("email", ""),
                claims.get("email_verified") is True,
            )
            return who, float(claims["exp"]), float(claims["iat"])
        except jwt.ExpiredSignatureError as exc:
            raise unauthenticated("access token expired") from exc
        except (jwt.InvalidTokenError, ValueError) as exc:
            raise unauthenticated(f"invalid access token: {exc}") from exc


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
            raise unauthenticated("authorization must be 'Bearer <token>'")
    return None
