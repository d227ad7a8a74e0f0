"""Tables and humane numbers: what the monitoring commands print."""

from __future__ import annotations

from datetime import UTC

from xwch.client.humane import (
    format_ago,
    format_bytes,
    format_clock,
    format_day_clock,
    format_duration,
    format_gib,
)
from xwch.client.tables import Column, jobs_table, render_table, status_text, tasks_table
from xwch.protocol.client import JobSummary, TaskInfo

NOON = 1_700_049_600.0  # 2023-11-15 12:00:00 UTC


def test_render_table_aligns_text_left_and_numbers_right() -> None:
    """Columns line up: text left-aligned, numbers right-aligned, no trailing blanks."""
    text = render_table(
        [Column("NAME"), Column("N", right=True), Column("NOTE")],
        [("a", "5", ""), ("longer", "120", "x")],
    )
    assert text == "NAME      N  NOTE\na         5\nlonger  120  x\n"


def test_empty_table_is_its_header() -> None:
    """A table with no rows still shows its header."""
    assert render_table([Column("ID")], []) == "ID\n"


def test_durations_read_like_a_person_would_say_them() -> None:
    """Durations read as 850ms, 42s, 3m05s, 1h02m, 2d03h."""
    assert [format_duration(s) for s in (0.85, 42, 185, 3720, 183600)] == [
        "850ms",
        "42s",
        "3m05s",
        "1h02m",
        "2d03h",
    ]


def test_last_heard_reads_as_time_ago() -> None:
    """Last heard reads as '3s ago', '5m ago', '2h ago', '4d ago', or 'never'."""
    assert format_ago(100.0, 97.0) == "3s ago"
    assert format_ago(1000.0, 700.0) == "5m ago"
    assert format_ago(10_000.0, 2_800.0) == "2h ago"
    assert format_ago(400_000.0, 40_000.0) == "4d ago"
    assert format_ago(1.0, None) == "never"


def test_sizes_and_memory() -> None:
    """Sizes use binary units; worker memory is shown in GiB."""
    assert format_bytes(512) == "512 B"
    assert format_bytes(3.5 * 1024) == "3.5 KiB"
    assert format_bytes(12 * 1024**2) == "12.0 MiB"
    assert format_gib(16 * 1024**3) == "16.0"
    assert format_gib(int(7.5 * 1024**3)) == "7.5"


def test_clock_times() -> None:
    """Times show as HH:MM:SS; on another day the date is shown too."""
    assert format_clock(NOON, UTC) == "12:00:00"
    assert format_clock(None, UTC) == "-"
    assert format_day_clock(NOON - 3600, NOON, UTC) == "11:00:00"
    assert format_day_clock(NOON - 86400, NOON, UTC) == "2023-11-14 12:00"


def test_running_task_duration_runs_to_now() -> None:
    """A running task's DURATION counts up to now; its ENDED is blank."""
    task = TaskInfo("t", "running", 1.5, "w", 2, NOON - 90, None)
    row = tasks_table([task], NOON, UTC).splitlines()[1].split()
    assert row == ["t", "running", "1.5", "w", "2", "11:58:30", "-", "1m30s"]


def test_a_checkpoint_column_tells_when_each_tasks_last_checkpoint_was_saved() -> None:
    """Only when some task saved one; the others show a dash."""
    saved = TaskInfo("a", "running", 1, "w", 1, NOON - 90, None, checkpointed=NOON - 30)
    other = TaskInfo("b", "ready", 1, None, 0, None, None)
    header, *rows = tasks_table([saved, other], NOON, UTC).splitlines()
    assert header.split()[-1] == "CHECKPOINT"
    assert rows[0].split()[-1] == "11:59:30"
    assert rows[1].split()[-1] == "-"
    assert "CHECKPOINT" not in tasks_table([other], NOON, UTC)


def test_jobs_table_shows_done_over_total() -> None:
    """The jobs table shows DONE/TOTAL from the counts."""
    job = JobSummary("j1", "mandel", "running", 0, NOON - 60, None, 16, {"done": 4})
    assert jobs_table([job], NOON, UTC).splitlines()[1].split() == [
        "j1",
        "mandel",
        "running",
        "4/16",
        "11:59:00",
    ]


def test_status_counts_every_state_and_shows_the_message() -> None:
    """`status` lists every task state, zeros included, and the job's message."""
    job = JobSummary(
        "j1", "mandel", "failed", 0, NOON - 60, NOON, 3, {"done": 2, "failed": 1}, "merge failed"
    )
    text = status_text(job, NOON, UTC)
    assert "STATE     failed" in text
    assert "MESSAGE   merge failed" in text
    assert "DURATION  1m00s" in text
    counts = dict(line.split() for line in text.split("\n\n")[1].splitlines()[1:])
    assert counts == {
        "blocked": "0",
        "ready": "0",
        "assigned": "0",
        "running": "0",
        "done": "2",
        "failed": "1",
        "cancelled": "0",
    }
