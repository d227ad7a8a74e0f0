"""Coordinators start workers: ``--min-workers N --worker-command CMD``.

While the groups this member holds have fewer than N live workers, it runs CMD (a shell
command: a local process, ``ssh``, a batch-system submission) to start one more, at most one
start every ``start_interval`` seconds, and logs what it ran and why. A member holding no group
starts nothing. A worker started registers in the group with the fewest workers, of whichever
member: members short of workers each get the next ones.

A worker started is counted *on its way* until a worker registers (whichever: one more live
worker accounts for the oldest start on its way), its command fails, or ``ARRIVAL_TIMEOUT``
passes: a batch system may take minutes to start one, and starting another every few seconds
meanwhile would flood it. The command runs detached (``xwch/detached.py``): it outlives this
coordinator, which reaps it and logs how it ended. It sees ``XWCH_COORDINATOR`` (this member's
URL, which ``xwch-worker`` takes when no ``--coordinator`` is given) and ``XWCH_START_ID`` (unique
to each start, for a data folder or a name).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from xwch.coordinator.managers import Managers
from xwch.coordinator.workers import WORKER_ALIVE
from xwch.detached import Ended, Launch

# How many live workers the groups this member holds have; None when it holds none.
LiveWorkers = Callable[[], "int | None"]


def live_workers(managers: Managers | None) -> int | None:
    """Live workers known to ``managers``; None when there are none (this member holds no
    group)."""
    if managers is None:
        return None
    return sum(1 for w in managers.workers.workers.values() if w.state == WORKER_ALIVE)


class WorkerStarter(Service):
    """Runs the worker command while the platform has fewer live workers than wanted."""

    log = Logger()

    # How often the count of live workers is looked at.
    CHECK_INTERVAL = 1.0
    # At most one start this often (``--worker-start-interval``): a command that fails at once
    # is not run in a tight loop, and workers slow to come are not started many times over.
    START_INTERVAL = 5.0
    # A worker started and not registered after this long is not coming: start another.
    ARRIVAL_TIMEOUT = 120.0

    def __init__(
        self,
        reactor: IReactorTime,
        live: LiveWorkers,
        launch: Launch,
        minimum: int,
        command: str,
        log_path: Path,
        coordinator_url: Callable[[], str],
        start_interval: float | None = None,
    ) -> None:
        self._reactor = reactor
        self._live = live
        self._launch = launch
        self.minimum = minimum
        self.command = command
        self._log_path = log_path
        self._coordinator_url = coordinator_url
        self.start_interval = start_interval or self.START_INTERVAL
        # Starts on their way: start id -> when started, oldest first.
        self.on_their_way: dict[str, float] = {}
        self.starts = 0
        self._last_start: float | None = None
        self._last_live: int | None = None
        self._member = secrets.token_hex(3)
        self._loop = LoopingCall(self.check)
        self._loop.clock = reactor

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.CHECK_INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        """Start one worker if the platform is short of them and the last start is not recent."""
        live = self._live()
        now = self._reactor.seconds()
        if live is None:
            # Not serving: the member that serves decides; its count, not ours, is right.
            self.on_their_way.clear()
            self._last_live = None
            return
        self._count_arrivals(live)
        self._forget_late(now)
        short = self.minimum - live - len(self.on_their_way)
        if short <= 0:
            return
        if self._last_start is not None and now - self._last_start < self.start_interval:
            return
        self._start(now, live)

    def _count_arrivals(self, live: int) -> None:
        if self._last_live is not None and live > self._last_live:
            for start_id in list(self.on_their_way)[: live - self._last_live]:
                del self.on_their_way[start_id]
        self._last_live = live

    def _forget_late(self, now: float) -> None:
        for start_id, started in list(self.on_their_way.items()):
            if now - started >= self.ARRIVAL_TIMEOUT:
                del self.on_their_way[start_id]
                self.log.warn(
                    "worker start {start} did not register within {timeout:g} s",
                    start=start_id,
                    timeout=self.ARRIVAL_TIMEOUT,
                )

    def _start(self, now: float, live: int) -> None:
        self._last_start = now
        self.starts += 1
        start_id = f"{self._member}-{self.starts}"
        env = dict(os.environ)
        env["XWCH_COORDINATOR"] = self._coordinator_url()
        env["XWCH_START_ID"] = start_id
        argv = ["/bin/sh", "-c", self.command]
        try:
            pid = self._launch(
                argv, self._log_path, env, lambda ended: self._ended(start_id, ended)
            )
        except OSError as e:
            self.log.error(
                "cannot run the worker command {command!r}: {error}", command=self.command, error=e
            )
            return
        self.on_their_way[start_id] = now
        self.log.info(
            "{live} live worker(s), {minimum} wanted: started worker {start} with {command!r} "
            "(pid {pid}, output in {log})",
            live=live,
            minimum=self.minimum,
            start=start_id,
            command=self.command,
            pid=pid,
            log=str(self._log_path),
        )

    def _ended(self, start_id: str, ended: Ended) -> None:
        if ended.ok:
            # A submission (ssh -f, a batch system) ends at once: its worker is still coming.
            self.log.info(
                "worker command of start {start} ended (pid {pid}, {how})",
                start=start_id,
                pid=ended.pid,
                how=str(ended),
            )
            return
        self.on_their_way.pop(start_id, None)
        self.log.warn(
            "worker command of start {start} ended (pid {pid}, {how}); see {log}",
            start=start_id,
            pid=ended.pid,
            how=str(ended),
            log=str(self._log_path),
        )
