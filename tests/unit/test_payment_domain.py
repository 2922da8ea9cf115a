"""The simulated processor's rules, without servers: card checks, outcomes,
what is kept of a card, idempotency and refund decisions."""

from __future__ import annotations

import uuid
from dataclasses import fields, replace
from datetime import UTC, date, datetime

import pytest

from payment.domain import (
    Amount,
    CardDetails,
    ChargeOrder,
    State,
    brand,
    check_charge,
    check_refund,
    ensure_same_charge,
    has_money_to_refund,
    luhn_valid,
    process,
)
from runtime.errors import FailedPrecondition, Invalid, ServiceError

TODAY = date(2026, 6, 15)
PAYER = str(uuid.uuid4())


def order(
    number: str = "4242424242424242",
    month: int = 12,
    year: int = 2030,
    cvc: str = "123",
    amount: int = 100,
    currency: str = "USD",
    key: str = "key-1",
    user_id: str = PAYER,
) -> ChargeOrder:
    return ChargeOrder(
        idempotency_key=key,
        user_id=user_id,
        amount=Amount(amount, currency),
        card=CardDetails(number, month, year, cvc),
        reference="bookings/1",
    )


def violations(request: ChargeOrder, today: date = TODAY) -> dict[str, str]:
    with pytest.raises(ServiceError) as caught:
        check_charge(request, today)
    assert isinstance(caught.value, Invalid)
    return {v.field: v.description for v in caught.value.violations}


def refused(call: object, *args: object) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


@pytest.mark.parametrize(
    "number",
    [
        "4242424242424242",
        "4000000000000002",
        "4000000000009995",
        "5555555555554444",
        "2223003122003222",
        "378282246310005",
        "6011111111111117",
        "6200000000000005",
    ],
)
def test_real_test_cards_pass_luhn(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize("number", ["4242424242424241", "4242424242424224", "79927398710"])
def test_a_wrong_or_swapped_digit_fails_luhn(number: str) -> None:
    assert not luhn_valid(number)


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("4242424242424242", "visa"),
        ("5105105105105100", "mastercard"),
        ("5555555555554444", "mastercard"),
        ("2221000000000009", "mastercard"),
        ("2720990000000000", "mastercard"),
        ("2220990000000000", "unknown"),
        ("2721000000000000", "unknown"),
        ("5000000000000000", "unknown"),
        ("5600000000000000", "unknown"),
        ("340000000000009", "amex"),
        ("378282246310005", "amex"),
        ("6011111111111117", "discover"),
        ("6500000000000002", "discover"),
        ("6200000000000005", "unknown"),
        ("3056930009020004", "unknown"),
    ],
)
def test_brands(number: str, expected: str) -> None:
    assert brand(number) == expected


def test_brand_of_a_short_or_empty_number_is_unknown() -> None:
    assert brand("") == "unknown"
    assert brand("2") == "unknown"


@pytest.mark.parametrize(
    ("number", "state", "decline_code"),
    [
        ("4242424242424242", State.SUCCEEDED, ""),
        ("5555555555554444", State.SUCCEEDED, ""),
        ("4000000000000002", State.DECLINED, "card_declined"),
        ("4000 0000 0000 9995", State.DECLINED, "insufficient_funds"),
    ],
)
def test_test_cards_decide_the_outcome(number: str, state: State, decline_code: str) -> None:
    payment = process(check_charge(order(number), TODAY), uuid.uuid4(), datetime.now(UTC))
    assert (payment.state, payment.decline_code) == (state, decline_code)


def test_a_card_is_reduced_to_brand_and_last_four() -> None:
    charge = check_charge(order("5555 5555 5555 4444", cvc="987"), TODAY)
    payment = process(charge, uuid.uuid4(), datetime.now(UTC))
    assert (payment.card_brand, payment.card_last4) == ("mastercard", "4444")
    for kept in (charge, charge.card, payment):
        assert "5555555555554444" not in repr(kept)
        assert "987" not in {str(getattr(kept, f.name)) for f in fields(kept)}


def test_the_card_as_sent_never_prints_its_number_or_cvc() -> None:
    printed = repr(CardDetails("4242424242424242", 12, 2030, "321"))
    assert "4242424242424242" not in printed
    assert "321" not in printed


def test_a_card_is_good_through_its_expiry_month() -> None:
    assert check_charge(order(month=6, year=2026), TODAY).card.last4 == "4242"
    last_day = date(2026, 6, 30)
    assert check_charge(order(month=6, year=2026), last_day).card.last4 == "4242"
    assert violations(order(month=5, year=2026)) == {
        "payment_method.exp_year": "the card has expired"
    }
    assert violations(order(month=12, year=2025)) == {
        "payment_method.exp_year": "the card has expired"
    }


def test_a_december_card_expires_with_the_year() -> None:
    assert check_charge(order(month=12, year=2026), date(2026, 12, 31)).card.brand == "visa"
    assert "payment_method.exp_year" in violations(order(month=12, year=2026), date(2027, 1, 1))


@pytest.mark.parametrize("month", [0, 13, -1])
def test_expiry_month_is_1_to_12(month: int) -> None:
    assert violations(order(month=month)) == {
        "payment_method.exp_month": "must be between 1 and 12"
    }


@pytest.mark.parametrize("cvc", ["123", "1234"])
def test_a_cvc_is_three_or_four_digits(cvc: str) -> None:
    assert check_charge(order(cvc=cvc), TODAY).card.last4 == "4242"


@pytest.mark.parametrize("cvc", ["", "12", "12345", "12a", " 123"])
def test_other_cvcs_are_refused(cvc: str) -> None:
    assert violations(order(cvc=cvc)) == {"payment_method.cvc": "must be 3 or 4 digits"}


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("", "is required"),
        ("4242-4242-4242-4242", "must contain only digits"),
        ("4242x42424242424", "must contain only digits"),
        ("424242424242424\u0662", "must contain only digits"),  # an Arabic-Indic 2
        ("42424242424", "must be 12 to 19 digits"),
        ("42424242424242424242", "must be 12 to 19 digits"),
        ("4242424242424241", "is not a valid card number"),
    ],
)
def test_bad_card_numbers(number: str, problem: str) -> None:
    assert violations(order(number)) == {"payment_method.card_number": problem}


def test_spaces_in_a_card_number_are_ignored() -> None:
    assert check_charge(order(" 4242 4242 4242 4242 "), TODAY).card.last4 == "4242"


def test_every_bad_field_is_named_at_once() -> None:
    bad = order(
        number="4242424242424241",
        month=13,
        cvc="12",
        amount=0,
        currency="usd",
        key="",
        user_id="not-a-user",
    )
    assert violations(bad) == {
        "idempotency_key": "is required",
        "user_id": "is not a valid id",
        "amount.amount_minor": "must be positive",
        "amount.currency_code": "must be an active ISO-4217 currency code",
        "payment_method.card_number": "is not a valid card number",
        "payment_method.exp_month": "must be between 1 and 12",
        "payment_method.cvc": "must be 3 or 4 digits",
    }


def test_missing_parts_are_named() -> None:
    empty = ChargeOrder(idempotency_key="", user_id="", amount=None, card=None, reference="")
    assert violations(empty) == {
        "idempotency_key": "is required",
        "user_id": "is required",
        "amount": "is required",
        "payment_method": "is required",
    }


def test_an_idempotency_key_has_a_length_limit() -> None:
    assert "idempotency_key" in violations(order(key="k" * 256))
    assert check_charge(order(key="k" * 255), TODAY).idempotency_key == "k" * 255


def test_a_retry_must_ask_for_the_same_charge() -> None:
    first = check_charge(order(), TODAY)
    stored = process(first, uuid.uuid4(), datetime.now(UTC))
    ensure_same_charge(stored, check_charge(order(), TODAY))
    for different in (order(amount=101), order(currency="EUR"), order(user_id=str(uuid.uuid4()))):
        error = refused(ensure_same_charge, stored, check_charge(different, TODAY))
        assert isinstance(error, FailedPrecondition)
        assert error.reason == "IDEMPOTENCY_KEY_REUSED"


def test_refund_requests_name_their_bad_fields() -> None:
    error = refused(check_refund, "", "nope")
    assert {v.field for v in error.violations} == {"idempotency_key", "payment_id"}
    payment_id = uuid.uuid4()
    assert check_refund("k", str(payment_id)) == payment_id


def test_only_a_successful_payment_has_money_to_refund() -> None:
    now = datetime.now(UTC)
    paid = process(check_charge(order(), TODAY), uuid.uuid4(), now)
    assert has_money_to_refund(paid)
    assert not has_money_to_refund(replace(paid, state=State.REFUNDED))
    declined = process(check_charge(order("4000000000000002"), TODAY), uuid.uuid4(), now)
    error = refused(has_money_to_refund, declined)
    assert isinstance(error, FailedPrecondition)
    assert error.reason == "PAYMENT_NOT_REFUNDABLE"
