"""LogLines writes every event exactly as Twisted's textFileLogObserver would."""

from __future__ import annotations

import io

from twisted.logger import LogEvent, LogLevel, textFileLogObserver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from xwch.logs import LogLines

WHEN = 1_764_669_600.25  # a fixed instant: the lines are compared, not the clock


def event(log_format: object, **fields: object) -> LogEvent:
    base: LogEvent = {
        "log_format": log_format,
        "log_time": WHEN,
        "log_level": LogLevel.info,
        "log_namespace": "xwch.worker.service",
    }
    base.update(fields)
    return base


class Unprintable:
    def __format__(self, spec: str) -> str:
        raise ValueError("no")

    def __repr__(self) -> str:
        return "<Unprintable>"


def _failure() -> Failure:
    try:
        raise RuntimeError("the disk is gone")
    except RuntimeError:
        return Failure()


class LogLinesTests(SynchronousTestCase):
    def assertSameAsTwisted(self, *events: LogEvent) -> str:
        ours, theirs = io.StringIO(), io.StringIO()
        observer, reference = LogLines(ours), textFileLogObserver(theirs)
        for e in events:
            observer(dict(e))
            reference(dict(e))
        self.assertEqual(ours.getvalue(), theirs.getvalue())
        return ours.getvalue()

    def test_plain_fields(self) -> None:
        text = self.assertSameAsTwisted(
            event(
                "attempt {attempt} {outcome}{error}, result {taken}",
                attempt="a1",
                outcome="succeeded",
                error="",
                taken="accepted",
            )
        )
        self.assertIn("[xwch.worker.service#info] attempt a1 succeeded, result accepted\n", text)

    def test_conversions_specs_attributes_and_items(self) -> None:
        self.assertSameAsTwisted(
            event("{n:5d} {x!r} {p.real} {d[k]} {{braces}}", n=42, x="q", p=3, d={"k": "v"})
        )

    def test_several_lines_are_indented(self) -> None:
        self.assertSameAsTwisted(event("first\nsecond {x}", x="third\nfourth"))

    def test_levels_and_no_namespace(self) -> None:
        for level in (LogLevel.debug, LogLevel.warn, LogLevel.error, LogLevel.critical):
            self.assertSameAsTwisted(event("at {level}", level=level.name, log_level=level))
        no_namespace = event("who?")
        del no_namespace["log_namespace"]
        self.assertSameAsTwisted(no_namespace)

    def test_timestamps_in_successive_seconds(self) -> None:
        self.assertSameAsTwisted(
            event("a", log_time=WHEN),
            event("b", log_time=WHEN + 0.5),
            event("c", log_time=WHEN + 1.0),
            event("d", log_time=WHEN + 3600 * 24 * 180),
            event("e", log_time=WHEN),
        )

    def test_events_twisted_must_format(self) -> None:
        self.assertSameAsTwisted(
            event("missing {nothing}"),
            event("called {f()}", f=lambda: "yes"),
            event("positional {}"),
            event("bad value {v}", v=Unprintable()),
            event(b"bytes {x}", x=1),
            event(None),
            event(""),
            event("no time", log_time=None),
            event("own system", log_system="pid 12"),
            event("no level", log_level=None),
            event("failed: {why}", why="disk", log_failure=_failure()),
        )

    def test_unformattable_event_is_still_a_line(self) -> None:
        text = self.assertSameAsTwisted(event("missing {nothing}"))
        self.assertIn("Unable to format event", text)
