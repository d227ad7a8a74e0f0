"""How an attempt's launcher is started: the native launcher, a fresh interpreter, or a fork of
the fork server.

Every way the process runs the launcher's steps with the same options (every sandbox step
happens in it: :mod:`xwch.worker.launcher`, or its C twin :file:`launch.c`), and the attempt's
:class:`ProcessProtocol` hears the same events as
from ``reactor.spawnProcess``: ``childDataReceived`` for descriptors 1, 2 and :data:`STATUS_FD`,
``processExited`` when the program has exited, ``processEnded`` once its pipes are closed too.

:class:`DirectSpawner` runs ``python -I -m xwch.worker.launcher`` for each attempt (about 50 ms
of CPU before the program starts). :class:`ForkServerSpawner` keeps one
:mod:`xwch.worker.forkserver` per worker and asks it to fork (a few milliseconds: the fork copies
a Python process's page tables, and the child's first writes copy its pages).
:class:`NativeSpawner` starts the compiled C launcher with ``posix_spawn`` (under a millisecond);
it is what a worker uses wherever the launcher could be built (:mod:`xwch.worker.native_launcher`).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import signal
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import abstract, fdesc
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport, IReactorFDSet, IReactorProcess
from twisted.internet.process import registerReapProcessHandler, unregisterReapProcessHandler
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

LAUNCHER_MODULE = "xwch.worker.launcher"
FORK_SERVER_MODULE = "xwch.worker.forkserver"
# The pipe on which the launcher tells why it could not start the program.
STATUS_FD = 3
# The environment of the fork server itself (each attempt gets its own in its request).
SERVER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
# The descriptor on which the fork server finds its socket.
SERVER_SOCKET_FD = 3
# Descriptors handed to a launcher are first moved at least this high (see NativeSpawner).
_SAFE_FD = 16


class AttemptProcess(ProcessProtocol):
    """An attempt's protocol: keeps the pid it was started under.

    A program that ends at once may be reaped before ``spawnProcess`` returns, and the transport
    then forgets its pid; the attempt still needs it, as the id of the process group that its
    children (if any) may still be running in.
    """

    pid: int | None = None

    def makeConnection(self, transport: Any) -> None:
        self.pid = transport.pid
        super().makeConnection(transport)


def _started(process: AttemptProcess, transport: IProcessTransport) -> Deferred[int]:
    pid = transport.pid if transport.pid is not None else process.pid
    assert pid is not None, "spawnProcess connects the protocol once forked"
    return succeed(int(pid))


class AttemptSpawner(Protocol):
    """Starts the launcher of one attempt."""

    def spawn(
        self,
        process: AttemptProcess,
        launcher_argv: Sequence[str],
        env: Mapping[str, str],
        path: str,
    ) -> Deferred[int]:
        """Run the launcher with ``launcher_argv`` in ``path``; fires with its pid (which is
        also its process group's id once it has called setsid), fails with ``OSError``."""


@contextmanager
def _attempt_descriptors() -> Iterator[tuple[list[int], list[int]]]:
    """An attempt's descriptors: ``(ours, theirs)``, the read ends of the pipes of its 1, 2 and
    :data:`STATUS_FD`, and what the child gets as 0 (/dev/null), 1, 2 and 3.

    Theirs (and any added to the list) are closed on leaving: the child holds its own copies
    once started, and ours would keep the pipes open. Ours are closed too if the block fails.
    """
    ours: list[int] = []
    theirs: list[int] = []
    try:
        theirs.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        for _ in range(3):
            read_end, write_end = os.pipe()
            ours.append(read_end)
            theirs.append(write_end)
        yield ours, theirs
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)


def _clear_of_targets(
    fds: Sequence[int], duplicate: Callable[[int], int] | None = None
) -> list[int]:
    """``fds``, to become the child's 0, 1, 2... in order: themselves when none is among those
    targets (the usual case: the worker's own 0 to 2 are open, so new descriptors come above),
    else duplicates above them all, for a dup2 onto itself would keep close-on-exec, and an
    earlier target could overwrite a later source. The caller closes any duplicate."""
    if min(fds) >= len(fds):
        return list(fds)
    dup = duplicate or (lambda fd: fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _SAFE_FD))
    return [dup(fd) for fd in fds]


class DirectSpawner:
    """A fresh ``python -I -m xwch.worker.launcher`` for each attempt."""

    def __init__(self, reactor: IReactorProcess, python: str) -> None:
        self._reactor = reactor
        self._python = python

    def spawn(
        self,
        process: AttemptProcess,
        launcher_argv: Sequence[str],
        env: Mapping[str, str],
        path: str,
    ) -> Deferred[int]:
        # -I: the launcher must not be steered by the task's PYTHON* variables.
        argv = [self._python, "-I", "-m", LAUNCHER_MODULE, *launcher_argv]
        transport: IProcessTransport = self._reactor.spawnProcess(  # type: ignore[misc]
            process,  # type: ignore[arg-type]
            self._python,
            argv,  # type: ignore[arg-type]
            env=dict(env),
            path=path,
            childFDs={0: "w", 1: "r", 2: "r", STATUS_FD: "r"},
        )
        return _started(process, transport)


class NativeSpawner:
    """The compiled launcher for each attempt, started with ``os.posix_spawn``.

    Not through ``reactor.spawnProcess``: Twisted lists every open descriptor and asks the
    disposition of every signal on each spawn, most of a millisecond of the worker's CPU per
    attempt; the launcher closes what it inherits and resets the signals itself. The child is a
    session leader from its first instruction (no window in which killing its group misses it).
    Its pipes are read by the reactor and its exit heard from Twisted's SIGCHLD reaping, as for
    any child of the reactor.
    """

    log = Logger()

    def __init__(self, reactor: IReactorFDSet, launcher: str) -> None:
        self._reactor = reactor
        self._launcher = launcher

    def spawn(
        self,
        process: AttemptProcess,
        launcher_argv: Sequence[str],
        env: Mapping[str, str],
        path: str,
    ) -> Deferred[int]:
        argv = [self._launcher, "--cwd", path, *launcher_argv]
        with _attempt_descriptors() as (ours, theirs):
            sources = _clear_of_targets(theirs)
            if sources != theirs:
                theirs.extend(sources)  # duplicates: closed on leaving like the others
            actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(sources)]
            try:
                pid = os.posix_spawn(
                    self._launcher, argv, dict(env), file_actions=actions, setsid=True
                )
            except FileNotFoundError:
                # Gone from its cache folder (cleaned by its owner, say): built again, once,
                # rather than failing every attempt of this worker until it restarts.
                self._rebuild()
                argv[0] = self._launcher
                pid = os.posix_spawn(
                    self._launcher, argv, dict(env), file_actions=actions, setsid=True
                )
        _Launched(self._reactor, pid, process, ours)
        return succeed(pid)

    def _rebuild(self) -> None:
        from .native_launcher import build_native_launcher

        built = build_native_launcher(Path(self._launcher).parent)
        if built.path is None:
            raise ForkServerError(
                f"the native launcher is gone and cannot be rebuilt: {built.reason}"
            )
        self.log.warn("the native launcher was gone: rebuilt as {path}", path=built.path)
        self._launcher = str(built.path)


class _Launched:
    """A launcher started by :class:`NativeSpawner`, until its protocol has heard it end."""

    def __init__(
        self, reactor: IReactorFDSet, pid: int, process: AttemptProcess, pipes: list[int]
    ) -> None:
        self.pid = pid
        self._child = _Child(0, process, pid=pid)
        self._ended = False
        process.makeConnection(_ChildTransport(self._child))  # type: ignore[arg-type]
        for fd, child_fd in zip(pipes, (1, 2, STATUS_FD), strict=True):
            _Reader(
                reactor, fd, functools.partial(process.childDataReceived, child_fd), self._closed
            )
        # Reaps it now if it has already exited; else on SIGCHLD (reapProcess).
        registerReapProcessHandler(pid, self)

    def reapProcess(self) -> None:
        """Called by Twisted on SIGCHLD, and here once a pipe closes."""
        if self._child.reason is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Reaped by someone else: its status is lost, not its end.
            unregisterReapProcessHandler(self.pid, self)
            self._exited(Failure(ProcessTerminated()))
            return
        if pid:
            unregisterReapProcessHandler(self.pid, self)
            self.processEnded(status)

    def processEnded(self, status: int) -> None:
        """Its wait status (Twisted's name: what ``registerReapProcessHandler`` calls)."""
        self._exited(_exit_reason(status))

    def _exited(self, reason: Failure) -> None:
        self._child.reason = reason
        self._child.process.processExited(reason)
        self._maybe_ended()

    def _closed(self) -> None:
        self._child.open_pipes -= 1
        self.reapProcess()
        self._maybe_ended()

    def _maybe_ended(self) -> None:
        child = self._child
        if self._ended or child.open_pipes > 0 or child.reason is None:
            return
        self._ended = True
        child.process.processEnded(child.reason)


class ForkServerError(OSError):
    """The fork server could not start an attempt, or is gone."""


class _Reader(abstract.FileDescriptor):
    """Reads a descriptor it owns until end of file (a pipe, or the fork server's socket)."""

    def __init__(
        self,
        reactor: IReactorFDSet,
        fd: int,
        on_data: Callable[[bytes], None],
        on_closed: Callable[[], None],
    ) -> None:
        super().__init__(reactor)
        fdesc.setNonBlocking(fd)
        self._fd = fd
        self._on_data = on_data
        self._on_closed = on_closed
        self.connected = 1
        self.startReading()

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> Any:
        return fdesc.readFromFD(self._fd, self._on_data)

    def close(self) -> None:
        """Stop reading and close now (``on_closed`` is called), whatever is left unread."""
        self.stopReading()
        self.connectionLost(Failure(ConnectionDone()))

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._on_closed()


@dataclass
class _Child:
    """One attempt asked of the fork server, from the request until its pipes are closed."""

    id: int
    process: ProcessProtocol
    started: Deferred[int] = field(default_factory=Deferred)
    pid: int | None = None
    reason: Failure | None = None
    open_pipes: int = 3


class _ChildTransport:
    """What the attempt's protocol sees as its transport."""

    def __init__(self, child: _Child) -> None:
        self._child = child

    @property
    def pid(self) -> int | None:
        return self._child.pid

    def closeStdin(self) -> None:
        # The program's standard input is /dev/null already: it reads end-of-file at once.
        pass


class _ServerProcess(ProcessProtocol):
    """The fork server process: its complaints go to the worker's log."""

    log = Logger()

    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()

    def childDataReceived(self, child_fd: int, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                self.log.warn("fork server: {line}", line=line)

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


def start_server(
    reactor: Any, executable: str, argv: list[str], kind: socket.SocketKind
) -> tuple[_ServerProcess, socket.socket]:
    """Start a server process (the fork server, the native spawn server) with the other end of
    a Unix socket pair of ``kind`` as its descriptor SERVER_SOCKET_FD; it and the worker's end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, kind)
    server = _ServerProcess()
    try:
        reactor.spawnProcess(
            server,
            executable,
            argv,
            env=dict(SERVER_ENV),
            childFDs={0: "w", 1: "r", 2: "r", SERVER_SOCKET_FD: theirs.fileno()},
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return server, ours


class _Connection:
    """One fork server process and the worker's end of its socket."""

    log = Logger()
    # What the log calls the server.
    NAME = "fork server"

    def __init__(self, reactor: Any, program: str, on_lost: Callable[[_Connection], None]) -> None:
        """``program``: what runs the server (here the Python of the fork server)."""
        self._on_lost = on_lost
        self._children: dict[int, _Child] = {}
        self._next_id = 0
        self._buffer = b""
        self._reactor = reactor
        self.server, ours = self._start_server(program)
        self._socket = ours
        self.lost = False
        # Reads a duplicate: the socket object keeps its own descriptor for sending.
        self._reader = self._read_socket(os.dup(ours.fileno()))

    def _start_server(self, python: str) -> tuple[_ServerProcess, socket.socket]:
        server, ours = start_server(
            self._reactor,
            python,
            [python, "-I", "-m", FORK_SERVER_MODULE, str(SERVER_SOCKET_FD)],
            socket.SOCK_STREAM,
        )
        ours.setblocking(False)
        return server, ours

    def _read_socket(self, fd: int) -> _Reader:
        return _Reader(self._reactor, fd, self._received, self._closed)

    def _adopt(
        self,
        request_id: int,
        process: AttemptProcess,
        pipes: Sequence[int],
        child_fds: Sequence[int],
    ) -> Deferred[int]:
        """Follow the attempt asked for as ``request_id``: its protocol connected, ``pipes``
        (our ends, carrying its ``child_fds``) read; fires with its pid once the server says."""
        child = _Child(request_id, process, open_pipes=len(pipes))
        self._children[request_id] = child
        process.makeConnection(_ChildTransport(child))  # type: ignore[arg-type]
        for fd, child_fd in zip(pipes, child_fds, strict=True):
            self._read_pipe(child, fd, child_fd)
        return child.started

    def spawn(
        self,
        process: AttemptProcess,
        launcher_argv: Sequence[str],
        env: Mapping[str, str],
        path: str,
    ) -> Deferred[int]:
        request_id = self._next_id
        self._next_id += 1
        line = json.dumps(
            {"id": request_id, "argv": list(launcher_argv), "env": dict(env), "cwd": path}
        ).encode()
        with _attempt_descriptors() as (ours, theirs):
            self._send(line + b"\n", theirs)
        return self._adopt(request_id, process, ours, (1, 2, STATUS_FD))

    def close(self) -> Deferred[None]:
        """Close our end: the server sees end of file and exits; fires once it has."""
        if not self.lost:
            self._reader.close()
        return self.server.ended

    def _send(self, data: bytes, fds: list[int]) -> None:
        if self.lost:
            raise ForkServerError("the fork server is gone")
        try:
            sent = socket.send_fds(self._socket, [data], fds)
        except BlockingIOError:
            sent = 0
        if sent != len(data):
            # A request of a few kilobytes does not fit in the socket's buffer only when the
            # server has stopped reading; a partial line would garble the conversation.
            self._reader.close()
            raise ForkServerError("the fork server does not answer")

    def _read_pipe(self, child: _Child, fd: int, child_fd: int) -> None:
        def data(chunk: bytes) -> None:
            child.process.childDataReceived(child_fd, chunk)

        def closed() -> None:
            child.open_pipes -= 1
            self._maybe_ended(child)

        _Reader(self._reactor, fd, data, closed)

    def _received(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._answered(line)

    def _answered(self, data: bytes) -> None:
        """One answer of the server (JSON): an attempt started, could not start, or ended."""
        try:
            message = json.loads(data.decode("utf-8", "replace"))
            child = self._children[message["id"]]
        except (ValueError, KeyError, TypeError):
            self.log.error(
                "{server}: unexpected answer {line!r}", server=self.NAME, line=data[:200]
            )
            return
        if "pid" in message:
            child.pid = int(message["pid"])
            child.started.callback(child.pid)
        elif "error" in message:
            del self._children[message["id"]]
            child.started.errback(ForkServerError(str(message["error"])))
        elif "status" in message:
            self._exited(child, _exit_reason(int(message["status"])))
        else:
            self._other_answer(child, message)

    def _other_answer(self, child: _Child, message: dict[str, Any]) -> None:
        self.log.error("{server}: unexpected answer {message!r}", server=self.NAME, message=message)

    def _exited(self, child: _Child, reason: Failure) -> None:
        child.reason = reason
        child.process.processExited(reason)
        self._maybe_ended(child)

    def _maybe_ended(self, child: _Child) -> None:
        if child.open_pipes > 0 or child.reason is None:
            return
        self._children.pop(child.id, None)
        child.process.processEnded(child.reason)

    def _closed(self) -> None:
        """The server is gone (stopped, or died): what it ran is no longer watched."""
        self.lost = True
        self._socket.close()
        for child in list(self._children.values()):
            if child.pid is None:
                del self._children[child.id]
                child.started.errback(ForkServerError("the fork server ended"))
            elif child.reason is None:
                # Nobody would see its exit any more: kill the attempt, so it ends and is
                # reported (failed) rather than run on unsupervised.
                _kill_group(child.pid)
                self._exited(child, Failure(ProcessTerminated(signal=signal.SIGKILL)))
        self._on_lost(self)


class ForkServerSpawner(Service):
    """Starts attempts through one fork server, started when first needed and again if it
    dies; stopping the service stops it (attempts have been ended by then)."""

    log = Logger()

    def __init__(self, reactor: Any, python: str) -> None:
        # ``reactor`` provides IReactorProcess and IReactorFDSet.
        self._reactor = reactor
        self._python = python
        self._connection: _Connection | None = None
        self._stopping = False

    @property
    def server_pid(self) -> int | None:
        """The running fork server's pid (for tests and status)."""
        connection = self._connection
        if connection is None or connection.server.transport is None:
            return None
        pid = connection.server.transport.pid  # type: ignore[attr-defined]
        return int(pid) if pid is not None else None

    def spawn(
        self,
        process: AttemptProcess,
        launcher_argv: Sequence[str],
        env: Mapping[str, str],
        path: str,
    ) -> Deferred[int]:
        if self._connection is None:
            self._connection = _Connection(self._reactor, self._python, self._lost)
        return self._connection.spawn(process, launcher_argv, env, path)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        connection, self._connection = self._connection, None
        if connection is None:
            return succeed(None)
        return connection.close()

    def startService(self) -> None:
        super().startService()
        self._stopping = False

    def _lost(self, connection: _Connection) -> None:
        if self._connection is connection:
            self._connection = None
            if not self._stopping:
                self.log.error("the fork server ended; starting another for the next attempt")


def _exit_reason(status: int) -> Failure:
    """What Twisted would report for a child's wait status."""
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return Failure(ProcessDone(status))
    if os.WIFSIGNALED(status):
        return Failure(ProcessTerminated(signal=os.WTERMSIG(status), status=status))
    return Failure(ProcessTerminated(exitCode=os.WEXITSTATUS(status), status=status))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        # Not yet in a session of its own: it is still alone.
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    except PermissionError:
        pass
