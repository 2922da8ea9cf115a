"""grpcurl, the way the README uses it: reflection straight at the service
(mutual TLS with the developer certificate), and the .proto files through
Envoy (plaintext at the edge)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from scripts.mesh import REPO, Mesh
from tests.support import unique_email

GRPCURL = shutil.which("grpcurl") or str(Path(REPO, ".venv", "bin", "grpcurl"))


def grpcurl(*args: str, data: dict | None = None) -> subprocess.CompletedProcess[str]:
    argv = [GRPCURL, *(("-d", json.dumps(data)) if data is not None else ()), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def mtls(mesh: Mesh) -> list[str]:
    developer = mesh.identity()
    return ["-cacert", str(developer.ca), "-cert", str(developer.cert), "-key", str(developer.key)]


def test_reflection_lists_the_service(mesh: Mesh) -> None:
    listed = grpcurl(*mtls(mesh), mesh.addr("auth"), "list")
    assert listed.returncode == 0, listed.stderr
    assert "ticketing.auth.v1.AuthService" in listed.stdout.split()
    described = grpcurl(*mtls(mesh), mesh.addr("auth"), "describe", "ticketing.auth.v1.AuthService")
    assert (
        "rpc Login ( .ticketing.auth.v1.LoginRequest ) returns ( .ticketing.auth.v1.TokenPair )"
        in described.stdout
    )


def test_register_login_me_with_reflection(mesh: Mesh) -> None:
    email = unique_email("grpcurl")
    addr = mesh.addr("auth")
    created = grpcurl(
        *mtls(mesh),
        addr,
        "ticketing.auth.v1.AuthService/Register",
        data={"email": email, "password": "grpcurl-pass", "display_name": "G"},
    )
    assert created.returncode == 0, created.stderr
    tokens = json.loads(
        grpcurl(
            *mtls(mesh),
            addr,
            "ticketing.auth.v1.AuthService/Login",
            data={"email": email, "password": "grpcurl-pass"},
        ).stdout
    )
    me = grpcurl(
        *mtls(mesh),
        "-H",
        f"authorization: Bearer {tokens.get('accessToken') or tokens['access_token']}",
        addr,
        "ticketing.auth.v1.AuthService/GetMe",
    )
    assert json.loads(me.stdout)["email"] == email

    refused = grpcurl(*mtls(mesh), addr, "ticketing.auth.v1.AuthService/GetMe")
    assert refused.returncode != 0
    assert "Unauthenticated" in refused.stderr


def test_grpc_through_envoy_with_proto_files(mesh: Mesh) -> None:
    edge = f"127.0.0.1:{mesh.env['EDGE_PORT']}"
    protos = ["-import-path", str(REPO / "protos"), "-proto", "ticketing/auth/v1/auth.proto"]
    jwks = grpcurl("-plaintext", *protos, edge, "ticketing.auth.v1.AuthService/GetJwks")
    assert jwks.returncode == 0, jwks.stderr
    assert json.loads(jwks.stdout)["keys"]
    bad = grpcurl(
        "-plaintext",
        *protos,
        edge,
        "ticketing.auth.v1.AuthService/Register",
        data={"email": "nope", "password": "x"},
    )
    assert "InvalidArgument" in bad.stderr and "BadRequest" in bad.stderr
