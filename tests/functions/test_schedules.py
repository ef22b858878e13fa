"""NCRONTAB schedules derived from queryFrequency."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app import schedules
from app.schedules import ScheduleError


def fields(expr: str) -> list[str]:
    return expr.split()


@pytest.mark.parametrize(("freq", "minute", "hour"), [
    (timedelta(minutes=1), "*", "*"), (timedelta(minutes=5), "*/5", "*"),
    (timedelta(minutes=7), "*/6", "*"),     # rounded down to a divisor of the hour
    (timedelta(minutes=30), "*/30", "*"), (timedelta(minutes=59), "*/30", "*"),
])
def test_sub_hour_frequencies(freq: timedelta, minute: str, hour: str) -> None:
    f = fields(schedules.from_frequency(freq, "some-rule"))
    assert (f[1], f[2], f[3:]) == (minute, hour, ["*", "*", "*"])
    assert 0 <= int(f[0]) <= 59


@pytest.mark.parametrize(("freq", "hour"), [(timedelta(hours=1), "*"), (timedelta(hours=2), "*/2"),
                                            (timedelta(hours=5), "*/4"), (timedelta(hours=12), "*/12")])
def test_hour_frequencies_run_at_a_fixed_minute(freq: timedelta, hour: str) -> None:
    f = fields(schedules.from_frequency(freq, "some-rule"))
    assert f[2] == hour and f[1].isdigit() and f[3:] == ["*", "*", "*"]


def test_daily_and_slower_run_once_a_day() -> None:
    for days in (1, 7):
        f = fields(schedules.from_frequency(timedelta(days=days), "some-rule"))
        assert f[2] == "0" and f[1].isdigit() and f[3:] == ["*", "*", "*"]


def test_offsets_are_stable_per_rule_and_spread_between_rules() -> None:
    five = timedelta(minutes=5)
    assert schedules.from_frequency(five, "a-rule") == schedules.from_frequency(five, "a-rule")
    seconds = {fields(schedules.from_frequency(five, f"rule-{i}"))[0] for i in range(20)}
    assert len(seconds) > 5


def test_every_derived_schedule_is_valid_ncrontab() -> None:
    for minutes in range(1, 60 * 48, 7):
        expr = schedules.from_frequency(timedelta(minutes=minutes), f"r{minutes}")
        assert schedules.validate(expr) == expr


def test_sub_minute_frequency_is_refused() -> None:
    with pytest.raises(ScheduleError, match="under a minute"):
        schedules.from_frequency(timedelta(seconds=30), "fast")


def test_validate_accepts_names_lists_and_ranges() -> None:
    assert schedules.validate("0  30  9  *  *  Mon-Fri") == "0 30 9 * * Mon-Fri"
    assert schedules.validate("0 0,15,30,45 * * Jan,Jul *") == "0 0,15,30,45 * * Jan,Jul *"


def test_function_names_are_valid_for_the_host() -> None:
    assert schedules.function_name("consumer-sender-to-shared-mailboxes") == \
        "rule_consumer_sender_to_shared_mailboxes"
    with pytest.raises(ScheduleError):
        schedules.function_name("x" * 130)
