"""ES256 (P-256) signing keys kept as PEM files in a directory.

The auth service signs access tokens with one (AUTH_KEYS_DIR) and the
notification service signs tickets with another (TICKET_KEYS_DIR); keys are
generated on setup and never committed. The newest key in a directory signs;
every key in it verifies, so a new key can be added and what the old one
signed keeps verifying. Key ids are RFC 7638 thumbprints.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from runtime.identity import ALGORITHM

log = logging.getLogger(__name__)

RELOAD_CHECK_SECONDS = 5.0


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def jwk(self) -> dict[str, str]:
        return {**_public_jwk(self.public_key), "kid": self.kid, "alg": ALGORITHM, "use": "sig"}

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("signing keys must be EC P-256")
        # RFC 7638: the thumbprint of the required members in lexicographic order.
        canonical = json.dumps(_public_jwk(key.public_key()), separators=(",", ":"), sort_keys=True)
        kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest())
        return cls(kid.decode().rstrip("="), key)


def _public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """{kty, crv, x, y}: the members an EC public key's JWK requires."""
    return ECAlgorithm.to_jwk(key, as_dict=True)


def generate_key(keys_dir: Path) -> Path:
    """Writes a new signing key; it becomes the one that signs."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Named by the time to the nanosecond, so the names sort in the order the
    # keys were made (the last signs), however quickly one follows another.
    now = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9))
    path = keys_dir / f"{stamp}.{now % 10**9:09d}-{os.urandom(3).hex()}.pem"
    path.write_bytes(pem)
    path.chmod(0o600)
    log.info("generated signing key %s", path.name)
    return path


def ensure_key(keys_dir: Path) -> None:
    if not list(keys_dir.glob("*.pem")):
        generate_key(keys_dir)


class KeyRing:
    """All keys of the directory, reloaded when the directory changes."""

    def __init__(self, keys_dir: Path) -> None:
        self._dir = keys_dir
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._checked_at = 0.0
        self._keys: list[SigningKey] = []
        self._load()

    def _load(self) -> None:
        paths = sorted(self._dir.glob("*.pem"))
        if not paths:
            raise RuntimeError(f"no signing keys in {self._dir}: run `make keys`")
        self._keys = [SigningKey.from_pem(p.read_bytes()) for p in paths]
        self._stamp = (self._dir.stat().st_mtime, len(paths))

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < RELOAD_CHECK_SECONDS:
            return
        with self._lock:
            self._checked_at = now
            stamp = (self._dir.stat().st_mtime, len(list(self._dir.glob("*.pem"))))
            if stamp != self._stamp:
                self._load()
                log.info("signing keys reloaded: %s", [k.kid for k in self._keys])

    def sign(self, claims: dict[str, Any]) -> str:
        self._refresh()
        current = self._keys[-1]
        return jwt.encode(
            claims, current.private_key, algorithm=ALGORITHM, headers={"kid": current.kid}
        )

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        self._refresh()
        return next((k.public_key for k in self._keys if k.kid == kid), None)

    def jwks(self) -> list[dict[str, str]]:
        self._refresh()
        return [k.jwk() for k in self._keys]
