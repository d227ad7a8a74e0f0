"""Starting a process that lives on by itself: a worker a coordinator starts, a coordinator a
worker starts.

Such a process must outlive the one that started it and never become its zombie. It runs in a
session of its own (``setsid``), so that a signal to the starter's process group (Ctrl-C in a
terminal, a service manager stopping it) does not reach it; its output goes to a file, not a
pipe, so that it does not die of a broken pipe when the starter goes away; and it is started
through the reactor, whose SIGCHLD handling reaps it and tells how it ended.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

# Run by the interpreter before the command: a new session, then the command in its place (same
# pid, so the pid told is the command's).
_NEW_SESSION = "import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])"


@dataclass(frozen=True)
class Ended:
    """How a detached process ended: its exit status, or the signal that killed it."""

    pid: int
    status: int | None
    signal: int | None

    @property
    def ok(self) -> bool:
        return self.status == 0

    def __str__(self) -> str:
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exit status {self.status}"


class Launch(Protocol):
    """Starts ``argv`` detached, its output appended to ``log``; returns its pid and calls
    ``on_end`` once it ended. Raises OSError if it cannot be started."""

    def __call__(
        self,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str],
        on_end: Callable[[Ended], None],
    ) -> int: ...


class _EndWatcher(ProcessProtocol):
    def __init__(self, on_end: Callable[[Ended], None]) -> None:
        self._on_end = on_end
        # Kept: the transport forgets its pid when the process is reaped.
        self.pid = 0

    def makeConnection(self, transport: Any) -> None:
        self.pid = int(transport.pid or 0)
        super().makeConnection(transport)

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessDone):
            ended = Ended(self.pid, 0, None)
        elif isinstance(value, ProcessTerminated):
            ended = Ended(self.pid, value.exitCode, value.signal)
        else:
            ended = Ended(self.pid, None, None)
        self._on_end(ended)


def launcher(reactor: IReactorProcess) -> Launch:
    """A :class:`Launch` that starts processes through ``reactor``."""

    def launch(
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str],
        on_end: Callable[[Ended], None],
    ) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        watcher = _EndWatcher(on_end)
        with open(log, "ab") as out, open(os.devnull, "rb") as nothing:
            # The child gets its own copies of these descriptors; ours close here.
            transport = reactor.spawnProcess(
                watcher,
                sys.executable,
                [sys.executable, "-c", _NEW_SESSION, *argv],
                env=dict(env),
                childFDs={0: nothing.fileno(), 1: out.fileno(), 2: out.fileno()},
            )
        assert transport.pid is not None
        return int(transport.pid)

    return launch
