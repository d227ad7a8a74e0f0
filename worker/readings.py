"""What the governor reads of the machine: how long the user has been idle, how busy the CPUs are.

:class:`HostReadings` is the interface; :class:`SystemReadings` reads the real machine, headless
or not:

- **idle time**, the shortest of: the time since the last keystroke on any terminal (what ``w``
  shows: the access time of ``/dev/pts/*``, ``/dev/tty<N>``, ``/dev/ttys<N>`` on macOS), and
  the time since the keyboard or mouse last raised an interrupt (``/proc/interrupts`` lines of
  ``i8042``, the PS/2 controller of laptops' built-in keyboards and touchpads). None when
  neither can be read: the governor treats an unknown idle time as idle, so a machine without
  these never waits for an absent user. A graphical session's own idle time joins them: what
  systemd-logind says of its graphical sessions (``IdleHint``/``IdleSinceHint``, kept current
  by GNOME, KDE and most desktops), which sees USB keyboards and mice the other two miss.
- **other programs' CPU load**: the share of the whole machine busy since the last reading, minus
  what the worker and its attempts' process groups used.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Protocol

import psutil

_TTY = re.compile(r"^(tty\d+|ttys\d+|pts/\d+)$")
# Interrupt lines that mean a person touched the machine: the PS/2 keyboard and mouse controller.
_INPUT_INTERRUPT = re.compile(r"i8042|keyboard|mouse|touchpad", re.IGNORECASE)


class HostReadings(Protocol):
    """The machine as the governor sees it."""

    def idle_seconds(self) -> float | None:
        """Seconds since the user last touched keyboard or mouse; None when unknown."""

    def other_cpu_load(self, ours: Collection[int]) -> float | None:
        """Percent (0-100) of the whole machine's CPU that programs other than the worker and
        the process groups ``ours`` used since the previous call; None for the first call."""

    def on_battery(self) -> bool | None:
        """Whether the machine runs on its battery now; None when it has none or cannot tell."""


def tty_idle_seconds(dev: Path, now: float) -> float | None:
    """Seconds since the most recent input on a terminal under ``dev``; None if none found."""
    latest: float | None = None
    for path in _terminals(dev):
        try:
            accessed = path.stat().st_atime
        except OSError:
            continue
        latest = accessed if latest is None else max(latest, accessed)
    return None if latest is None else max(0.0, now - latest)


def _terminals(dev: Path) -> Iterable[Path]:
    for folder, prefix in ((dev, ""), (dev / "pts", "pts/")):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if _TTY.match(prefix + name):
                yield folder / name


def input_interrupts(text: str) -> int | None:
    """The total count of keyboard and mouse interrupts in a ``/proc/interrupts`` text."""
    total: int | None = None
    for line in text.splitlines()[1:]:
        if not _INPUT_INTERRUPT.search(line):
            continue
        counts = 0
        for field in line.split()[1:]:
            if not field.isdigit():
                break
            counts += int(field)
        total = counts + (total or 0)
    return total


# A reading runs every few seconds; a stuck loginctl must not hold the worker.
LOGINCTL_TIMEOUT = 2.0
_GRAPHICAL = ("x11", "wayland", "mir")


def logind_sessions() -> str | None:
    """``loginctl show-session`` of every session (Type, IdleHint, IdleSinceHint), or None."""
    try:
        listed = subprocess.run(
            ["loginctl", "list-sessions", "--no-legend"],
            capture_output=True,
            text=True,
            timeout=LOGINCTL_TIMEOUT,
            check=True,
        )
        ids = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
        if not ids:
            return None
        shown = subprocess.run(
            [
                "loginctl",
                "show-session",
                *ids,
                "-p",
                "Type",
                "-p",
                "IdleHint",
                "-p",
                "IdleSinceHint",
            ],
            capture_output=True,
            text=True,
            timeout=LOGINCTL_TIMEOUT,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no systemd, no bus (a container), or no logind: not a source here
    return shown.stdout


def graphical_idle_seconds(text: str, now: float) -> float | None:
    """How long the least idle graphical session has been idle, from ``show-session`` output.

    Blocks of ``Key=value`` lines, one block a session, blank lines between. ``IdleSinceHint``
    is in microseconds since the epoch. None when there is no graphical session.
    """
    found: list[float] = []
    for block in text.split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if fields.get("Type") not in _GRAPHICAL:
            continue
        if fields.get("IdleHint") != "yes":
            found.append(0.0)
            continue
        try:
            since = int(fields.get("IdleSinceHint", "0")) / 1e6
        except ValueError:
            continue
        if since > 0:
            found.append(max(0.0, now - since))
    return min(found) if found else None


class SystemReadings:
    """:class:`HostReadings` of the machine the worker runs on."""

    def __init__(
        self,
        dev: Path = Path("/dev"),
        interrupts: Path = Path("/proc/interrupts"),
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        logind: Callable[[], str | None] | None = None,
    ) -> None:
        self._logind = logind or logind_sessions
        self._dev = dev
        self._interrupts = interrupts
        self._wall = wall
        self._monotonic = monotonic
        self._started = monotonic()
        self._input_count: int | None = None
        self._input_at: float | None = None
        self._cpu: tuple[float, float, float] | None = None

    # Idle time

    def idle_seconds(self) -> float | None:
        sources = (
            tty_idle_seconds(self._dev, self._wall()),
            self._interrupt_idle(),
            self._session_idle(),
        )
        found = [seconds for seconds in sources if seconds is not None]
        return min(found) if found else None

    def _session_idle(self) -> float | None:
        text = self._logind()
        return None if text is None else graphical_idle_seconds(text, self._wall())

    def _interrupt_idle(self) -> float | None:
        try:
            count = input_interrupts(self._interrupts.read_text())
        except OSError:
            return None
        if count is None:
            return None
        now = self._monotonic()
        if self._input_count is not None and count != self._input_count:
            self._input_at = now
        self._input_count = count
        # Before any input is seen, the user has been idle at least since the worker started.
        return now - (self._input_at if self._input_at is not None else self._started)

    # CPU load

    def other_cpu_load(self, ours: Collection[int]) -> float | None:
        times = psutil.cpu_times()
        total = sum(times)
        busy = total - times.idle - getattr(times, "iowait", 0.0)
        mine = our_cpu_seconds(ours)
        previous, self._cpu = self._cpu, (total, busy, mine)
        if previous is None:
            return None
        elapsed = total - previous[0]
        if elapsed <= 0:
            return None
        others = (busy - previous[1]) - max(0.0, mine - previous[2])
        return max(0.0, min(100.0, 100.0 * others / elapsed))

    # Power

    def on_battery(self) -> bool | None:
        try:
            battery = psutil.sensors_battery()
        except (AttributeError, OSError, RuntimeError):
            return None  # a platform psutil cannot read batteries on
        if battery is None or battery.power_plugged is None:
            return None
        return not battery.power_plugged


def our_cpu_seconds(groups: Collection[int]) -> float:
    """CPU seconds used by this process, its reaped children, and the processes of ``groups``.

    Reaped children count in their parent's ``children_*`` times, so the time of an attempt's
    short-lived processes is not mistaken for another program's.
    """
    total = _process_seconds(psutil.Process())
    if not groups:
        return total
    wanted = set(groups)
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) in wanted and process.pid != os.getpid():
                total += _process_seconds(process)
        except (OSError, psutil.Error):
            continue
    return total


def _process_seconds(process: psutil.Process) -> float:
    try:
        t = process.cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system + t.children_user + t.children_system
