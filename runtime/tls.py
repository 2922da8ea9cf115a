"""Mutual TLS inside the mesh (DESIGN §13): whose certificate a process
presents, the credentials of servers and channels, and who the peer is.

A workload's files are TLS_CA_FILE, TLS_CERT_FILE and TLS_KEY_FILE when set
(a deployment mounting its own), else `<TLS_DIR>/ca.pem`, `<workload>.pem`
and `<workload>.key` (TLS_DIR defaults to var/tls, made by
`python -m runtime.certs`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from runtime import tracing
from runtime.config import CLIENT_CHANNEL_OPTIONS, REPO_ROOT, SERVICES

TRUST_DOMAIN = "ticketing.local"
SPIFFE_PREFIX = f"spiffe://{TRUST_DOMAIN}/"
# Envoy is `edge`; grpcurl, the tests and the benchmarks are `developer`.
WORKLOADS = (*SERVICES, "edge", "developer")

ChannelOptions = Sequence[tuple[str, Any]]


def spiffe_id(workload: str) -> str:
    return SPIFFE_PREFIX + workload


def default_tls_dir() -> Path:
    return Path(os.environ.get("TLS_DIR") or REPO_ROOT / "var" / "tls")


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def for_workload(cls, workload: str, tls_dir: Path | None = None) -> TlsFiles:
        """`workload`'s files in `tls_dir`, or as the environment says."""
        if tls_dir is not None:
            return cls(tls_dir / "ca.pem", tls_dir / f"{workload}.pem", tls_dir / f"{workload}.key")
        directory = default_tls_dir()
        return cls(
            Path(os.environ.get("TLS_CA_FILE") or directory / "ca.pem"),
            Path(os.environ.get("TLS_CERT_FILE") or directory / f"{workload}.pem"),
            Path(os.environ.get("TLS_KEY_FILE") or directory / f"{workload}.key"),
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        # Without a client certificate from our CA there is no connection at all.
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes(),
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )


def channel_options(
    service: str | None, options: ChannelOptions = CLIENT_CHANNEL_OPTIONS
) -> list[tuple[str, Any]]:
    """`options` plus, for a known service, the name its certificate must carry:
    checking the service's DNS name (which only its own certificate has) rather
    than the dialled address means a channel to event reaches event, whether it
    dials 127.0.0.1, a replica list or a fault proxy."""
    if service is None:
        return list(options)
    return [*options, ("grpc.ssl_target_name_override", service)]


def aio_channel(
    target: str,
    service: str | None,
    files: TlsFiles,
    options: ChannelOptions = CLIENT_CHANNEL_OPTIONS,
) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        target,
        files.channel_credentials(),
        options=channel_options(service, options),
        interceptors=tracing.client_interceptors() or None,
    )


def channel(
    target: str,
    service: str | None,
    files: TlsFiles,
    options: ChannelOptions = CLIENT_CHANNEL_OPTIONS,
) -> grpc.Channel:
    return grpc.secure_channel(
        target, files.channel_credentials(), options=channel_options(service, options)
    )


def peer_workload(context: grpc.aio.ServicerContext) -> str | None:
    """The workload named by the peer certificate's SPIFFE id, or None.

    gRPC exposes the verified certificate's subject alternative names as the
    peer identities (the URI among them), so no certificate parsing per call.
    """
    for identity in context.peer_identities() or ():
        name = identity.decode(errors="replace")
        if name.startswith(SPIFFE_PREFIX):
            return name[len(SPIFFE_PREFIX) :]
    return None
