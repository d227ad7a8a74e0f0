"""The worker's background work: failures logged, stopping waits for what still runs."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from xwch.worker.background import BackgroundWork


class Refused(Exception):
    pass


async def waiting_for(d: Deferred[None]) -> None:
    await d


async def failing(error: Exception) -> None:
    raise error


class BackgroundWorkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stopping = False
        self.background = BackgroundWork(lambda: self.stopping, told=(Refused,))

    def test_stopping_waits_for_what_still_runs(self) -> None:
        ends: Deferred[None] = Deferred()
        self.background.run(waiting_for(ends), "some work")
        settled = self.background.settled()
        self.assertNoResult(settled)
        ends.callback(None)
        self.successResultOf(settled)
        self.successResultOf(self.background.settled())

    def test_a_failure_is_logged_with_its_traceback_a_told_error_in_one_line(self) -> None:
        with capturedLogs() as events:
            self.successResultOf(self.background.run(failing(ValueError("bug")), "some work"))
            self.successResultOf(self.background.run(failing(Refused("go away")), "register"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        [told] = [e for e in events if e["log_level"] is LogLevel.error and "log_failure" not in e]
        self.assertIsInstance(told["error"], Refused)

    def test_a_cancellation_while_stopping_is_not_logged(self) -> None:
        self.stopping = True
        with capturedLogs() as events:
            running = self.background.run(waiting_for(Deferred()), "some work")
            running.cancel()
            self.successResultOf(running)
        self.assertEqual(events, [])
