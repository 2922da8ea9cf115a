"""Every branch of the booking saga, in-process on the fakes of tests/fakes.py:
create, cancel and the sweep, through declines, unknown outcomes, lost holds,
unsettled refunds and concurrent retries. Each test checks the invariants that
matter to a buyer: no seat held by a settled booking, no money kept without a
ticket, no ticket without money, and exactly one announcement per settlement.
(tests/integration/test_booking_faults.py runs a few of these end to end.)"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from booking import domain
from booking.domain import State
from booking.gateways import Card, PaymentState
from booking.service import BookingUseCases
from runtime.errors import (
    Conflict,
    FailedPrecondition,
    Invalid,
    NotFound,
    ServiceError,
    Unavailable,
)
from runtime.identity import Caller, Role
from runtime.retry import RetryPolicy
from tests.fakes import FakeLedger, FakePayments, FakeSeatHolds

HOLD_TTL_SECONDS = 300
# Retry windows of a moment and pauses of milliseconds: the tests run at the
# speed of the code, and an outage (a fault added with times=None) outlasts
# every window until it is cleared.
RETRY = RetryPolicy(
    call_timeout_seconds=1,
    retry_window_seconds=0.1,
    first_backoff_seconds=0.005,
    max_backoff_seconds=0.01,
    retry_reply_seconds=0.2,
)
PAYS = Card("4242424242424242", 12, 2099, "123")
DECLINED = Card("4000000000000002", 12, 2099, "123")
UNAVAILABLE = Unavailable("UNAVAILABLE", "the service is away")


class Saga:
    def __init__(self) -> None:
        self.seats = FakeSeatHolds()
        self.payments = FakePayments()
        self.ledger = FakeLedger()
        self.bookings = BookingUseCases(
            self.ledger, self.seats, self.payments, HOLD_TTL_SECONDS, RETRY, sweep_grace_seconds=1
        )
        self.event_id = self.seats.add_event()
        self.buyer = Caller(str(uuid.uuid4()), Role.USER, "fan@example.com")

    async def book(
        self,
        seat_ids: list[str],
        card: Card = PAYS,
        request_id: str | None = None,
        event_id: str | None = None,
    ) -> Any:
        return await self.bookings.create(
            self.buyer,
            event_id or self.event_id,
            seat_ids,
            card,
            request_id if request_id is not None else str(uuid.uuid4()),
        )

    async def refused(self, call: Awaitable[Any]) -> ServiceError:
        with pytest.raises(ServiceError) as caught:
            await call
        return caught.value

    async def sweep_later(self, booking_id: uuid.UUID) -> None:
        """The sweep, once the booking's hold and saga are surely over."""
        self.ledger.age(booking_id, HOLD_TTL_SECONDS + RETRY.saga_budget_seconds + 2)
        await self.bookings.sweep()

    def state(self, booking_id: uuid.UUID) -> State:
        return self.ledger.bookings[booking_id].state

    def assert_settled_cleanly(self, booking_id: uuid.UUID) -> None:
        """Settled, announced once, nothing held; seats sold iff money is kept."""
        booking = self.ledger.bookings[booking_id]
        assert booking.state is not State.PENDING
        assert self.seats.held_by(str(booking_id)) == set()
        payment = self.payments.payment_for(booking_id)
        kept = payment is not None and payment.state is PaymentState.SUCCEEDED
        assert kept == (booking.state is State.CONFIRMED)
        assert (self.seats.sold_to(booking_id) == set(booking.seat_ids)) == kept
        assert [a for a in self.ledger.announced() if a[1] == booking_id] == [
            (
                {"CONFIRMED": "Confirmed", "FAILED": "Failed", "CANCELLED": "Cancelled"}[
                    booking.state.name
                ],
                booking_id,
            )
        ]


def saga_test(test: Callable[[Saga], Awaitable[None]]) -> Callable[[], None]:
    def run() -> None:
        asyncio.run(test(Saga()))

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


@saga_test
async def test_a_paid_booking_is_sold_and_announced_once(saga: Saga) -> None:
    booking = await saga.book(["vip-1-1", "standard-2-3"])
    assert booking.state is State.CONFIRMED
    assert booking.total_minor == 20000 and booking.currency == "USD"
    assert saga.payments.payment_for(booking.booking_id).state is PaymentState.SUCCEEDED
    assert saga.payments.charge_calls == 1
    assert saga.seats.calls == ["hold", "confirm"]
    saga.assert_settled_cleanly(booking.booking_id)


@saga_test
async def test_a_decline_fails_the_booking_and_frees_the_seats_at_once(saga: Saga) -> None:
    error = await saga.refused(saga.book(["vip-1-1"], card=DECLINED))
    assert isinstance(error, FailedPrecondition) and error.reason == "PAYMENT_DECLINED"
    booking_id = uuid.UUID(error.metadata["booking_id"])
    assert saga.ledger.bookings[booking_id].failure_reason == "card_declined"
    assert saga.seats.calls == ["hold", "release"]
    saga.assert_settled_cleanly(booking_id)
    # A retry of the same request answers the same way, and charges nothing more.
    request_id = saga.ledger.bookings[booking_id].request_id
    again = await saga.refused(saga.book(["vip-1-1"], card=DECLINED, request_id=request_id))
    assert again == error and saga.payments.charge_calls == 1


@saga_test
async def test_bad_card_data_leaves_no_trace(saga: Saga) -> None:
    error = await saga.refused(saga.book(["vip-1-1"], card=Card("42x", 12, 2099, "123")))
    assert isinstance(error, Invalid)
    assert saga.ledger.bookings == {} and saga.ledger.outbox == []
    assert saga.seats.holders == {}


@saga_test
async def test_a_taken_seat_is_a_conflict_and_records_nothing(saga: Saga) -> None:
    await saga.book(["vip-1-1"])
    error = await saga.refused(saga.book(["vip-1-1", "vip-1-2"]))
    assert isinstance(error, Conflict) and error.reason == "SEAT_UNAVAILABLE"
    assert len(saga.ledger.bookings) == 1 and saga.seats.held_by("") == set()


@saga_test
async def test_an_unreachable_event_service_is_unavailable(saga: Saga) -> None:
    saga.seats.faults.add("hold", UNAVAILABLE, times=None)
    error = await saga.refused(saga.book(["vip-1-1"]))
    assert isinstance(error, Unavailable) and error.reason == "EVENT_SERVICE_UNAVAILABLE"
    assert saga.ledger.bookings == {}


@saga_test
async def test_an_event_service_restarting_within_the_window_costs_nothing(saga: Saga) -> None:
    saga.seats.faults.add("hold", UNAVAILABLE, times=3)
    saga.seats.faults.add("confirm", UNAVAILABLE, times=3)
    booking = await saga.book(["vip-1-1"])
    assert booking.state is State.CONFIRMED
    assert saga.seats.calls == ["hold"] * 4 + ["confirm"] * 4
    saga.assert_settled_cleanly(booking.booking_id)


@saga_test
async def test_a_refusal_of_the_event_service_passes_on_as_it_was(saga: Saga) -> None:
    started = saga.seats.add_event(starts_in=timedelta(days=-1))
    saga.seats.faults.add(
        "hold", FailedPrecondition("EVENT_STARTED", "the event has started", {"event_id": started})
    )
    error = await saga.refused(saga.book(["vip-1-1"], event_id=started))
    assert isinstance(error, FailedPrecondition) and error.reason == "EVENT_STARTED"
    missing = await saga.refused(saga.book(["vip-1-1"], event_id=str(uuid.uuid4())))
    assert isinstance(missing, NotFound) and missing.reason == "EVENT_NOT_FOUND"


@saga_test
async def test_a_charge_is_retried_through_a_blip_with_the_same_key(saga: Saga) -> None:
    saga.payments.faults.add("charge", UNAVAILABLE)  # the first try never reached it
    booking = await saga.book(["vip-1-1"])
    assert booking.state is State.CONFIRMED
    assert saga.payments.charge_calls == 2 and len(saga.payments.by_key) == 1
    saga.assert_settled_cleanly(booking.booking_id)


@saga_test
async def test_an_unknown_charge_outcome_is_settled_by_the_sweep_as_a_sale(saga: Saga) -> None:
    """The money was taken, every answer lost: PENDING, then the sweep sells."""
    saga.payments.faults.add("charge", UNAVAILABLE, times=None, after_effect=True)
    error = await saga.refused(saga.book(["vip-1-1", "vip-1-2"]))
    assert isinstance(error, Unavailable) and error.reason == "BOOKING_PENDING"
    booking_id = uuid.UUID(error.metadata["booking_id"])
    assert saga.state(booking_id) is State.PENDING
    assert saga.seats.held_by(str(booking_id)) == {"vip-1-1", "vip-1-2"}
    await saga.bookings.sweep()
    assert saga.state(booking_id) is State.PENDING, "the sweep must not race a live saga"
    await saga.sweep_later(booking_id)
    assert saga.state(booking_id) is State.CONFIRMED
    saga.assert_settled_cleanly(booking_id)


@saga_test
async def test_a_charge_that_never_arrived_frees_the_seats_in_the_sweep(saga: Saga) -> None:
    saga.payments.faults.add("charge", UNAVAILABLE, times=None)
    error = await saga.refused(saga.book(["vip-1-1"]))
    booking_id = uuid.UUID(error.metadata["booking_id"])
    await saga.sweep_later(booking_id)
    assert saga.ledger.bookings[booking_id].failure_reason == "abandoned"
    saga.assert_settled_cleanly(booking_id)


@saga_test
async def test_an_unknown_sale_outcome_is_settled_by_the_sweep(saga: Saga) -> None:
    saga.seats.faults.add("confirm", UNAVAILABLE, times=None, after_effect=True)
    error = await saga.refused(saga.book(["vip-1-1"]))
    assert error.reason == "BOOKING_PENDING"
    booking_id = uuid.UUID(error.metadata["booking_id"])
    saga.seats.faults.clear("confirm")
    await saga.sweep_later(booking_id)  # the sale went through: a retry of it is a no-op
    assert saga.state(booking_id) is State.CONFIRMED
    saga.assert_settled_cleanly(booking_id)


@saga_test
async def test_a_lost_hold_is_held_again_and_sold_with_a_new_fence(saga: Saga) -> None:
    saga.payments.faults.add("charge", UNAVAILABLE, times=None, after_effect=True)
    error = await saga.refused(saga.book(["vip-2-1"]))
    booking_id = uuid.UUID(error.metadata["booking_id"])
    first_fence = saga.ledger.bookings[booking_id].fencing_token
    saga.seats.lapse(saga.event_id, ["vip-2-1"])  # while the outcome was unknown
    await saga.sweep_later(booking_id)
    assert saga.state(booking_id) is State.CONFIRMED
    assert saga.ledger.bookings[booking_id].fencing_token > first_fence
    assert saga.seats.fences[(saga.event_id, "vip-2-1")] > first_fence
    saga.assert_settled_cleanly(booking_id)


@saga_test
async def test_a_lost_hold_on_a_seat_sold_meanwhile_is_refunded(saga: Saga) -> None:
    saga.payments.faults.add("charge", UNAVAILABLE, times=None, after_effect=True)
    error = await saga.refused(saga.book(["vip-2-1"]))
    booking_id = uuid.UUID(error.metadata["booking_id"])
    saga.seats.lapse(saga.event_id, ["vip-2-1"])
    saga.payments.faults.clear("charge")
    rival = await saga.book(["vip-2-1"])  # someone else buys the seat meanwhile
    await saga.sweep_later(booking_id)
    booking = saga.ledger.bookings[booking_id]
    assert (booking.state, booking.failure_reason) == (State.FAILED, "seats_unavailable")
    assert saga.payments.payment_for(booking_id).state is PaymentState.REFUNDED
    saga.assert_settled_cleanly(booking_id)
    saga.assert_settled_cleanly(rival.booking_id)


@saga_test
async def test_a_refund_not_through_yet_is_finished_by_the_next_sweep(saga: Saga) -> None:
    saga.payments.faults.add("charge", UNAVAILABLE, times=None, after_effect=True)
    error = await saga.refused(saga.book(["vip-2-2"]))
    booking_id = uuid.UUID(error.metadata["booking_id"])
    saga.seats.lapse(saga.event_id, ["vip-2-2"])
    saga.payments.faults.clear("charge")
    await saga.book(["vip-2-2"])
    saga.payments.faults.add("refund", UNAVAILABLE, times=None)
    await saga.sweep_later(booking_id)
    assert saga.state(booking_id) is State.PENDING  # money taken, not yet given back
    saga.payments.faults.clear("refund")
    await saga.sweep_later(booking_id)
    assert saga.state(booking_id) is State.FAILED
    saga.assert_settled_cleanly(booking_id)


@saga_test
async def test_a_cancellation_refunds_returns_the_seats_and_announces_once(saga: Saga) -> None:
    booking = await saga.book(["vip-1-3", "standard-1-1"])
    cancelled = await saga.bookings.cancel(saga.buyer, str(booking.booking_id))
    assert cancelled.state is State.CANCELLED
    assert saga.payments.payment_for(booking.booking_id).state is PaymentState.REFUNDED
    assert saga.seats.sold_to(booking.booking_id) == set()
    [(kind, _), (cancel_kind, _)] = saga.ledger.announced()
    assert (kind, cancel_kind) == ("Confirmed", "Cancelled")
    assert saga.ledger.outbox[-1].refunded_minor == 20000
    again = await saga.refused(saga.bookings.cancel(saga.buyer, str(booking.booking_id)))
    assert again.reason == "BOOKING_NOT_CANCELLABLE"
    # The seats are on sale again.
    assert (await saga.book(["vip-1-3"])).state is State.CONFIRMED


@saga_test
async def test_a_cancellation_whose_refund_is_unsettled_is_finished_by_the_sweep(
    saga: Saga,
) -> None:
    booking = await saga.book(["vip-1-4"])
    saga.payments.faults.add("refund", UNAVAILABLE, times=None, after_effect=True)
    error = await saga.refused(saga.bookings.cancel(saga.buyer, str(booking.booking_id)))
    assert isinstance(error, Unavailable) and error.reason == "BOOKING_PENDING"
    assert saga.state(booking.booking_id) is State.CONFIRMED
    assert saga.seats.sold_to(booking.booking_id) == {"vip-1-4"}
    saga.payments.faults.clear("refund")
    await saga.sweep_later(booking.booking_id)
    assert saga.state(booking.booking_id) is State.CANCELLED
    assert saga.seats.sold_to(booking.booking_id) == set()
    assert [kind for kind, _ in saga.ledger.announced()] == ["Confirmed", "Cancelled"]
    assert len(saga.payments.refund_keys) == 1, "the retried refund is the same refund"


@saga_test
async def test_an_event_service_restarting_during_a_cancellation_costs_nothing(
    saga: Saga,
) -> None:
    booking = await saga.book(["vip-1-5"])
    # The first try's answer is lost after it took effect, the next never arrives:
    # the return is retried within the window, as the refund before it is.
    saga.seats.faults.add("return_seats", UNAVAILABLE, after_effect=True)
    saga.seats.faults.add("return_seats", UNAVAILABLE, times=2)
    cancelled = await saga.bookings.cancel(saga.buyer, str(booking.booking_id))
    assert cancelled.state is State.CANCELLED
    assert saga.seats.calls.count("return_seats") == 4
    assert saga.seats.sold_to(booking.booking_id) == set()
    assert saga.payments.payment_for(booking.booking_id).state is PaymentState.REFUNDED
    assert [kind for kind, _ in saga.ledger.announced()] == ["Confirmed", "Cancelled"]


@saga_test
async def test_a_started_event_cannot_be_cancelled(saga: Saga) -> None:
    booking = await saga.book(["vip-1-1"])
    started = dataclasses.replace(booking.event, starts_at=datetime.now(UTC) - timedelta(hours=1))
    saga.ledger.bookings[booking.booking_id] = dataclasses.replace(booking, event=started)
    error = await saga.refused(saga.bookings.cancel(saga.buyer, str(booking.booking_id)))
    assert isinstance(error, FailedPrecondition) and error.reason == "EVENT_STARTED"
    assert saga.payments.payment_for(booking.booking_id).state is PaymentState.SUCCEEDED
    assert saga.ledger.cancel_requested == set()


@saga_test
async def test_a_request_id_used_for_another_event_is_refused(saga: Saga) -> None:
    first = await saga.book(["vip-1-1"], request_id="order-1")
    other = saga.seats.add_event()
    error = await saga.refused(saga.book(["vip-1-1"], request_id="order-1", event_id=other))
    assert isinstance(error, FailedPrecondition) and error.reason == "REQUEST_ID_REUSED"
    assert error.metadata == {"booking_id": str(first.booking_id)}
    assert saga.payments.charge_calls == 1


@saga_test
async def test_a_retry_of_a_settled_request_replays_it(saga: Saga) -> None:
    first = await saga.book(["vip-1-1"], request_id="order-2")
    again = await saga.book(["vip-1-1"], request_id="order-2")
    assert again == first and saga.payments.charge_calls == 1
    assert saga.seats.calls == ["hold", "confirm"]


@saga_test
async def test_concurrent_retries_of_one_request_are_one_booking_and_one_charge(
    saga: Saga,
) -> None:
    saga.payments.gate = asyncio.Event()  # the first attempt waits in the charge
    first = asyncio.create_task(saga.book(["vip-1-1", "vip-1-2"], request_id="order-3"))
    await saga.payments.charging.wait()
    # The retry finds the booking PENDING, and its seats held by that very booking.
    reads = saga.ledger.reads
    retry = asyncio.create_task(saga.book(["vip-1-1", "vip-1-2"], request_id="order-3"))
    while saga.ledger.reads < reads + 1:  # noqa: ASYNC110 - the fake signals nothing
        await asyncio.sleep(0.001)
    await asyncio.sleep(0)
    assert not retry.done(), "the retry must join the first attempt, not answer PENDING"
    saga.payments.gate.set()
    confirmed, replayed = await asyncio.gather(first, retry)
    assert confirmed == replayed and confirmed.state is State.CONFIRMED
    assert saga.payments.charge_calls == 1 and len(saga.ledger.bookings) == 1
    saga.assert_settled_cleanly(confirmed.booking_id)


@saga_test
async def test_a_retry_racing_its_own_sale_replays_instead_of_conflicting(saga: Saga) -> None:
    """The retry's hold is refused because its own first attempt sold the seats."""
    first = await saga.book(["vip-1-5"], request_id="order-4")
    saga.ledger.bookings.pop(first.booking_id)
    original_get = saga.ledger.get
    looked = 0

    async def get_late(booking_id: uuid.UUID) -> Any:
        nonlocal looked
        looked += 1
        if looked == 2:  # by the time the hold is refused, the booking is there
            await saga.ledger.add(first)
        return await original_get(booking_id)

    saga.ledger.get = get_late  # type: ignore[method-assign]
    assert await saga.book(["vip-1-5"], request_id="order-4") == first


@saga_test
async def test_too_expensive_a_booking_is_refused_and_its_seats_freed(saga: Saga) -> None:
    saga.seats.prices["vip"] = (2, domain.MAX_TOTAL_MINOR + 1)  # priced before today's cap
    error = await saga.refused(saga.book(["vip-1-1"]))
    assert isinstance(error, Invalid) and "seat_ids" in {v.field for v in error.violations}
    assert saga.seats.holders == {} and saga.ledger.bookings == {}


# -- resuming: a retry drives a PENDING booking on, and answers fast -------------


async def settled(saga: Saga, booking_id: uuid.UUID) -> State:
    """The booking's state once a run still going in the background has ended."""
    for _ in range(1000):
        if saga.state(booking_id) is not State.PENDING:
            return saga.state(booking_id)
        await asyncio.sleep(0.001)
    raise AssertionError(f"{booking_id} still PENDING")


@saga_test
async def test_a_payment_outage_within_the_window_costs_the_buyer_nothing(saga: Saga) -> None:
    saga.payments.faults.add("charge", UNAVAILABLE, times=4)
    booking = await saga.book(["vip-1-1"])
    assert booking.state is State.CONFIRMED
    assert saga.payments.charge_calls == 5 and len(saga.payments.by_key) == 1
    saga.assert_settled_cleanly(booking.booking_id)


@saga_test
async def test_a_retry_resumes_a_booking_whose_charge_never_arrived(saga: Saga) -> None:
    saga.payments.faults.add("charge", UNAVAILABLE, times=None)
    error = await saga.refused(saga.book(["vip-1-1"], request_id="order-5"))
    assert error.reason == "BOOKING_PENDING" and error.metadata["retry_after_seconds"] == "1"
    booking_id = uuid.UUID(error.metadata["booking_id"])
    assert saga.seats.held_by(str(booking_id)) == {"vip-1-1"}, "the hold is still its own"
    saga.payments.faults.clear("charge")  # payment is back
    resumed = await saga.book(["vip-1-1"], request_id="order-5")
    assert resumed.booking_id == booking_id and resumed.state is State.CONFIRMED
    assert saga.seats.calls.count("hold") == 1, "resumed with its own hold"
    saga.assert_settled_cleanly(booking_id)


@saga_test
async def test_a_retry_resumes_a_paid_booking_without_a_second_charge(saga: Saga) -> None:
    saga.payments.faults.add("charge", UNAVAILABLE, times=None, after_effect=True)
    error = await saga.refused(saga.book(["vip-1-1", "vip-1-2"], request_id="order-6"))
    booking_id = uuid.UUID(error.metadata["booking_id"])
    saga.payments.faults.clear("charge")
    resumed = await saga.book(["vip-1-1", "vip-1-2"], request_id="order-6")
    assert resumed.state is State.CONFIRMED and len(saga.payments.by_key) == 1
    saga.assert_settled_cleanly(booking_id)
    # Settled: later retries replay it without calling anyone.
    calls = len(saga.seats.calls), saga.payments.charge_calls
    assert await saga.book(["vip-1-1", "vip-1-2"], request_id="order-6") == resumed
    assert (len(saga.seats.calls), saga.payments.charge_calls) == calls


@saga_test
async def test_a_retry_answers_pending_fast_and_the_run_goes_on(saga: Saga) -> None:
    saga.payments.faults.add("charge", UNAVAILABLE, times=None)
    error = await saga.refused(saga.book(["vip-1-1"], request_id="order-7"))
    booking_id = uuid.UUID(error.metadata["booking_id"])
    saga.payments.faults.clear("charge")
    saga.payments.gate = asyncio.Event()  # the resumed charge hangs
    loop = asyncio.get_running_loop()
    started = loop.time()
    again = await saga.refused(saga.book(["vip-1-1"], request_id="order-7"))
    waited = loop.time() - started
    assert again.reason == "BOOKING_PENDING" and again.metadata["booking_id"] == str(booking_id)
    assert RETRY.retry_reply_seconds <= waited < RETRY.retry_reply_seconds + 0.5
    saga.payments.gate.set()  # the run the retry started finishes on its own
    assert await settled(saga, booking_id) is State.CONFIRMED
    saga.assert_settled_cleanly(booking_id)


@saga_test
async def test_a_retry_never_answers_a_pending_body(saga: Saga) -> None:
    """Another process drives the booking (the lease is not ours): the retry
    waits moments for its outcome, then says BOOKING_PENDING."""
    saga.payments.faults.add("charge", UNAVAILABLE, times=None)
    error = await saga.refused(saga.book(["vip-1-1"], request_id="order-8"))
    booking_id = uuid.UUID(error.metadata["booking_id"])
    lease = saga.ledger.lease

    async def touched_meanwhile(booking_id: uuid.UUID, seen: datetime) -> Any:
        saga.ledger.age(booking_id, -1)  # another replica leased it just now
        return await lease(booking_id, seen)

    saga.ledger.lease = touched_meanwhile  # type: ignore[method-assign]
    again = await saga.refused(saga.book(["vip-1-1"], request_id="order-8"))
    assert again.reason == "BOOKING_PENDING" and saga.state(booking_id) is State.PENDING


@saga_test
async def test_two_replicas_driving_one_booking_reach_one_end(saga: Saga) -> None:
    """The first attempt runs on one replica, the buyer's retry lands on another:
    one payment, the seats sold once, one announcement."""
    replica = BookingUseCases(
        saga.ledger, saga.seats, saga.payments, HOLD_TTL_SECONDS, RETRY, sweep_grace_seconds=1
    )
    saga.payments.gate = asyncio.Event()
    first = asyncio.create_task(saga.book(["vip-1-1"], request_id="order-9"))
    await saga.payments.charging.wait()
    retry = asyncio.create_task(
        replica.create(saga.buyer, saga.event_id, ["vip-1-1"], PAYS, "order-9")
    )
    while saga.payments.charge_calls < 2:  # noqa: ASYNC110 - the fake signals nothing
        await asyncio.sleep(0.001)
    saga.payments.gate.set()
    one, other = await asyncio.gather(first, retry)
    assert one.state is other.state is State.CONFIRMED and one.booking_id == other.booking_id
    assert len(saga.payments.by_key) == 1
    saga.assert_settled_cleanly(one.booking_id)


@saga_test
async def test_a_hold_lost_during_the_charge_is_taken_again_in_the_same_run(saga: Saga) -> None:
    """Redis forgot the hold (or it lapsed) while the charge was in flight: the
    seats are still free, so the paid buyer gets them, not a refund."""
    saga.payments.gate = asyncio.Event()
    booking = asyncio.create_task(saga.book(["vip-2-3"]))
    await saga.payments.charging.wait()
    saga.seats.lapse(saga.event_id, ["vip-2-3"])
    saga.payments.gate.set()
    done = await booking
    assert done.state is State.CONFIRMED and saga.seats.calls == [
        "hold",
        "confirm",
        "hold",
        "confirm",
    ]
    saga.assert_settled_cleanly(done.booking_id)


@saga_test
async def test_seats_lost_to_another_buyer_are_all_freed_at_once(saga: Saga) -> None:
    """One seat of two went to a rival while the charge was in flight: the other
    is released in the same run (not left HELD for the TTL), the money refunded."""
    saga.payments.gate = asyncio.Event()
    booking = asyncio.create_task(saga.book(["vip-2-4", "vip-2-5"]))
    await saga.payments.charging.wait()
    saga.seats.lapse(saga.event_id, ["vip-2-4"])
    saga.seats.holders[(saga.event_id, "vip-2-4")] = "a rival"
    saga.payments.gate.set()
    error = await saga.refused(booking)
    assert error.reason == "BOOKING_FAILED" and error.metadata["failure_reason"] == (
        "seats_unavailable"
    )
    booking_id = uuid.UUID(error.metadata["booking_id"])
    assert saga.payments.payment_for(booking_id).state is PaymentState.REFUNDED
    assert saga.seats.holders == {(saga.event_id, "vip-2-4"): "a rival"}
    saga.assert_settled_cleanly(booking_id)


@saga_test
async def test_a_failed_release_is_retried_so_a_declined_sale_frees_its_seats(
    saga: Saga,
) -> None:
    saga.seats.faults.add("release", UNAVAILABLE, times=2)
    error = await saga.refused(saga.book(["vip-1-1"], card=DECLINED))
    assert error.reason == "PAYMENT_DECLINED"
    assert saga.seats.holders == {}
    saga.assert_settled_cleanly(uuid.UUID(error.metadata["booking_id"]))


@saga_test
async def test_the_sweep_settles_a_paid_booking_while_its_hold_lasts(saga: Saga) -> None:
    saga.payments.faults.add("charge", UNAVAILABLE, times=None, after_effect=True)
    error = await saga.refused(saga.book(["vip-1-1"]))
    booking_id = uuid.UUID(error.metadata["booking_id"])
    saga.ledger.age(booking_id, RETRY.saga_budget_seconds + 1.5)  # the budget and grace
    await saga.bookings.sweep()
    assert saga.state(booking_id) is State.CONFIRMED
    assert saga.seats.calls == ["hold", "confirm"], "sold on its own hold, none taken again"
    saga.assert_settled_cleanly(booking_id)


@saga_test
async def test_a_draining_service_finishes_the_runs_its_requests_let_go(saga: Saga) -> None:
    saga.payments.faults.add("charge", UNAVAILABLE, times=None)
    error = await saga.refused(saga.book(["vip-1-1"], request_id="order-10"))
    booking_id = uuid.UUID(error.metadata["booking_id"])
    saga.payments.faults.clear("charge")
    saga.payments.gate = asyncio.Event()
    working = saga.bookings.working(3600)
    await working.__aenter__()
    await saga.refused(saga.book(["vip-1-1"], request_id="order-10"))  # answered PENDING
    stopping = asyncio.create_task(working.__aexit__(None, None, None))
    await asyncio.sleep(0.01)
    assert not stopping.done(), "stopped with a booking still settling"
    saga.payments.gate.set()
    await stopping
    assert saga.state(booking_id) is State.CONFIRMED
    saga.assert_settled_cleanly(booking_id)


# -- booking from a hold (CreateHold, then CreateBooking with hold_id) ------------


async def buy_hold(saga: Saga, hold_id: str, card: Card = PAYS, event_id: str = "") -> Any:
    return await saga.bookings.create(saga.buyer, event_id, [], card, str(uuid.uuid4()), hold_id)


@saga_test
async def test_a_hold_is_bought_exactly_and_sold_with_its_own_tokens(saga: Saga) -> None:
    hold_id = saga.seats.add_hold(saga.event_id, ["vip-1-1", "standard-1-2"], saga.buyer.user_id)
    booking = await buy_hold(saga, hold_id)
    assert booking.state is State.CONFIRMED
    assert booking.seat_ids == ["vip-1-1", "standard-1-2"]
    assert booking.owner_token == f"hold:{hold_id}"
    assert saga.seats.sold_to(booking.booking_id) == {"vip-1-1", "standard-1-2"}
    assert "hold" not in saga.seats.calls  # no second hold of its own
    again = await saga.refused(buy_hold(saga, hold_id))
    assert again.reason == "HOLD_USED"
    assert saga.payments.charge_calls == 1


@pytest.mark.parametrize("why", ["foreign", "expired", "unknown", "other event"])
def test_a_hold_that_cannot_be_bought_charges_nothing(why: str) -> None:
    async def run(saga: Saga) -> None:
        owner = str(uuid.uuid4()) if why == "foreign" else saga.buyer.user_id
        hold_id = saga.seats.add_hold(saga.event_id, ["vip-1-3"], owner)
        if why == "expired":
            saga.seats.lapse(saga.event_id, ["vip-1-3"])
        if why == "unknown":
            hold_id = str(uuid.uuid4())
        other = saga.seats.add_event() if why == "other event" else ""
        refused = await saga.refused(buy_hold(saga, hold_id, event_id=other))
        expected = {
            "foreign": "HOLD_NOT_FOUND",
            "unknown": "HOLD_NOT_FOUND",
            "expired": "HOLD_EXPIRED",
            "other event": "INVALID_ARGUMENT",
        }
        assert refused.reason == expected[why]
        assert saga.payments.charge_calls == 0 and saga.ledger.bookings == {}

    asyncio.run(run(Saga()))


@saga_test
async def test_a_declined_hold_purchase_lets_its_seats_go(saga: Saga) -> None:
    hold_id = saga.seats.add_hold(saga.event_id, ["vip-2-1"], saga.buyer.user_id)
    refused = await saga.refused(buy_hold(saga, hold_id, DECLINED))
    assert refused.reason == "PAYMENT_DECLINED"
    assert saga.seats.held_by(f"hold:{hold_id}") == set()


@pytest.mark.parametrize("taken_meanwhile", [False, True])
def test_a_hold_that_lapses_while_its_booking_pays(taken_meanwhile: bool) -> None:
    """The saga's rules decide: the seats are held again (under the hold's owner
    token) and sold if still free; refunded if someone took them meanwhile."""

    async def run(saga: Saga) -> None:
        hold_id = saga.seats.add_hold(saga.event_id, ["vip-1-5"], saga.buyer.user_id)
        saga.payments.gate = asyncio.Event()
        buying = asyncio.ensure_future(buy_hold(saga, hold_id))
        await saga.payments.charging.wait()
        saga.seats.lapse(saga.event_id, ["vip-1-5"])  # the countdown ran out mid-payment
        if taken_meanwhile:
            await saga.seats.hold(saga.event_id, ["vip-1-5"], "someone-else", 300)
        saga.payments.gate.set()
        if taken_meanwhile:
            refused = await saga.refused(buying)
            assert refused.reason == "BOOKING_FAILED"
        else:
            assert (await buying).state is State.CONFIRMED
        [booking] = saga.ledger.bookings.values()
        saga.assert_settled_cleanly(booking.booking_id)
        assert saga.seats.held_by(f"hold:{hold_id}") == set()
        payment = saga.payments.payment_for(booking.booking_id)
        assert payment is not None
        assert (payment.state is PaymentState.REFUNDED) == taken_meanwhile
        assert saga.seats.sold_to(booking.booking_id) == (set() if taken_meanwhile else {"vip-1-5"})

    asyncio.run(run(Saga()))
