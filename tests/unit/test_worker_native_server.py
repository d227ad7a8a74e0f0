"""Attempts started by the native launcher's spawn server: the same behaviour as a fresh
launcher, its own failures, and what a malformed request gets.

The executor's and the sandbox's tests run again here with every attempt forked by a
:class:`NativeServerSpawner` (each test gets its own server, stopped at its end); so do the
fork server's own tests (one server for many attempts, a server that dies, stopping).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import msgspec
import pytest
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.unit import test_worker_executor as executor_tests
from tests.unit import test_worker_native_launcher as native_tests
from tests.unit import test_worker_sandbox as sandbox_tests
from tests.unit import test_worker_spawner as fork_server_tests
from xwch.protocol.wire import OUTCOME_FAILED, OUTCOME_SUCCEEDED
from xwch.protocol.worker import Assignment
from xwch.worker.native_server import (
    REQUEST_MOST,
    NativeServerSpawner,
    encode_request,
    spawn_server_wanted,
)


def _start_spawner(test: TestCase) -> NativeServerSpawner:
    spawner = NativeServerSpawner(reactor, str(native_tests._launcher()))
    spawner.startService()
    # Cleanups run last-in first-out: the attempts (killed by the tests' own cleanups, added
    # later) are gone before the server is stopped.
    test.addCleanup(spawner.stopService)
    return spawner


class SpawnServerExecutorTests(fork_server_tests.ForkServerExecutorTests):
    def setUp(self) -> None:
        executor_tests.ExecutorTests.setUp(self)
        self.spawner = _start_spawner(self)  # type: ignore[assignment]

    async def test_a_program_that_cannot_start_is_refused_by_its_launcher(self) -> None:
        """The child's refusal comes back on the server's socket, as the launcher's status pipe
        would have carried it: the attempt says why, in the job's words."""
        assignment = self.assignment("true")
        program = self.cache.program_path(assignment.binary.digest)
        done = await self.executor(assignment).run()
        self.assertTrue(program.exists())
        program.chmod(0o755)
        program.write_text("#!/bin/sh\necho changed\n")
        program.chmod(0o555)
        done = await self.executor(assignment).run()
        self.assertEqual(done.result.outcome, OUTCOME_FAILED)
        self.assertIn("do not match its digest", done.result.error or "")
        self.assertEqual(done.result.exit_code, 126)
        self.assertFalse(program.exists())

    async def test_the_task_inherits_nothing_of_the_server(self) -> None:
        """Only its standard input, output and error: not the server's socket, not another
        attempt's pipes."""
        done = await self.run_script("ls /proc/self/fd | sort -n | tr '\\n' ' '")
        # ls's own descriptor for the folder it lists shows as the fourth.
        self.assertEqual(done.result.stdout.split()[:3], ["0", "1", "2"])
        self.assertLessEqual(len(done.result.stdout.split()), 4)

    async def test_arguments_too_large_for_the_server_start_the_launcher_afresh(self) -> None:
        """Arguments over what one message carries: the attempt still runs, with all of them."""
        # Several: the kernel takes no single argument over 128 KiB.
        args = ("x" * 50_000,) * (REQUEST_MOST // 50_000 + 1)
        assignment = self.assignment('printf %s "$@" | wc -c')
        done = await self.executor(
            Assignment(**{**msgspec.structs.asdict(assignment), "args": args})
        ).run()
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        self.assertEqual(done.result.stdout.strip(), str(sum(map(len, args))))

    async def test_stdin_is_empty(self) -> None:
        done = await self.run_script("wc -c")
        self.assertEqual(done.result.stdout.strip(), "0")


class SpawnServerSandboxTests(sandbox_tests.SandboxTests):
    def setUp(self) -> None:
        super().setUp()
        self.spawner = _start_spawner(self)


# The conversation itself


def _server() -> tuple[socket.socket, subprocess.Popen[bytes]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = subprocess.Popen(
        [str(native_tests._launcher()), "--serve", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
        stderr=subprocess.PIPE,
    )
    theirs.close()
    ours.settimeout(60)
    return ours, server


def _answer(sock: socket.socket) -> dict[str, object]:
    return json.loads(sock.recv(65536))  # type: ignore[no-any-return]


def test_a_request_without_its_pipes_is_answered_with_an_error() -> None:
    sock, server = _server()
    try:
        sock.send(encode_request(7, ["--", "/bin/true"], {}))
        assert _answer(sock) == {"id": 7, "error": "the request came without its descriptors"}
    finally:
        sock.close()
        assert server.wait(60) == 0


def test_a_malformed_request_is_answered_and_the_server_goes_on() -> None:
    sock, server = _server()
    read_end, write_end = os.pipe()
    try:
        socket.send_fds(sock, [b"3\x005\x00--\x00"], [write_end, write_end])
        assert _answer(sock) == {"id": 3, "error": "malformed request: arguments"}
        socket.send_fds(sock, [encode_request(4, ["--", "/bin/true"], {})], [write_end] * 2)
        started = _answer(sock)
        assert started["id"] == 4 and isinstance(started["pid"], int)
        assert _answer(sock) == {"id": 4, "status": 0}
    finally:
        os.close(read_end)
        os.close(write_end)
        sock.close()
        assert server.wait(60) == 0


def test_a_refusal_names_its_request() -> None:
    sock, server = _server()
    read_end, write_end = os.pipe()
    try:
        request = encode_request(9, ["--sha256", "0" * 64, "--", "/bin/true"], {})
        socket.send_fds(sock, [request], [write_end] * 2)
        messages = [_answer(sock) for _ in range(3)]
        refusal = next(m for m in messages if "kind" in m)
        assert refusal["id"] == 9 and refusal["kind"] == "digest"
        ended = next(m for m in messages if "status" in m)
        assert os.WEXITSTATUS(int(ended["status"])) == 126  # type: ignore[call-overload]
    finally:
        os.close(read_end)
        os.close(write_end)
        sock.close()
        assert server.wait(60) == 0


def test_an_interrupt_to_its_group_does_not_stop_the_server() -> None:
    """^C in xwch-local's terminal reaches every process of the group: the worker decides."""
    sock, server = _server()
    try:
        # Once it answers, it serves (and ignores SIGINT).
        sock.send(encode_request(1, ["--", "/bin/true"], {}))
        assert _answer(sock)["id"] == 1
        server.send_signal(signal.SIGINT)
        sock.send(encode_request(2, ["--", "/bin/true"], {}))
        assert _answer(sock)["id"] == 2
    finally:
        sock.close()
        assert server.wait(60) == 0


@pytest.mark.parametrize(
    ("argv", "env"),
    [(["a\0b"], {}), ([], {"A": "1\0"}), ([], {"A=B": "1"}), ([], {"": "1"})],
)
def test_what_posix_spawn_refuses_is_refused_before_it_is_sent(
    argv: list[str], env: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        encode_request(1, argv, env)


def test_the_switch_turns_it_off() -> None:
    assert not spawn_server_wanted({"XWCH_SPAWN_SERVER": "0"})
    assert spawn_server_wanted({}) == spawn_server_wanted({"XWCH_SPAWN_SERVER": "1"})
