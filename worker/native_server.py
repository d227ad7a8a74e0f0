"""Attempts started by the native launcher's spawn server: ``xwch-launch --serve FD``, one per worker.

:class:`xwch.worker.spawner.NativeSpawner` starts the C launcher afresh for each attempt with
``posix_spawn``: the worker's reactor waits while the child execs the launcher (most of a
millisecond), the launcher then execs the program (a second exec, some 0.4 ms of CPU here), and the
worker opens /dev/null and three pipes, reaps the launcher on SIGCHLD and reads its status pipe.
Here the launcher is started once, as a server (its C side is :file:`launch_server.h`); for each
attempt the worker sends one message with the two pipes of the program's output, the server forks
itself (a small process: cheap) and its child runs the launcher's very steps and execs the program.
The server reaps the child and says how it ended; the child says on the same socket why it could
not start the program, if it could not. So an attempt costs the worker two pipes and one message,
and no exec but the program's own.

Measured (bench/vs_ray.py, 2,000 trivial tasks on 2 workers of 2 slots): see docs/architecture.md.

The conversation is in :file:`launch_server.h`. Where the server cannot run (a system without
SOCK_SEQPACKET Unix sockets), the worker starts attempts with :class:`NativeSpawner` instead.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST

from .spawner import (
    SERVER_SOCKET_FD,
    STATUS_FD,
    AttemptProcess,
    ForkServerError,
    ForkServerSpawner,
    NativeSpawner,
    _Child,
    _Connection,
    _Reader,
    _ServerProcess,
    start_server,
)

# An answer or a refusal is a line of a few hundred bytes; a refusal's message at most 8 KiB.
_READ_SIZE = 65536
# The pipes a request carries: the program's standard output and error.
_PIPES = 2
# The largest request sent to the server: below its buffer (REQUEST_MAX in launch_server.h) and
# what a socket's default send buffer lets one message carry (212,992 bytes on Linux). An attempt
# whose arguments and environment take more starts its launcher with posix_spawn instead.
REQUEST_MOST = 200_000
# Seconds a request may wait for room in the server's socket.
SEND_PATIENCE = 5.0
# Set to 0 to start each attempt's launcher afresh (NativeSpawner) where the server would run.
SWITCH = "XWCH_SPAWN_SERVER"


def spawn_server_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether to start attempts through the spawn server: unless :data:`SWITCH` says no, where
    the system has the Unix sockets it speaks on."""
    environ = os.environ if environ is None else environ
    if environ.get(SWITCH, "1").strip() in ("0", "no", "false", "off"):
        return False
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        return False
    ours.close()
    theirs.close()
    return True


def encode_request(request_id: int, argv: Sequence[str], env: Mapping[str, str]) -> bytes:
    """One request: its id, the launcher's arguments and the environment, NUL-separated.

    Refuses what ``posix_spawn`` refuses (ValueError): a NUL inside a field would split it, an
    ``=`` in a variable's name would move its value.
    """
    fields = [str(request_id), str(len(argv)), *argv, str(len(env))]
    for name, value in env.items():
        if "=" in name or not name:
            raise ValueError(f"illegal environment variable name {name!r}")
        fields.append(f"{name}={value}")
    if any("\0" in field for field in fields):
        raise ValueError("embedded null byte")
    return b"".join(field.encode("utf-8", "surrogateescape") + b"\0" for field in fields)


class _TooLarge(Exception):
    """A request bigger than :data:`REQUEST_MOST`: not for the server."""


class _MessageReader(_Reader):
    """Reads the server's socket: every message waiting, each read whole (a read of a
    SOCK_SEQPACKET socket is one message, and what does not fit in it is lost)."""

    # Messages read in one turn of the reactor, at most: others' turn comes too.
    BATCH = 64

    def doRead(self) -> Any:
        for _ in range(self.BATCH):
            try:
                data = os.read(self.fileno(), _READ_SIZE)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError:
                return CONNECTION_LOST
            if not data:
                return CONNECTION_DONE
            self._on_data(data)
        return None


class _ServerConnection(_Connection):
    """One spawn server process and the worker's end of its socket: the fork server's
    connection (children, pipes, ends, the server lost), with this server's conversation."""

    NAME = "spawn server"

    def _start_server(self, launcher: str) -> tuple[_ServerProcess, socket.socket]:
        server, ours = start_server(
            self._reactor,
            launcher,
            [launcher, "--serve", str(SERVER_SOCKET_FD)],
            socket.SOCK_SEQPACKET,
        )
        # A server that stops reading must not hold the reactor: a request waits this long for
        # room (a burst of attempts may fill the socket's queue for a moment), no more.
        ours.settimeout(SEND_PATIENCE)
        return server, ours

    def _read_socket(self, fd: int) -> _Reader:
        # Whole messages: each is one answer (no lines to split).
        return _MessageReader(self._reactor, fd, self._answered, self._closed)

    def spawn(
        self,
        process: AttemptProcess,
        launcher_argv: Sequence[str],
        env: Mapping[str, str],
        path: str,
    ) -> Deferred[int]:
        if self.lost:
            raise ForkServerError("the spawn server is gone")
        request_id = self._next_id
        self._next_id += 1
        request = encode_request(request_id, ["--cwd", path, *launcher_argv], env)
        if len(request) > REQUEST_MOST:
            raise _TooLarge()
        ours: list[int] = []
        theirs: list[int] = []
        try:
            for _ in range(_PIPES):
                read_end, write_end = os.pipe()
                ours.append(read_end)
                theirs.append(write_end)
            self._send(request, theirs)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        return self._adopt(request_id, process, ours, (1, 2))

    def _send(self, request: bytes, fds: list[int]) -> None:
        try:
            socket.send_fds(self._socket, [request], fds)
        except (BlockingIOError, TimeoutError):
            # The server has stopped reading: it is replaced, and what it ran is killed.
            self._reader.close()
            raise ForkServerError("the spawn server does not answer") from None
        except OSError as e:
            raise ForkServerError(f"cannot ask the spawn server: {e.strerror or e}") from None

    def _other_answer(self, child: _Child, message: dict[str, Any]) -> None:
        if "kind" in message:
            # The launcher's status line, as its status pipe would have carried it.
            line = {"kind": message["kind"], "message": message.get("message", "")}
            child.process.childDataReceived(STATUS_FD, json.dumps(line).encode() + b"\n")
        else:
            super()._other_answer(child, message)


class NativeServerSpawner(ForkServerSpawner):
    """Starts attempts through one spawn server, started at the first attempt and again if it
    dies; stopping the service stops it (attempts have ended by then). The fork server's
    spawner, but for the server it starts."""

    def __init__(self, reactor: Any, launcher: str) -> None:
        # ``reactor`` provides IReactorProcess and IReactorFDSet.
        super().__init__(reactor, python=launcher)
        self._launcher = launcher
        # For the rare attempt too large to ask the server for.
        self._direct = NativeSpawner(reactor, launcher)

    def spawn(
        self,
        process: AttemptProcess,
        launcher_argv: Sequence[str],
        env: Mapping[str, str],
        path: str,
    ) -> Deferred[int]:
        if self._connection is None:
            if not Path(self._launcher).exists():
                self._rebuild()
            self._connection = _ServerConnection(self._reactor, self._launcher, self._lost)
        try:
            return self._connection.spawn(process, launcher_argv, env, path)
        except _TooLarge:
            return self._direct.spawn(process, launcher_argv, env, path)

    def _rebuild(self) -> None:
        from .native_launcher import build_native_launcher

        built = build_native_launcher(Path(self._launcher).parent)
        if built.path is None:
            raise ForkServerError(
                f"the native launcher is gone and cannot be rebuilt: {built.reason}"
            )
        self.log.warn("the native launcher was gone: rebuilt as {path}", path=built.path)
        self._launcher = str(built.path)
        self._direct = NativeSpawner(self._reactor, self._launcher)
