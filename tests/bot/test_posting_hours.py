"""Quiet hours, day boundaries and the digest time, in a time zone; and their settings."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from bot.posting_hours import PostingHours, PostingRules, parse_quiet_hours
from bot.settings import Settings

BERLIN = ZoneInfo("Europe/Berlin")


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A wall-clock time in Berlin, as UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def test_quiet_hours_that_run_past_midnight() -> None:
    hours = PostingHours(BERLIN, (22, 7))
    assert not hours.is_quiet(local(2026, 3, 2, 21, 59))
    assert hours.is_quiet(local(2026, 3, 2, 22, 0))
    assert hours.is_quiet(local(2026, 3, 3, 6, 59))
    assert not hours.is_quiet(local(2026, 3, 3, 7, 0))
    assert hours.quiet_until(local(2026, 3, 2, 23, 0)) == local(2026, 3, 3, 7, 0)
    assert hours.quiet_until(local(2026, 3, 3, 3, 0)) == local(2026, 3, 3, 7, 0)
    assert hours.quiet_until(local(2026, 3, 3, 12, 0)) is None


def test_quiet_hours_within_a_day_and_none() -> None:
    hours = PostingHours(BERLIN, (12, 14))
    assert hours.is_quiet(local(2026, 3, 2, 13, 30))
    assert not hours.is_quiet(local(2026, 3, 2, 14, 0))
    assert hours.quiet_until(local(2026, 3, 2, 12, 0)) == local(2026, 3, 2, 14, 0)
    assert not PostingHours(BERLIN).is_quiet(local(2026, 3, 2, 3, 0))


def test_the_day_starts_at_local_midnight_also_across_summer_time() -> None:
    hours = PostingHours(BERLIN)
    moment = local(2026, 3, 29, 0, 30)  # the night Berlin moves to summer time
    assert hours.day(moment) == date(2026, 3, 29)
    assert hours.day_start(moment) == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    # That day has 23 hours: the next starts at 22:00 UTC.
    assert hours.next_day_start(moment) == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)
    assert hours.next_day_start(moment) - hours.day_start(moment) == timedelta(hours=23)


def test_the_digest_goes_out_after_quiet_hours() -> None:
    day = date(2026, 3, 2)
    assert PostingHours(BERLIN).digest_time(day, 9) == local(2026, 3, 2, 9, 0)
    # Quiet until 10: the digest waits for them to end.
    assert PostingHours(BERLIN, (20, 10)).digest_time(day, 9) == local(2026, 3, 2, 10, 0)
    # Quiet from 22 into the next day: that day's digest goes when the morning's quiet ends.
    assert PostingHours(BERLIN, (22, 7)).digest_time(day, 23) == local(2026, 3, 2, 7, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "is not a span of hours"),
        ("25-3", "hours must be 0-23"),
        ("22-", "is not a span of hours"),
        ("7-7", "starts and ends at the same hour"),
    ],
)
def test_bad_quiet_hours_are_refused_with_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_quiet_hours(text)
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, quiet_hours=text)


def test_settings_build_the_posting_rules() -> None:
    assert parse_quiet_hours(" 22 - 7 ") == (22, 7) and parse_quiet_hours("") is None
    settings = Settings(
        _env_file=None, timezone="Europe/Berlin", quiet_hours="22-7", repost_after_hours=12
    )
    rules = PostingRules.from_settings(settings)
    assert rules.hours == PostingHours(BERLIN, (22, 7))
    assert rules.repost_after == timedelta(hours=12) and rules.digest_hour == 9
    off = PostingRules.from_settings(
        Settings(_env_file=None, repost_after_hours=0, digest_hour="off")
    )
    assert off.repost_after is None and off.digest_hour is None


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValidationError, match="is not an IANA time zone"):
        Settings(_env_file=None, timezone="Mars/Olympus")
