"""The auth service's public keys, fetched over gRPC for the token verifier
(runtime.identity) and refetched when a token names a key id not seen yet, so
key rotation needs no restart."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import grpc
import jwt
from google.protobuf import json_format

from runtime import tls

log = logging.getLogger(__name__)


class RemoteJwks:
    """Public keys fetched from the auth service's GetJwks, cached by kid."""

    REFETCH_INTERVAL = 5.0

    def __init__(self, auth_addr: str, identity: tls.TlsFiles) -> None:
        self._auth_addr = auth_addr
        self._identity = identity
        self._channel: grpc.aio.Channel | None = None
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> Any | None:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if (
                kid not in self._keys
                and time.monotonic() - self._fetched_at > self.REFETCH_INTERVAL
            ):
                await self._fetch()
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        # Imported here: the generated stubs depend on `make protos` having run.
        from ticketing.auth.v1 import auth_pb2, auth_pb2_grpc

        self._fetched_at = time.monotonic()
        if self._channel is None:  # made in the server's event loop, kept for its life
            self._channel = tls.aio_channel(self._auth_addr, "auth", self._identity)
        try:
            jwks = await auth_pb2_grpc.AuthServiceStub(self._channel).GetJwks(
                auth_pb2.GetJwksRequest(), timeout=3
            )
        except grpc.RpcError as exc:
            log.warning("could not fetch JWKS from %s: %s", self._auth_addr, exc)
            return
        for jwk in jwks.keys:
            as_json = json.dumps(json_format.MessageToDict(jwk, preserving_proto_field_name=True))
            self._keys[jwk.kid] = jwt.PyJWK.from_json(as_json).key
