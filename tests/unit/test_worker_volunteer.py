"""The whole volunteer worker on a Clock: preferences edited, applied, and shown by status."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorProcess
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.fakes.coordinator import COORDINATOR_URL, WORKER_TOKEN, FakeCoordinator
from tests.unit.test_worker_governor import ScriptedReadings
from tests.unit.test_worker_service import FACTS
from xwch.worker.governor import Governor
from xwch.worker.preferences import PreferencesWatcher, load_preferences
from xwch.worker.sandbox import Sandbox
from xwch.worker.service import WorkerService
from xwch.worker.status import ContactRecorder, StatusWriter, read_status
from xwch.worker.volunteer import Volunteer


@implementer(IReactorProcess)
class ProcessFreeClock(Clock):
    """A Clock a worker can be built on; no attempt runs in these tests."""

    def spawnProcess(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("no processes in this test")


class VolunteerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        self.root.mkdir()
        self.config = self.root / "worker.toml"
        self.config.write_text('coordinator = "http://c"\ntoken = "t"\n')
        self.clock = ProcessFreeClock()
        self.clock.advance(1_700_000_000.0)
        self.coordinator = FakeCoordinator(alive_interval=10.0)
        self.api = ContactRecorder(
            self.coordinator.client(), COORDINATOR_URL, WORKER_TOKEN, clock=self.clock.seconds
        )
        self.readings = ScriptedReadings()
        self.volunteer = Volunteer(
            self.clock,
            self.api,
            warehouses=None,  # type: ignore[arg-type]  # nothing is downloaded here
            data_dir=self.root / "data",
            facts=FACTS,
            preferences=load_preferences(self.config),
            preferences_path=self.config,
            readings=self.readings,
            sandbox=Sandbox(landlock=False),
            localtime=time.gmtime,
        )
        self.volunteer.startService()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        d = self.volunteer.stopService()
        self.clock.advance(WorkerService.GIVEBACK_TIMEOUT)
        self.successResultOf(d)

    def edit(self, text: str) -> None:
        before = self.config.stat().st_mtime_ns
        self.config.write_text('coordinator = "http://c"\ntoken = "t"\n' + text)
        os.utime(self.config, ns=(before + 10**9, before + 10**9))
        self.clock.advance(PreferencesWatcher.POLL_PERIOD)

    def test_edited_preferences_apply_without_a_restart(self) -> None:
        """Caps, cache limit, slots and per-task limits follow worker.toml as it is edited."""
        v = self.volunteer
        self.assertEqual(v.attempt_sandbox().limits["FSIZE"], 10 << 30)
        self.edit(
            'upload_rate = "1M"\ndownload_rate = "4M"\ncache_limit = "2G"\nmax_cpus = 1\n'
            'memory_per_task = "512M"\nprocesses_per_task = 32\n'
        )
        self.assertEqual((v.pacer.upload_cap, v.pacer.download_cap), (1 << 20, 4 << 20))
        self.assertEqual(v.cache.limit, 2 << 30)
        self.assertEqual(v.governor.slots, 1)
        sandbox = v.attempt_sandbox()
        self.assertEqual(sandbox.limits, {"CPU": 86400, "AS": 512 << 20, "FSIZE": 2 << 30})
        self.assertEqual(sandbox.processes, 32)
        self.clock.advance(WorkerService.IDLE_POLL_MAX)
        self.assertEqual(self.coordinator.work_requests[-1].free_slots, 1)

    def test_status_file_shows_what_the_worker_does(self) -> None:
        """The status file tells the worker's id, its state and why, and the last contact."""
        self.readings.idle = 1.0
        self.edit("idle_minutes = 5\n")
        self.clock.advance(Governor.CHECK_PERIOD)
        status = read_status(self.root / "data" / "status.json")
        assert status is not None
        self.assertEqual(status["worker_id"], "w1")
        self.assertEqual(status["state"], "suspended")
        self.assertIn("the computer is in use", status["governor"]["reason"])
        self.assertEqual(status["preferences"]["idle_minutes"], 5)
        self.assertEqual(status["slots"], FACTS.slots)
        self.assertEqual(status["cache"]["limit"], 10 << 30)
        # The coordinator answered at most one write period before.
        self.assertLessEqual(status["written"] - status["last_contact"], StatusWriter.PERIOD)
        self.assertEqual(self.volunteer.service.suspended, status["governor"]["reason"])

    def test_only_a_worker_told_to_watches_its_host(self) -> None:
        """Built for a real host (as xwch-worker builds it), a worker's transfers watch the
        host's interfaces for others' traffic; built on a test clock, they leave them alone."""
        self.assertIsNone(self.volunteer.pacer.others)
        watching = Volunteer(
            self.clock,
            self.api,
            warehouses=None,  # type: ignore[arg-type]
            data_dir=self.root / "other",
            facts=FACTS,
            preferences=load_preferences(self.config),
            sandbox=Sandbox(landlock=False),
            watch_others=True,
        )
        self.assertIsNotNone(watching.pacer.others)
