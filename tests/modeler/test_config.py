"""The model configuration file: defaults, and a clear message for each mistake."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from headwater.modeler import ConfigError, Funnel, ModelConfig


def test_the_defaults_are_the_designed_ones() -> None:
    config = ModelConfig.load(None)
    steps = ["page_view", "add_to_cart", "checkout_started", "order_completed"]
    assert config.funnels == [Funnel(name="purchase", steps=steps, window_seconds=86_400)]
    assert (config.retention.day_periods, config.retention.week_periods) == (30, 12)
    assert (config.lookback_days, config.active_window_days) == (3, 90)
    assert config.traits == ["email", "name", "plan", "signed_up_at"]


def test_a_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        'traits = ["email", "plan", "signed_up_at", "company"]\n'
        "[calendar]\nholidays = [2026-12-25]\n"
        '[[funnels]]\nname = "signup"\nsteps = ["visit", "signup"]\nwindow_seconds = 3600\n'
    )
    config = ModelConfig.load(path)
    assert config.traits == ["email", "plan", "signed_up_at", "company"]
    assert config.calendar.holidays == [date(2026, 12, 25)]
    assert config.funnels == [Funnel(name="signup", steps=["visit", "signup"], window_seconds=3600)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lookbak_days = 3\n", "Object contains unknown field `lookbak_days`"),
        ('traits = ["email", "plan"]\n', "traits must include 'signed_up_at' (the marts use it)"),
        ('traits = ["plan", "signed_up_at", "e-mail"]\n', "traits: 'e-mail' is not a column name"),
        ("lookback_days = -1\n", "lookback_days must not be negative"),
        ("[retention]\nday_periods = 0\n", "retention periods must be at least 1"),
        ('[[funnels]]\nname = "a"\nsteps = ["x", "y"]\nwindow_seconds = 0\n',
         "funnel 'a': window_seconds must be positive"),
        ('[[funnels]]\nname = "a"\nsteps = ["x", "y"]\n'
         '[[funnels]]\nname = "a"\nsteps = ["x", "z"]\n',
         "funnels: names must be unique, got ['a', 'a']"),
        ("lookback_days = \n", "Invalid value"),
    ],
)  # fmt: skip
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        ModelConfig.load(path)
    assert str(raised.value).startswith(f"model configuration {path}: ")
    assert message in str(raised.value)
