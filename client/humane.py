"""How numbers and times read to a person: durations, sizes, clock times, "3s ago".

Pure functions; a time zone is a parameter (``None`` is the machine's local zone) so the tests
need no particular ``TZ``.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

GIB = 1024**3
NOTHING = "-"


def format_duration(seconds: float) -> str:
    """``"850ms"``, ``"42s"``, ``"3m05s"``, ``"1h02m"``, ``"2d03h"``."""
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_ago(now: float, then: float | None) -> str:
    """How long ago ``then`` was, coarsely: ``"3s ago"``, ``"5m ago"``, ``"2h ago"``."""
    if then is None:
        return "never"
    age = max(0.0, now - then)
    if age < 60:
        return f"{int(age)}s ago"
    if age < 3600:
        return f"{int(age // 60)}m ago"
    if age < 86400:
        return f"{int(age // 3600)}h ago"
    return f"{int(age // 86400)}d ago"


def format_bytes(size: float) -> str:
    """``"512 B"``, ``"3.4 KiB"``, ``"12.0 MiB"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_gib(size: int) -> str:
    """Bytes as GiB with one decimal, the unit of the workers table."""
    return f"{size / GIB:.1f}"


def format_clock(when: float | None, tz: tzinfo | None = None) -> str:
    """A Unix time as ``HH:MM:SS`` in ``tz`` (default: local)."""
    if when is None:
        return NOTHING
    return datetime.fromtimestamp(when, tz).astimezone(tz).strftime("%H:%M:%S")


def format_day_clock(when: float | None, now: float, tz: tzinfo | None = None) -> str:
    """``HH:MM:SS`` for a time today, ``YYYY-MM-DD HH:MM`` for another day."""
    if when is None:
        return NOTHING
    moment = datetime.fromtimestamp(when, tz).astimezone(tz)
    today = datetime.fromtimestamp(now, tz).astimezone(tz).date()
    if moment.date() == today:
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def format_rate(per_second: float) -> str:
    """A rate with as many decimals as its size deserves: ``"12"``, ``"3.5"``, ``"0.25"``."""
    if per_second >= 10:
        return f"{per_second:.0f}"
    if per_second >= 1:
        return f"{per_second:.1f}"
    return f"{per_second:.2f}"
