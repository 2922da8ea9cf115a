"""The payment service over gRPC against real PostgreSQL: idempotency,
refunds and ownership."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf import json_format

from runtime.db import libpq_url
from runtime.errors import error_details
from scripts.mesh import Mesh
from tests.support import VISA_DECLINED, bearer, card, mint_token
from ticketing.common.v1 import money_pb2
from ticketing.payment.v1 import payment_pb2, payment_pb2_grpc


@pytest.fixture(scope="module")
def payments(mesh: Mesh) -> Iterator[payment_pb2_grpc.PaymentServiceStub]:
    with grpc.insecure_channel(mesh.addr("payment")) as channel:
        yield payment_pb2_grpc.PaymentServiceStub(channel)


def charge_request(
    key: str, user_id: str, amount: int = 2500, number: str = "4242424242424242"
) -> payment_pb2.ChargeRequest:
    return payment_pb2.ChargeRequest(
        idempotency_key=key,
        user_id=user_id,
        reference="bookings/test",
        amount=money_pb2.Money(currency_code="USD", amount_minor=amount),
        payment_method=json_format.ParseDict(card(number), payment_pb2.PaymentMethod()),
    )


def fails(call: object, *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


def test_one_key_is_one_payment_even_under_concurrency(payments) -> None:
    key, user = str(uuid.uuid4()), str(uuid.uuid4())
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda _: payments.Charge(charge_request(key, user)), range(10)))
    assert len({r.payment_id for r in replies}) == 1
    assert replies[0].state == payment_pb2.PAYMENT_STATE_SUCCEEDED
    assert (replies[0].card_brand, replies[0].card_last4) == ("visa", "4242")
    found = payments.LookupPayment(payment_pb2.LookupPaymentRequest(idempotency_key=key))
    assert found.payment_id == replies[0].payment_id
    reused = error_details(fails(payments.Charge, charge_request(key, user, amount=1)))
    assert (reused.code, reused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "IDEMPOTENCY_KEY_REUSED",
    )


def test_declines_are_stored_payments_not_errors(payments) -> None:
    key = str(uuid.uuid4())
    declined = payments.Charge(charge_request(key, str(uuid.uuid4()), number=VISA_DECLINED))
    assert (declined.state, declined.decline_code) == (
        payment_pb2.PAYMENT_STATE_DECLINED,
        "card_declined",
    )
    refused = error_details(
        fails(
            payments.Refund,
            payment_pb2.RefundRequest(
                idempotency_key=str(uuid.uuid4()), payment_id=declined.payment_id
            ),
        )
    )
    assert refused.reason == "PAYMENT_NOT_REFUNDABLE"


def test_refunds_are_whole_idempotent_and_never_exceed_the_charge(payments, mesh: Mesh) -> None:
    paid = payments.Charge(charge_request(str(uuid.uuid4()), str(uuid.uuid4())))
    refund_key = str(uuid.uuid4())
    with ThreadPoolExecutor(6) as pool:
        replies = list(
            pool.map(
                lambda i: payments.Refund(
                    payment_pb2.RefundRequest(
                        idempotency_key=refund_key if i % 2 else str(uuid.uuid4()),
                        payment_id=paid.payment_id,
                    )
                ),
                range(6),
            )
        )
    assert {r.state for r in replies} == {payment_pb2.PAYMENT_STATE_REFUNDED}
    assert {r.refunded_amount.amount_minor for r in replies} == {2500}
    with psycopg.connect(libpq_url(mesh.env["PAYMENT_DATABASE_URL"])) as conn:
        [(count, total)] = conn.execute(
            "SELECT count(*), sum(amount_minor) FROM refunds WHERE payment_id = %s",
            (paid.payment_id,),
        ).fetchall()
    assert (count, total) == (1, 2500)
    missing = fails(
        payments.Refund,
        payment_pb2.RefundRequest(idempotency_key="k", payment_id=str(uuid.uuid4())),
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND


def test_bad_card_data_names_the_fields(payments) -> None:
    request = charge_request(str(uuid.uuid4()), str(uuid.uuid4()), number="1234")
    request.payment_method.exp_month = 0
    details = error_details(fails(payments.Charge, request))
    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in details.violations} == {
        "payment_method.card_number",
        "payment_method.exp_month",
    }


def test_lookup_of_an_unused_key_is_not_found(payments) -> None:
    error = fails(payments.LookupPayment, payment_pb2.LookupPaymentRequest(idempotency_key="no"))
    assert error.code() is grpc.StatusCode.NOT_FOUND


def test_only_the_payer_or_an_admin_reads_a_payment(payments, keys_dir: Path, mesh: Mesh) -> None:
    payer = str(uuid.uuid4())
    paid = payments.Charge(charge_request(str(uuid.uuid4()), payer))
    request = payment_pb2.GetPaymentRequest(payment_id=paid.payment_id)
    own = payments.GetPayment(request, metadata=bearer(mint_token(keys_dir, user_id=payer)))
    assert own.payment_id == paid.payment_id
    other = fails(payments.GetPayment, request, metadata=bearer(mint_token(keys_dir)))
    assert other.code() is grpc.StatusCode.NOT_FOUND
    admin = payments.GetPayment(request, metadata=bearer(mint_token(keys_dir, role="admin")))
    assert admin.user_id == payer
    with psycopg.connect(libpq_url(mesh.env["PAYMENT_DATABASE_URL"])) as conn:
        dump = str(conn.execute("SELECT * FROM payments").fetchall())
    assert "4242424242424242" not in dump
