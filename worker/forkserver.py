"""The fork server: ``python -I -m xwch.worker.forkserver FD`` starts attempts by forking itself.

Starting :mod:`xwch.worker.launcher` afresh for each attempt costs an interpreter start-up and
its imports, about 50 ms of CPU: more than a trivial task's whole run, and on a worker of two
cores the main limit to how many short tasks it runs a second. This process pays that once; each
attempt is then a fork of it (a millisecond or so), whose child runs exactly the launcher's steps
(:func:`xwch.worker.launcher.launch`: session, digest, limits, Landlock, no_new_privs, user) and
execs the program. The worker talks to it through :mod:`xwch.worker.spawner`.

The conversation, on the Unix stream socket ``FD`` (the worker holds the other end), one JSON
object a line:

- the worker asks ``{"id": N, "argv": [launcher options, "--", program, args...], "env": {...},
  "cwd": DIR}``, sending the attempt's standard input, output, error and status pipe (which
  become its descriptors 0 to 3) as ``SCM_RIGHTS`` with the line's first bytes;
- the server answers ``{"id": N, "pid": PID}`` once forked (or ``{"id": N, "error": WHY}``),
  then ``{"id": N, "status": WAIT_STATUS}`` when the child has exited and been reaped.

The server ends when the worker closes its end. Only the standard library: every child is a
copy of this process, and the smaller it is, the cheaper the fork.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import resource  # noqa: F401  (see below)
import selectors
import signal
import socket
import sys
from collections import deque
from typing import Any

# ``resource`` and ``landlock`` (ctypes: some 5 ms) are what the launcher imports only when an
# attempt needs them; imported once here, no child pays for them.
from . import landlock  # noqa: F401
from .launcher import EXIT_CANNOT_EXECUTE, launch

# Descriptors each request carries: the attempt's 0, 1, 2 and 3 (the launcher's status pipe).
ATTEMPT_FDS = 4
# Received descriptors are moved at least this high in the child before being put in place, so
# that none of them is overwritten by another's dup2.
_SAFE_FD = 16
_READ_SIZE = 65536
# Room for the descriptors of many requests arriving in one read.
_MAX_FDS_PER_READ = 256


class ForkServer:
    """Reads requests on ``sock``, forks a child for each, reports their pids and statuses."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        # Descriptors received and not yet claimed by a request: each comes with one byte of
        # its request's line (at most), so a complete line always finds its own here, in order.
        self._fds: deque[int] = deque()
        # pid -> request id, for the status report.
        self._children: dict[int, int] = {}

    def serve(self) -> None:
        wakeup_r, wakeup_w = os.pipe()
        os.set_blocking(wakeup_r, False)
        os.set_blocking(wakeup_w, False)
        # A Python handler (which does nothing) so that SIGCHLD writes to the wake-up pipe and
        # interrupts the select; the reaping happens in the loop.
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        signal.set_wakeup_fd(wakeup_w)
        selector = selectors.DefaultSelector()
        selector.register(self._sock, selectors.EVENT_READ)
        selector.register(wakeup_r, selectors.EVENT_READ)
        try:
            while True:
                for key, _events in selector.select():
                    if key.fileobj is self._sock:
                        if not self._receive():
                            return
                    else:
                        _drain(wakeup_r)
                self._reap()
        finally:
            signal.set_wakeup_fd(-1)

    def _receive(self) -> bool:
        """Read what the worker sent and serve each complete request; False at end of file."""
        fds = array.array("i")
        data, ancillary, _flags, _address = self._sock.recvmsg(
            _READ_SIZE, socket.CMSG_SPACE(_MAX_FDS_PER_READ * fds.itemsize)
        )
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % fds.itemsize
                fds.frombytes(payload[:usable])
        self._fds.extend(fds)
        if not data:
            return False
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._serve_line(line)
        return True

    def _serve_line(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            request_id = int(request["id"])
        except (ValueError, KeyError, TypeError):
            # Not something our worker sends: nothing sensible to answer to.
            print(f"xwch-forkserver: ignoring a malformed request {line[:200]!r}", file=sys.stderr)
            return
        if len(self._fds) < ATTEMPT_FDS:
            self._send({"id": request_id, "error": "the request came without its descriptors"})
            return
        fds = [self._fds.popleft() for _ in range(ATTEMPT_FDS)]
        try:
            pid = self._fork(request, fds)
        except (OSError, KeyError, TypeError) as e:
            self._send({"id": request_id, "error": f"cannot start the attempt: {e}"})
            return
        finally:
            for fd in fds:
                os.close(fd)
        self._children[pid] = request_id
        self._send({"id": request_id, "pid": pid})

    def _fork(self, request: dict[str, Any], fds: list[int]) -> int:
        argv = [str(a) for a in request["argv"]]
        env = {str(k): str(v) for k, v in request["env"].items()}
        cwd = str(request["cwd"])
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            # The child: it must never return into the server's loop.
            code = EXIT_CANNOT_EXECUTE
            try:
                code = _become_attempt(argv, env, cwd, fds)
            except BaseException as e:
                try:
                    os.write(2, f"xwch-forkserver: cannot set the attempt up: {e}\n".encode())
                except OSError:
                    pass
            os._exit(code)
        return pid

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            request_id = self._children.pop(pid, None)
            if request_id is not None:
                self._send({"id": request_id, "status": status})

    def _send(self, message: dict[str, Any]) -> None:
        self._sock.sendall(json.dumps(message).encode() + b"\n")


def _become_attempt(argv: list[str], env: dict[str, str], cwd: str, fds: list[int]) -> int:
    """In the forked child: the attempt's descriptors and directory, then the launcher's steps."""
    signal.set_wakeup_fd(-1)
    # Back to what a freshly started launcher would have (ignored signals survive exec; the
    # launcher itself puts SIGPIPE and SIGXFSZ back).
    for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _SAFE_FD) for fd in fds]
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    # Nothing of the server's (its socket, the other attempts' pipes) reaches the program.
    os.closerange(len(fds), os.sysconf("SC_OPEN_MAX"))
    os.chdir(cwd)
    return launch(argv, env)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m xwch.worker.forkserver FD", file=sys.stderr)
        return 2
    # Interrupting xwch-local's terminal signals the whole group: the worker decides when
    # attempts end, and closes the socket to stop this server.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    sock.setblocking(True)
    ForkServer(sock).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
