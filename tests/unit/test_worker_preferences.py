"""The volunteer's preferences: worker.toml read, checked, and watched for edits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from xwch.errors import ConfigurationError
from xwch.worker.preferences import (
    CpuShare,
    HourRange,
    Preferences,
    PreferencesWatcher,
    load_preferences,
    parse_preferences,
)


def test_every_preference_reads_from_worker_toml(tmp_path: Path) -> None:
    """A worker.toml with every preference set gives them all, in bytes and seconds."""
    path = tmp_path / "worker.toml"
    path.write_text(
        'coordinator = "http://coord:8750"\n'
        'token = "secret"\n'
        'max_cpus = "50%"\n'
        "idle_minutes = 5\n"
        "max_cpu_load = 25\n"
        "suspend_on_battery = true\n"
        'memory_per_task = "2G"\n'
        'cpu_time_per_task = "90m"\n'
        'file_size_per_task = "512M"\n'
        "processes_per_task = 64\n"
        'cache_limit = "1.5GiB"\n'
        'upload_rate = "1M"\n'
        'download_rate = "500K/s"\n'
        'hours = "22:00-07:00, 12:00-13:30"\n'
        "suspend_limit_minutes = 10\n"
        "watch_router = false\n"
    )
    assert load_preferences(path) == Preferences(
        max_cpus=CpuShare(percent=50),
        idle_minutes=5,
        max_cpu_load=25,
        suspend_on_battery=True,
        memory_per_task=2 << 30,
        cpu_time_per_task=90 * 60,
        file_size_per_task=512 << 20,
        processes_per_task=64,
        cache_limit=3 << 29,
        upload_rate=float(1 << 20),
        download_rate=500 * 1024.0,
        hours=(HourRange(22 * 60, 7 * 60), HourRange(12 * 60, 13 * 60 + 30)),
        suspend_limit_minutes=10,
        watch_router=False,
    )


def test_a_missing_file_means_the_defaults(tmp_path: Path) -> None:
    """Without worker.toml the worker computes at any time on every CPU."""
    assert load_preferences(tmp_path / "worker.toml") == Preferences()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"max_cpus": "150%"}, "max_cpus: must be between 0 and 100"),
        ({"max_cpus": 0}, "max_cpus: must be between 1"),
        ({"memory_per_task": "lots"}, "memory_per_task: expected a size"),
        ({"hours": "22:00"}, "hours: '22:00' is not a range"),
        ({"hours": "25:00-07:00"}, "hours: '25:00' is not a time of day"),
        ({"hours": "07:00-07:00"}, "is empty"),
        ({"idle_minuts": 5}, "unknown key 'idle_minuts'"),
        ({"cpu_time_per_task": "1 week"}, "cpu_time_per_task: expected seconds"),
        ({"suspend_on_battery": "maybe"}, "suspend_on_battery: expected yes or no"),
        ({"watch_router": 2}, "watch_router: expected yes or no"),
    ],
)
def test_mistakes_are_named(doc: dict[str, object], message: str) -> None:
    """A wrong value or a misspelt key is refused, naming the key and what is wrong."""
    with pytest.raises(ConfigurationError, match=message):
        parse_preferences(doc)


def test_cpu_share_gives_slots() -> None:
    """A count or a percentage of the CPUs gives at least one slot, never more than cores."""
    assert CpuShare(percent=50).slots(8) == 4
    assert CpuShare(percent=10).slots(4) == 1
    assert CpuShare(count=16, percent=None).slots(8) == 8
    assert CpuShare().slots(3) == 3


def test_hour_ranges() -> None:
    """A range includes its start and excludes its end, across midnight too."""
    night = HourRange(22 * 60, 7 * 60)
    assert night.contains(23 * 60) and night.contains(0) and night.contains(7 * 60 - 1)
    assert not night.contains(7 * 60) and not night.contains(12 * 60)
    assert str(night) == "22:00-07:00"


def test_edits_apply_without_a_restart(tmp_path: Path) -> None:
    """Editing worker.toml changes the preferences in force within one poll period."""
    path = tmp_path / "worker.toml"
    path.write_text("idle_minutes = 5\n")
    clock = Clock()
    seen: list[Preferences] = []
    watcher = PreferencesWatcher(clock, path, load_preferences(path), seen.append)
    watcher.startService()
    try:
        clock.advance(PreferencesWatcher.POLL_PERIOD)
        assert seen == []
        _rewrite(path, 'idle_minutes = 5\nupload_rate = "1M"\n')
        clock.advance(PreferencesWatcher.POLL_PERIOD)
        assert [p.upload_rate for p in seen] == [float(1 << 20)]
        assert watcher.current.upload_rate == float(1 << 20)
    finally:
        watcher.stopService()


def test_a_broken_edit_keeps_the_preferences_in_force(tmp_path: Path) -> None:
    """A worker.toml edited into nonsense is reported and ignored until fixed."""
    path = tmp_path / "worker.toml"
    path.write_text("idle_minutes = 5\n")
    clock = Clock()
    seen: list[Preferences] = []
    watcher = PreferencesWatcher(clock, path, load_preferences(path), seen.append)
    watcher.startService()
    try:
        _rewrite(path, "idle_minutes = [\n")
        clock.advance(PreferencesWatcher.POLL_PERIOD)
        assert seen == [] and watcher.current.idle_minutes == 5
        _rewrite(path, "idle_minutes = 1\n")
        clock.advance(PreferencesWatcher.POLL_PERIOD)
        assert [p.idle_minutes for p in seen] == [1]
    finally:
        watcher.stopService()


def _rewrite(path: Path, text: str) -> None:
    """Replace the file, with a modification time surely different from the last one."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))
