"""Reading the machine: the user's idle time and other programs' CPU load."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from xwch.worker.readings import (
    SystemReadings,
    graphical_idle_seconds,
    input_interrupts,
    our_cpu_seconds,
    tty_idle_seconds,
)

INTERRUPTS = """\
           CPU0       CPU1
  1:         10          5   IO-APIC    1-edge      i8042
  8:          0          0   IO-APIC    8-edge      rtc0
 12:        100         20   IO-APIC   12-edge      i8042
 24:          1          0   IO-APIC    5-edge      ACPI:Ged
"""


def _terminal(dev: Path, name: str, accessed: float) -> None:
    path = dev / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path, (accessed, accessed))


def test_idle_time_is_the_last_keystroke_on_any_terminal(tmp_path: Path) -> None:
    """The most recently used terminal, local or remote, tells how long the user has been away."""
    _terminal(tmp_path, "tty1", 1000.0)
    _terminal(tmp_path, "pts/3", 1600.0)
    _terminal(tmp_path, "ttyS0", 1990.0)  # a serial line, not a person
    assert tty_idle_seconds(tmp_path, now=2000.0) == 400.0


def test_no_terminal_means_unknown(tmp_path: Path) -> None:
    """A machine without terminals has no idle time to read from them."""
    assert tty_idle_seconds(tmp_path, now=2000.0) is None


def test_keyboard_and_mouse_interrupts_are_counted() -> None:
    """The PS/2 keyboard and mouse lines of /proc/interrupts are summed over the CPUs."""
    assert input_interrupts(INTERRUPTS) == 135
    assert input_interrupts(INTERRUPTS.replace("i8042", "serial")) is None


def test_input_interrupts_reset_the_idle_time(tmp_path: Path) -> None:
    """A new keyboard interrupt means the user is back; none since the start counts as idle."""
    interrupts = tmp_path / "interrupts"
    interrupts.write_text(INTERRUPTS)
    now = [0.0]
    readings = SystemReadings(
        dev=tmp_path / "no-dev",
        interrupts=interrupts,
        monotonic=lambda: now[0],
        logind=lambda: None,
    )
    now[0] = 300.0
    assert readings.idle_seconds() == 300.0
    interrupts.write_text(INTERRUPTS.replace("100", "101"))
    now[0] = 310.0
    assert readings.idle_seconds() == 0.0
    now[0] = 400.0
    assert readings.idle_seconds() == 90.0


def test_idle_is_unknown_without_any_source(tmp_path: Path) -> None:
    """Neither terminals nor input interrupts: the idle time is unknown (treated as idle)."""
    readings = SystemReadings(dev=tmp_path, interrupts=tmp_path / "none", logind=lambda: None)
    assert readings.idle_seconds() is None


SESSIONS = """Type=tty
IdleHint=yes
IdleSinceHint=1000000000

Type=wayland
IdleHint=yes
IdleSinceHint=1700000000000000
"""


def test_graphical_session_idle_time_comes_from_logind() -> None:
    """A desktop session idle since a given time counts from then; terminals' blocks are ignored."""
    assert graphical_idle_seconds(SESSIONS, now=1_700_000_600.0) == 600.0
    active = SESSIONS.replace("Type=wayland\nIdleHint=yes", "Type=wayland\nIdleHint=no")
    assert graphical_idle_seconds(active, now=1_700_000_600.0) == 0.0
    assert graphical_idle_seconds("Type=tty\nIdleHint=no\n", now=1.0) is None


def test_a_user_active_on_the_desktop_is_not_idle(tmp_path: Path) -> None:
    """Input on a USB keyboard in a graphical session (seen by logind) means the user is there."""
    active = SESSIONS.replace("Type=wayland\nIdleHint=yes", "Type=wayland\nIdleHint=no")
    readings = SystemReadings(dev=tmp_path, interrupts=tmp_path / "none", logind=lambda: active)
    assert readings.idle_seconds() == 0.0


def test_other_programs_load_is_a_percentage_after_a_first_reading() -> None:
    """The first reading sets a baseline; the next ones give a share of the whole machine."""
    readings = SystemReadings()
    assert readings.other_cpu_load([]) is None
    # Some CPU time passes, all of it ours.
    sum(i * i for i in range(200_000))
    load = readings.other_cpu_load([])
    assert load is None or 0.0 <= load <= 100.0


def test_our_cpu_counts_the_worker_itself() -> None:
    """The worker's own CPU time is XWCH's, not another program's."""
    before = our_cpu_seconds([])
    sum(i * i for i in range(300_000))
    assert our_cpu_seconds([os.getpgid(0)]) >= before


def test_on_battery_reads_the_power_supply(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unplugged is on battery; plugged in is not; no battery (or no way to tell) is unknown."""
    readings = SystemReadings()
    for battery, expected in [
        (SimpleNamespace(percent=50, power_plugged=False), True),
        (SimpleNamespace(percent=50, power_plugged=True), False),
        (SimpleNamespace(percent=50, power_plugged=None), None),
        (None, None),
    ]:
        monkeypatch.setattr(psutil, "sensors_battery", lambda battery=battery: battery)
        assert readings.on_battery() is expected
