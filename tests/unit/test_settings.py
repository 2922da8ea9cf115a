"""Settings: one typed object per service, checked at start, and the one retry
policy both booking's time budget and Envoy's route timeouts derive from."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from auth.settings import AuthSettings
from booking.settings import BookingSettings
from notification.settings import NotificationSettings
from runtime.config import ConfigError, Env, Settings
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
    # 7 calls of 5 s (hold, 3 charge attempts, sell, hold again, sell), 0.6 s of pauses.
    assert policy.saga_budget_seconds == pytest.approx(35.6)
    assert policy.edge_timeout_seconds == 40 > policy.saga_budget_seconds
    spec = importlib.util.spec_from_file_location("render", REPO / "envoy" / "render.py")
    assert spec and spec.loader
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    create = "/ticketing.booking.v1.BookingService/CreateBooking"
    assert render.route_timeouts()[create] == policy.edge_timeout_seconds
    slower = RetryPolicy(call_timeout_seconds=8, charge_attempts=4)
    assert slower.edge_timeout_seconds > slower.saga_budget_seconds > 8 * 8
    monkeypatch.setenv("DOWNSTREAM_TIMEOUT_SECONDS", "8")
    monkeypatch.setenv("CHARGE_ATTEMPTS", "4")
    assert render.route_timeouts()[create] == slower.edge_timeout_seconds


def test_every_service_has_its_settings_type() -> None:
    for service in ("auth", "booking", "event", "payment", "notification"):
        main = (REPO / service / "__main__.py").read_text()
        assert "cli.main(" in main and "Settings" in main
    assert issubclass(BookingSettings, Settings)
