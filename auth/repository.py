"""The auth database: users, refresh tokens and the outbox."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.domain import User
from runtime.identity import Role
from runtime.outbox import outbox_table

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("email", sa.Text, nullable=False, unique=True),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("email_verified", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint("role IN ('user', 'organizer', 'admin')", name="users_role_valid"),
    sa.Index("users_by_create_time", "create_time", "user_id"),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("token_digest", sa.LargeBinary, primary_key=True),
    # Every token descended from one login shares a family; reuse revokes it.
    sa.Column("family_id", pg.UUID(as_uuid=True), nullable=False, index=True),
    sa.Column("user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.user_id"), nullable=False),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_time", sa.DateTime(timezone=True)),
    sa.Column("revoked_time", sa.DateTime(timezone=True)),
)

# The live emailed code of a user for each purpose (auth.codes): a new one
# replaces the old, a used one is deleted.
account_codes = sa.Table(
    "account_codes",
    metadata,
    sa.Column(
        "user_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("users.user_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("purpose", sa.Text, primary_key=True),
    sa.Column("code_digest", sa.LargeBinary, nullable=False),
    sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("attempts_left", sa.Integer, nullable=False),
    sa.CheckConstraint(
        "purpose IN ('verify_email', 'reset_password')", name="account_codes_purpose_valid"
    ),
)

outbox = outbox_table(metadata)

_USER_COLUMNS = (
    users.c.user_id,
    users.c.email,
    users.c.display_name,
    users.c.role,
    users.c.create_time,
    users.c.email_verified,
)


def _user(row: sa.Row) -> User:
    return User(
        row.user_id,
        row.email,
        row.display_name,
        Role(row.role),
        row.create_time,
        row.email_verified,
    )


class Accounts:
    """Queries on one connection, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add_user(self, user: User, password_hash: str) -> bool:
        """False if the email is taken."""
        inserted = await self._conn.execute(
            pg.insert(users)
            .values(
                user_id=user.user_id,
                email=user.email,
                display_name=user.display_name,
                password_hash=password_hash,
                role=user.role.value,
                create_time=user.create_time,
                email_verified=user.email_verified,
            )
            .on_conflict_do_nothing(index_elements=[users.c.email])
            .returning(users.c.user_id)
        )
        return inserted.first() is not None

    async def get(self, user_id: uuid.UUID) -> User | None:
        row = (
            await self._conn.execute(sa.select(*_USER_COLUMNS).where(users.c.user_id == user_id))
        ).first()
        return _user(row) if row else None

    async def by_email(self, email: str) -> tuple[User, str] | None:
        row = (
            await self._conn.execute(
                sa.select(*_USER_COLUMNS, users.c.password_hash).where(users.c.email == email)
            )
        ).first()
        return (_user(row), row.password_hash) if row else None

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        await self._conn.execute(
            users.update().where(users.c.user_id == user_id).values(password_hash=password_hash)
        )

    async def set_email_verified(self, user_id: uuid.UUID) -> User | None:
        row = (
            await self._conn.execute(
                users.update()
                .where(users.c.user_id == user_id)
                .values(email_verified=True)
                .returning(*_USER_COLUMNS)
            )
        ).first()
        return _user(row) if row else None

    async def put_code(
        self,
        user_id: uuid.UUID,
        purpose: str,
        digest: bytes,
        expire_time: datetime,
        attempts: int,
    ) -> None:
        """The user's code for `purpose`, replacing any before it."""
        values = {"code_digest": digest, "expire_time": expire_time, "attempts_left": attempts}
        await self._conn.execute(
            pg.insert(account_codes)
            .values(user_id=user_id, purpose=purpose, **values)
            .on_conflict_do_update(
                index_elements=[account_codes.c.user_id, account_codes.c.purpose], set_=values
            )
        )

    async def take_code_attempt(self, email: str, purpose: str) -> tuple[User, bytes] | None:
        """Spends one try of the live code of the account with `email`: the user
        and the code's digest, or None if there is no live code with tries left.
        One statement, so racing guesses cannot share a try."""
        row = (
            await self._conn.execute(
                account_codes.update()
                .where(
                    account_codes.c.user_id == users.c.user_id,
                    users.c.email == email,
                    account_codes.c.purpose == purpose,
                    account_codes.c.attempts_left > 0,
                    account_codes.c.expire_time > sa.func.now(),
                )
                .values(attempts_left=account_codes.c.attempts_left - 1)
                .returning(*_USER_COLUMNS, account_codes.c.code_digest)
            )
        ).first()
        return (_user(row), row.code_digest) if row else None

    async def spend_code(self, user_id: uuid.UUID, purpose: str, digest: bytes) -> bool:
        """Deletes the code if it is still this one; False if another use won."""
        deleted = await self._conn.execute(
            account_codes.delete()
            .where(
                account_codes.c.user_id == user_id,
                account_codes.c.purpose == purpose,
                account_codes.c.code_digest == digest,
            )
            .returning(account_codes.c.user_id)
        )
        return deleted.first() is not None

    async def set_role(self, user_id: uuid.UUID, role: Role) -> User | None:
        row = (
            await self._conn.execute(
                users.update()
                .where(users.c.user_id == user_id)
                .values(role=role.value)
                .returning(*_USER_COLUMNS)
            )
        ).first()
        return _user(row) if row else None

    async def page(self, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[User]:
        query = sa.select(*_USER_COLUMNS).order_by(users.c.create_time, users.c.user_id)
        if after:
            query = query.where(sa.tuple_(users.c.create_time, users.c.user_id) > after)
        return [_user(r) for r in await self._conn.execute(query.limit(limit))]

    async def add_refresh_token(
        self, digest: bytes, family_id: uuid.UUID, user_id: uuid.UUID, expire_time: datetime
    ) -> None:
        await self._conn.execute(
            refresh_tokens.insert().values(
                token_digest=digest,
                family_id=family_id,
                user_id=user_id,
                expire_time=expire_time,
            )
        )

    async def spend_refresh_token(self, digest: bytes) -> sa.Row | None:
        """Marks a live token used and returns (family_id, user_id); None if it was not live."""
        return (
            await self._conn.execute(
                refresh_tokens.update()
                .where(
                    refresh_tokens.c.token_digest == digest,
                    refresh_tokens.c.used_time.is_(None),
                    refresh_tokens.c.revoked_time.is_(None),
                    refresh_tokens.c.expire_time > sa.func.now(),
                )
                .values(used_time=sa.func.now())
                .returning(refresh_tokens.c.family_id, refresh_tokens.c.user_id)
            )
        ).first()

    async def find_refresh_token(self, digest: bytes) -> sa.Row | None:
        return (
            await self._conn.execute(
                sa.select(
                    refresh_tokens.c.family_id,
                    refresh_tokens.c.user_id,
                    refresh_tokens.c.used_time,
                    refresh_tokens.c.revoked_time,
                ).where(refresh_tokens.c.token_digest == digest)
            )
        ).first()

    async def revoke_user_refresh_tokens(self, user_id: uuid.UUID) -> None:
        """Every live refresh token of the user, whatever login it came from."""
        await self._revoke(refresh_tokens.c.user_id == user_id)

    async def password_hash(self, user_id: uuid.UUID) -> tuple[User, str] | None:
        row = (
            await self._conn.execute(
                sa.select(*_USER_COLUMNS, users.c.password_hash).where(users.c.user_id == user_id)
            )
        ).first()
        return (_user(row), row.password_hash) if row else None

    async def delete_user(self, user_id: uuid.UUID) -> bool:
        """Erases the account: its row, codes and refresh tokens, and every
        outbox row about it (sent copies kept for inspection, and unsent
        welcome and code emails, which have no one to go to any more). False if
        there was no such account."""
        await self._conn.execute(refresh_tokens.delete().where(refresh_tokens.c.user_id == user_id))
        deleted = await self._conn.execute(
            users.delete().where(users.c.user_id == user_id).returning(users.c.user_id)
        )
        # Each message about a user carries the user id's text (and with it the
        # email and name); a random UUID's text is in no one else's.
        await self._conn.execute(
            sa.text("DELETE FROM outbox WHERE position(CAST(:needle AS bytea) IN payload) > 0"),
            {"needle": str(user_id).encode()},
        )
        return deleted.first() is not None

    async def revoke_family(self, family_id: uuid.UUID) -> None:
        await self._revoke(refresh_tokens.c.family_id == family_id)

    async def _revoke(self, tokens: sa.ColumnElement[bool]) -> None:
        # Locked in digest order first: revokes of overlapping tokens (racing
        # replays of one family, a password change) then wait for each other
        # instead of each locking rows in its own scan's order.
        live = tokens & refresh_tokens.c.revoked_time.is_(None)
        locked = (
            (
                await self._conn.execute(
                    sa.select(refresh_tokens.c.token_digest)
                    .where(live)
                    .order_by(refresh_tokens.c.token_digest)
                    .with_for_update()
                )
            )
            .scalars()
            .all()
        )
        if locked:
            await self._conn.execute(
                refresh_tokens.update()
                .where(refresh_tokens.c.token_digest.in_(locked))
                .values(revoked_time=sa.func.now())
            )
