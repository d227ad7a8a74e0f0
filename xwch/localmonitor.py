"""The children of ``xwch-local`` kept running by Twisted's :class:`ProcessMonitor`.

The monitor starts a child that dies again (at once if it had run a while, else after a delay
doubling at each quick death) and stops children with SIGTERM, then SIGKILL after ``killTime``.
On top of it, for xwch-local: a child's standard error is its log file and its standard output
is appended there too; the first line of standard output starting with the child's marker
(``xwch-coordinator listening on``) says it is ready and what its address is. A death is
reported on one line naming the child and its exit status or signal, followed by the end of its
log. A child that dies before it was ever ready is not started again: the start-up has failed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from twisted.internet.defer import Deferred, DeferredList, FirstError
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.python.failure import Failure
from twisted.runner.procmon import LoggingProtocol, ProcessMonitor

from xwch.errors import StartFailed

# How long a child may take to say it is ready.
START_TIMEOUT = 60.0
# How long a child asked to stop (SIGTERM) has before it is killed (SIGKILL).
STOP_TIMEOUT = 10
# A child that dies within this many seconds of its start is started again only after a delay
# that doubles each time. ProcessMonitor's 1 s is shorter than a Python child takes to start,
# so a child failing as it starts (a broken store, a port taken) would be restarted at once,
# over and over; 5 s covers its start.
QUICK_DEATH = 5
# The longest of those delays. ProcessMonitor's hour suits a server nobody watches; here
# someone is waiting for the platform.
MAX_RESTART_DELAY = 30
# The end of a dead child's log shown in its report: enough for the end of a traceback.
TAIL_LINES = 10
TAIL_BYTES = 16 * 1024


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; the number itself for a signal Python does not know."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_end(reason: Failure) -> str:
    """How a child ended, for people: ``exited with status 2``, ``was killed by SIGKILL``."""
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exited with status 0"
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            dumped = value.status is not None and os.WCOREDUMP(value.status)
            return f"was killed by {signal_name(value.signal)}" + (
                " (core dumped)" if dumped else ""
            )
        return f"exited with status {value.exitCode}"
    return f"could not be started: {reason.getErrorMessage()}"


def log_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of the file at ``path`` (none if it is missing)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_BYTES)
            f.seek(start)
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    if start > 0 and text:
        text = text[1:]  # begun mid-line
    return text[-lines:]


@dataclass
class Child:
    """One child of xwch-local through all its incarnations: how to start it, what it said."""

    name: str
    marker: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    pid: int | None = None
    # What followed the marker on its last ready line: a URL, or a worker's id.
    announced: str | None = None
    started: bool = False
    ready_once: bool = False
    restarts: int = 0
    first_ready: Deferred[str] = field(default_factory=Deferred)


class ChildProtocol(LoggingProtocol):
    """One incarnation of a child: its standard output, scanned for the ready line, and its end.

    A :class:`LoggingProtocol` so that ProcessMonitor's own ``processEnded`` does its
    bookkeeping (forget the process, schedule the restart with its back-off).
    """

    def __init__(self, monitor: ChildMonitor, child: Child, log: BinaryIO) -> None:
        self.service = monitor
        self.name = child.name
        self.monitor = monitor
        self.child = child
        self.ready = False
        self.ended: Deferred[None] = Deferred()
        self._log = log
        self._buffer = b""

    def connectionMade(self) -> None:
        super().connectionMade()
        assert self.transport is not None
        self.child.pid = self.transport.pid

    def outReceived(self, data: bytes) -> None:
        # Not handed on to LoggingProtocol: the log file has it, the monitor's logger would only
        # say it again.
        self._log.write(data)
        self._log.flush()
        if self.ready:
            return
        self._buffer += data
        while not self.ready and b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            text = line.decode("utf-8", "replace").strip()
            if text.startswith(self.child.marker):
                self.ready = True
                self._buffer = b""
                self.monitor.child_ready(self, text[len(self.child.marker) :].strip())

    def processEnded(self, reason: Failure) -> None:
        self._log.close()
        try:
            super().processEnded(reason)
            self.monitor.child_ended(self, reason)
        finally:
            # Whatever went wrong above, stopping must not wait for this one forever.
            self.ended.callback(None)


class ChildMonitor(ProcessMonitor):
    """A ProcessMonitor whose children announce when they are ready and whose deaths are told.

    ``out`` (standard error) gets the reports, one line each, ``xwch-local: `` first; with
    ``restart`` false a child that dies after it was ready is not started again. ``on_ready``
    is called each time a child says it is ready.
    """

    killTime = STOP_TIMEOUT
    threshold = QUICK_DEATH
    maxRestartDelay = MAX_RESTART_DELAY

    def __init__(
        self,
        reactor: IReactorProcess,
        out: IO[str],
        restart: bool = True,
        on_ready: Callable[[Child], None] | None = None,
    ) -> None:
        super().__init__(reactor)
        self.spawner = reactor
        self.clock = IReactorTime(reactor)
        self.out = out
        # Not ``self.restart``: ProcessMonitor keeps its scheduled restarts under that name.
        self.restarting = restart
        self.on_ready = on_ready
        self.children: dict[str, Child] = {}

    def add_child(
        self, name: str, marker: str, argv: Sequence[str], env: dict[str, str], log_path: Path
    ) -> Child:
        """Start a child (the monitor running) named ``name``, ready when it prints ``marker``."""
        child = Child(name, marker, list(argv), env, log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.children[name] = child
        self.addProcess(name, list(argv), env=env)
        return child

    def startProcess(self, name: str) -> None:
        # ProcessMonitor.startProcess again, with the same bookkeeping (``protocols``,
        # ``timeStarted``), for what it cannot be told: our protocol, the log file as standard
        # error, and the child's arguments as they are now (an address pinned after the first
        # start), where the monitor keeps those it was first given.
        if name in self.protocols:
            return
        child = self.children[name]
        log = child.log_path.open("ab")
        proto = ChildProtocol(self, child, log)
        if child.started:
            child.restarts += 1
        child.started = True
        self.protocols[name] = proto
        self.timeStarted[name] = self.clock.seconds()
        try:
            # Standard error is the log file itself: relaying every log line through this
            # process cost it as much CPU as a warehouse's. Standard output still comes here,
            # for the ready line.
            self.spawner.spawnProcess(
                proto,
                child.argv[0],
                child.argv,
                env=child.env,
                childFDs={0: "w", 1: "r", 2: log.fileno()},
            )
        except OSError:
            reason = Failure()
            log.close()
            # Private, but what ProcessMonitor.startProcess itself does when spawning fails:
            # the one way to have the monitor forget the protocol and schedule the restart.
            self._monitoredProcessExited(name, reason)
            self.child_ended(proto, reason)
            proto.ended.callback(None)

    def child_ready(self, proto: ChildProtocol, announced: str) -> None:
        child = proto.child
        child.announced = announced
        first = not child.ready_once
        child.ready_once = True
        if not first:
            self._say(f"{child.name} is ready again (restart {child.restarts})")
        if self.on_ready is not None:
            self.on_ready(child)
        # Not when the start-up has given up on it (silent past START_TIMEOUT).
        if first and not child.first_ready.called:
            child.first_ready.callback(announced)

    def child_ended(self, proto: ChildProtocol, reason: Failure) -> None:
        """Once the monitor has learnt of the end: tell how the child ended and what comes
        next, unless it was asked to stop; forget it if it is not to be started again."""
        if not self.running:
            return
        child = proto.child
        final = not child.ready_once or not self.restarting
        if final:
            scheduled = self.restart.get(child.name)
            if scheduled is not None and scheduled.active():
                scheduled.cancel()
            self.removeProcess(child.name)
        what = f"{child.name} {describe_end(reason)}"
        # Not said of one that never ran (its spawning failed).
        if reason.check(ProcessDone, ProcessTerminated) and not proto.ready:
            what += " before it was ready" + (" again" if child.ready_once else "")
        step = "stopping everything" if not child.ready_once else self._next_step(child, final)
        message = f"{what}; {step}"
        self._report(message, child)
        if not child.ready_once and not child.first_ready.called:
            child.first_ready.errback(StartFailed(message))

    def _next_step(self, child: Child, final: bool) -> str:
        if final:
            return "not restarting it (restarts are off)"
        call = self.restart.get(child.name)
        delay = call.getTime() - self.clock.seconds() if call is not None and call.active() else 0
        # The delay as scheduled (whole seconds), not less the moment since.
        return f"restarting it in {delay:.0f} s" if delay >= 0.5 else "restarting it"

    async def wait_ready(self, children: Sequence[Child]) -> list[str]:
        """What each of ``children`` announced, once all are ready.

        Raises StartFailed (reported already) as soon as one dies before it is ready, or when
        one is still silent after START_TIMEOUT.
        """
        waiting = DeferredList(
            [c.first_ready for c in children], fireOnOneErrback=True, consumeErrors=True
        )
        timeout = self.clock.callLater(START_TIMEOUT, self._silent, children)
        try:
            results = await waiting
        except FirstError as e:
            e.subFailure.raiseException()
        finally:
            if timeout.active():
                timeout.cancel()
        return [announced for _, announced in results]

    def _silent(self, children: Sequence[Child]) -> None:
        silent = next(c for c in children if not c.first_ready.called)
        message = (
            f"{silent.name} did not say it was ready within {START_TIMEOUT:g} s; "
            "stopping everything"
        )
        self._report(message, silent)
        silent.first_ready.errback(StartFailed(message))

    async def stop(self) -> None:
        """Stop every child (SIGTERM, SIGKILL after ``killTime``) and wait until all ended."""
        ending = [p.ended for p in self.protocols.values() if isinstance(p, ChildProtocol)]
        if self.running:
            self.stopService()
        await DeferredList(ending)

    def _report(self, message: str, child: Child) -> None:
        tail = log_tail(child.log_path)
        if tail:
            self._say(f"{message}. The end of {child.log_path}:")
            for line in tail:
                self.out.write(f"    {line}\n")
            self.out.flush()
        else:
            self._say(f"{message}; its log ({child.log_path}) is empty")

    def _say(self, line: str) -> None:
        self.out.write(f"xwch-local: {line}\n")
        self.out.flush()
