"""Schedule expressions: 5 fields = cron, 6 fields = NCRONTAB seconds first; platform forms."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from apix_core.errors import ConfigurationError
from apix_core.schedule import Schedule, ScheduleError

START = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def fire_times(expression: str, count: int, start: datetime = START) -> list[datetime]:
    schedule = Schedule.parse(expression)
    times: list[datetime] = []
    when = start
    for _ in range(count):
        when = schedule.next_after(when)
        times.append(when)
    return times


def test_six_fields_put_seconds_first() -> None:
    # GIVEN NCRONTAB expressions (seconds first), as Azure Functions and the seeds write them
    # WHEN their fire times are computed
    at_30 = fire_times("30 * * * * *", 3)
    every_5s = fire_times("*/5 * * * * *", 4)
    every_5m = fire_times("0 */5 * * * *", 3)

    # THEN "30 * * * * *" fires once a minute at second 30, "*/5 * * * * *" every five
    # seconds, and "0 */5 * * * *" every five minutes
    assert at_30 == [START + timedelta(minutes=m, seconds=30) for m in range(3)]
    assert every_5s == [START + timedelta(seconds=5 * i) for i in range(1, 5)]
    assert every_5m == [START + timedelta(minutes=5 * i) for i in range(1, 4)]


def test_five_fields_are_classic_cron_and_aliases_expand() -> None:
    # GIVEN classic cron and an alias THEN they fire on whole minutes / hours
    assert fire_times("*/5 * * * *", 2) == [START + timedelta(minutes=5 * i) for i in (1, 2)]
    assert fire_times("@hourly", 2) == [START + timedelta(hours=h) for h in (1, 2)]
    assert fire_times("@daily", 1) == [datetime(2024, 5, 2, tzinfo=UTC)]
    # a naive start is read as UTC
    assert Schedule.parse("0 3 * * *").next_after(datetime(2024, 5, 1)) == datetime(
        2024, 5, 1, 3, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("expression", "eventbridge", "eventbridge_rate", "ncrontab"),
    [
        ("* * * * *", "rate(1 minute)", "rate(1 minute)", "0 * * * * *"),
        ("*/5 * * * *", "cron(0/5 * * * ? *)", "rate(5 minutes)", "0 */5 * * * *"),
        ("0 */5 * * * *", "cron(0/5 * * * ? *)", "rate(5 minutes)", "0 */5 * * * *"),
        ("0 */2 * * *", "cron(0 0/2 * * ? *)", "rate(2 hours)", "0 0 */2 * * *"),
        ("@hourly", "cron(0 * * * ? *)", "rate(1 hour)", "0 0 * * * *"),
        ("@daily", "cron(0 0 * * ? *)", "rate(1 day)", "0 0 0 * * *"),
        ("0 3 * * *", "cron(0 3 * * ? *)", "cron(0 3 * * ? *)", "0 0 3 * * *"),
        ("30 9 * * 1-5", "cron(30 9 ? * 2-6 *)", "cron(30 9 ? * 2-6 *)", "0 30 9 * * 1-5"),
        ("0 9 * * MON-FRI", "cron(0 9 ? * 2-6 *)", "cron(0 9 ? * 2-6 *)", "0 0 9 * * MON-FRI"),
        ("0 0 * * 0,6", "cron(0 0 ? * 1,7 *)", "cron(0 0 ? * 1,7 *)", "0 0 0 * * 0,6"),
        ("0 0 * * 5-7", "cron(0 0 ? * 1,6-7 *)", "cron(0 0 ? * 1,6-7 *)", "0 0 0 * * 0,5-6"),
        ("0 0 1 */3 *", "cron(0 0 1 1/3 ? *)", "cron(0 0 1 1/3 ? *)", "0 0 0 1 */3 *"),
        ("0 0 L * *", "cron(0 0 L * ? *)", "cron(0 0 L * ? *)", None),
        ("0 0 * * 1#2", "cron(0 0 ? * 2#2 *)", "cron(0 0 ? * 2#2 *)", None),
        ("*/10 * * * * *", None, None, "*/10 * * * * *"),
        ("30 0 * * * *", None, None, "30 0 * * * *"),
        ("0 0 1 * 1", None, None, "0 0 0 1 * 1"),
    ],
)
def test_platform_conversions(
    expression: str, eventbridge: str | None, eventbridge_rate: str | None, ncrontab: str | None
) -> None:
    # GIVEN a parsed schedule
    schedule = Schedule.parse(expression)

    # THEN each platform gets its own spelling, or a ScheduleError when it has none
    for expected, convert in (
        (eventbridge, schedule.to_eventbridge),
        (eventbridge_rate, lambda: schedule.to_eventbridge(prefer_rate=True)),
        (ncrontab, schedule.to_ncrontab),
    ):
        if expected is None:
            with pytest.raises(ScheduleError):
                convert()
        else:
            assert convert() == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty schedule"),
        ("1 2 3", "has 3 fields: use 5"),
        ("* * * * * * *", "has 7 fields"),
        ("61 * * * *", "schedule '61 * * * *': minute 61 out of range 0-59"),
        ("0 61 * * * *", "minute 61 out of range 0-59"),
        ("60 * * * * *", "second 60 out of range 0-59"),
        ("0 24 * * *", "hour 24 out of range 0-23"),
        ("0 0 0 * *", "day 0 out of range 1-31"),
        ("0 0 1-32 * *", "day 32 out of range 1-31"),
        ("0 0 * 13 *", "month 13 out of range 1-12"),
        ("0 0 * * 1,8", "weekday 8 out of range 0-7"),
        ("0 0 * * 9#2", "weekday 9 out of range 0-7"),
        ("*/0 * * * *", "minute step /0 (a step is at least 1)"),
        ("0 0 * * FOO", "invalid schedule expression '0 0 * * FOO'"),
        ("@often", "unknown schedule alias '@often'"),
        ("H * * * *", "hashed (H)"),
    ],
)
def test_invalid_expressions_are_rejected_clearly(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)):
        Schedule.parse(expression)


def test_platform_rejections_say_why() -> None:
    # seconds: EventBridge has minute resolution
    with pytest.raises(ScheduleError, match="at most once a minute"):
        Schedule.parse("*/10 * * * * *").to_eventbridge()
    # cron's day-of-month OR day-of-week has no EventBridge form
    with pytest.raises(ScheduleError, match="cannot combine a day of month and a day of week"):
        Schedule.parse("0 0 1 * 1").to_eventbridge()
    with pytest.raises(ScheduleError, match="NCRONTAB cannot express day 'L'"):
        Schedule.parse("0 0 L * *").to_ncrontab()
    assert issubclass(ScheduleError, ConfigurationError)


@pytest.mark.parametrize(
    ("expression", "cron"),
    [
        ("rate(1 minute)", "* * * * *"),
        ("rate(1 minutes)", "* * * * *"),  # lenient: AWS wants "1 minute"
        ("rate(5 minutes)", "*/5 * * * *"),
        ("RATE( 15 Minutes )", "*/15 * * * *"),
        ("rate(60 minutes)", "0 * * * *"),
        ("rate(1 hour)", "0 * * * *"),
        ("rate(2 hours)", "0 */2 * * *"),
        ("rate(12 hours)", "0 */12 * * *"),
        ("rate(24 hours)", "0 0 * * *"),
        ("rate(1 day)", "0 0 * * *"),
        ("cron(0 9 ? * MON-FRI *)", "0 9 * * MON-FRI"),
        ("cron(30 2 ? * 2-6 *)", "30 2 * * 1-5"),
        ("cron(0 0 ? * 1,7 *)", "0 0 * * 0,6"),
        ("cron(0/15 * * * ? *)", "0/15 * * * *"),
        ("cron(0 12 1 * ? *)", "0 12 1 * *"),
        ("cron(0 0 ? * 2#2 *)", "0 0 * * 1#2"),
        ("cron(0 0 L * ? *)", "0 0 L * *"),
    ],
)
def test_eventbridge_expressions_read_as_the_cron_they_denote(expression: str, cron: str) -> None:
    # GIVEN an EventBridge rate() or cron() expression, as an AWS user writes it
    # WHEN it is parsed
    schedule = Schedule.parse(expression)

    # THEN it fires exactly when the equivalent 5-field cron fires
    assert fire_times(expression, 5) == fire_times(cron, 5)
    assert " ".join((schedule.minute, schedule.hour, schedule.day)) == " ".join(cron.split()[:3])
    # AND it keeps the text the user wrote (errors and timer payloads quote it)
    assert schedule.expression == expression.strip()


@pytest.mark.parametrize(
    ("expression", "eventbridge", "ncrontab"),
    [
        ("rate(5 minutes)", "cron(0/5 * * * ? *)", "0 */5 * * * *"),
        ("rate(1 minute)", "rate(1 minute)", "0 * * * * *"),
        ("rate(1 day)", "cron(0 0 * * ? *)", "0 0 0 * * *"),
        ("cron(0 9 ? * MON-FRI *)", "cron(0 9 ? * 2-6 *)", "0 0 9 * * MON-FRI"),
        ("cron(30 2 ? * 2-6 *)", "cron(30 2 ? * 2-6 *)", "0 30 2 * * 1-5"),
    ],
)
def test_eventbridge_expressions_convert_for_both_platforms(
    expression: str, eventbridge: str, ncrontab: str
) -> None:
    # GIVEN an EventBridge expression WHEN converted THEN EventBridge gets back what it means
    # (a cron() round-trips), and Azure the same schedule as NCRONTAB
    schedule = Schedule.parse(expression)
    assert schedule.to_eventbridge() == eventbridge
    assert schedule.to_ncrontab() == ncrontab


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("rate(7 minutes)", "has no exact cron equivalent"),
        ("rate(90 minutes)", "divide an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30 minutes)"),
        ("rate(5 hours)", "or a day (1, 2, 3, 4, 6, 8 or 12 hours, or 1 day)"),
        ("rate(2 days)", "write a cron expression, e.g. '0 */2 * * *'"),
        ("rate(0 minutes)", "a rate's value must be at least 1"),
        ("rate(-5 minutes)", "a rate's value must be at least 1"),
        ("rate(5 weeks)", "write rate(N minutes|hours|days), e.g. 'rate(5 minutes)'"),
        ("rate(five minutes)", "write rate(N minutes|hours|days)"),
        ("rate()", "write rate(N minutes|hours|days)"),
        ("cron(0 9 * * ?)", "has 5 fields: an EventBridge cron has 6"),
        ("cron(0 0 1 * ? 2027)", "the year field must be '*'"),
        ("cron(0 0 1 * MON *)", "give a day of month or a day of week, and '?' for the other"),
        ("cron(0 0 ? * 8 *)", "EventBridge day of week 8 out of range 1-7 (SUN-SAT)"),
        ("cron(0 0 ? * 0 *)", "EventBridge day of week 0 out of range 1-7 (SUN-SAT)"),
        ("cron(61 0 ? * * *)", "minute 61 out of range 0-59"),
    ],
)
def test_eventbridge_expressions_without_an_equivalent_say_what_to_write(
    expression: str, message: str
) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)):
        Schedule.parse(expression)
