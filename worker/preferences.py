"""The volunteer's preferences: what the worker may take of their machine, and when.

They live in ``$XWCH_HOME/worker.toml`` next to the coordinator's address and the token, as flat
``key = value`` lines, set by ``xwch-worker install`` flags or by editing the file; the running
worker notices an edit within :attr:`PreferencesWatcher.POLL_PERIOD` seconds and applies it
without a restart::

    max_cpus = "50%"              # or a count: 2
    idle_minutes = 5              # compute only after 5 minutes without keyboard or mouse
    max_cpu_load = 25             # suspend while other programs use more than 25 % of the CPUs
    memory_per_task = "2G"        # address space of each task's processes
    cpu_time_per_task = "24h"     # CPU time of each task's processes
    file_size_per_task = "4G"     # largest file a task may write
    processes_per_task = 256      # processes a task may run at once
    cache_limit = "10G"           # programs and data kept for later tasks
    upload_rate = "1M"            # bytes per second; K, M, G are powers of 1024
    download_rate = "5M"
    hours = "22:00-07:00,12:00-13:30"   # local time; empty: any time
    suspend_limit_minutes = 30    # give attempts back after so long suspended
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from xwch.config import read_toml
from xwch.errors import ConfigurationError

# Keys of worker.toml that are not preferences: read once at start by ``xwch-worker run``.
SETTINGS_KEYS = ("coordinator", "token", "site", "name", "slots", "data", "trusted_keys")

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*(?:/S)?\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_CLOCK = re.compile(r"^(\d{1,2})(?::(\d{2}))?$")

MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class CpuShare:
    """At most ``count`` CPUs, or ``percent`` of them."""

    count: int | None = None
    percent: float | None = 100.0

    def slots(self, cores: int) -> int:
        """How many attempts may run at once on a machine of ``cores`` CPUs (at least one)."""
        if self.count is not None:
            return max(1, min(self.count, cores))
        assert self.percent is not None
        return max(1, math.floor(cores * self.percent / 100 + 1e-9))

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


@dataclass(frozen=True)
class HourRange:
    """Minutes of the day from ``start`` (included) to ``end`` (excluded); may wrap midnight."""

    start: int
    end: int

    def contains(self, minute: int) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def __str__(self) -> str:
        return f"{_clock(self.start)}-{_clock(self.end)}"


@dataclass(frozen=True)
class Preferences:
    """Every preference, with the defaults of a fresh install."""

    max_cpus: CpuShare = CpuShare()
    # 0: compute even while the machine is in use.
    idle_minutes: float = 0.0
    # Percent of the whole machine; None: never suspend for other programs' load.
    max_cpu_load: float | None = None
    # Suspend while the machine runs on its battery (a laptop unplugged).
    suspend_on_battery: bool = False
    # Bytes; None: the machine's memory.
    memory_per_task: int | None = None
    cpu_time_per_task: int = 24 * 3600
    # Bytes; None: the cache limit (an output larger than the cache could not be kept anyway).
    file_size_per_task: int | None = None
    processes_per_task: int = 256
    cache_limit: int = 10 << 30
    # Bytes per second; None: no cap of the volunteer's (the coordinator's policy still holds).
    upload_rate: float | None = None
    download_rate: float | None = None
    # Empty: any time.
    hours: tuple[HourRange, ...] = ()
    suspend_limit_minutes: float = 30.0
    # Make way to other devices' traffic too, as the home router counts it (over UPnP).
    watch_router: bool = True

    def allowed_at(self, minute_of_day: int) -> bool:
        return not self.hours or any(r.contains(minute_of_day) for r in self.hours)

    def describe(self) -> dict[str, Any]:
        """The preferences in force, readable (for ``xwch-worker status``)."""
        return {
            "max_cpus": str(self.max_cpus),
            "idle_minutes": self.idle_minutes,
            "max_cpu_load": self.max_cpu_load,
            "suspend_on_battery": self.suspend_on_battery,
            "memory_per_task": self.memory_per_task,
            "cpu_time_per_task": self.cpu_time_per_task,
            "file_size_per_task": self.file_size_per_task,
            "processes_per_task": self.processes_per_task,
            "cache_limit": self.cache_limit,
            "upload_rate": self.upload_rate,
            "download_rate": self.download_rate,
            "hours": ",".join(str(r) for r in self.hours),
            "suspend_limit_minutes": self.suspend_limit_minutes,
            "watch_router": self.watch_router,
        }


# Parsers of raw TOML (or command-line) values, by key.


def parse_size(value: object, key: str) -> int:
    """Bytes: an integer, or a string with a unit (``"512M"``, ``"2G"``, ``"1.5GiB"``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and (match := _SIZE.match(value.upper())):
        number = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ConfigurationError(f"{key}: expected a size such as 512M or 2G, not {value!r}")
    if number < 1:
        raise ConfigurationError(f"{key}: must be positive")
    return int(number)


def parse_rate(value: object, key: str) -> float | None:
    """Bytes per second like a size (``"1M"``, ``"500K/s"``); 0 or "" for no cap."""
    if value in (0, "", "0", "none"):
        return None
    return float(parse_size(value, key))


def parse_duration(value: object, key: str) -> int:
    """Seconds: an integer, or a string with a unit (``"90m"``, ``"24h"``, ``"2d"``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.lower())):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ConfigurationError(f"{key}: expected seconds or a duration like 24h, not {value!r}")
    if seconds < 1:
        raise ConfigurationError(f"{key}: must be at least one second")
    return int(seconds)


def parse_number(value: object, key: str, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{key}: expected a number, not {value!r}")
    if not low <= value <= high:
        raise ConfigurationError(f"{key}: must be between {low:g} and {high:g}")
    return float(value)


def parse_cpus(value: object, key: str) -> CpuShare:
    """A count of CPUs (``2``) or a share of them (``"50%"``)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        percent = parse_number(value.strip()[:-1], key, 0.0, 100.0)
        if percent <= 0:
            raise ConfigurationError(f"{key}: must be more than 0%")
        return CpuShare(percent=percent)
    count = parse_number(value, key, 1)
    if count != int(count):
        raise ConfigurationError(f"{key}: expected a whole number of CPUs or a percentage")
    return CpuShare(count=int(count), percent=None)


def parse_hours(value: object, key: str) -> tuple[HourRange, ...]:
    """Comma-separated ranges of local time, ``"22:00-07:00,12:00-13:30"``; empty: any time."""
    if not isinstance(value, str):
        raise ConfigurationError(f'{key}: expected ranges like "22:00-07:00", not {value!r}')
    ranges: list[HourRange] = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        start, sep, end = part.partition("-")
        if not sep:
            raise ConfigurationError(f"{key}: {part!r} is not a range like 22:00-07:00")
        first, last = _minute(start.strip(), key), _minute(end.strip(), key)
        if first == last % MINUTES_PER_DAY:
            raise ConfigurationError(f"{key}: {part!r} is empty")
        ranges.append(HourRange(first % MINUTES_PER_DAY, last % MINUTES_PER_DAY))
    return tuple(ranges)


def _minute(text: str, key: str) -> int:
    match = _CLOCK.match(text)
    if match is None:
        raise ConfigurationError(f"{key}: {text!r} is not a time of day like 07:00")
    hours, minutes = int(match.group(1)), int(match.group(2) or 0)
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise ConfigurationError(f"{key}: {text!r} is not a time of day")
    return hours * 60 + minutes


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def parse_yes_no(value: object, key: str) -> bool:
    """A TOML boolean, or as a flag's text: yes/no, true/false, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    words = {"yes": True, "true": True, "on": True, "1": True}
    words |= {"no": False, "false": False, "off": False, "0": False}
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise ConfigurationError(f"{key}: expected yes or no, not {value!r}")


def _count(value: object, key: str) -> int:
    number = parse_number(value, key, 1)
    if number != int(number):
        raise ConfigurationError(f"{key}: expected a whole number")
    return int(number)


def _optional(parse: Callable[[object, str], Any]) -> Callable[[object, str], Any]:
    def parse_or_none(value: object, key: str) -> Any:
        return None if value in ("", 0, "0", "none") else parse(value, key)

    return parse_or_none


@dataclass(frozen=True)
class PreferenceKey:
    """One key of worker.toml: how it is parsed, and how ``install`` takes it as a flag."""

    name: str
    parse: Callable[[object, str], Any]
    help: str
    metavar: str
    # Written to worker.toml as a number, or as a boolean (else as the string given).
    numeric: bool = False
    boolean: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def toml_value(self, text: str) -> object:
        """What ``install --flag TEXT`` writes to worker.toml (checked first)."""
        parsed = self.parse(text, self.flag)
        if self.boolean:
            return bool(parsed)
        if self.numeric:
            number = float(text)
            return int(number) if number == int(number) else number
        return text


KEYS = (
    PreferenceKey("max_cpus", parse_cpus, "CPUs tasks may use: a count or a percentage", "N|P%"),
    PreferenceKey(
        "idle_minutes",
        lambda v, k: parse_number(v, k),
        "compute only after the keyboard and mouse have been idle this long (0: always)",
        "MIN",
        numeric=True,
    ),
    PreferenceKey(
        "max_cpu_load",
        _optional(lambda v, k: parse_number(v, k, 0, 100)),
        "suspend while other programs use more than this percentage of the CPUs",
        "PERCENT",
        numeric=True,
    ),
    PreferenceKey(
        "suspend_on_battery",
        parse_yes_no,
        "suspend while the machine runs on its battery (default no)",
        "yes|no",
        boolean=True,
    ),
    PreferenceKey(
        "memory_per_task",
        _optional(parse_size),
        "memory (address space) of a task, e.g. 2G",
        "SIZE",
    ),
    PreferenceKey(
        "cpu_time_per_task", parse_duration, "CPU time of a task's processes, e.g. 24h", "TIME"
    ),
    PreferenceKey(
        "file_size_per_task",
        _optional(parse_size),
        "largest file a task may write (default: the cache limit)",
        "SIZE",
    ),
    PreferenceKey(
        "processes_per_task", _count, "processes a task may run at once", "N", numeric=True
    ),
    PreferenceKey("cache_limit", parse_size, "disk kept for programs and data, e.g. 10G", "SIZE"),
    PreferenceKey("upload_rate", parse_rate, "upload cap in bytes per second, e.g. 1M", "RATE"),
    PreferenceKey("download_rate", parse_rate, "download cap in bytes per second", "RATE"),
    PreferenceKey(
        "hours", parse_hours, 'when to compute, local time, e.g. "22:00-07:00,12:00-13:30"', "H"
    ),
    PreferenceKey(
        "suspend_limit_minutes",
        lambda v, k: parse_number(v, k, 1),
        "give attempts back after being suspended this long",
        "MIN",
        numeric=True,
    ),
    PreferenceKey(
        "watch_router",
        parse_yes_no,
        "make way to other devices' traffic, as the home router counts it over UPnP (default yes)",
        "yes|no",
        boolean=True,
    ),
)
_BY_NAME = {key.name: key for key in KEYS}
assert set(_BY_NAME) == {f.name for f in fields(Preferences)}


def parse_preferences(doc: Mapping[str, object], where: str = "worker.toml") -> Preferences:
    """The preferences of a worker.toml document; unknown keys are errors (a typo is no no-op)."""
    values: dict[str, Any] = {}
    for name, raw in doc.items():
        if name in SETTINGS_KEYS:
            continue
        key = _BY_NAME.get(name)
        if key is None:
            raise ConfigurationError(f"{where}: unknown key {name!r}")
        try:
            values[name] = key.parse(raw, name)
        except ConfigurationError as e:
            raise ConfigurationError(f"{where}: {e}") from None
    return replace(Preferences(), **values)


def load_preferences(path: Path) -> Preferences:
    """The preferences in ``path`` (defaults if it does not exist)."""
    return parse_preferences(read_toml(path), str(path))


class PreferencesWatcher(Service):
    """Re-reads worker.toml when it changes and hands the new preferences on.

    A file that does not parse is reported once and ignored: the preferences in force stay.
    """

    log = Logger()

    # How often the file's modification time is looked at: edits apply within this.
    POLL_PERIOD = 3.0

    def __init__(
        self,
        reactor: IReactorTime,
        path: Path,
        initial: Preferences,
        on_change: Callable[[Preferences], None],
    ) -> None:
        self._reactor = reactor
        self.path = path
        self.current = initial
        self._on_change = on_change
        self._seen = self._signature()
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self._reactor
        self._loop.start(self.POLL_PERIOD, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def check(self) -> None:
        """Apply the file's preferences if it changed since the last look."""
        signature = self._signature()
        if signature == self._seen:
            return
        self._seen = signature
        try:
            preferences = load_preferences(self.path)
        except ConfigurationError as e:
            self.log.error("preferences not changed: {error}", error=e)
            return
        if preferences == self.current:
            return
        self.log.info("preferences changed: {changes}", changes=_changes(self.current, preferences))
        self.current = preferences
        self._on_change(preferences)


def _changes(old: Preferences, new: Preferences) -> str:
    before, after = old.describe(), new.describe()
    return ", ".join(f"{k} {before[k]} -> {after[k]}" for k in after if before[k] != after[k])
