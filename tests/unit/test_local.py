"""``xwch-local`` (xwch/local.py): its flags, and its children started in dependency order."""

from __future__ import annotations

import io
import json
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.processes import FakeProcess, FakeProcessReactor
from xwch.errors import StartFailed
from xwch.local import (
    COORDINATOR_READY,
    EXIT_USAGE,
    WAREHOUSE_READY,
    WORKER_READY,
    LocalPlatform,
    _parser,
    main,
)

TOKENS = {"client": "tc", "worker": "tw", "warehouse": "th"}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("XWCH_HOME", str(home))
    return home


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        yield listener.getsockname()[1]


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--workers", "-1"], "--workers must be at least 0, not -1"),
        (["--slots", "0"], "--slots must be at least 1, not 0"),
        (["--warehouses", "0"], "--warehouses must be at least 1, not 0"),
        (["--port", "70000"], "--port must be between 0 and 65535, not 70000"),
        (
            ["--alive-interval", "0"],
            "--alive-interval must be a positive number of seconds, not 0.0",
        ),
        (
            ["--workers", "two"],
            "argument --workers: invalid int value: 'two' (see xwch-local --help)",
        ),
    ],
)
def test_a_wrong_flag_exits_2_on_one_line_before_anything_starts(
    flags: list[str], said: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong flag value: one line saying what is wrong, exit status 2, nothing started."""
    with pytest.raises(SystemExit) as exited:
        main(["--port", "0", *flags])
    assert exited.value.code == EXIT_USAGE
    assert capsys.readouterr().err == f"xwch-local: {said}\n"
    assert not home.exists()


def test_a_coordinator_port_in_use_exits_2_before_anything_starts(
    taken_port: int, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --port something listens on already: one line naming the port, exit status 2."""
    with pytest.raises(SystemExit) as exited:
        main(["--port", str(taken_port)])
    assert exited.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"xwch-local: --port {taken_port}: the port is in use on 127.0.0.1")
    assert err.count("\n") == 1
    assert not home.exists()


class LocalPlatformTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeProcessReactor()
        self.home = Path(self.mktemp()).absolute()
        self.home.mkdir()
        self.out = io.StringIO()
        self.platform = LocalPlatform(self.reactor, self.home, self.out, python="python")
        self.addCleanup(self.stop)

    def stop(self) -> None:
        stopped = Deferred.fromCoroutine(self.platform.stop())
        for process in self.reactor.spawned:
            if process.alive:
                process.exit(0)
        self.successResultOf(stopped)

    def start(self, *flags: str) -> Deferred[str]:
        args = _parser().parse_args(["--port", "0", *flags])
        return Deferred.fromCoroutine(self.platform.start(args, TOKENS))

    def process(self, name: str) -> FakeProcess:
        return self.reactor.of(name)[-1]

    def test_children_start_in_dependency_order(self) -> None:
        """The coordinator first; the warehouses once it is ready, given its URL; the workers
        once the warehouses are ready; then client.toml and local.json are written."""
        started = self.start("--warehouses", "2", "--workers", "2")
        self.assertEqual([p.argv[2] for p in self.reactor.spawned], ["xwch.coordinator"])
        self.process("xwch.coordinator").print(f"{COORDINATOR_READY} http://127.0.0.1:4321\n")
        warehouses = self.reactor.of("xwch.warehouse")
        self.assertEqual(len(warehouses), 2)
        self.assertEqual(self.reactor.of("xwch.worker"), [])
        for p in warehouses:
            self.assertIn("http://127.0.0.1:4321", p.argv)
            self.assertEqual(p.env["XWCH_HOME"], str(self.home))
        for n, p in enumerate(warehouses, 1):
            p.print(f"{WAREHOUSE_READY} http://127.0.0.1:500{n}\n")
        workers = self.reactor.of("xwch.worker")
        self.assertEqual(len(workers), 2)
        for n, p in enumerate(workers, 1):
            # Never the volunteer's own ~/.xwch: its worker.toml is not these workers'.
            self.assertEqual(p.env["XWCH_HOME"], str(self.home / f"worker-{n}"))
            self.assertEqual(p.argv[p.argv.index("--data") + 1], str(self.home / f"worker-{n}"))
        self.assertNoResult(started)
        for n, p in enumerate(workers, 1):
            p.print(f"{WORKER_READY} w{n}\n")
        self.assertEqual(self.successResultOf(started), "http://127.0.0.1:4321")
        client = tomllib.loads((self.home / "client.toml").read_text())
        self.assertEqual(client, {"coordinator": "http://127.0.0.1:4321", "token": "tc"})
        state = json.loads((self.home / "local.json").read_text())
        self.assertEqual(state["coordinator"]["url"], "http://127.0.0.1:4321")
        self.assertEqual([w["id"] for w in state["workers"]], ["w1", "w2"])
        self.assertEqual(
            [(w["url"], w["pid"]) for w in state["warehouses"]],
            [
                ("http://127.0.0.1:5001", warehouses[0].pid),
                ("http://127.0.0.1:5002", warehouses[1].pid),
            ],
        )

    def test_a_child_started_again_gets_the_address_it_had(self) -> None:
        """Started again, the coordinator listens on the port it first got and a warehouse
        keeps its URL; local.json shows the new process once it is ready."""
        started = self.start("--warehouses", "1", "--workers", "0")
        self.process("xwch.coordinator").print(f"{COORDINATOR_READY} http://127.0.0.1:4321\n")
        self.process("xwch.warehouse").print(f"{WAREHOUSE_READY} http://127.0.0.1:5001\n")
        self.successResultOf(started)
        self.process("xwch.coordinator").die()
        self.process("xwch.warehouse").exit(1)
        self.reactor.advance(60)
        coordinator = self.reactor.of("xwch.coordinator")[-1]
        warehouse = self.reactor.of("xwch.warehouse")[-1]
        self.assertIn("tcp:4321:interface=127.0.0.1", coordinator.argv)
        self.assertIn("tcp:5001:interface=127.0.0.1", warehouse.argv)
        self.assertEqual(
            warehouse.argv[warehouse.argv.index("--public-url") + 1], "http://127.0.0.1:5001"
        )
        coordinator.print(f"{COORDINATOR_READY} http://127.0.0.1:4321\n")
        state = json.loads((self.home / "local.json").read_text())
        self.assertEqual(
            (state["coordinator"]["pid"], state["coordinator"]["restarts"]),
            (coordinator.pid, 1),
        )

    def test_a_warehouse_failing_fails_the_start_and_workers_never_start(self) -> None:
        """A warehouse exiting before it is ready fails the start-up at once; no worker was
        started, and stopping then stops the coordinator and the other warehouse."""
        started = self.start("--warehouses", "2", "--workers", "1")
        self.process("xwch.coordinator").print(f"{COORDINATOR_READY} http://127.0.0.1:4321\n")
        self.process("warehouse-2").exit(2)
        self.failureResultOf(started, StartFailed)
        self.assertEqual(self.reactor.of("xwch.worker"), [])
        self.assertFalse((self.home / "client.toml").exists())
        stopped = Deferred.fromCoroutine(self.platform.stop())
        self.assertEqual(self.process("xwch.coordinator").signals, ["TERM"])
        self.assertEqual(self.process("warehouse-1").signals, ["TERM"])
        self.process("xwch.coordinator").exit(0)
        self.process("warehouse-1").exit(0)
        self.successResultOf(stopped)
