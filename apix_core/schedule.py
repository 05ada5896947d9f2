"""Schedule expressions: one reading everywhere, converted for each platform.

* 5 fields — classic cron: ``minute hour day-of-month month day-of-week``
  (``*/5 * * * *`` = every five minutes);
* 6 fields — NCRONTAB, as Azure Functions and the seeds write it, with **seconds first**:
  ``second minute hour day-of-month month day-of-week`` (``0 */5 * * * *`` = every five
  minutes, ``*/10 * * * * *`` = every ten seconds);
* ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``;
* EventBridge's own forms, as AWS users write them: ``rate(5 minutes)`` is read as the cron
  with the same interval on the clock (``*/5 * * * *``), and ``cron(0 9 ? * MON-FRI *)``
  (minute hour day-of-month month day-of-week year, days of week 1-7 = SUN-SAT) as the
  5-field cron it denotes (``0 9 * * MON-FRI``).

Times are UTC. croniter (imported lazily: it is not needed to import apix) puts seconds *last*,
so :meth:`Schedule.next_after` converts before asking it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from apix_core.errors import ConfigurationError


class ScheduleError(ConfigurationError):
    """A schedule expression is invalid, or a platform cannot express it."""

    code = "INVALID_SCHEDULE"


ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
#: What EventBridge and NCRONTAB take in minute/hour/day/month fields (no L, W, #, ?, H).
_PLAIN_FIELD = re.compile(r"^[0-9A-Za-z*,/-]+$")
_NAMES = re.compile(
    r"JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|SUN|MON|TUE|WED|THU|FRI|SAT", re.I
)


def _portable(value: str, *, allow: str = "") -> bool:
    """Only digits, ``* , / -``, month/day names, and the letters in ``allow`` (``L``, ``W``)."""
    if not _PLAIN_FIELD.match(value):
        return False
    letters = {c for c in _NAMES.sub("", value).upper() if c.isalpha()}
    return letters <= set(allow)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: six fields, seconds first (a 5-field cron has ``second="0"``)."""

    expression: str
    second: str
    minute: str
    hour: str
    day: str
    month: str
    weekday: str

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        """Parse ``expression``; raises :class:`ScheduleError` saying what is wrong."""
        if not isinstance(expression, str) or not expression.strip():
            raise ScheduleError(f"empty schedule expression {expression!r}")
        text = expression.strip()
        eventbridge = re.fullmatch(r"(rate|cron)\s*\((.*)\)", text, re.I | re.S)
        if eventbridge:
            kind, body = eventbridge[1].lower(), eventbridge[2]
            five = _from_rate(text, body) if kind == "rate" else _from_eventbridge_cron(text, body)
            fields = ["0", *five.split()]
        elif text.startswith("@"):
            alias = ALIASES.get(text.lower())
            if alias is None:
                raise ScheduleError(
                    f"unknown schedule alias {text!r} (known: {', '.join(sorted(ALIASES))})"
                )
            fields = ["0", *alias.split()]
        else:
            parts = text.split()
            if len(parts) == 5:
                fields = ["0", *parts]
            elif len(parts) == 6:
                fields = parts
            else:
                raise ScheduleError(
                    f"schedule {text!r} has {len(parts)} fields: use 5 (cron: minute hour "
                    "day month weekday) or 6 (NCRONTAB: second minute hour day month weekday)"
                )
        for value in fields:
            if re.search(r"[HR?]", _NAMES.sub("", value).upper()):
                raise ScheduleError(
                    f"schedule {text!r}: hashed (H), random (R) and '?' fields are not supported"
                )
        for (name, low, high), value in zip(_FIELDS, fields, strict=True):
            _check_field(text, name, value, low, high)
        schedule = cls(text, *fields)
        from croniter import croniter

        if not croniter.is_valid(schedule._croniter_expression()):
            raise ScheduleError(f"invalid schedule expression {text!r}")
        return schedule

    def _croniter_expression(self) -> str:
        # croniter's optional sixth field is seconds, last.
        return f"{self.minute} {self.hour} {self.day} {self.month} {self.weekday} {self.second}"

    def next_after(self, when: datetime) -> datetime:
        """The first fire time strictly after ``when`` (a naive ``when`` is taken as UTC)."""
        from croniter import croniter

        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        nxt: datetime = croniter(self._croniter_expression(), when).get_next(datetime)
        return nxt

    # -- platforms ------------------------------------------------------------------------
    def to_ncrontab(self) -> str:
        """Azure Functions' NCRONTAB: always six fields, seconds first."""
        for name, value in self._named_fields():
            if not _portable(value):
                raise ScheduleError(
                    f"schedule {self.expression!r}: Azure NCRONTAB cannot express {name} "
                    f"{value!r} (no L, W, #, ? or H)"
                )
        weekday = self.weekday
        if "7" in weekday:  # cron's second Sunday; NCRONTAB's days are 0-6
            from croniter import croniter

            days = croniter.expand(f"0 0 * * {weekday}")[0][4]
            weekday = _compress(sorted({int(d) % 7 for d in days}))
        return " ".join((self.second, self.minute, self.hour, self.day, self.month, weekday))

    def to_eventbridge(self, *, prefer_rate: bool = False) -> str:
        """An EventBridge schedule expression: ``cron(Min Hour DoM Mon DoW Year)``.

        Every minute is ``rate(1 minute)``. With ``prefer_rate``, other plain intervals
        (``*/n`` minutes, ``0 */n`` hours, ``0 0 * * *``) become ``rate(n minutes|hours|days)``:
        a rate counts from when the rule is created, so it keeps the interval but not the
        wall-clock alignment — which is why it is not the default.

        Raises :class:`ScheduleError` for what EventBridge cannot express: seconds other than
        0 (its resolution is one minute), or a day-of-month *and* a day-of-week together.
        """
        if self.second != "0":
            raise ScheduleError(
                f"schedule {self.expression!r}: EventBridge fires at most once a minute, on "
                f"second 0 (seconds field {self.second!r}); use a 5-field cron"
            )
        for name, value in self._named_fields()[1:5]:
            if not _portable(value, allow="LW" if name == "day" else ""):
                raise ScheduleError(
                    f"schedule {self.expression!r}: EventBridge cannot express {name} {value!r}"
                )
        rate = self._rate(prefer_rate)
        if rate:
            return rate
        minute = _zero_based_step(self.minute, "0")
        hour = _zero_based_step(self.hour, "0")
        day = _zero_based_step(self.day, "1")
        month = _zero_based_step(self.month, "1")
        weekday = self._eventbridge_weekday()
        if day != "*" and weekday != "*":
            raise ScheduleError(
                f"schedule {self.expression!r}: EventBridge cannot combine a day of month and "
                "a day of week (cron fires on either; EventBridge needs one of them to be '?')"
            )
        if weekday == "*":
            weekday = "?"
        else:
            day = "?"
        return f"cron({minute} {hour} {day} {month} {weekday} *)"

    def _rate(self, prefer_rate: bool) -> str | None:
        rest_any = self.day == self.month == self.weekday == "*"
        if not rest_any:
            return None
        if self.minute == "*" and self.hour == "*":
            return "rate(1 minute)"
        if not prefer_rate:
            return None
        step = re.fullmatch(r"\*/(\d+)", self.minute)
        if step and self.hour == "*" and 60 % int(step[1]) == 0:
            n = int(step[1])
            return f"rate({n} minute{'s' if n > 1 else ''})"
        step = re.fullmatch(r"\*/(\d+)", self.hour)
        if self.minute == "0" and (self.hour == "*" or (step and 24 % int(step[1]) == 0)):
            n = int(step[1]) if step else 1
            return f"rate({n} hour{'s' if n > 1 else ''})"
        if self.minute == "0" and self.hour == "0":
            return "rate(1 day)"
        return None

    def _eventbridge_weekday(self) -> str:
        """Cron's 0-7 (0 and 7 = Sunday) as EventBridge's 1-7 = SUN-SAT."""
        value = self.weekday.upper()
        if value in ("*", "?"):
            return "*"
        nth = re.fullmatch(r"([0-7]|[A-Z]{3})#([1-5])", value)
        if nth:
            return f"{_eventbridge_day(nth[1], self.expression)}#{nth[2]}"
        if not _portable(value):
            raise ScheduleError(
                f"schedule {self.expression!r}: EventBridge cannot express day of week {value!r}"
            )
        from croniter import croniter

        days = croniter.expand(f"0 0 * * {self.weekday}")[0][4]
        if days == ["*"]:
            return "*"
        numbers = sorted({int(d) % 7 + 1 for d in days})
        if len(numbers) == 7:
            return "*"
        return _compress(numbers)

    def _named_fields(self) -> list[tuple[str, str]]:
        return [
            ("second", self.second),
            ("minute", self.minute),
            ("hour", self.hour),
            ("day", self.day),
            ("month", self.month),
            ("weekday", self.weekday),
        ]

    def __str__(self) -> str:
        return self.expression


#: Each field's name and range, seconds first (cron's day of week takes 0 and 7 for Sunday).
_FIELDS = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("weekday", 0, 7),
)
_TERM = re.compile(r"^(\*|\d+|[A-Za-z]{3})(?:-(\d+|[A-Za-z]{3}))?(?:/(\d+))?$")


def _check_field(text: str, name: str, value: str, low: int, high: int) -> None:
    """Name the field and its range when a number is outside it (croniter only says "invalid")."""
    for term in value.split(","):
        term = re.sub(r"#\d+$", "", term) if name == "weekday" else term
        match = _TERM.match(term)
        if match is None:
            continue  # L, W and other forms croniter judges
        for number in (match[1], match[2]):
            if number and number.isdigit() and not low <= int(number) <= high:
                raise ScheduleError(
                    f"schedule {text!r}: {name} {int(number)} out of range {low}-{high}"
                )
        if match[3] is not None and int(match[3]) == 0:
            raise ScheduleError(f"schedule {text!r}: {name} step /0 (a step is at least 1)")


_RATE_UNITS = {"minute": 1, "hour": 60, "day": 1440}
_RATE_HINT = (
    "apix reads a rate as a cron on the clock, so its interval must divide an hour (1, 2, 3, 4, "
    "5, 6, 10, 12, 15, 20 or 30 minutes) or a day (1, 2, 3, 4, 6, 8 or 12 hours, or 1 day); "
    "for other times write a cron expression, e.g. '0 */2 * * *' (every 2 hours on the hour)"
)


def _from_rate(text: str, body: str) -> str:
    """``rate(N unit)`` as the 5-field cron with that interval, aligned on the clock."""
    match = re.fullmatch(r"\s*(-?\d+)\s+([A-Za-z]+)\s*", body)
    unit = match[2].lower().removesuffix("s") if match else ""
    if match is None or unit not in _RATE_UNITS:
        raise ScheduleError(
            f"schedule {text!r}: write rate(N minutes|hours|days), e.g. 'rate(5 minutes)' or "
            "'rate(1 hour)'"
        )
    n = int(match[1])
    if n < 1:
        raise ScheduleError(f"schedule {text!r}: a rate's value must be at least 1")
    minutes = n * _RATE_UNITS[unit]
    if minutes == 1:
        return "* * * * *"
    if minutes < 60 and 60 % minutes == 0:
        return f"*/{minutes} * * * *"
    if minutes == 1440:
        return "0 0 * * *"
    if minutes % 60 == 0 and 24 % (minutes // 60) == 0:
        hours = minutes // 60
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    raise ScheduleError(f"schedule {text!r} has no exact cron equivalent: {_RATE_HINT}")


def _from_eventbridge_cron(text: str, body: str) -> str:
    """EventBridge ``cron(min hour dom month dow year)`` as the 5-field cron it denotes."""
    parts = body.split()
    if len(parts) != 6:
        raise ScheduleError(
            f"schedule {text!r} has {len(parts)} fields: an EventBridge cron has 6 "
            "(minute hour day-of-month month day-of-week year), e.g. 'cron(0 9 ? * MON-FRI *)'"
        )
    minute, hour, day, month, weekday, year = parts
    if year != "*":
        raise ScheduleError(
            f"schedule {text!r}: the year field must be '*' (apix schedules repeat every year)"
        )
    day = "*" if day == "?" else day
    weekday = "*" if weekday == "?" else weekday
    if day != "*" and weekday != "*":
        raise ScheduleError(
            f"schedule {text!r}: give a day of month or a day of week, and '?' for the other"
        )
    return " ".join((minute, hour, day, month, _from_eventbridge_weekday(text, weekday)))


def _from_eventbridge_weekday(text: str, value: str) -> str:
    """EventBridge's days of week 1-7 = SUN-SAT as cron's 0-6; names and ``#n`` kept."""
    if value == "*":
        return value

    def shift(match: re.Match[str]) -> str:
        day = int(match[0])
        if not 1 <= day <= 7:
            raise ScheduleError(
                f"schedule {text!r}: EventBridge day of week {day} out of range 1-7 (SUN-SAT)"
            )
        return str(day - 1)

    terms = []
    for term in value.split(","):
        head, sep, step = term.partition("/")
        head = re.sub(r"(?<![#\d])\d+", shift, head)  # not the n of "#n"
        terms.append(head + sep + step)
    return ",".join(terms)


def _zero_based_step(value: str, first: str) -> str:
    """``*/n`` as ``first/n``: the increment form EventBridge documents."""
    return re.sub(r"^\*/", f"{first}/", value)


def _eventbridge_day(day: str, expression: str) -> str:
    if day.isdigit():
        return str(int(day) % 7 + 1)
    if day not in _DAY_NAMES:
        raise ScheduleError(f"schedule {expression!r}: unknown day of week {day!r}")
    return day


def _compress(numbers: list[int]) -> str:
    """``[2, 3, 4, 6]`` → ``"2-4,6"``."""
    out: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(out)


def parse(expression: str) -> Schedule:
    """Shorthand for :meth:`Schedule.parse`."""
    return Schedule.parse(expression)
