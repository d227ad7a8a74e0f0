"""Workers start a coordinator (--spawn-coordinator): after a silence, at most one at a time
and one per interval, detached, and registered with once it says where it listens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.launch import FakeLaunch
from xwch.worker.__main__ import main
from xwch.worker.coordinator_starter import (
    LISTENING,
    CoordinatorStarter,
    SpawnSettings,
    _hide_password,
)

DEAD = "http://gone.test:8750"
STORE = "postgresql://xwch:secret@db.test/xwch"
AFTER = 10.0


class Known:
    """The worker's client of the coordinators, as the starter sees it."""

    def __init__(self, url: str) -> None:
        self.urls = [url]
        self.base_url = url
        self.last_contact: float | None = None


class CoordinatorStarterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.launch = FakeLaunch()
        self.known = Known(DEAD)
        self.data = Path(self.mktemp()).absolute()
        self.data.mkdir(parents=True)
        self.running: set[int] = set()
        self.starter = self.make_starter()

    def make_starter(self) -> CoordinatorStarter:
        starter = CoordinatorStarter(
            self.clock,
            self.known,
            self.launch,
            SpawnSettings(STORE, "tcp:0:interface=127.0.0.1", AFTER),
            self.data,
            alive=lambda pid: pid in self.running,
        )
        starter.startService()
        self.addCleanup(starter.stopService)
        return starter

    def advance(self, seconds: float) -> None:
        for _ in range(round(seconds / CoordinatorStarter.CHECK_INTERVAL)):
            self.clock.advance(CoordinatorStarter.CHECK_INTERVAL)

    def started(self) -> int:
        """The pid of the last coordinator started, marked running."""
        pid = self.launch.started[-1].pid
        self.running.add(pid)
        return pid

    def announce(self, url: str) -> None:
        with open(self.data / "coordinator.log", "a") as log:
            log.write(f"2026-01-01 starting\n{LISTENING}{url}\n")

    def test_a_worker_silent_past_the_delay_starts_a_coordinator_on_the_store(self) -> None:
        """Nothing before the delay; then one coordinator on --db, listening on --spawn-listen,
        its output in the worker's data folder."""
        self.advance(AFTER - CoordinatorStarter.CHECK_INTERVAL)
        self.assertEqual(self.launch.started, [])
        self.advance(CoordinatorStarter.CHECK_INTERVAL)
        [start] = self.launch.started
        self.assertEqual(start.argv[1:3], ["-m", "xwch.coordinator"])
        self.assertEqual(start.argv[3:], ["--db", STORE, "--listen", "tcp:0:interface=127.0.0.1"])
        self.assertEqual(start.log, self.data / "coordinator.log")

    def test_an_answering_coordinator_means_no_start(self) -> None:
        for _ in range(4):
            self.advance(AFTER / 2)
            self.known.last_contact = self.clock.seconds()
        self.assertEqual(self.launch.started, [])

    def test_the_worker_registers_with_the_coordinator_once_it_says_where_it_listens(
        self,
    ) -> None:
        """Its URL joins the coordinators known, and the next call goes there; the pid and URL
        are kept in coordinator.json for whoever must find it."""
        self.advance(AFTER)
        pid = self.started()
        self.advance(1.0)
        self.assertEqual(self.known.urls, [DEAD])
        self.announce("http://127.0.0.1:41234")
        self.advance(CoordinatorStarter.CHECK_INTERVAL)
        self.assertEqual(self.known.urls, [DEAD, "http://127.0.0.1:41234"])
        self.assertEqual(self.known.base_url, "http://127.0.0.1:41234")
        state = json.loads((self.data / "coordinator.json").read_text())
        self.assertEqual((state["pid"], state["url"]), (pid, "http://127.0.0.1:41234"))

    def test_no_second_coordinator_while_the_first_runs(self) -> None:
        """Still silent: the one started may be slow, another could not listen there anyway."""
        self.advance(AFTER)
        self.started()
        self.advance(3 * CoordinatorStarter.START_INTERVAL)
        self.assertEqual(len(self.launch.started), 1)

    def test_a_coordinator_that_ended_is_replaced_once_per_interval(self) -> None:
        """One that could not start (or died) is started again, at most once per interval."""
        self.advance(AFTER)
        pid = self.started()
        self.running.discard(pid)
        self.launch.started[-1].end(status=2)
        self.advance(CoordinatorStarter.START_INTERVAL - CoordinatorStarter.CHECK_INTERVAL)
        self.assertEqual(len(self.launch.started), 1)
        self.advance(CoordinatorStarter.CHECK_INTERVAL)
        self.assertEqual(len(self.launch.started), 2)

    def test_a_worker_started_again_takes_back_the_coordinator_it_started(self) -> None:
        """The coordinator outlived the worker: the new worker knows it at once, starts none."""
        self.advance(AFTER)
        pid = self.started()
        self.announce("http://127.0.0.1:41234")
        self.advance(CoordinatorStarter.CHECK_INTERVAL)
        self.starter.stopService()
        self.known = Known(DEAD)
        self.make_starter()
        self.assertEqual(self.known.base_url, "http://127.0.0.1:41234")
        self.advance(2 * AFTER)
        self.assertEqual([s.pid for s in self.launch.started], [pid])

    def test_the_store_password_is_not_logged(self) -> None:
        self.assertEqual(_hide_password(STORE), "postgresql://xwch:***@db.test/xwch")
        self.assertEqual(_hide_password("tcp:8750"), "tcp:8750")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--spawn-coordinator"], "--spawn-coordinator needs --db URL"),
        (["--db", "postgresql://db.test/x"], "--db goes with --spawn-coordinator"),
        (
            ["--spawn-coordinator", "--db", "postgresql://db.test/x", "--spawn-after", "0"],
            "--spawn-after must be a positive number of seconds",
        ),
        (
            ["--spawn-coordinator", "--db", "postgresql://db.test/x", "--spawn-public-url", "c:1"],
            "--spawn-public-url must start with http:// or https://",
        ),
    ],
)
def test_the_command_line_refuses_bad_spawn_flags(
    flags: list[str],
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One line naming the flag, exit 2, before anything starts."""
    monkeypatch.setenv("XWCH_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit:
        main(["--coordinator", "http://c.test", "--token", "T", "--data", str(tmp_path), *flags])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1, err
