"""The booking service's settings, read and checked once at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.config import (
    Env,
    Settings,
    common,
    grpc_target,
    hold_ttl_seconds,
    require_verified_email,
    retry_policy,
    ticket_keys_dir,
)
from runtime.retry import RetryPolicy


@dataclass(frozen=True)
class BookingSettings(Settings):
    event_target: str
    payment_target: str
    hold_ttl_seconds: int  # as the event service's: the sweep waits for holds to lapse
    retry: RetryPolicy  # Envoy's timeouts for the saga's routes derive from the same
    sweep_grace_seconds: float
    sweep_interval_seconds: float
    event_refund_lease_seconds: float  # a refund's lease; then it is tried again
    event_refund_concurrency: int
    event_refund_batch_size: int
    ticket_keys_dir: Path  # the notification service's: tickets on demand and check-in
    require_verified_email: bool  # CreateBooking refuses EMAIL_NOT_VERIFIED

    @classmethod
    def read(cls, service: str, env: Env) -> BookingSettings:
        settings = cls(
            **common(service, env),
            event_target=grpc_target("event", env),
            payment_target=grpc_target("payment", env),
            hold_ttl_seconds=hold_ttl_seconds(env),
            retry=retry_policy(env),
            sweep_grace_seconds=env.number("SWEEP_GRACE_SECONDS", 30.0, minimum=0),
            sweep_interval_seconds=env.number("SWEEP_INTERVAL_SECONDS", 15.0, above=0),
            event_refund_lease_seconds=env.number("EVENT_REFUND_LEASE_SECONDS", 30.0, above=0),
            event_refund_concurrency=env.integer("EVENT_REFUND_CONCURRENCY", 16, minimum=1),
            event_refund_batch_size=env.integer("EVENT_REFUND_BATCH_SIZE", 64, minimum=1),
            ticket_keys_dir=ticket_keys_dir(env),
            require_verified_email=require_verified_email(env),
        )
        # The sweep must reach a PENDING booking while its hold still lasts, or
        # recovery timing could cost a paid buyer the seat.
        sweep_reach = (
            settings.retry.saga_budget_seconds
            + settings.sweep_grace_seconds
            + settings.sweep_interval_seconds
        )
        if settings.hold_ttl_seconds <= sweep_reach:
            env.refuse(
                "HOLD_TTL_SECONDS",
                f"must be more than {sweep_reach:g} (the saga's budget, SWEEP_GRACE_SECONDS "
                "and SWEEP_INTERVAL_SECONDS), so the sweep settles a booking before its "
                "hold lapses",
            )
        return settings
