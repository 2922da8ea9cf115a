"""Account rules and token handling, without servers."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from auth import domain
from auth.codes import RESET_PASSWORD, VERIFY_EMAIL, CodeHasher, ensure_code_key, new_code
from runtime.errors import Invalid, ServiceError, Unauthenticated
from runtime.identity import Role, TokenVerifier
from runtime.signing import KeyRing, generate_key

ISSUER, AUDIENCE = "test-issuer", "test-audience"


def violations(error: ServiceError) -> dict[str, str]:
    return {v.field: v.description for v in error.violations}


def test_valid_registration_passes() -> None:
    domain.check_registration("Ada@Example.com", "long-enough", "Ada")


@pytest.mark.parametrize(
    "email",
    ["plain", "a@b", "a @b.co", "@b.co", "a@.co", "a@b..co", "a@-b.co", "x" * 250 + "@b.co"],
)
def test_bad_email_is_rejected(email: str) -> None:
    with pytest.raises(ServiceError) as caught:
        domain.check_registration(email, "long-enough", "Ada")
    assert isinstance(caught.value, Invalid)
    assert violations(caught.value) == {"email": "is not a valid email address"}


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(ServiceError) as caught:
        domain.check_registration("", "short", "  ")
    assert violations(caught.value) == {
        "email": "is required",
        "password": "must be at least 10 characters",
        "display_name": "is required",
    }


def test_password_of_exactly_ten_characters_is_enough() -> None:
    domain.check_registration("a@b.co", "x7#kq2!mzw", "A")
    with pytest.raises(ServiceError):
        domain.check_registration("a@b.co", "x7#kq2!mz", "A")


@pytest.mark.parametrize("common", ["1234567890", "qwertyuiop", "Password123", " 1q2w3e4r5t "])
def test_a_common_password_is_refused_with_the_reason(common: str) -> None:
    with pytest.raises(ServiceError) as caught:
        domain.check_registration("a@b.co", common, "A")
    assert "most common passwords" in violations(caught.value)["password"]


def test_the_shipped_list_is_the_top_ten_thousand() -> None:
    common = domain.common_passwords()
    assert len(common) == 10_000
    assert {"123456", "password", "qwerty"} <= common


def test_email_is_normalized() -> None:
    assert domain.normalize_email("  Ada@Example.COM ") == "ada@example.com"


@pytest.fixture(scope="module")
def passwords() -> domain.Passwords:
    return domain.Passwords(time_cost=1, memory_kib=8192)


def test_passwords_are_argon2id_and_verify(passwords: domain.Passwords) -> None:
    hashed = passwords.hash("correct-horse")
    assert hashed.startswith("$argon2id$")
    assert "correct-horse" not in hashed
    assert passwords.verify(hashed, "correct-horse")
    assert not passwords.verify(hashed, "wrong-horse")


def test_unknown_user_and_garbage_hash_never_verify(passwords: domain.Passwords) -> None:
    assert not passwords.verify(None, "anything-at-all")
    assert not passwords.verify("not-a-hash", "anything-at-all")


def test_refresh_tokens_are_random_and_stored_as_digests() -> None:
    first, digest = domain.new_refresh_token()
    second, _ = domain.new_refresh_token()
    assert first != second
    assert digest == domain.refresh_token_digest(first) != first.encode()


def user(role: Role = Role.USER) -> domain.User:
    return domain.User(uuid.uuid4(), "ada@example.com", "Ada", role, datetime.now(UTC))


def test_access_claims_last_fifteen_minutes() -> None:
    someone = user(Role.ORGANIZER)
    claims = domain.access_claims(someone, datetime.now(UTC), ISSUER, AUDIENCE)
    assert claims["exp"] - claims["iat"] == pytest.approx(15 * 60, abs=1)
    assert (claims["iss"], claims["aud"], claims["sub"], claims["role"]) == (
        ISSUER,
        AUDIENCE,
        str(someone.user_id),
        "organizer",
    )


@pytest.fixture
def keyring(tmp_path: Path) -> KeyRing:
    generate_key(tmp_path)
    return KeyRing(tmp_path)


def verifier_for(ring: KeyRing) -> TokenVerifier:
    async def key_for(kid: str) -> object:
        return ring.public_key(kid)

    return TokenVerifier(key_for, ISSUER, AUDIENCE)


def verify(ring: KeyRing, token: str) -> object:
    return asyncio.run(verifier_for(ring).verify(token))


def sign(ring: KeyRing, **overrides: object) -> str:
    claims = domain.access_claims(user(), datetime.now(UTC), ISSUER, AUDIENCE)
    return ring.sign({**claims, **overrides})


def unauthenticated(ring: KeyRing, token: str) -> str:
    with pytest.raises(ServiceError) as caught:
        verify(ring, token)
    assert isinstance(caught.value, Unauthenticated)
    return caught.value.message


def test_signed_token_verifies_with_kid_of_the_key(keyring: KeyRing) -> None:
    token = sign(keyring)
    assert jwt.get_unverified_header(token)["kid"] == keyring.jwks()[0]["kid"]
    caller = verify(keyring, token)
    assert caller.role is Role.USER


def test_expired_token_is_refused(keyring: KeyRing) -> None:
    assert "expired" in unauthenticated(keyring, sign(keyring, exp=int(time.time()) - 5))


def test_wrong_audience_or_issuer_is_refused(keyring: KeyRing) -> None:
    unauthenticated(keyring, sign(keyring, aud="someone-else"))
    unauthenticated(keyring, sign(keyring, iss="someone-else"))


def test_token_signed_by_another_key_is_refused(keyring: KeyRing) -> None:
    kid = keyring.jwks()[0]["kid"]
    claims = domain.access_claims(user(), datetime.now(UTC), ISSUER, AUDIENCE)
    forged = jwt.encode(
        claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": kid}
    )
    unauthenticated(keyring, forged)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_alg_none_and_hmac_confusion_are_refused(keyring: KeyRing) -> None:
    claims = domain.access_claims(user(Role.ADMIN), datetime.now(UTC), ISSUER, AUDIENCE)
    kid = keyring.jwks()[0]["kid"]
    none_token = f"{_b64({'alg': 'none', 'kid': kid})}.{_b64(claims)}."
    assert "ES256" in unauthenticated(keyring, none_token)
    hmac_token = jwt.encode(
        claims, "a-guessable-shared-secret-of-32-bytes!", algorithm="HS256", headers={"kid": kid}
    )
    assert "ES256" in unauthenticated(keyring, hmac_token)


def test_garbage_is_refused(keyring: KeyRing) -> None:
    assert "malformed" in unauthenticated(keyring, "not.a.jwt")


def test_rotation_keeps_old_tokens_valid(keyring: KeyRing, tmp_path: Path) -> None:
    old_token = sign(keyring)
    generate_key(tmp_path)  # at once: names sort by the nanosecond, the newest signs
    rotated = KeyRing(tmp_path)
    new_token = sign(rotated)
    assert (
        jwt.get_unverified_header(new_token)["kid"] != jwt.get_unverified_header(old_token)["kid"]
    )
    assert len(rotated.jwks()) == 2
    verify(rotated, old_token)
    verify(rotated, new_token)


def test_failed_logins_wait_twice_as_long_each_time_up_to_the_cap() -> None:
    from auth.throttle import ThrottlePolicy

    policy = ThrottlePolicy(free_attempts=5, base_delay_seconds=1, max_delay_seconds=900)
    assert [policy.delay_after(n) for n in range(4, 10)] == [0, 1, 2, 4, 8, 16]
    assert policy.delay_after(15) == 900
    assert policy.delay_after(10**6) == 900


def test_keys_made_within_one_second_sign_in_the_order_made(tmp_path: Path) -> None:
    from runtime.signing import SigningKey

    made = [generate_key(tmp_path) for _ in range(5)]
    newest = SigningKey.from_pem(made[-1].read_bytes()).kid
    assert jwt.get_unverified_header(sign(KeyRing(tmp_path)))["kid"] == newest
    assert sorted(made) == made


def test_codes_are_six_digits_and_their_hashes_bind_user_and_purpose(tmp_path: Path) -> None:
    assert all(len(c) == 6 and c.isdigit() for c in (new_code() for _ in range(200)))
    key = ensure_code_key(tmp_path)
    assert ensure_code_key(tmp_path) == key and len(key) == 32  # made once, then read
    hasher = CodeHasher(key)
    stored = hasher.digest(VERIFY_EMAIL, "user-1", "123456")
    assert hasher.matches(stored, VERIFY_EMAIL, "user-1", "123456")
    assert not hasher.matches(stored, VERIFY_EMAIL, "user-1", "123457")
    assert not hasher.matches(stored, VERIFY_EMAIL, "user-2", "123456")
    assert not hasher.matches(stored, RESET_PASSWORD, "user-1", "123456")
    assert not hasher.matches(None, VERIFY_EMAIL, "", "123456")
    assert CodeHasher(bytes(32)).digest(VERIFY_EMAIL, "user-1", "123456") != stored
