"""Account rules, free of I/O: what a valid registration is, how passwords and
refresh tokens are kept, and what an access token says."""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from runtime.errors import Violations
from runtime.identity import Role
from runtime.rules import field_rules
from ticketing.auth.v1 import auth_pb2

ACCESS_TOKEN_TTL = timedelta(minutes=15)
REFRESH_TOKEN_TTL = timedelta(days=30)
# NIST SP 800-63B: length and a blocklist of known passwords, no composition
# rules. The list is the 10,000 most common passwords (common_passwords.LICENSE).
_PASSWORD = field_rules(auth_pb2.RegisterRequest, "password")
MIN_PASSWORD_LENGTH = _PASSWORD.min_len
MAX_PASSWORD_LENGTH = _PASSWORD.max_len
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")
MAX_DISPLAY_NAME_LENGTH = field_rules(auth_pb2.RegisterRequest, "display_name").max_len
MAX_EMAIL_LENGTH = field_rules(auth_pb2.RegisterRequest, "email").max_len

_CODE = re.compile(field_rules(auth_pb2.VerifyEmailRequest, "code").pattern)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\.{_LABEL})+$")


@dataclass(frozen=True)
class User:
    user_id: uuid.UUID
    email: str
    display_name: str
    role: Role
    create_time: datetime
    email_verified: bool = False


def normalize_email(email: str) -> str:
    return email.strip().lower()


def check_registration(email: str, password: str, display_name: str) -> None:
    """Raises INVALID_ARGUMENT naming every field that is wrong."""
    problems = Violations()
    problem = email_problem(email)
    if problem:
        problems.add("email", problem)
    problem = password_problem(password)
    if problem:
        problems.add("password", problem)
    if not display_name.strip():
        problems.add("display_name", "is required")
    elif len(display_name.strip()) > MAX_DISPLAY_NAME_LENGTH:
        problems.add("display_name", f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters")
    problems.raise_if_any()


def email_problem(email: str) -> str | None:
    """Why an email address is refused, or None if it will do."""
    email = normalize_email(email)
    if not email:
        return "is required"
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        return "is not a valid email address"
    return None


def code_problem(code: str) -> str | None:
    """Why a string cannot be an emailed code at all (before any is looked up)."""
    if not code:
        return "is required"
    if not _CODE.match(code):
        return "must be the 6 digits of the email"
    return None


def check_code_request(email: str, code: str) -> None:
    problems = Violations()
    for name, problem in (("email", email_problem(email)), ("code", code_problem(code))):
        if problem:
            problems.add(name, problem)
    problems.raise_if_any()


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None if it will do."""
    if not password:
        return "is required"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters"
    if password.strip().lower() in common_passwords():
        return "is one of the 10,000 most common passwords; choose one nobody would guess"
    return None


@functools.cache
def common_passwords() -> frozenset[str]:
    return frozenset(COMMON_PASSWORDS_FILE.read_text().splitlines())


class Passwords:
    """argon2id hashing; verification costs the same whether or not the user exists."""

    def __init__(self, time_cost: int, memory_kib: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        # Checked when the email is unknown, so a miss takes as long as a hit.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._decoy, password) and (
                password_hash is not None
            )
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)


def new_refresh_token() -> tuple[str, bytes]:
    """A random refresh token and the digest under which it is stored."""
    token = secrets.token_urlsafe(32)
    return token, refresh_token_digest(token)


def refresh_token_digest(token: str) -> bytes:
    # The token is 256 random bits, so a plain hash is enough to make a
    # stolen table useless; no salt or stretching needed.
    return hashlib.sha256(token.encode()).digest()


def access_claims(user: User, now: datetime, issuer: str, audience: str) -> dict[str, Any]:
    return {
        "iss": issuer,
        "aud": audience,
        "sub": str(user.user_id),
        "role": user.role.value,
        "email": user.email,
        # Read by the services that may refuse unverified accounts
        # (REQUIRE_VERIFIED_EMAIL); a token without it counts as unverified.
        "email_verified": user.email_verified,
        # To the millisecond, so a token issued just after its user's sessions
        # were revoked (runtime.revocation) is told from one issued just before.
        "iat": round(now.timestamp(), 3),
        "exp": int((now + ACCESS_TOKEN_TTL).timestamp()),
        "jti": uuid.uuid4().hex,
    }
