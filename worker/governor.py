"""Decides, every few seconds, whether the worker may compute now, and with how many slots.

From the volunteer's :class:`Preferences` and the machine's :class:`HostReadings`, in this order:

1. outside the allowed hours: suspended;
2. the user touched keyboard or mouse less than ``idle_minutes`` ago: suspended (an unknown idle
   time counts as idle);
3. with ``suspend_on_battery``, the machine runs on its battery: suspended (a machine without a
   battery, or one that cannot tell, never is);
4. other programs use more than ``max_cpu_load`` percent of the CPUs: suspended, until their load
   has stayed below it for :attr:`Governor.CALM_PERIOD` (so a worker does not flap on a
   machine hovering at the limit).

A suspended worker stops its attempts' processes (SIGSTOP), starts none, and keeps telling the
coordinator it is alive; once suspended for ``suspend_limit_minutes`` it gives its attempts back
so that they run elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .preferences import Preferences
from .readings import HostReadings


class Governed(Protocol):
    """What the governor steers (the :class:`WorkerService`)."""

    def set_slots(self, slots: int) -> None: ...

    def suspend(self, reason: str) -> None: ...

    def resume(self) -> None: ...

    def give_back_held(self, why: str) -> None: ...


class Governor(Service):
    """Suspends and resumes ``target`` by the preferences, on the injected reactor."""

    log = Logger()

    # How often the machine is read: a user coming back waits at most this long for the
    # attempts to stop.
    CHECK_PERIOD = 5.0
    # How long other programs' load must stay below the limit before attempts resume.
    CALM_PERIOD = 30.0

    def __init__(
        self,
        reactor: IReactorTime,
        readings: HostReadings,
        target: Governed,
        preferences: Preferences,
        cores: int,
        groups: Callable[[], Collection[int]] = tuple,
        localtime: Callable[[float], time.struct_time] = time.localtime,
    ) -> None:
        self._reactor = reactor
        self._readings = readings
        self._target = target
        self.preferences = preferences
        self._cores = cores
        self._groups = groups
        self._localtime = localtime
        self._loop: LoopingCall | None = None
        # Why the worker is suspended (None: computing), and since when.
        self.reason: str | None = None
        self.since: float | None = None
        self.idle_seconds: float | None = None
        self.other_cpu_load: float | None = None
        # Whether the machine ran on its battery at the last check (None: not asked, unknown).
        self.battery: bool | None = None
        self._busy = False
        self._calm_since: float | None = None
        self.slots = preferences.max_cpus.slots(cores)

    def startService(self) -> None:
        super().startService()
        self._target.set_slots(self.slots)
        self._loop = LoopingCall(self.check)
        self._loop.clock = self._reactor
        # At once: a worker started outside its hours must not ask for work first.
        self._loop.start(self.CHECK_PERIOD, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def update(self, preferences: Preferences) -> None:
        """New preferences: new slots at once, the rest from this check on."""
        self.preferences = preferences
        slots = preferences.max_cpus.slots(self._cores)
        if slots != self.slots:
            self.slots = slots
            self._target.set_slots(slots)
        if self.running:
            self.check()

    def check(self) -> None:
        now = self._reactor.seconds()
        reason = self._why_not(now)
        if reason is None:
            if self.reason is not None:
                self.log.info(
                    "resuming after {minutes:.1f} min suspended ({reason})",
                    minutes=(now - (self.since or now)) / 60,
                    reason=self.reason,
                )
                self.reason = self.since = None
                self._target.resume()
            return
        if self.reason is None:
            self.log.info("suspending: {reason}", reason=reason)
            self.since = now
        if reason != self.reason:
            self.reason = reason
            self._target.suspend(reason)
        assert self.since is not None
        limit = self.preferences.suspend_limit_minutes * 60
        if now - self.since >= limit:
            self._target.give_back_held(
                f"suspended for more than {self.preferences.suspend_limit_minutes:g} min"
            )

    def _why_not(self, now: float) -> str | None:
        """Why the worker may not compute now; None when it may."""
        p = self.preferences
        # Read every time, whatever the answer: the CPU load is a difference between readings,
        # and the status shows both.
        self.idle_seconds = self._readings.idle_seconds()
        self.other_cpu_load = load = self._readings.other_cpu_load(self._groups())
        self._update_busy(load, now)
        local = self._localtime(now)
        if not p.allowed_at(local.tm_hour * 60 + local.tm_min):
            return "outside the allowed hours " + ",".join(str(r) for r in p.hours)
        idle = self.idle_seconds
        if p.idle_minutes > 0 and idle is not None and idle < p.idle_minutes * 60:
            # Without the idle time itself (the status shows it): the reason reaches the
            # coordinator and users, and stays the same while the suspension lasts.
            return f"the computer is in use ({p.idle_minutes:g} min idle required)"
        self.battery = self._readings.on_battery() if p.suspend_on_battery else None
        if self.battery:
            return "on battery"
        if self._busy:
            return f"other programs keep the CPUs busy (limit {p.max_cpu_load:g}%)"
        return None

    def _update_busy(self, load: float | None, now: float) -> None:
        limit = self.preferences.max_cpu_load
        if limit is None:
            self._busy, self._calm_since = False, None
        elif load is None:
            return
        elif load > limit:
            self._busy, self._calm_since = True, None
        elif self._busy:
            if self._calm_since is None:
                self._calm_since = now
            if now - self._calm_since >= self.CALM_PERIOD:
                self._busy, self._calm_since = False, None

    def describe(self) -> dict[str, Any]:
        """The governor's view, for ``xwch-worker status``."""
        return {
            "computing": self.reason is None,
            "reason": self.reason,
            "suspended_since": self.since,
            "slots": self.slots,
            "idle_seconds": self.idle_seconds,
            "other_cpu_load": self.other_cpu_load,
            "on_battery": self.battery,
        }
