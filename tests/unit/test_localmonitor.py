"""xwch-local's children under ProcessMonitor (xwch/localmonitor.py), on in-memory processes."""

from __future__ import annotations

import errno
import io
import signal
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.processes import FakeProcess, FakeProcessReactor
from xwch.errors import StartFailed
from xwch.localmonitor import (
    MAX_RESTART_DELAY,
    QUICK_DEATH,
    START_TIMEOUT,
    STOP_TIMEOUT,
    TAIL_BYTES,
    TAIL_LINES,
    Child,
    ChildMonitor,
    describe_end,
    log_tail,
)

MARKER = "xwch-test listening on"


@pytest.mark.parametrize(
    ("reason", "said"),
    [
        (ProcessDone(0), "exited with status 0"),
        (ProcessTerminated(exitCode=2), "exited with status 2"),
        (ProcessTerminated(signal=signal.SIGKILL), "was killed by SIGKILL"),
        (ProcessTerminated(signal=signal.SIGTERM, status=signal.SIGTERM), "was killed by SIGTERM"),
        (
            ProcessTerminated(signal=signal.SIGSEGV, status=signal.SIGSEGV | 0x80),
            "was killed by SIGSEGV (core dumped)",
        ),
        (ProcessTerminated(signal=99), "was killed by signal 99"),
        (
            OSError(errno.EAGAIN, "Resource temporarily unavailable"),
            "could not be started: [Errno 11] Resource temporarily unavailable",
        ),
    ],
)
def test_an_end_is_told_by_status_or_signal_name(reason: Exception, said: str) -> None:
    """How a child ended reads as a person would say it, the signal by its name."""
    assert describe_end(Failure(reason)) == said


def test_the_tail_is_the_last_lines_of_the_log(tmp_path: Path) -> None:
    """A report shows the last lines of the log, whole lines only, however long the log."""
    log = tmp_path / "a.log"
    lines = [f"line {n} " + "x" * 100 for n in range(1000)]
    log.write_text("\n".join(lines) + "\n")
    assert log.stat().st_size > TAIL_BYTES
    assert log_tail(log) == lines[-TAIL_LINES:]
    assert log_tail(tmp_path / "missing.log") == []


class ChildMonitorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeProcessReactor()
        self.logs = Path(self.mktemp()) / "logs"
        self.out = io.StringIO()
        self.readied: list[str] = []
        self.monitor = self.make_monitor(restart=True)

    def make_monitor(self, restart: bool) -> ChildMonitor:
        monitor = ChildMonitor(
            self.reactor,
            self.out,
            restart=restart,
            on_ready=lambda child: self.readied.append(child.name),
        )
        monitor.startService()
        self.addCleanup(self.stop, monitor)
        return monitor

    def stop(self, monitor: ChildMonitor) -> None:
        """Stop the monitor, its children obeying SIGTERM; every process has ended after."""
        stopped = Deferred.fromCoroutine(monitor.stop())
        for process in self.reactor.spawned:
            if process.alive and "TERM" in process.signals:
                process.exit(0)
        self.successResultOf(stopped)
        assert not [p for p in self.reactor.spawned if p.alive]

    def add(self, name: str) -> Child:
        return self.monitor.add_child(
            name, MARKER, ["python", "-m", "child", name], {"XWCH_HOME": "/h"}, self.log(name)
        )

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def process(self, name: str) -> FakeProcess:
        return self.reactor.of(name)[-1]

    def ready(self, *children: Child) -> list[str]:
        waiting = Deferred.fromCoroutine(self.monitor.wait_ready(children))
        for child in children:
            self.process(child.name).print(f"{MARKER} http://127.0.0.1:1/{child.name}\n")
        return self.successResultOf(waiting)

    def report(self) -> list[str]:
        return self.out.getvalue().splitlines()

    def test_the_ready_line_tells_the_address(self) -> None:
        """A child is ready once it prints its marker, and what follows is its address; its
        standard output goes to its log and its standard error is the log file itself."""
        child = self.add("coordinator")
        waiting = Deferred.fromCoroutine(self.monitor.wait_ready([child]))
        process = self.process("coordinator")
        self.assertEqual(process.argv, ["python", "-m", "child", "coordinator"])
        self.assertEqual(process.env, {"XWCH_HOME": "/h"})
        self.assertEqual(process.child_fds[1], "r")
        self.assertIsInstance(process.child_fds[2], int)
        process.print("starting\nxwch-test listen")
        self.assertNoResult(waiting)
        process.print("ing on http://127.0.0.1:8750\nafter\n")
        self.assertEqual(self.successResultOf(waiting), ["http://127.0.0.1:8750"])
        self.assertEqual(child.announced, "http://127.0.0.1:8750")
        self.assertEqual(child.pid, process.pid)
        self.assertEqual(
            self.log("coordinator").read_text(),
            "starting\nxwch-test listening on http://127.0.0.1:8750\nafter\n",
        )
        self.assertEqual(self.readied, ["coordinator"])
        self.assertEqual(self.report(), [])

    def test_a_child_dying_before_it_is_ready_fails_the_start_at_once(self) -> None:
        """A child that exits before its ready line: one line naming it and its exit status,
        then the end of its log; the start-up fails without waiting, and it is not started
        again."""
        first, second = self.add("warehouse-1"), self.add("warehouse-2")
        waiting = Deferred.fromCoroutine(self.monitor.wait_ready([first, second]))
        self.log("warehouse-2").write_text("".join(f"log line {n}\n" for n in range(15)))
        self.process("warehouse-2").exit(2)
        failure = self.failureResultOf(waiting, StartFailed)
        log = self.log("warehouse-2")
        self.assertEqual(
            self.report(),
            [
                "xwch-local: warehouse-2 exited with status 2 before it was ready; stopping "
                f"everything. The end of {log}:",
                *[f"    log line {n}" for n in range(5, 15)],
            ],
        )
        self.assertIn("warehouse-2 exited with status 2", str(failure.value))
        self.reactor.advance(MAX_RESTART_DELAY * 2)
        self.assertEqual(len(self.reactor.of("warehouse-2")), 1)

    def test_a_child_killed_after_it_was_ready_is_started_again(self) -> None:
        """A ready child killed by a signal is reported by the signal's name, started again
        with the same arguments, and said to be ready again."""
        child = self.add("worker-1")
        self.ready(child)
        self.reactor.advance(QUICK_DEATH + 1)
        self.process("worker-1").die(signal.SIGKILL)
        log = self.log("worker-1")
        self.assertEqual(
            self.report(),
            [
                f"xwch-local: worker-1 was killed by SIGKILL; restarting it. The end of {log}:",
                "    xwch-test listening on http://127.0.0.1:1/worker-1",
            ],
        )
        self.reactor.advance(0)
        again = self.reactor.of("worker-1")
        self.assertEqual(len(again), 2)
        self.assertEqual(again[1].argv, again[0].argv)
        self.assertEqual(child.restarts, 1)
        again[1].print(f"{MARKER} w-2\n")
        self.assertEqual(self.report()[-1], "xwch-local: worker-1 is ready again (restart 1)")
        self.assertEqual((child.announced, child.pid), ("w-2", again[1].pid))
        self.assertEqual(self.readied, ["worker-1", "worker-1"])

    def test_a_child_dying_young_again_and_again_waits_longer_each_time(self) -> None:
        """A child dying soon after its start is started again after a delay that doubles."""
        child = self.add("coordinator")
        self.ready(child)
        self.process("coordinator").exit(1)
        self.assertIn("coordinator exited with status 1; restarting it in 1 s.", self.report()[0])
        self.reactor.advance(1)
        self.out.truncate(0)
        self.out.seek(0)
        self.process("coordinator").exit(1)
        self.assertIn(
            "coordinator exited with status 1 before it was ready again; restarting it in 2 s.",
            self.report()[0],
        )
        self.reactor.advance(1.9)
        self.assertEqual(len(self.reactor.of("coordinator")), 2)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.of("coordinator")), 3)
        self.assertEqual(child.restarts, 2)

    def test_with_restarts_off_a_dead_child_stays_dead(self) -> None:
        """Restarts off: a child dying after it was ready is reported and not started again."""
        self.monitor = self.make_monitor(restart=False)
        self.ready(self.add("worker-1"))
        self.process("worker-1").die(signal.SIGTERM)
        self.assertIn(
            "xwch-local: worker-1 was killed by SIGTERM; not restarting it (restarts are off).",
            self.report()[0],
        )
        self.reactor.advance(MAX_RESTART_DELAY * 2)
        self.assertEqual(len(self.reactor.of("worker-1")), 1)

    def test_a_silent_child_fails_the_start_after_the_timeout(self) -> None:
        """A child alive but never ready fails the start-up after START_TIMEOUT, saying so."""
        child = self.add("worker-1")
        waiting = Deferred.fromCoroutine(self.monitor.wait_ready([child]))
        self.reactor.advance(START_TIMEOUT - 1)
        self.assertNoResult(waiting)
        self.reactor.advance(1)
        self.failureResultOf(waiting, StartFailed)
        self.assertEqual(
            self.report(),
            [
                "xwch-local: worker-1 did not say it was ready within 60 s; stopping "
                f"everything; its log ({self.log('worker-1')}) is empty"
            ],
        )
        # Said late, while everything stops: nothing breaks.
        self.process("worker-1").print(f"{MARKER} w-1\n")

    def test_a_child_that_cannot_be_spawned_fails_the_start(self) -> None:
        """A child whose process cannot be created is reported with the system's reason."""
        self.reactor.refuse = OSError(errno.EAGAIN, "Resource temporarily unavailable")
        child = self.add("worker-1")
        waiting = Deferred.fromCoroutine(self.monitor.wait_ready([child]))
        self.failureResultOf(waiting, StartFailed)
        self.assertIn(
            "xwch-local: worker-1 could not be started: [Errno 11] Resource temporarily "
            "unavailable; stopping everything",
            self.report()[0],
        )
        # ProcessMonitor logs the failure too, as it does for any spawn failing.
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_stopping_terminates_then_kills_and_tells_nothing(self) -> None:
        """Stopping sends SIGTERM to every child, SIGKILL to one still there after
        STOP_TIMEOUT, ends once all are gone, and reports none of these ends."""
        obedient, stubborn = self.add("warehouse-1"), self.add("worker-1")
        self.ready(obedient, stubborn)
        stopped = Deferred.fromCoroutine(self.monitor.stop())
        self.assertEqual(self.process("warehouse-1").signals, ["TERM"])
        self.assertEqual(self.process("worker-1").signals, ["TERM"])
        self.process("warehouse-1").exit(0)
        self.reactor.advance(STOP_TIMEOUT - 1)
        self.assertNoResult(stopped)
        self.reactor.advance(1)
        self.assertEqual(self.process("worker-1").signals, ["TERM", "KILL"])
        self.process("worker-1").die(signal.SIGKILL)
        self.successResultOf(stopped)
        self.assertEqual(self.report(), [])
        self.reactor.advance(MAX_RESTART_DELAY * 2)
        self.assertEqual(len(self.reactor.spawned), 2)
