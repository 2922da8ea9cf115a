"""The payment service over gRPC against real PostgreSQL: outcomes, idempotency,
refunds, ownership, bad input, and that card numbers are never stored."""

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
from runtime.status import error_details
from scripts.mesh import Mesh
from tests.support import VISA_DECLINED, VISA_NO_FUNDS, VISA_OK, bearer, card, fails, mint_token
from ticketing.common.v1 import money_pb2
from ticketing.payment.v1 import payment_pb2, payment_pb2_grpc


@pytest.fixture(scope="module")
def payments(mesh: Mesh) -> Iterator[payment_pb2_grpc.PaymentServiceStub]:
    """The payment service as booking reaches it, the only caller of Charge and
    Refund; GetPayment is for the edge and developers (`public_payments`)."""
    with mesh.channel("payment", "booking") as channel:
        yield payment_pb2_grpc.PaymentServiceStub(channel)


@pytest.fixture(scope="module")
def public_payments(mesh: Mesh) -> Iterator[payment_pb2_grpc.PaymentServiceStub]:
    with mesh.channel("payment") as channel:
        yield payment_pb2_grpc.PaymentServiceStub(channel)


@pytest.fixture(scope="module")
def payment_db(mesh: Mesh) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_url(mesh.env["PAYMENT_DATABASE_URL"]), autocommit=True) as conn:
        yield conn


def charge_request(
    user_id: str, key: str | None = None, amount: int = 2500, number: str = VISA_OK
) -> payment_pb2.ChargeRequest:
    return payment_pb2.ChargeRequest(
        idempotency_key=key or str(uuid.uuid4()),
        user_id=user_id,
        reference="bookings/test",
        amount=money_pb2.Money(currency_code="USD", amount_minor=amount),
        payment_method=json_format.ParseDict(card(number), payment_pb2.PaymentMethod()),
    )


def refund_request(payment_id: str, key: str | None = None) -> payment_pb2.RefundRequest:
    return payment_pb2.RefundRequest(
        idempotency_key=key or str(uuid.uuid4()), payment_id=payment_id
    )


def lookup(payments, key: str) -> payment_pb2.Payment:
    return payments.LookupPayment(payment_pb2.LookupPaymentRequest(idempotency_key=key))


def refunds_of(payment_db: psycopg.Connection, payment_id: str) -> tuple[int, int | None]:
    """How many refund rows a payment has, and what they add up to."""
    [(count, total)] = payment_db.execute(
        "SELECT count(*), sum(amount_minor) FROM refunds WHERE payment_id = %s", (payment_id,)
    ).fetchall()
    return count, total


def test_a_good_card_pays(payments) -> None:
    user = str(uuid.uuid4())
    paid = payments.Charge(charge_request(user, number="5555 5555 5555 4444"))
    assert paid.state == payment_pb2.PAYMENT_STATE_SUCCEEDED
    assert (paid.user_id, paid.reference) == (user, "bookings/test")
    assert (paid.amount.currency_code, paid.amount.amount_minor) == ("USD", 2500)
    assert (paid.card_brand, paid.card_last4, paid.decline_code) == ("mastercard", "4444", "")
    assert paid.refunded_amount.amount_minor == 0
    assert paid.create_time.seconds > 0 and paid.update_time == paid.create_time
    assert str(uuid.UUID(paid.payment_id)) == paid.payment_id


@pytest.mark.parametrize(
    ("number", "decline_code"),
    [(VISA_DECLINED, "card_declined"), (VISA_NO_FUNDS, "insufficient_funds")],
)
def test_declines_are_stored_payments_and_idempotent(
    payments, number: str, decline_code: str
) -> None:
    request = charge_request(str(uuid.uuid4()), number=number)
    declined = payments.Charge(request)
    assert (declined.state, declined.decline_code) == (
        payment_pb2.PAYMENT_STATE_DECLINED,
        decline_code,
    )
    assert payments.Charge(request) == declined
    assert lookup(payments, request.idempotency_key) == declined


def test_one_key_is_one_payment_even_under_concurrency(payments, payment_db) -> None:
    key, user = str(uuid.uuid4()), str(uuid.uuid4())
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda _: payments.Charge(charge_request(user, key)), range(10)))
    assert len({r.payment_id for r in replies}) == 1
    assert replies[0].state == payment_pb2.PAYMENT_STATE_SUCCEEDED
    assert lookup(payments, key).payment_id == replies[0].payment_id
    [(rows,)] = payment_db.execute(
        "SELECT count(*) FROM payments WHERE idempotency_key = %s", (key,)
    ).fetchall()
    assert rows == 1


def test_a_key_cannot_be_reused_for_another_charge(payments) -> None:
    key, user = str(uuid.uuid4()), str(uuid.uuid4())
    paid = payments.Charge(charge_request(user, key))
    for other in (charge_request(user, key, amount=1), charge_request(str(uuid.uuid4()), key)):
        reused = error_details(fails(payments.Charge, other))
        assert (reused.code, reused.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "IDEMPOTENCY_KEY_REUSED",
        )
        assert reused.metadata["payment_id"] == paid.payment_id
    assert lookup(payments, key) == paid


def test_a_refund_is_whole_idempotent_and_never_twice(payments, payment_db) -> None:
    key = str(uuid.uuid4())
    paid = payments.Charge(charge_request(str(uuid.uuid4()), key))
    refund_key = str(uuid.uuid4())
    refunded = payments.Refund(refund_request(paid.payment_id, refund_key))
    assert refunded.state == payment_pb2.PAYMENT_STATE_REFUNDED
    assert refunded.refunded_amount == paid.amount
    assert refunded.update_time.ToDatetime() >= refunded.create_time.ToDatetime()

    assert payments.Refund(refund_request(paid.payment_id, refund_key)) == refunded
    assert payments.Refund(refund_request(paid.payment_id)) == refunded  # another key
    assert refunds_of(payment_db, paid.payment_id) == (1, 2500)
    assert lookup(payments, key) == refunded


def test_concurrent_refunds_apply_once(payments, payment_db) -> None:
    paid = payments.Charge(charge_request(str(uuid.uuid4())))
    refund_key = str(uuid.uuid4())
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(
                lambda i: payments.Refund(
                    refund_request(paid.payment_id, refund_key if i % 2 else None)
                ),
                range(8),
            )
        )
    assert {r.state for r in replies} == {payment_pb2.PAYMENT_STATE_REFUNDED}
    assert {r.refunded_amount.amount_minor for r in replies} == {2500}
    assert refunds_of(payment_db, paid.payment_id) == (1, 2500)


def test_a_refund_key_belongs_to_one_payment(payments, payment_db) -> None:
    first = payments.Charge(charge_request(str(uuid.uuid4())))
    second_key = str(uuid.uuid4())
    second = payments.Charge(charge_request(str(uuid.uuid4()), second_key))
    refund_key = str(uuid.uuid4())
    payments.Refund(refund_request(first.payment_id, refund_key))
    reused = error_details(fails(payments.Refund, refund_request(second.payment_id, refund_key)))
    assert (reused.code, reused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert refunds_of(payment_db, second.payment_id) == (0, None)
    assert lookup(payments, second_key).state == payment_pb2.PAYMENT_STATE_SUCCEEDED


def test_a_declined_payment_is_not_refundable(payments, payment_db) -> None:
    declined = payments.Charge(charge_request(str(uuid.uuid4()), number=VISA_DECLINED))
    refused = error_details(fails(payments.Refund, refund_request(declined.payment_id)))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAYMENT_NOT_REFUNDABLE",
    )
    assert refunds_of(payment_db, declined.payment_id) == (0, None)


def test_refunding_an_unknown_or_malformed_payment(payments) -> None:
    missing = error_details(fails(payments.Refund, refund_request(str(uuid.uuid4()))))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND")
    malformed = error_details(
        fails(payments.Refund, payment_pb2.RefundRequest(payment_id="not-an-id"))
    )
    assert malformed.code is grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in malformed.violations} == {"idempotency_key", "payment_id"}


def test_lookup_finds_a_payment_by_its_key_or_not_at_all(payments) -> None:
    key = str(uuid.uuid4())
    paid = payments.Charge(charge_request(str(uuid.uuid4()), key))
    assert lookup(payments, key) == paid
    unused = fails(lookup, payments, str(uuid.uuid4()))
    assert unused.code() is grpc.StatusCode.NOT_FOUND
    empty = error_details(fails(lookup, payments, ""))
    assert [v.field for v in empty.violations] == ["idempotency_key"]


def test_only_the_payer_or_an_admin_reads_a_payment(
    payments, public_payments, keys_dir: Path
) -> None:
    payer = str(uuid.uuid4())
    paid = payments.Charge(charge_request(payer))
    request = payment_pb2.GetPaymentRequest(payment_id=paid.payment_id)
    own = public_payments.GetPayment(request, metadata=bearer(mint_token(keys_dir, user_id=payer)))
    assert own == paid
    other = error_details(
        fails(public_payments.GetPayment, request, metadata=bearer(mint_token(keys_dir)))
    )
    assert (other.code, other.reason) == (grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND")
    admin = public_payments.GetPayment(request, metadata=bearer(mint_token(keys_dir, role="admin")))
    assert admin == paid
    assert fails(public_payments.GetPayment, request).code() is grpc.StatusCode.UNAUTHENTICATED
    malformed = error_details(
        fails(
            public_payments.GetPayment,
            payment_pb2.GetPaymentRequest(payment_id="nope"),
            metadata=bearer(mint_token(keys_dir, user_id=payer)),
        )
    )
    assert malformed.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in malformed.violations] == ["payment_id"]


def test_bad_card_data_names_the_fields(payments) -> None:
    request = charge_request(str(uuid.uuid4()), number="4242424242424241")
    request.payment_method.exp_month = 13
    request.payment_method.cvc = "12"
    request.amount.currency_code = "usd"
    details = error_details(fails(payments.Charge, request))
    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field: v.description for v in details.violations} == {
        "amount.currency_code": "must be an active ISO-4217 currency code",
        "payment_method.card_number": "is not a valid card number",
        "payment_method.exp_month": "must be between 1 and 12",
        "payment_method.cvc": "must be 3 or 4 digits",
    }

    expired = charge_request(str(uuid.uuid4()))
    expired.payment_method.exp_year = 2020
    assert [v.field for v in error_details(fails(payments.Charge, expired)).violations] == [
        "payment_method.exp_year"
    ]

    nothing = error_details(fails(payments.Charge, payment_pb2.ChargeRequest()))
    assert {v.field for v in nothing.violations} == {
        "idempotency_key",
        "user_id",
        "amount",
        "payment_method",
    }
    # Refused requests leave nothing behind to be found later.
    assert fails(lookup, payments, request.idempotency_key).code() is grpc.StatusCode.NOT_FOUND


def test_card_numbers_are_never_stored_or_logged(payments, payment_db, mesh: Mesh) -> None:
    numbers = ["4242424242424242", "5555555555554444", "378282246310005", VISA_DECLINED]
    for number in numbers:
        payments.Charge(charge_request(str(uuid.uuid4()), number=number))
    refused_number = "4111111111111112"  # fails the Luhn check
    fails(payments.Charge, charge_request(str(uuid.uuid4()), number=refused_number))
    dump = str(payment_db.execute("SELECT * FROM payments").fetchall())
    dump += str(payment_db.execute("SELECT * FROM refunds").fetchall())
    for number in numbers:
        assert number not in dump
    columns = {
        name
        for (name,) in payment_db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'payments'"
        )
    }
    assert not columns & {"card_number", "cvc", "exp_month", "exp_year"}
    logged = (mesh.logs / "payment.log").read_text()
    for number in [*numbers, refused_number]:
        assert number not in logged
