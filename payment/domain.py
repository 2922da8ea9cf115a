"""The simulated card processor's rules, free of I/O.

Test cards decide the outcome, as with a real processor's sandbox:
4242424242424242 succeeds, 4000000000000002 is declined (card_declined),
4000000000009995 is declined (insufficient_funds); any other valid card
succeeds. Card numbers are Luhn-checked; only brand and last four digits
are ever kept, so the number and the CVC never reach the database or a log.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime

from runtime.currencies import is_currency
from runtime.errors import FailedPrecondition, Violations
from runtime.rules import field_rules
from ticketing.payment.v1 import payment_pb2

DECLINES = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
}
# PostgreSQL cannot index longer text in a unique btree; real processors cap keys too.
MAX_IDEMPOTENCY_KEY_LENGTH = field_rules(payment_pb2.ChargeRequest, "idempotency_key").max_len
_EXP_MONTH = field_rules(payment_pb2.PaymentMethod, "exp_month")
_CVC = re.compile(field_rules(payment_pb2.PaymentMethod, "cvc").pattern)


class State(enum.IntEnum):
    """Values match ticketing.payment.v1.PaymentState."""

    SUCCEEDED = 1
    DECLINED = 2
    REFUNDED = 3


@dataclass(frozen=True)
class Amount:
    minor: int  # in the currency's minor unit, e.g. cents
    currency: str  # ISO-4217, e.g. "USD"


@dataclass(frozen=True)
class CardDetails:
    """A card as the client sent it; lives only as long as one Charge call."""

    # Left out of repr so a stray log line or traceback cannot print them.
    number: str = field(repr=False)
    exp_month: int
    exp_year: int
    cvc: str = field(repr=False)


@dataclass(frozen=True)
class ChargeOrder:
    """A Charge request as received; `amount` and `card` are None when absent."""

    idempotency_key: str
    user_id: str
    amount: Amount | None
    card: CardDetails | None
    reference: str


@dataclass(frozen=True)
class Card:
    """What is left of a card once it has been checked: never the number itself."""

    brand: str
    last4: str
    decline_code: str  # "" when the card pays


@dataclass(frozen=True)
class Charge:
    """A charge order that passed every check."""

    idempotency_key: str
    payer: uuid.UUID
    amount: Amount
    card: Card
    reference: str


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
    """The card-number checksum: double every second digit from the right (less 9
    if that passes 9); the sum of all digits must then end in 0."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _starts_within(digits: str, low: int, high: int) -> bool:
    """Whether the number's first digits (as many as `low` has) lie in low..high."""
    prefix = digits[: len(str(low))]
    return len(prefix) == len(str(low)) and prefix.isdigit() and low <= int(prefix) <= high


def brand(digits: str) -> str:
    """The card network an issuer prefix belongs to."""
    if digits.startswith("4"):
        return "visa"
    if _starts_within(digits, 51, 55) or _starts_within(digits, 2221, 2720):
        return "mastercard"
    if digits[:2] in ("34", "37"):
        return "amex"
    if digits.startswith(("6011", "65")):
        return "discover"
    return "unknown"


def _check_card(card: CardDetails, today: date, problems: Violations) -> Card:
    digits = card.number.replace(" ", "")
    if not digits:
        problems.add("payment_method.card_number", "is required")
    elif not re.fullmatch(r"[0-9]+", digits):
        problems.add("payment_method.card_number", "must contain only digits")
    elif not 12 <= len(digits) <= 19:
        problems.add("payment_method.card_number", "must be 12 to 19 digits")
    elif not luhn_valid(digits):
        problems.add("payment_method.card_number", "is not a valid card number")
    if not _EXP_MONTH.gte <= card.exp_month <= _EXP_MONTH.lte:
        problems.add(
            "payment_method.exp_month", f"must be between {_EXP_MONTH.gte} and {_EXP_MONTH.lte}"
        )
    elif (card.exp_year, card.exp_month) < (today.year, today.month):
        # A card is good through the last day of its expiry month.
        problems.add("payment_method.exp_year", "the card has expired")
    if not _CVC.fullmatch(card.cvc):
        problems.add("payment_method.cvc", "must be 3 or 4 digits")
    return Card(brand(digits), digits[-4:], DECLINES.get(digits, ""))


def check_charge(order: ChargeOrder, today: date) -> Charge:
    """Raises INVALID_ARGUMENT naming every bad field; else the charge to make."""
    problems = Violations()
    _check_idempotency_key(order.idempotency_key, problems)
    payer = _parse_id(order.user_id, "user_id", problems)
    if order.amount is None:
        problems.add("amount", "is required")
    else:
        if order.amount.minor <= 0:
            problems.add("amount.amount_minor", "must be positive")
        if not is_currency(order.amount.currency):
            problems.add("amount.currency_code", "must be an active ISO-4217 currency code")
    card = None
    if order.card is None:
        problems.add("payment_method", "is required")
    else:
        card = _check_card(order.card, today, problems)
    problems.raise_if_any()
    assert payer is not None and order.amount is not None and card is not None
    return Charge(order.idempotency_key, payer, order.amount, card, order.reference)


def process(charge: Charge, payment_id: uuid.UUID, now: datetime) -> Payment:
    """The processor's answer to a checked charge: paid, or declined with a code."""
    return Payment(
        payment_id=payment_id,
        idempotency_key=charge.idempotency_key,
        user_id=charge.payer,
        reference=charge.reference,
        amount_minor=charge.amount.minor,
        currency=charge.amount.currency,
        state=State.DECLINED if charge.card.decline_code else State.SUCCEEDED,
        card_brand=charge.card.brand,
        card_last4=charge.card.last4,
        decline_code=charge.card.decline_code,
        refunded_minor=0,
        create_time=now,
        update_time=now,
    )


def ensure_same_charge(stored: Payment, charge: Charge) -> None:
    """A retry must ask for what the first call asked for, or it is a different charge
    that reused the key by mistake; answering it with the old payment would hide that."""
    if (stored.user_id, stored.amount_minor, stored.currency) != (
        charge.payer,
        charge.amount.minor,
        charge.amount.currency,
    ):
        raise key_reused("charge", stored.payment_id)


def check_refund(idempotency_key: str, payment_id: str) -> uuid.UUID:
    """Raises INVALID_ARGUMENT naming every bad field; else the payment to refund."""
    problems = Violations()
    _check_idempotency_key(idempotency_key, problems)
    target = _parse_id(payment_id, "payment_id", problems)
    problems.raise_if_any()
    assert target is not None
    return target


def has_money_to_refund(payment: Payment) -> bool:
    """True if a refund would give money back; False if it has been given back already.

    Refunds are always of the whole amount, so a second refund (under another key)
    finds nothing left and changes nothing. A declined payment never took any money.
    """
    if payment.state is State.DECLINED:
        raise FailedPrecondition(
            "PAYMENT_NOT_REFUNDABLE",
            "a declined payment took no money",
            {"payment_id": str(payment.payment_id)},
        )
    return payment.state is State.SUCCEEDED


def key_reused(what: str, payment_id: uuid.UUID) -> FailedPrecondition:
    return FailedPrecondition(
        "IDEMPOTENCY_KEY_REUSED",
        f"this idempotency key was used for a different {what}",
        {"payment_id": str(payment_id)},
    )


def _check_idempotency_key(key: str, problems: Violations) -> None:
    if not key:
        problems.add("idempotency_key", "is required")
    elif len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        problems.add("idempotency_key", f"must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters")


def _parse_id(raw: str, name: str, problems: Violations) -> uuid.UUID | None:
    if not raw:
        problems.add(name, "is required")
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        problems.add(name, "is not a valid id")
        return None
