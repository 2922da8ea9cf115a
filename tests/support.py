"""Helpers the tests share: an HTTP/JSON client for Envoy and account setup."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from runtime.signing import KeyRing
from scripts.mesh import Mesh, free_port

T = TypeVar("T")


def wait_for(check: Callable[[], T], what: str, timeout: float = 30, every: float = 0.1) -> T:
    """Polls `check` until it returns something true, and returns that; fails
    naming `what` once `timeout` seconds have passed. Tests wait for conditions
    this way, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def reason(self) -> str:
        """The ErrorInfo reason of an error body, or ''."""
        for detail in (self.body or {}).get("details", []) if isinstance(self.body, dict) else []:
            if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
                return detail.get("reason", "")
        return ""

    @property
    def violations(self) -> dict[str, str]:
        for detail in self.body.get("details", []) if isinstance(self.body, dict) else []:
            if detail.get("@type", "").endswith("google.rpc.BadRequest"):
                return {v["field"]: v["description"] for v in detail["field_violations"]}
        return {}


class Edge:
    """HTTP/JSON calls through Envoy."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if token:
            request.add_header("authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                status, payload, got = reply.status, reply.read(), dict(reply.headers)
        except urllib.error.HTTPError as error:
            status, payload, got = error.code, error.read(), dict(error.headers)
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode(errors="replace")
        return Reply(status, parsed, {k.lower(): v for k, v in got.items()})

    def get(self, path: str, token: str | None = None) -> Reply:
        return self.call("GET", path, token=token)

    def post(self, path: str, body: Any = None, token: str | None = None) -> Reply:
        return self.call("POST", path, body if body is not None else {}, token=token)


@dataclass
class Account:
    user_id: str
    email: str
    password: str
    access_token: str
    refresh_token: str


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def register_and_login(
    edge: Edge, prefix: str = "user", password: str = "correct-horse"
) -> Account:
    email = unique_email(prefix)
    created = edge.post(
        "/v1/auth/register", {"email": email, "password": password, "display_name": prefix.title()}
    )
    assert created.status == 200, created.body
    tokens = edge.post("/v1/auth/login", {"email": email, "password": password})
    assert tokens.status == 200, tokens.body
    return Account(
        created.body["user_id"],
        email,
        password,
        tokens.body["access_token"],
        tokens.body["refresh_token"],
    )


def login(edge: Edge, email: str, password: str) -> str:
    reply = edge.post("/v1/auth/login", {"email": email, "password": password})
    assert reply.status == 200, reply.body
    return reply.body["access_token"]


def mint_token(
    keys_dir: Path,
    role: str = "user",
    user_id: str | None = None,
    email: str = "someone@example.com",
    **overrides: Any,
) -> str:
    """An access token signed with the auth service's current key, as Login issues."""
    now = int(time.time())
    claims = {
        "iss": "ticketing-auth",
        "aud": "ticketing",
        "sub": user_id or str(uuid.uuid4()),
        "role": role,
        "email": email,
        "iat": now,
        "exp": now + 900,
        **overrides,
    }
    return KeyRing(keys_dir).sign(claims)


def fails(call: Any, *args: Any, **kwargs: Any) -> Any:
    """The grpc.RpcError a call raises (the test fails if it does not)."""
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def event_body(
    title: str = "Concert",
    starts_in: timedelta = timedelta(days=30),
    tiers: list[tuple[str, int, int, int]] | None = None,
) -> dict[str, Any]:
    """A CreateEvent body; tiers are (tier, price in cents, rows, seats per row)."""
    tiers = tiers or [("TIER_STANDARD", 5000, 4, 10), ("TIER_VIP", 15000, 2, 5)]
    starts_at = (datetime.now(UTC) + starts_in).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "title": title,
        "venue": "Main Hall",
        "description": "A night out",
        "starts_at": starts_at,
        "tiers": [
            {
                "tier": tier,
                "price": {"currency_code": "USD", "amount_minor": str(price)},
                "rows": rows,
                "seats_per_row": per_row,
            }
            for tier, price, rows, per_row in tiers
        ],
    }


def create_event_grpc(stub: Any, token: str, **kwargs: Any) -> Any:
    from google.protobuf import json_format

    from ticketing.event.v1 import event_pb2

    event = json_format.ParseDict(event_body(**kwargs), event_pb2.Event())
    return stub.CreateEvent(event_pb2.CreateEventRequest(event=event), metadata=bearer(token))


VISA_OK = "4242424242424242"
VISA_DECLINED = "4000000000000002"
VISA_NO_FUNDS = "4000000000009995"


def card(number: str = VISA_OK) -> dict[str, Any]:
    return {
        "card_number": number,
        "exp_month": 12,
        "exp_year": datetime.now(UTC).year + 2,
        "cvc": "123",
    }


def book(
    edge: Edge,
    token: str,
    event_id: str,
    seats: list[str],
    number: str = VISA_OK,
    request_id: str | None = None,
) -> Reply:
    return edge.post(
        "/v1/bookings",
        {
            "event_id": event_id,
            "seat_ids": seats,
            "payment_method": card(number),
            "request_id": request_id or str(uuid.uuid4()),
        },
        token=token,
    )


def error_reason_metadata(reply: Reply) -> dict[str, str]:
    for detail in reply.body.get("details", []) if isinstance(reply.body, dict) else []:
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return detail.get("metadata", {})
    return {}


def emailed_codes(sink: Any, email: str, kind: str) -> list[str]:
    """The codes emailed to `email` as `kind` (VERIFICATION_CODE, PASSWORD_RESET),
    oldest first."""
    found = []
    for message in sink.messages:
        if message["To"] == email and message["X-Ticketing-Kind"] == kind:
            text = message.get_body(("plain",)).get_content()
            found += re.findall(r"^    ([0-9]{6})\r?$", text, re.MULTILINE)
    return found


def next_code(sink: Any, email: str, kind: str, seen: int = 0) -> str:
    """Waits for the (seen+1)th code emailed to `email` as `kind`, and returns it."""
    codes = wait_for(
        lambda: (c := emailed_codes(sink, email, kind)) and len(c) > seen and c,
        f"code {seen + 1} ({kind}) for {email}",
    )
    return codes[seen]


def start_second_edge(mesh: Mesh, name: str, **env: str) -> Edge:
    """Another Envoy in front of the test mesh's services, with `env` over its
    environment, on ports of its own; `mesh.stop(name)` stops it."""
    port = free_port()
    mesh.start_envoy(name, env={"EDGE_PORT": str(port), "EDGE_ADMIN_PORT": str(free_port()), **env})
    return Edge(f"http://127.0.0.1:{port}")
