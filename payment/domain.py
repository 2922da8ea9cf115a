"""The simulated card processor's rules, free of I/O.

Test cards decide the outcome, as with a real processor's sandbox:
4242424242424242 succeeds, 4000000000000002 is declined (card_declined),
4000000000009995 is declined (insufficient_funds); any other valid card
succeeds. Card numbers are Luhn-checked; only brand and last four digits
are ever kept.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime

from runtime.errors import Violations

DECLINES = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
}


class State(enum.IntEnum):
    """Values match ticketing.payment.v1.PaymentState."""

    SUCCEEDED = 1
    DECLINED = 2
    REFUNDED = 3


@dataclass(frozen=True)
class Card:
    """What is left of a card once it has been checked: never the number itself."""

    brand: str
    last4: str
    decline_code: str  # "" when the card pays


@dataclass(frozen=True)
class Payment:
    payment_id: uuid.UUID
    idempotency_key: str
    user_id: uuid.UUID
    reference: str
    amount_minor: int
    currency: str
    state: State
    card_brand: str
    card_last4: str
    decline_code: str
    refunded_minor: int
    create_time: datetime
    update_time: datetime


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def brand(digits: str) -> str:
    if digits.startswith("4"):
        return "visa"
    if re.match(r"5[1-5]", digits) or 2221 <= int(digits[:4]) <= 2720:
        return "mastercard"
    if digits[:2] in ("34", "37"):
        return "amex"
    if digits.startswith(("6011", "65")):
        return "discover"
    return "unknown"


def check_charge(
    idempotency_key: str,
    user_id: str,
    amount_minor: int,
    currency: str,
    card_number: str,
    exp_month: int,
    exp_year: int,
    cvc: str,
    today: date,
    has_amount: bool = True,
    has_card: bool = True,
) -> Card:
    """Raises INVALID_ARGUMENT naming every bad field; else what may be kept of the card."""
    problems = Violations()
    problems.require(idempotency_key, "idempotency_key")
    problems.require(user_id, "user_id")
    if not has_amount:
        problems.add("amount", "is required")
    else:
        if amount_minor <= 0:
            problems.add("amount.amount_minor", "must be positive")
        if not re.fullmatch(r"[A-Z]{3}", currency):
            problems.add("amount.currency_code", "must be a three-letter ISO-4217 code")
    digits = card_number.replace(" ", "")
    if not has_card:
        problems.add("payment_method", "is required")
    else:
        if not digits:
            problems.add("payment_method.card_number", "is required")
        elif not re.fullmatch(r"[0-9]{12,19}", digits):
            problems.add("payment_method.card_number", "must be 12 to 19 digits")
        elif not luhn_valid(digits):
            problems.add("payment_method.card_number", "is not a valid card number")
        if not 1 <= exp_month <= 12:
            problems.add("payment_method.exp_month", "must be between 1 and 12")
        elif (exp_year, exp_month) < (today.year, today.month):
            # A card is good through the last day of its expiry month.
            problems.add("payment_method.exp_year", "the card has expired")
        if not re.fullmatch(r"[0-9]{3,4}", cvc):
            problems.add("payment_method.cvc", "must be 3 or 4 digits")
    problems.raise_if_any()
    return Card(brand(digits), digits[-4:], DECLINES.get(digits, ""))
