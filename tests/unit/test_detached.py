"""A process started detached: its own session, its output in a file, reaped with its end told."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from xwch.detached import Ended, launcher


class DetachedTests(TestCase):
    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).absolute()
        self.launch = launcher(cast(IReactorProcess, reactor))

    def start(self, script: str) -> tuple[int, Deferred[Ended]]:
        ended: Deferred[Ended] = Deferred()
        pid = self.launch(
            ["/bin/sh", "-c", script], self.folder / "out.log", dict(os.environ), ended.callback
        )
        return pid, ended

    def read_log(self) -> str:
        try:
            return (self.folder / "out.log").read_text()
        except FileNotFoundError:
            return ""

    async def test_its_output_goes_to_the_file_and_its_exit_status_is_told(self) -> None:
        pid, ended = self.start("echo said; echo complained >&2; exit 3")
        end = await ended
        self.assertEqual((end.pid, end.status, end.signal, end.ok), (pid, 3, None, False))
        self.assertEqual((self.folder / "out.log").read_text(), "said\ncomplained\n")

    async def test_it_runs_in_a_session_of_its_own_and_is_reaped_when_killed(self) -> None:
        """A signal to the starter's process group does not reach it; killed, it is no zombie:
        its end is told."""
        pid, ended = self.start("echo ready; exec sleep 60")
        # Once the shell speaks, the new session was made (it comes before the shell).
        while "ready" not in self.read_log():
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(os.getsid(pid), pid)
        self.assertNotEqual(os.getpgid(pid), os.getpgid(0))
        os.kill(pid, signal.SIGKILL)
        end = await ended
        self.assertEqual((end.pid, end.signal), (pid, signal.SIGKILL))
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
