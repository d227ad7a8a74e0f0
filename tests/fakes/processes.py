"""Child processes that exist only in memory: a reactor that spawns them, on a Clock.

:class:`FakeProcessReactor` records each ``spawnProcess`` as a :class:`FakeProcess`, the
process transport its protocol is connected to; a test makes the process print, exit or die of
a signal, and sees the signals it was sent.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol, IReactorProcess
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer


class FakeProcess:
    """One spawned process: what it was started with, the signals it got, and its end."""

    def __init__(
        self,
        protocol: IProcessProtocol,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        child_fds: Mapping[int, object] | None,
        pid: int,
    ) -> None:
        self.proto = protocol
        self.argv = list(argv)
        self.env = dict(env or {})
        self.child_fds = dict(child_fds or {})
        self.pid: int | None = pid
        self.signals: list[str] = []

    @property
    def alive(self) -> bool:
        return self.pid is not None

    def signalProcess(self, name: str) -> None:
        if self.pid is None:
            raise ProcessExitedAlready()
        self.signals.append(name)

    def print(self, text: str) -> None:
        """The process writes ``text`` on its standard output."""
        self.proto.childDataReceived(1, text.encode())

    def exit(self, status: int) -> None:
        """The process exits with ``status``."""
        reason = ProcessDone(0) if status == 0 else ProcessTerminated(exitCode=status)
        self._end(reason)

    def die(self, signum: int = signal.SIGKILL, core: bool = False) -> None:
        """The process is killed by ``signum``."""
        status = signum | (0x80 if core else 0)
        assert os.WIFSIGNALED(status)
        self._end(ProcessTerminated(signal=signum, status=status))

    def _end(self, reason: Exception) -> None:
        assert self.pid is not None, "ended twice"
        self.pid = None
        self.proto.childConnectionLost(0)
        self.proto.childConnectionLost(1)
        self.proto.childConnectionLost(2)
        self.proto.processExited(Failure(reason))
        self.proto.processEnded(Failure(reason))

    # What the rest of IProcessTransport asks of a transport none of our code calls.
    def loseConnection(self) -> None:
        pass

    def closeStdin(self) -> None:
        pass


@implementer(IReactorProcess)
class FakeProcessReactor(MemoryReactorClock):
    """A memory reactor on a Clock whose ``spawnProcess`` makes a :class:`FakeProcess`.

    Set ``refuse`` to an OSError for ``spawnProcess`` to raise it, as a failed fork does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[FakeProcess] = []
        self.refuse: OSError | None = None
        self._next_pid = 1000

    # IReactorProcess's names: callers pass some of them by keyword.
    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,  # noqa: N803
        executable: bytes | str,
        args: Sequence[bytes | str] = (),
        env: Mapping[str, str] | None = None,
        path: Any = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,  # noqa: N803
        childFDs: Mapping[int, object] | None = None,  # noqa: N803
    ) -> FakeProcess:
        if self.refuse is not None:
            raise self.refuse
        self._next_pid += 1
        process = FakeProcess(
            processProtocol, [str(a) for a in args], env, childFDs, self._next_pid
        )
        self.spawned.append(process)
        processProtocol.makeConnection(process)  # type: ignore[arg-type]
        return process

    def of(self, argv_part: str) -> list[FakeProcess]:
        """The processes spawned so far one of whose arguments contains ``argv_part``, oldest first."""
        return [p for p in self.spawned if any(argv_part in a for a in p.argv)]
