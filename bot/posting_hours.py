"""When prompts may go out: quiet hours, the day a budget counts, the time of the daily digest.

Everything is in one IANA time zone (`HITL_TIMEZONE`), so "22-7" and "a day" mean what the team
reading the channel means by them, summer time included. Pure functions of a given moment: the
poster passes its clock's `now`, and tests pass any moment they like.
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from bot.settings import Settings

_SPAN = re.compile(r"^\s*(\d{1,2})\s*-\s*(\d{1,2})\s*$")


def parse_time_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (e.g. Europe/Berlin); ValueError that says so otherwise."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"HITL_TIMEZONE {name[:60]!r} is not an IANA time zone, e.g. UTC or Europe/Berlin"
        ) from None


def parse_quiet_hours(text: str) -> tuple[int, int] | None:
    """`"22-7"` as (22, 7): from 22:00 to 07:00; empty means no quiet hours.

    Hours are whole hours 0-23; the span may run past midnight but may not be empty or the
    whole day (nothing would ever be posted).
    """
    if not text.strip():
        return None
    match = _SPAN.fullmatch(text)
    if match is None:
        raise ValueError(
            f"HITL_QUIET_HOURS {text[:40]!r} is not a span of hours; write START-END in hours "
            "0-23, e.g. 22-7 (from 22:00 to 07:00), or leave it empty"
        )
    start, end = int(match.group(1)), int(match.group(2))
    if not (0 <= start <= 23 and 0 <= end <= 23):
        raise ValueError(f"HITL_QUIET_HOURS {text.strip()!r}: hours must be 0-23, e.g. 22-7")
    if start == end:
        raise ValueError(
            f"HITL_QUIET_HOURS {text.strip()!r} starts and ends at the same hour; "
            "leave it empty for no quiet hours"
        )
    return start, end


def _at(day: date, hour: int, zone: tzinfo) -> datetime:
    """`hour`:00 on `day` in `zone`, as UTC (a local time that does not exist moves on)."""
    return datetime.combine(day, time(hour), tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class PostingHours:
    """Quiet hours and day boundaries in one time zone."""

    zone: tzinfo = UTC
    quiet: tuple[int, int] | None = None

    def local(self, moment: datetime) -> datetime:
        """`moment` on the wall clock of the zone."""
        return moment.astimezone(self.zone)

    def is_quiet(self, moment: datetime) -> bool:
        """True when `moment` falls in the quiet hours."""
        if self.quiet is None:
            return False
        start, end = self.quiet
        hour = self.local(moment).hour
        return start <= hour < end if start < end else hour >= start or hour < end

    def quiet_until(self, moment: datetime) -> datetime | None:
        """When the quiet hours around `moment` end (UTC); None when `moment` is not quiet."""
        if self.quiet is None or not self.is_quiet(moment):
            return None
        end = self.quiet[1]
        day = self.local(moment).date()
        ends = _at(day, end, self.zone)
        return ends if ends > moment else _at(day + timedelta(days=1), end, self.zone)

    def day(self, moment: datetime) -> date:
        """The local date of `moment`: the day a daily budget and digest belong to."""
        return self.local(moment).date()

    def day_start(self, moment: datetime) -> datetime:
        """Local midnight that began the day of `moment`, as UTC."""
        return _at(self.day(moment), 0, self.zone)

    def next_day_start(self, moment: datetime) -> datetime:
        """Local midnight that ends the day of `moment`, as UTC."""
        return _at(self.day(moment) + timedelta(days=1), 0, self.zone)

    def digest_time(self, day: date, hour: int) -> datetime:
        """When the digest of `day` is due: `hour`:00, or when quiet hours end that day.

        Quiet from `hour` until the next day, the digest goes at the end of that morning's quiet
        hours instead, so each day has one moment outside quiet hours for it.
        """
        at = _at(day, hour, self.zone)
        ends = self.quiet_until(at)
        if ends is None:
            return at
        if self.day(ends) == day:
            return ends
        morning = self.quiet_until(_at(day, 0, self.zone))
        return morning if morning is not None else _at(day, 0, self.zone)


@dataclass(frozen=True)
class PostingRules:
    """What the poster obeys besides Slack's pace: hours, re-posts and the daily digest."""

    hours: PostingHours = field(default_factory=PostingHours)
    # A prompt posted this long ago and still unanswered is posted once more; None: never.
    repost_after: timedelta | None = None
    # The local hour of the daily digest of waiting items; None: no digest.
    digest_hour: int | None = None

    @classmethod
    def from_settings(cls, settings: "Settings") -> "PostingRules":
        """The rules `HITL_TIMEZONE`, `HITL_QUIET_HOURS`, `HITL_REPOST_AFTER_HOURS` and
        `HITL_DIGEST_HOUR` describe."""
        hours = PostingHours(
            parse_time_zone(settings.timezone), parse_quiet_hours(settings.quiet_hours)
        )
        after = settings.repost_after_hours
        return cls(
            hours=hours,
            repost_after=timedelta(hours=after) if after > 0 else None,
            digest_hour=settings.digest_hour,
        )
