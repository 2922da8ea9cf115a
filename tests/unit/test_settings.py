"""Settings: one typed object per service, checked at start, and the one retry
policy both booking's time budget and Envoy's route timeouts derive from."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auth.settings import AuthSettings
from booking.settings import BookingSettings
from notification.settings import NotificationSettings
from runtime.config import ConfigError, Env, Settings
from runtime.errors import Conflict, Unavailable
from runtime.retry import RetryPolicy

REPO = Path(__file__).resolve().parents[2]


def test_defaults_need_no_environment() -> None:
    booking = BookingSettings.load("booking", {})
    assert booking.hold_ttl_seconds == 300
    assert booking.retry == RetryPolicy()
    assert booking.event_target == "127.0.0.1:3003"
    notification = NotificationSettings.load("notification", {"SMTP_STARTTLS": "yes"})
    assert notification.mailer.starttls is True and notification.prefetch == 32


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        BookingSettings.load(
            "booking",
            {
                "HOLD_TTL_SECONDS": "five minutes",
                "DOWNSTREAM_TIMEOUT_SECONDS": "0",
                "DB_POOL_SIZE": "-3",
                "EVENT_GRPC_ADDR": "localhost",
                "LOG_LEVEL": "chatty",
            },
        )
    message = str(caught.value)
    for expected in (
        "HOLD_TTL_SECONDS='five minutes' is not a whole number",
        "DOWNSTREAM_TIMEOUT_SECONDS='0' must be more than 0",
        "DB_POOL_SIZE='-3' must be at least 1",
        "EVENT_GRPC_ADDR='localhost' must be host:port",
        "LOG_LEVEL='chatty' must be one of DEBUG, INFO, WARNING, ERROR",
    ):
        assert expected in message


def test_the_default_admin_password_is_refused_outside_development() -> None:
    with pytest.raises(ConfigError, match="ADMIN_PASSWORD is the documented default"):
        AuthSettings.load("auth", {"ENVIRONMENT": "production"})
    chosen = AuthSettings.load("auth", {"ENVIRONMENT": "production", "ADMIN_PASSWORD": "s3cr3t!"})
    assert chosen.admin_password == "s3cr3t!"


def test_flags_and_numbers_are_read_strictly() -> None:
    env = Env({"A": "maybe", "B": "nan", "C": "off"})
    assert env.flag("A", False) is False and env.flag("C", True) is False
    assert env.number("B", 1.0) == 1.0
    with pytest.raises(ConfigError, match=r"A='maybe' must be true or false.*B='nan'"):
        env.check()


def test_a_service_with_a_bad_setting_stops_at_once_naming_it() -> None:
    started = subprocess.run(
        [sys.executable, "-m", "booking"],
        env={**os.environ, "HOLD_TTL_SECONDS": "-1", "SWEEP_INTERVAL_SECONDS": "often"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 1
    assert "booking: bad settings, not starting" in started.stderr
    assert "HOLD_TTL_SECONDS='-1' must be at least 1" in started.stderr
    assert "SWEEP_INTERVAL_SECONDS='often' is not a number" in started.stderr
    assert "Traceback" not in started.stderr


def test_envoy_times_the_saga_routes_by_the_same_retry_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = RetryPolicy()
    # The 10 s retry window, then 7 calls of 5 s (hold, charge, sell, hold again,
    # sell, release, refund).
    assert policy.saga_budget_seconds == pytest.approx(45)
    assert policy.edge_timeout_seconds == 49 > policy.saga_budget_seconds
    spec = importlib.util.spec_from_file_location("render", REPO / "envoy" / "render.py")
    assert spec and spec.loader
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    create = "/ticketing.booking.v1.BookingService/CreateBooking"
    assert render.route_timeouts()[create] == policy.edge_timeout_seconds
    slower = RetryPolicy(call_timeout_seconds=8, retry_window_seconds=20)
    assert slower.edge_timeout_seconds > slower.saga_budget_seconds > 20 + 7 * 8 - 1
    monkeypatch.setenv("DOWNSTREAM_TIMEOUT_SECONDS", "8")
    monkeypatch.setenv("RETRY_WINDOW_SECONDS", "20")
    assert render.route_timeouts()[create] == slower.edge_timeout_seconds


def test_booking_refuses_a_hold_that_lapses_before_the_sweep_comes() -> None:
    env = {"HOLD_TTL_SECONDS": "60", "RETRY_WINDOW_SECONDS": "10", "SWEEP_GRACE_SECONDS": "30"}
    with pytest.raises(ConfigError) as refused:
        BookingSettings.load("booking", env)
    assert "HOLD_TTL_SECONDS must be more than 90" in str(refused.value)
    assert BookingSettings.load("booking", {**env, "HOLD_TTL_SECONDS": "91"}).hold_ttl_seconds


def test_a_retry_waits_through_an_outage_only_within_its_window() -> None:
    policy = RetryPolicy(retry_window_seconds=0.05, first_backoff_seconds=0.01)
    assert [policy.backoff(a) for a in range(5)] == [0.01, 0.02, 0.04, 0.08, 0.16]
    assert RetryPolicy().backoff(10) == RetryPolicy().max_backoff_seconds
    tries = []

    async def away() -> None:
        tries.append(time.monotonic())
        raise Unavailable("UNAVAILABLE", "away")

    async def refused() -> None:
        tries.append(time.monotonic())
        raise Conflict("SEAT_UNAVAILABLE", "taken")

    with pytest.raises(Unavailable):
        asyncio.run(policy.retrying(away, policy.deadline()))
    # Pauses of 0.01 and 0.02 s fit the window, 0.04 more would not (fewer on a slow machine).
    assert 2 <= len(tries) <= 3
    tries.clear()
    with pytest.raises(Conflict):
        asyncio.run(policy.retrying(refused, policy.deadline()))
    assert len(tries) == 1, "a refusal is final"


def test_every_service_has_its_settings_type() -> None:
    for service in ("auth", "booking", "event", "payment", "notification"):
        main = (REPO / service / "__main__.py").read_text()
        assert "cli.main(" in main and "Settings" in main
    assert issubclass(BookingSettings, Settings)
