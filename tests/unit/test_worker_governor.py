"""The governor on a Clock, with scripted host readings: idle, busy, allowed hours, slots."""

from __future__ import annotations

import time
from collections.abc import Collection

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.coordinator import FakeCoordinator
from tests.unit.test_worker_service import (
    FACTS,
    TOP_OF_EACH_STEP,
    FakeAttempt,
    FakePacer,
    assignment,
)
from xwch.protocol.worker import Assignment
from xwch.worker.governor import Governor
from xwch.worker.preferences import CpuShare, HourRange, Preferences
from xwch.worker.service import WorkerService

# 2024-01-01 00:00 UTC, a Monday; the tests read local time as UTC.
MIDNIGHT = 1704067200.0
HOUR = 3600.0
MINUTE = 60.0


class ScriptedReadings:
    """Host readings the test sets; records the process groups it was asked to leave out."""

    def __init__(self) -> None:
        self.idle: float | None = None
        self.load: float | None = None
        self.battery: bool | None = None
        self.groups: list[Collection[int]] = []

    def idle_seconds(self) -> float | None:
        return self.idle

    def other_cpu_load(self, ours: Collection[int]) -> float | None:
        self.groups.append(ours)
        return self.load

    def on_battery(self) -> bool | None:
        return self.battery


class FakeTarget:
    """What a worker service is told: its slots, suspensions, resumptions, givebacks."""

    def __init__(self) -> None:
        self.slots: int | None = None
        self.events: list[str] = []

    def set_slots(self, slots: int) -> None:
        self.slots = slots

    def suspend(self, reason: str) -> None:
        self.events.append(f"suspend: {reason}")

    def resume(self) -> None:
        self.events.append("resume")

    def give_back_held(self, why: str) -> None:
        self.events.append(f"give back: {why}")


class GovernorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(MIDNIGHT + 12 * HOUR)
        self.readings = ScriptedReadings()
        self.target = FakeTarget()

    def governor(self, preferences: Preferences, cores: int = 8) -> Governor:
        governor = Governor(
            self.clock,
            self.readings,
            self.target,
            preferences,
            cores,
            groups=lambda: [4242],
            localtime=time.gmtime,
        )
        governor.startService()
        self.addCleanup(governor.stopService)
        return governor

    def tick(self, seconds: float) -> None:
        """Let ``seconds`` pass check by check (one big step would run the loop only once)."""
        self.clock.pump([Governor.CHECK_PERIOD] * round(seconds / Governor.CHECK_PERIOD))

    def test_default_preferences_always_compute(self) -> None:
        """With no preference set the worker computes whatever the user and the CPUs do."""
        self.readings.idle, self.readings.load = 0.0, 100.0
        governor = self.governor(Preferences())
        self.clock.advance(Governor.CHECK_PERIOD * 10)
        self.assertEqual(self.target.events, [])
        self.assertIsNone(governor.reason)
        self.assertEqual(self.target.slots, 8)

    def test_waits_for_the_user_to_be_idle_and_suspends_when_they_return(self) -> None:
        """With idle_minutes 5 the worker computes after 5 idle minutes, and stops on return."""
        self.readings.idle = 60.0
        governor = self.governor(Preferences(idle_minutes=5))
        self.assertEqual(len(self.target.events), 1)
        self.assertIn("the computer is in use", self.target.events[0])
        self.readings.idle = 5 * MINUTE
        self.clock.advance(Governor.CHECK_PERIOD)
        self.assertEqual(self.target.events[-1], "resume")
        self.assertIsNone(governor.reason)
        # The user touches the mouse: suspended at the next check.
        self.readings.idle = 1.0
        self.clock.advance(Governor.CHECK_PERIOD)
        self.assertTrue(self.target.events[-1].startswith("suspend: the computer is in use"))

    def test_suspends_on_battery_when_asked_to(self) -> None:
        """With suspend_on_battery the worker stops while the machine is unplugged and resumes
        when it is plugged in; without it, or without a battery, it computes."""
        self.readings.battery = True
        governor = self.governor(Preferences())
        self.assertEqual(self.target.events, [])
        governor.update(Preferences(suspend_on_battery=True))
        self.assertEqual(self.target.events, ["suspend: on battery"])
        self.assertEqual(governor.describe()["on_battery"], True)
        self.readings.battery = False
        self.clock.advance(Governor.CHECK_PERIOD)
        self.assertEqual(self.target.events[-1], "resume")
        self.readings.battery = None  # no battery, or no way to tell
        self.clock.advance(Governor.CHECK_PERIOD)
        self.assertEqual(self.target.events[-1], "resume")

    def test_unknown_idle_time_counts_as_idle(self) -> None:
        """A machine whose idle time cannot be read (headless) computes."""
        self.readings.idle = None
        self.governor(Preferences(idle_minutes=5))
        self.assertEqual(self.target.events, [])

    def test_busy_machine_suspends_until_calm_for_a_while(self) -> None:
        """Other programs above max_cpu_load suspend the worker; it resumes once they stay low."""
        self.governor(Preferences(max_cpu_load=25))
        self.readings.load = 80.0
        self.clock.advance(Governor.CHECK_PERIOD)
        self.assertEqual(
            self.target.events, ["suspend: other programs keep the CPUs busy (limit 25%)"]
        )
        self.readings.load = 5.0
        self.clock.advance(Governor.CHECK_PERIOD)
        self.tick(Governor.CALM_PERIOD - Governor.CHECK_PERIOD)
        self.assertEqual(len(self.target.events), 1)
        self.clock.advance(Governor.CHECK_PERIOD)
        self.assertEqual(self.target.events[-1], "resume")
        # The worker's own attempts are not "other programs".
        self.assertEqual(self.readings.groups[-1], [4242])

    def test_a_short_dip_below_the_load_limit_does_not_resume(self) -> None:
        """Load going down then up again within the calm period keeps the worker suspended."""
        self.governor(Preferences(max_cpu_load=25))
        self.readings.load = 80.0
        self.clock.advance(Governor.CHECK_PERIOD)
        self.readings.load = 5.0
        self.tick(Governor.CHECK_PERIOD * 2)
        self.readings.load = 90.0
        self.clock.advance(Governor.CHECK_PERIOD)
        self.readings.load = 5.0
        self.tick(Governor.CALM_PERIOD)
        self.assertNotIn("resume", self.target.events)

    def test_allowed_hours_wrap_midnight(self) -> None:
        """With hours 22:00-07:00 the worker computes at night only, in local time."""
        night = Preferences(hours=(HourRange(22 * 60, 7 * 60),))
        governor = self.governor(night)
        self.assertEqual(self.target.events, ["suspend: outside the allowed hours 22:00-07:00"])
        self.tick(10 * HOUR - Governor.CHECK_PERIOD)  # 21:59:55
        self.assertIsNotNone(governor.reason)
        self.clock.advance(Governor.CHECK_PERIOD)  # 22:00
        self.assertEqual(self.target.events[-1], "resume")
        self.tick(9 * HOUR)  # 07:00 the next day
        self.assertTrue(self.target.events[-1].startswith("suspend: outside the allowed hours"))

    def test_several_hour_ranges(self) -> None:
        """Several ranges: computing in any of them."""
        lunch = Preferences(hours=(HourRange(0, 60), HourRange(12 * 60, 13 * 60)))
        governor = self.governor(lunch)
        self.assertIsNone(governor.reason)
        self.clock.advance(HOUR)
        self.assertIsNotNone(governor.reason)

    def test_attempts_suspended_too_long_are_given_back(self) -> None:
        """After suspend_limit_minutes suspended, the worker gives its attempts back."""
        self.readings.idle = 0.0
        self.governor(Preferences(idle_minutes=10, suspend_limit_minutes=30))
        self.tick(30 * MINUTE - Governor.CHECK_PERIOD)
        self.assertFalse(any(e.startswith("give back") for e in self.target.events))
        self.clock.advance(Governor.CHECK_PERIOD)
        self.assertEqual(self.target.events[-1], "give back: suspended for more than 30 min")

    def test_max_cpus_sets_the_slots_and_changes_apply_at_once(self) -> None:
        """max_cpus 50% of 8 cores is 4 slots; a new preference applies without a restart."""
        governor = self.governor(Preferences(max_cpus=CpuShare(percent=50)))
        self.assertEqual(self.target.slots, 4)
        governor.update(Preferences(max_cpus=CpuShare(count=2, percent=None), idle_minutes=1))
        self.assertEqual(self.target.slots, 2)
        # The idle condition too, without waiting for the next check.
        self.readings.idle = 0.0
        governor.update(Preferences(idle_minutes=1))
        self.assertTrue(self.target.events[-1].startswith("suspend: the computer is in use"))


class GovernedWorkerTests(SynchronousTestCase):
    """The governor steering a real WorkerService talking to the fake coordinator."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(MIDNIGHT + 12 * HOUR)
        self.coordinator = FakeCoordinator(alive_interval=10.0)
        self.attempts: dict[str, FakeAttempt] = {}
        self.readings = ScriptedReadings()
        self.service = WorkerService(
            self.clock,
            self.coordinator.api(),
            FACTS,
            self.new_attempt,
            self.store_object,
            FakePacer(),
            retry_policy=TOP_OF_EACH_STEP,
        )
        self.governor = Governor(
            self.clock,
            self.readings,
            self.service,
            Preferences(idle_minutes=5, suspend_limit_minutes=30),
            cores=FACTS.cores,
            localtime=time.gmtime,
        )

    def new_attempt(self, assignment: Assignment) -> FakeAttempt:
        attempt = self.attempts[assignment.attempt] = FakeAttempt(assignment)
        return attempt

    async def store_object(self, *args: object) -> None:
        raise AssertionError("nothing to store")

    def start(self) -> None:
        self.governor.startService()
        self.service.startService()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        self.governor.stopService()
        d = self.service.stopService()
        self.clock.advance(WorkerService.GIVEBACK_TIMEOUT)
        self.successResultOf(d)

    def test_user_returning_suspends_attempts_and_the_worker_stays_alive(self) -> None:
        """When the user comes back the attempt stops, Work Alive says so, no work is asked."""
        self.readings.idle = 10 * MINUTE
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.assertFalse(self.attempts["a1"].suspended)
        self.readings.idle = 3.0
        self.clock.advance(Governor.CHECK_PERIOD)
        self.assertTrue(self.attempts["a1"].suspended)
        requests = len(self.coordinator.work_requests)
        self.clock.pump([WorkerService.IDLE_POLL_MAX] * 5)
        self.assertEqual(
            self.coordinator.alive_bodies[-1][1]["running"],
            [{"attempt": "a1", "state": "suspended"}],
        )
        self.assertEqual(len(self.coordinator.work_requests), requests)
        # Away again for 5 minutes: computing again.
        self.readings.idle = 5 * MINUTE
        self.clock.advance(Governor.CHECK_PERIOD)
        self.assertFalse(self.attempts["a1"].suspended)

    def test_worker_started_while_in_use_asks_for_no_work(self) -> None:
        """A worker started while the user types registers but asks for no work."""
        self.readings.idle = 1.0
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.assertEqual(len(self.coordinator.registrations), 1)
        self.assertEqual(self.coordinator.work_requests, [])

    def test_suspended_for_too_long_gives_the_attempt_back(self) -> None:
        """An attempt suspended past the limit is killed and given back to run elsewhere."""
        self.readings.idle = 10 * MINUTE
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.readings.idle = 0.0
        self.clock.pump([Governor.CHECK_PERIOD] * round(30 * MINUTE / Governor.CHECK_PERIOD + 1))
        self.assertEqual(self.coordinator.givebacks, [("w1", ["a1"])])
        self.assertTrue(self.attempts["a1"].killed)
        self.assertEqual(self.service.held_attempts(), [])
