"""The simulated processor's card rules, without servers."""

from __future__ import annotations

from datetime import date

import grpc
import pytest

from payment.domain import brand, check_charge, luhn_valid
from runtime.errors import ServiceError

TODAY = date(2026, 6, 15)


def charge(
    number: str = "4242424242424242",
    month: int = 12,
    year: int = 2030,
    cvc: str = "123",
    amount: int = 100,
    currency: str = "USD",
):
    return check_charge("key", "user", amount, currency, number, month, year, cvc, TODAY)


def violations(**kwargs: object) -> dict[str, str]:
    with pytest.raises(ServiceError) as caught:
        charge(**kwargs)  # type: ignore[arg-type]
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    return {v.field: v.description for v in caught.value.violations}


@pytest.mark.parametrize(
    "number",
    [
        "4242424242424242",
        "4000000000000002",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
    ],
)
def test_real_test_cards_pass_luhn(number: str) -> None:
    assert luhn_valid(number)


def test_one_wrong_digit_fails_luhn() -> None:
    assert not luhn_valid("4242424242424241")


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("4242424242424242", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("378282246310005", "amex"),
        ("6011111111111117", "discover"),
        ("3056930009020004", "unknown"),
    ],
)
def test_brands(number: str, expected: str) -> None:
    assert brand(number) == expected


def test_test_cards_decide_the_outcome() -> None:
    assert charge().decline_code == ""
    assert charge("4000000000000002").decline_code == "card_declined"
    assert charge("4000 0000 0000 9995").decline_code == "insufficient_funds"


def test_only_brand_and_last_four_are_kept() -> None:
    card = charge("4242 4242 4242 4242")
    assert (card.brand, card.last4) == ("visa", "4242")
    assert "4242424242424242" not in repr(card)


def test_a_card_is_good_through_its_expiry_month() -> None:
    assert charge(month=6, year=2026).last4 == "4242"
    assert violations(month=5, year=2026) == {"payment_method.exp_year": "the card has expired"}


def test_every_bad_field_is_named() -> None:
    assert violations(number="4242424242424241", month=13, cvc="12", amount=0, currency="usd") == {
        "payment_method.card_number": "is not a valid card number",
        "payment_method.exp_month": "must be between 1 and 12",
        "payment_method.cvc": "must be 3 or 4 digits",
        "amount.amount_minor": "must be positive",
        "amount.currency_code": "must be a three-letter ISO-4217 code",
    }
    assert violations(number="4242-4242") == {
        "payment_method.card_number": "must be 12 to 19 digits"
    }
