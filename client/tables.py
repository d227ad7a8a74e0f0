"""Aligned text tables, like a dashboard's job, task and computer monitors.

Each ``*_table`` function turns records into lines of text; nothing here does I/O. Numbers are
right-aligned, text left-aligned, columns two spaces apart, no trailing blanks (so the output
diffs and greps cleanly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import tzinfo

from xwch.protocol.client import JobSummary, TaskInfo, WorkerInfo
from xwch.protocol.cluster import CoordinatorInfo
from xwch.protocol.states import TaskStatus

from .humane import NOTHING, format_ago, format_clock, format_day_clock, format_duration, format_gib

GAP = "  "


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False  # numbers read best right-aligned


def render_table(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    """The table as text, one line a row under a header line, ending with a newline."""
    widths = [len(c.header) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if col.right else cell.ljust(w)
            for col, cell, w in zip(columns, cells, widths, strict=True)
        ]
        return GAP.join(parts).rstrip()

    lines = [line([c.header for c in columns])]
    lines.extend(line(row) for row in rows)
    return "\n".join(lines) + "\n"


def _cost(cost: float) -> str:
    return str(int(cost)) if cost == int(cost) else f"{cost:g}"


def _took(task: TaskInfo, now: float) -> str:
    if task.started is None:
        return NOTHING
    end = task.ended if task.ended is not None else now
    return format_duration(end - task.started)


TASK_COLUMNS = (
    Column("ID"),
    Column("STATE"),
    Column("COST", right=True),
    Column("WORKER"),
    Column("ATTEMPTS", right=True),
    Column("STARTED"),
    Column("ENDED"),
    Column("DURATION", right=True),
)


def tasks_table(tasks: Sequence[TaskInfo], now: float, tz: tzinfo | None = None) -> str:
    """One row a task; DURATION runs on to ``now`` for a task still running. A CHECKPOINT
    column, when some task saved one, tells when its last was recorded. A WHY column says, when
    some ready task cannot run, what holds it back."""
    why = any(t.why for t in tasks)
    checkpoints = any(t.checkpointed is not None for t in tasks)
    rows = [
        (
            t.id,
            t.state,
            _cost(t.cost),
            t.worker or NOTHING,
            str(t.attempts),
            format_clock(t.started, tz),
            format_clock(t.ended, tz),
            _took(t, now),
            *((format_clock(t.checkpointed, tz),) if checkpoints else ()),
            *((t.why or "",) if why else ()),
        )
        for t in tasks
    ]
    extra = ((Column("CHECKPOINT"),) if checkpoints else ()) + ((Column("WHY"),) if why else ())
    return render_table(TASK_COLUMNS + extra, rows)


COORDINATOR_COLUMNS = (
    Column("ID"),
    Column("URL"),
    Column("STATE"),
    Column("GROUPS", right=True),
    Column("WORKERS", right=True),
    Column("RUNNING", right=True),
    Column("LAST HEARD", right=True),
)


def coordinators_table(members: Sequence[CoordinatorInfo], now: float) -> str:
    """One row a coordinator, live ones first."""
    rows = [
        (
            m.id,
            m.url,
            m.state,
            str(len(m.groups)),
            str(m.workers),
            str(m.running),
            format_ago(now, m.last_heard),
        )
        for m in members
    ]
    return render_table(COORDINATOR_COLUMNS, rows)


WORKER_COLUMNS = (
    Column("ID"),
    Column("NAME"),
    Column("SITE"),
    Column("STATE"),
    Column("BUSY/SLOTS", right=True),
    Column("ADDRESS"),
    Column("PLATFORM"),
    Column("CORES", right=True),
    Column("MEMORY GiB", right=True),
    Column("DONE", right=True),
    Column("LAST HEARD", right=True),
)
# Last, and only when some worker is suspended: a reason is a sentence, too wide for the middle.
WHY_COLUMN = Column("WHY")


def _slots(w: WorkerInfo) -> str:
    busy = NOTHING if w.busy is None else str(w.busy)
    return f"{busy}/{w.slots}"


def workers_table(workers: Sequence[WorkerInfo], now: float) -> str:
    """One row a worker; MEMORY in GiB; BUSY/SLOTS the slots holding an attempt (``-`` for a
    worker that is not live); WHY a suspended worker computes nothing."""
    why = any(w.reason for w in workers)
    rows = [
        (
            w.id,
            w.name,
            w.site or NOTHING,
            w.state,
            _slots(w),
            w.address,
            w.platform,
            str(w.cores),
            format_gib(w.memory),
            str(w.tasks_done),
            format_ago(now, w.last_heard),
            *([w.reason or ""] if why else []),
        )
        for w in workers
    ]
    return render_table((*WORKER_COLUMNS, *([WHY_COLUMN] if why else [])), rows)


JOB_COLUMNS = (
    Column("ID"),
    Column("NAME"),
    Column("STATE"),
    Column("DONE/TOTAL", right=True),
    Column("CREATED"),
)


def jobs_table(jobs: Sequence[JobSummary], now: float, tz: tzinfo | None = None) -> str:
    """One row a job, in the order given (the coordinator's: newest first)."""
    rows = [
        (
            j.id,
            j.name,
            j.state,
            f"{j.count('done')}/{j.total}",
            format_day_clock(j.created, now, tz),
        )
        for j in jobs
    ]
    return render_table(JOB_COLUMNS, rows)


def status_text(
    job: JobSummary, now: float, tz: tzinfo | None = None, workers: str | None = None
) -> str:
    """The job's state, then its tasks counted by state (every state, zeros included);
    ``workers``: what keeps the workers from computing, if anything."""
    ended = job.ended if job.ended is not None else now
    head = [
        ("JOB", job.id),
        ("NAME", job.name),
        ("STATE", job.state),
        ("CREATED", format_day_clock(job.created, now, tz)),
        ("ENDED", format_day_clock(job.ended, now, tz)),
        ("DURATION", format_duration(ended - job.created)),
        ("TASKS", f"{job.count('done')}/{job.total} done"),
    ]
    if job.message:
        head.append(("MESSAGE", job.message))
    # Ready tasks that would wait forever as things stand: say why, as they wait.
    for why, n in sorted(job.unrunnable.items()):
        head.append(("CANNOT RUN", f"{n} task{'s' if n != 1 else ''}: {why}"))
    if workers:
        head.append(("WORKERS", workers))
    label = max(len(k) for k, _ in head)
    lines = [f"{k.ljust(label)}  {v}" for k, v in head]
    # The known states in their life order, then any the coordinator added.
    known = list(TaskStatus)
    states = known + sorted(s for s in job.counts if s not in known)
    counts = render_table(
        (Column("TASK STATE"), Column("COUNT", right=True)),
        [(s, str(job.count(s))) for s in states],
    )
    return "\n".join(lines) + "\n\n" + counts
