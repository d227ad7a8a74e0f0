"""Logging set-up shared by every command: Twisted's logger, text lines on standard error."""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEventAsClassicLogText,
    formatTime,
    globalLogBeginner,
    timeFormatRFC3339,
)
from zope.interface import implementer


@implementer(ILogObserver)
class LogLines:
    """Writes log events as Twisted's ``textFileLogObserver`` does, line for line, for less.

    Twisted formats an event's text with the pure-Python ``string.Formatter`` and works out the
    time zone of every timestamp: about 70 us a line, and a worker logs two lines for each task
    it runs (a trivial task costs it about 1.5 ms in all). The common event (a ``str`` format
    whose fields name the event's keys, no failure, no system of its own) is formatted here with
    ``str.format_map`` and a timestamp made once a second; any other event, or one that
    ``format_map`` cannot format, takes Twisted's own way, so the lines are the same either way.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._second: int | None = None
        self._stamp = ""

    def __call__(self, event: LogEvent) -> None:
        text = self._quick_line(event)
        if text is None:
            text = formatEventAsClassicLogText(
                event, formatTime=lambda when: formatTime(when, timeFormatRFC3339)
            )
        if text:
            self._stream.write(text)
            self._stream.flush()

    def _quick_line(self, event: LogEvent) -> str | None:
        """The event's line, or None for Twisted to make it."""
        fmt = event.get("log_format")
        when = event.get("log_time")
        level = event.get("log_level")
        if (
            type(fmt) is not str
            or not fmt
            or when is None
            or level is None
            or "log_failure" in event
            or "log_flattened" in event
            or "log_system" in event
        ):
            return None
        try:
            text = fmt.format_map(event)
        except Exception:
            # A field naming no key, a call ("{f()}"), a positional field...: Twisted's way
            # knows what to print for each.
            return None
        if not text:
            return None
        namespace = event.get("log_namespace", "-")
        line = f"{self._timestamp(when)} [{namespace}#{level.name}] {text}"
        return line.replace("\n", "\n\t") + "\n"

    def _timestamp(self, when: float) -> str:
        # The format shows whole seconds and a second's offset from UTC cannot change within it.
        second = int(when)
        if second != self._second:
            self._stamp = formatTime(second, timeFormatRFC3339)
            self._second = second
        return self._stamp


def start_logging(level: str = "info") -> None:
    """Send log events at ``level`` and above to standard error."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    observer = FilteringLogObserver(LogLines(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
