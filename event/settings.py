"""The event service's settings, read and checked once at start."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.config import Env, Settings, common, hold_ttl_seconds, require_verified_email


@dataclass(frozen=True)
class EventSettings(Settings):
    hold_ttl_seconds: int  # the longest a hold lasts, whatever the caller asks
    availability_cache_seconds: float
    event_cache_seconds: float  # how long another replica's change may go unseen
    require_verified_email: bool  # CreateHold refuses EMAIL_NOT_VERIFIED, as CreateBooking does

    @classmethod
    def read(cls, service: str, env: Env) -> EventSettings:
        return cls(
            **common(service, env),
            hold_ttl_seconds=hold_ttl_seconds(env),
            availability_cache_seconds=env.number("AVAILABILITY_CACHE_SECONDS", 1.0, minimum=0),
            event_cache_seconds=env.number("EVENT_CACHE_SECONDS", 1.0, minimum=0),
            require_verified_email=require_verified_email(env),
        )
