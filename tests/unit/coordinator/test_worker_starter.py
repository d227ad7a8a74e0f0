"""Coordinators start workers (--min-workers N --worker-command CMD): only the member serving,
only while workers are short, at most one start per interval, none twice for one shortfall."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.launch import FakeLaunch
from xwch.coordinator.__main__ import main as coordinator_main
from xwch.coordinator.worker_starter import WorkerStarter

URL = "http://c1.test:8750"
COMMAND = "xwch-worker --token T --data /tmp/w-$XWCH_START_ID"


class WorkerStarterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.launch = FakeLaunch()
        # None: this member stands by; a number: it serves, with that many live workers.
        self.live: int | None = 0
        self.starter = WorkerStarter(
            self.clock,
            lambda: self.live,
            self.launch,
            minimum=2,
            command=COMMAND,
            log_path=Path("/tmp/started-workers.log"),
            coordinator_url=lambda: URL,
        )
        self.starter.startService()
        self.addCleanup(self.starter.stopService)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, checked every CHECK_INTERVAL as the service does."""
        steps = round(seconds / WorkerStarter.CHECK_INTERVAL)
        for _ in range(steps):
            self.clock.advance(WorkerStarter.CHECK_INTERVAL)

    def test_a_serving_member_short_of_workers_runs_the_command_once_per_interval(self) -> None:
        """Two wanted, none live: one start at once, the second only an interval later."""
        self.advance(WorkerStarter.CHECK_INTERVAL)
        self.assertEqual(len(self.launch.started), 1)
        [first] = self.launch.started
        self.assertEqual(first.argv, ["/bin/sh", "-c", COMMAND])
        self.assertEqual(first.env["XWCH_COORDINATOR"], URL)
        self.advance(WorkerStarter.START_INTERVAL - WorkerStarter.CHECK_INTERVAL)
        self.assertEqual(len(self.launch.started), 1)
        self.advance(WorkerStarter.CHECK_INTERVAL)
        self.assertEqual(len(self.launch.started), 2)
        ids = {s.env["XWCH_START_ID"] for s in self.launch.started}
        self.assertEqual(len(ids), 2, "each start has its own id")

    def test_a_standby_starts_nothing(self) -> None:
        """The member serving decides: a standby never runs the command."""
        self.live = None
        self.advance(3 * WorkerStarter.START_INTERVAL)
        self.assertEqual(self.launch.started, [])

    def test_enough_live_workers_start_nothing(self) -> None:
        self.live = 2
        self.advance(3 * WorkerStarter.START_INTERVAL)
        self.assertEqual(self.launch.started, [])

    def test_workers_on_their_way_are_not_started_again_until_they_are_late(self) -> None:
        """Started workers count until they register; one that never does is replaced after
        the arrival timeout."""
        self.advance(2 * WorkerStarter.START_INTERVAL)
        self.assertEqual(len(self.launch.started), 2)
        # One registers; the other is slow: nothing more to start.
        self.live = 1
        self.advance(WorkerStarter.ARRIVAL_TIMEOUT - 2 * WorkerStarter.START_INTERVAL)
        self.assertEqual(len(self.launch.started), 2)
        # The slow one is late now: another is started for it.
        self.advance(2 * WorkerStarter.START_INTERVAL)
        self.assertEqual(len(self.launch.started), 3)

    def test_a_command_that_fails_is_run_again_after_the_interval(self) -> None:
        """A failed command brings no worker: the shortfall stands, and the next start waits
        for the interval (no tight loop of failures)."""
        self.starter.minimum = 1
        self.advance(WorkerStarter.CHECK_INTERVAL)
        self.launch.started[0].end(status=127)
        self.assertEqual(self.starter.on_their_way, {})
        self.advance(WorkerStarter.START_INTERVAL - WorkerStarter.CHECK_INTERVAL)
        self.assertEqual(len(self.launch.started), 1)
        self.advance(WorkerStarter.CHECK_INTERVAL)
        self.assertEqual(len(self.launch.started), 2)

    def test_a_submission_that_ends_well_still_counts_its_worker_on_its_way(self) -> None:
        """A batch submission ends at once with status 0: its worker is still coming."""
        self.starter.minimum = 1
        self.advance(WorkerStarter.CHECK_INTERVAL)
        self.launch.started[0].end(status=0)
        self.advance(3 * WorkerStarter.START_INTERVAL)
        self.assertEqual(len(self.launch.started), 1)

    def test_a_command_that_cannot_be_run_is_logged_and_tried_after_the_interval(self) -> None:
        self.starter.minimum = 1
        self.launch.refuse = FileNotFoundError("no /bin/sh")
        self.advance(WorkerStarter.START_INTERVAL)
        self.assertEqual(self.starter.starts, 1)
        self.launch.refuse = None
        self.advance(WorkerStarter.START_INTERVAL)
        self.assertEqual(len(self.launch.started), 1)

    def test_a_member_that_starts_serving_counts_afresh(self) -> None:
        """Starts made while serving are forgotten on standing by: the next member to serve
        counts its own workers."""
        self.starter.minimum = 1
        self.advance(WorkerStarter.CHECK_INTERVAL)
        self.live = None
        self.advance(WorkerStarter.CHECK_INTERVAL)
        self.assertEqual(self.starter.on_their_way, {})
        self.live = 1
        self.advance(3 * WorkerStarter.START_INTERVAL)
        self.assertEqual(len(self.launch.started), 1)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--min-workers", "0", "--worker-command", "true"], "--min-workers must be at least 1"),
        (["--min-workers", "2"], "--min-workers and --worker-command go together"),
        (["--worker-command", "true"], "--min-workers and --worker-command go together"),
        (["--min-workers", "1", "--worker-command", " "], "--worker-command must not be empty"),
        (
            ["--min-workers", "1", "--worker-command", "true", "--worker-start-interval", "0"],
            "--worker-start-interval must be a positive number",
        ),
    ],
)
def test_the_command_line_refuses_bad_worker_starting_flags(
    flags: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        coordinator_main(flags)
    assert exit.value.code == 2
    assert named in capsys.readouterr().err
