"""Reading payments through Envoy, as curl sees them; the charging RPCs stay inside."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from scripts.mesh import Mesh
from tests.e2e.test_auth_http import assert_error
from tests.support import Edge, bearer, card, mint_token, register_and_login
from ticketing.common.v1 import money_pb2
from ticketing.payment.v1 import payment_pb2, payment_pb2_grpc


def charge_request(user_id: str) -> payment_pb2.ChargeRequest:
    return payment_pb2.ChargeRequest(
        idempotency_key=str(uuid.uuid4()),
        user_id=user_id,
        reference="bookings/e2e",
        amount=money_pb2.Money(currency_code="USD", amount_minor=4200),
        payment_method=json_format.ParseDict(card(), payment_pb2.PaymentMethod()),
    )


def charge(mesh: Mesh, user_id: str) -> payment_pb2.Payment:
    """A payment made the way the booking service makes one: over gRPC, inside the mesh."""
    with mesh.channel("payment", "booking") as channel:
        return payment_pb2_grpc.PaymentServiceStub(channel).Charge(charge_request(user_id))


def test_a_payment_is_read_by_its_owner_only(edge: Edge, mesh: Mesh, keys_dir: Path) -> None:
    owner = register_and_login(edge, "payer")
    paid = charge(mesh, owner.user_id)
    path = f"/v1/payments/{paid.payment_id}"

    own = edge.get(path, token=owner.access_token)
    assert own.status == 200, own.body
    assert own.body["payment_id"] == paid.payment_id
    assert own.body["user_id"] == owner.user_id
    assert own.body["state"] == "PAYMENT_STATE_SUCCEEDED"
    assert own.body["amount"] == {"currency_code": "USD", "amount_minor": "4200"}
    assert (own.body["card_brand"], own.body["card_last4"]) == ("visa", "4242")
    assert "card_number" not in own.body and "cvc" not in own.body
    assert "4242424242424242" not in str(own.body)

    assert_error(edge.get(path, token=mint_token(keys_dir)), 404)
    admin = edge.get(path, token=mint_token(keys_dir, role="admin"))
    assert admin.status == 200 and admin.body["payment_id"] == paid.payment_id
    assert_error(edge.get(path), 401)
    assert_error(edge.get(f"/v1/payments/{uuid.uuid4()}", token=owner.access_token), 404)
    malformed = edge.get("/v1/payments/not-an-id", token=owner.access_token)
    assert_error(malformed, 400)
    assert "payment_id" in malformed.violations


def test_charging_rpcs_are_not_routed_by_envoy(edge: Edge, keys_dir: Path) -> None:
    token = mint_token(keys_dir, role="admin")
    for method in ("Charge", "Refund", "LookupPayment"):
        reply = edge.call("POST", f"/ticketing.payment.v1.PaymentService/{method}", {}, token=token)
        assert_error(reply, 404)


def test_charge_over_grpc_through_envoy_is_refused(mesh: Mesh, keys_dir: Path) -> None:
    """Envoy also speaks gRPC; it must not pass internal RPCs on in that form either."""
    token = mint_token(keys_dir, role="admin")
    with (
        grpc.insecure_channel(f"127.0.0.1:{mesh.env['EDGE_PORT']}") as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        payment_pb2_grpc.PaymentServiceStub(channel).Charge(
            charge_request(str(uuid.uuid4())), metadata=bearer(token), timeout=10
        )
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
