"""Auth use cases, each one transaction."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth import codes, domain
from auth.codes import CodeHasher, SendLimiter
from auth.domain import User
from auth.repository import Accounts, outbox
from auth.throttle import LoginThrottle
from runtime import pagination, timestamps
from runtime.errors import (
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    Violations,
    bad_field,
    not_found,
    parse_uuid,
)
from runtime.identity import Role
from runtime.outbox import enqueue
from runtime.revocation import RevocationBook
from runtime.signing import KeyRing
from ticketing.auth.v1 import messages_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int


def _invalid_credentials() -> Unauthenticated:
    return Unauthenticated("INVALID_CREDENTIALS", "invalid email or password")


def _invalid_refresh(reason: str, message: str) -> Unauthenticated:
    return Unauthenticated(reason, message)


class AuthUseCases:
    def __init__(
        self,
        engine: AsyncEngine,
        keys: KeyRing,
        passwords: domain.Passwords,
        hashing: Executor,
        throttle: LoginThrottle,
        revocations: RevocationBook,
        issuer: str,
        audience: str,
        *,
        codes: CodeHasher,
        sends: SendLimiter,
    ) -> None:
        """`hashing` runs every argon2 hash and check: each holds argon2's memory
        cost (~19 MiB) and a core while it runs, so the executor's worker count
        caps the memory and CPU a burst of logins can take; the rest queue."""
        self._engine = engine
        self._keys = keys
        self._passwords = passwords
        self._hashing = hashing
        self._throttle = throttle
        self._revocations = revocations
        self._issuer = issuer
        self._audience = audience
        self._codes = codes
        self._sends = sends

    async def register(
        self,
        email: str,
        password: str,
        display_name: str,
        role: Role = Role.USER,
    ) -> User:
        domain.check_registration(email, password, display_name)
        user = User(
            uuid.uuid4(),
            domain.normalize_email(email),
            display_name.strip(),
            role,
            datetime.now(UTC),
            # The admin's address is the operator's word, not a stranger's.
            email_verified=role is Role.ADMIN,
        )
        password_hash = await self._argon2(self._passwords.hash, password)
        async with self._engine.begin() as conn:
            if not await Accounts(conn).add_user(user, password_hash):
                raise AlreadyExists(
                    "EMAIL_TAKEN",
                    "an account with this email already exists",
                    {"email": user.email},
                )
            await enqueue(
                conn,
                outbox,
                "user.registered",
                messages_pb2.UserRegistered(
                    user_id=str(user.user_id),
                    email=user.email,
                    display_name=user.display_name,
                    register_time=timestamps.to_proto(user.create_time),
                ),
            )
            if not user.email_verified:
                await self._send_code(conn, user, codes.VERIFY_EMAIL)
        log.info("registered user %s", user.user_id)
        return user

    async def login(self, email: str, password: str) -> Tokens:
        if not email or not password:
            raise _invalid_credentials()
        email = domain.normalize_email(email)
        # Before the password is checked: a guess made while the account must
        # wait is not answered at all.
        await self._throttle.check(email)
        async with self._engine.connect() as conn:
            found = await Accounts(conn).by_email(email)
        user, password_hash = found if found else (None, None)
        if not await self._argon2(self._passwords.verify, password_hash, password):
            await self._throttle.failed(email)
            raise _invalid_credentials()
        assert user is not None and password_hash is not None
        await self._throttle.succeeded(email)
        # Hashed before the transaction: in a burst the hash may queue, and a
        # pooled connection held meanwhile would starve the other logins.
        new_hash = (
            await self._argon2(self._passwords.hash, password)
            if self._passwords.needs_rehash(password_hash)
            else None
        )
        async with self._engine.begin() as conn:
            accounts = Accounts(conn)
            if new_hash is not None:
                await accounts.set_password_hash(user.user_id, new_hash)
            return await self._issue(accounts, user, family_id=uuid.uuid4())

    async def refresh(self, refresh_token: str) -> Tokens:
        if not refresh_token:
            raise bad_field("refresh_token", "is required")
        digest = domain.refresh_token_digest(refresh_token)
        async with self._engine.begin() as conn:
            accounts = Accounts(conn)
            spent = await accounts.spend_refresh_token(digest)
            user = await accounts.get(spent.user_id) if spent is not None else None
            if user is not None:
                return await self._issue(accounts, user, spent.family_id)
        # A transaction of its own: a spend that lost a race still locks the
        # token's row, and a revoke holding it would lock the family's rows out
        # of their order and deadlock with another loser's.
        async with self._engine.begin() as conn:
            accounts = Accounts(conn)
            known = await accounts.find_refresh_token(digest)
            reused = known is not None and known.used_time is not None
            if reused:
                # Someone replays a spent token: either it leaked or the real
                # client is racing a thief. End the whole session either way.
                await accounts.revoke_family(known.family_id)
        if reused:
            log.warning("refresh token reuse; revoked family %s", known.family_id)
            await self._revocations.revoke(str(known.user_id))
            raise _invalid_refresh(
                "REFRESH_TOKEN_REUSED", "refresh token already used; the session is revoked"
            )
        raise _invalid_refresh("INVALID_REFRESH_TOKEN", "refresh token is invalid or expired")

    async def logout(self, refresh_token: str) -> None:
        if not refresh_token:
            raise bad_field("refresh_token", "is required")
        async with self._engine.begin() as conn:
            accounts = Accounts(conn)
            known = await accounts.find_refresh_token(domain.refresh_token_digest(refresh_token))
            if known is not None:
                # The access tokens go first: if that fails, the session stays
                # whole and the caller retries the logout.
                await self._revocations.revoke(str(known.user_id))
                await accounts.revoke_family(known.family_id)

    async def verify_email(self, email: str, code: str) -> User:
        domain.check_code_request(email, code)
        user = await self._use_code(domain.normalize_email(email), codes.VERIFY_EMAIL, code)
        async with self._engine.begin() as conn:
            verified = await Accounts(conn).set_email_verified(user.user_id)
        if verified is None:
            raise codes.invalid_code()
        log.info("user %s verified their email", user.user_id)
        return verified

    async def resend_verification(self, email: str) -> None:
        """Emails a new code if the address has an unverified account; the same
        answer, after the same work, whether or not it has."""
        problem = domain.email_problem(email)
        if problem:
            raise bad_field("email", problem)
        email = domain.normalize_email(email)
        await self._sends.take(codes.VERIFY_EMAIL, email)
        async with self._engine.begin() as conn:
            found = await Accounts(conn).by_email(email)
            if found is not None and not found[0].email_verified:
                await self._send_code(conn, found[0], codes.VERIFY_EMAIL)

    async def request_password_reset(self, email: str) -> None:
        """Emails a reset code if the address has an account; the same answer
        whether or not it has."""
        problem = domain.email_problem(email)
        if problem:
            raise bad_field("email", problem)
        email = domain.normalize_email(email)
        await self._sends.take(codes.RESET_PASSWORD, email)
        async with self._engine.begin() as conn:
            found = await Accounts(conn).by_email(email)
            if found is not None:
                await self._send_code(conn, found[0], codes.RESET_PASSWORD)

    async def reset_password(self, email: str, code: str, new_password: str) -> None:
        problems = Violations()
        for name, problem in (
            ("email", domain.email_problem(email)),
            ("code", domain.code_problem(code)),
            ("new_password", domain.password_problem(new_password)),
        ):
            if problem:
                problems.add(name, problem)
        problems.raise_if_any()
        email = domain.normalize_email(email)
        user = await self._use_code(email, codes.RESET_PASSWORD, code)
        # The code came to the address: it is the owner's, verified.
        await self._set_password(user, new_password, verified=True)
        await self._throttle.succeeded(email)
        log.info("user %s reset their password", user.user_id)

    async def change_password(self, user_id: str, current: str, new_password: str) -> None:
        problem = domain.password_problem(new_password)
        if problem:
            raise bad_field("new_password", problem)
        user = await self._confirm_password(user_id, current)
        await self._set_password(user, new_password)
        log.info("user %s changed their password", user.user_id)

    async def delete_account(self, user_id: str, current: str) -> None:
        """Erases the account here and announces `user.deleted` for every other
        service to erase its copies; every session ends."""
        user = await self._confirm_password(user_id, current)
        # As in _set_password: access tokens first (if Redis is away nothing is
        # deleted and the caller retries), and again once the account is gone.
        await self._revocations.revoke(str(user.user_id))
        async with self._engine.begin() as conn:
            if not await Accounts(conn).delete_user(user.user_id):
                raise not_found("user", user_id)  # a racing deletion won
            await enqueue(
                conn,
                outbox,
                "user.deleted",
                messages_pb2.UserDeleted(
                    user_id=str(user.user_id), delete_time=timestamps.to_proto(datetime.now(UTC))
                ),
            )
        await self._revocations.revoke(str(user.user_id))
        log.info("user %s deleted their account", user.user_id)

    async def _confirm_password(self, user_id: str, current: str) -> User:
        """The signed-in user, if `current` is their password; WRONG_PASSWORD if not."""
        async with self._engine.connect() as conn:
            found = await Accounts(conn).password_hash(parse_uuid(user_id, "user_id"))
        if found is None:
            raise not_found("user", user_id)
        user, password_hash = found
        # Guessing through a stolen session is as slow as through the login.
        await self._throttle.check(user.email)
        if not current or not await self._argon2(self._passwords.verify, password_hash, current):
            await self._throttle.failed(user.email)
            raise PermissionDenied("WRONG_PASSWORD", "the current password is wrong")
        await self._throttle.succeeded(user.email)
        return user

    async def _set_password(self, user: User, password: str, verified: bool = False) -> None:
        """The new password, and the end of every session of the user."""
        password_hash = await self._argon2(self._passwords.hash, password)
        # Access tokens first, so that if Redis is away nothing changes and the
        # caller retries; and again after the refresh tokens are revoked, so that
        # none refreshed in between outlives the change.
        await self._revocations.revoke(str(user.user_id))
        async with self._engine.begin() as conn:
            accounts = Accounts(conn)
            await accounts.set_password_hash(user.user_id, password_hash)
            await accounts.revoke_user_refresh_tokens(user.user_id)
            if verified and not user.email_verified:
                await accounts.set_email_verified(user.user_id)
        await self._revocations.revoke(str(user.user_id))

    async def _send_code(self, conn: AsyncConnection, user: User, purpose: str) -> None:
        """A new code for `purpose` (replacing the user's last), and the message that
        has it emailed, in the caller's transaction."""
        code = codes.new_code()
        expire_time = datetime.now(UTC) + codes.CODE_TTL
        await Accounts(conn).put_code(
            user.user_id,
            purpose,
            self._codes.digest(purpose, str(user.user_id), code),
            expire_time,
            codes.CODE_ATTEMPTS,
        )
        fields = {
            "user_id": str(user.user_id),
            "email": user.email,
            "display_name": user.display_name,
            "code": code,
            "expire_time": timestamps.to_proto(expire_time),
        }
        if purpose == codes.VERIFY_EMAIL:
            key, message = "user.verification_requested", messages_pb2.EmailVerificationRequested
        else:
            key, message = "user.password_reset_requested", messages_pb2.PasswordResetRequested
        await enqueue(conn, outbox, key, message(**fields))

    async def _use_code(self, email: str, purpose: str, code: str) -> User:
        """The account whose live code for `purpose` this is, the code spent;
        INVALID_CODE otherwise. Each call spends one of the code's tries first."""
        async with self._engine.begin() as conn:
            found = await Accounts(conn).take_code_attempt(email, purpose)
        user, digest = found if found else (None, None)
        user_id = str(user.user_id) if user else ""
        if not self._codes.matches(digest, purpose, user_id, code):
            raise codes.invalid_code()
        assert user is not None and digest is not None
        async with self._engine.begin() as conn:
            if not await Accounts(conn).spend_code(user.user_id, purpose, digest):
                raise codes.invalid_code()  # a racing use of the same code won
        return user

    async def get_user(self, user_id: str) -> User:
        async with self._engine.connect() as conn:
            user = await Accounts(conn).get(parse_uuid(user_id, "user_id"))
        if user is None:
            raise not_found("user", user_id)
        return user

    async def list_users(self, page_size: int, page_token: str) -> tuple[list[User], str]:
        limit = pagination.page_size(page_size)
        after = pagination.decode_keyset(page_token)
        async with self._engine.connect() as conn:
            found = await Accounts(conn).page(limit + 1, after)
        return pagination.keyset_page(found, limit, lambda u: (u.create_time, u.user_id))

    async def set_role(self, user_id: str, role: Role) -> User:
        target = parse_uuid(user_id, "user_id")
        # Tokens carry the role: the old ones must go before the new role counts.
        await self._revocations.revoke(str(target))
        async with self._engine.begin() as conn:
            user = await Accounts(conn).set_role(target, role)
        if user is None:
            raise not_found("user", user_id)
        log.info("user %s is now %s", user_id, role.value)
        return user

    async def ensure_admin(self, email: str, password: str) -> None:
        async with self._engine.connect() as conn:
            found = await Accounts(conn).by_email(domain.normalize_email(email))
        if found is None:
            try:
                await self.register(email, password, "Administrator", role=Role.ADMIN)
                log.info("created admin account %s", email)
            except AlreadyExists:
                pass  # another replica created it first
        elif found[0].role is not Role.ADMIN:
            await self.set_role(str(found[0].user_id), Role.ADMIN)

    async def _argon2(self, work: Callable[..., T], *args: object) -> T:
        # Off the event loop, which keeps serving while the hash runs; not
        # asyncio.to_thread, whose default pool grows with the core count + 4.
        return await asyncio.get_running_loop().run_in_executor(self._hashing, work, *args)

    async def _issue(self, accounts: Accounts, user: User, family_id: uuid.UUID) -> Tokens:
        now = datetime.now(UTC)
        refresh_token, digest = domain.new_refresh_token()
        await accounts.add_refresh_token(
            digest, family_id, user.user_id, now + domain.REFRESH_TOKEN_TTL
        )
        access_token = self._keys.sign(
            domain.access_claims(user, now, self._issuer, self._audience)
        )
        return Tokens(access_token, refresh_token, int(domain.ACCESS_TOKEN_TTL.total_seconds()))
