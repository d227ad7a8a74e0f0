"""Following a job until it ends, with a progress display.

On a terminal the display is one line redrawn in place with ``\\r``: a bar of done/total, the
rate in tasks per second, the time left and the counts by state, then what keeps the workers
from computing, if anything (:mod:`.workers_note`). Anywhere else (a log file, CI) redrawing
would only make noise, so a plain line is written when the counts or that note change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TextIO

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from xwch.errors import ApiError, Unreachable
from xwch.protocol.client import JobSummary
from xwch.protocol.states import TaskStatus

from .clock import now
from .coordinator import CoordinatorClient
from .humane import format_duration, format_rate
from .workers_note import WorkersWatch

# States shown beside the bar, in the order a task lives them; "done" is the bar itself.
SHOWN_STATES = (
    TaskStatus.ASSIGNED,
    TaskStatus.RUNNING,
    TaskStatus.ASSIGNED,
    TaskStatus.READY,
    TaskStatus.BLOCKED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)
# A bar narrower than MIN_BAR says nothing; one wider than MAX_BAR only pushes the numbers away.
MIN_BAR = 10
MAX_BAR = 30
DEFAULT_WIDTH = 80


def render_progress(
    counts: Mapping[str, int],
    total: int,
    elapsed: float,
    width: int,
    done_before: int = 0,
    note: str | None = None,
) -> str:
    """The one-line progress display, at most ``width - 1`` characters.

    The rate counts only tasks done since following began (``done_before`` were done already),
    so joining a job half-way does not promise a rate it never had. ``note`` (what keeps the
    workers from computing) comes last, cut if the line is too narrow. One column is left free
    because some terminals wrap a line that fills the whole width.
    """
    done = counts.get(TaskStatus.DONE, 0)
    fresh = max(0, done - done_before)
    rate = fresh / elapsed if elapsed > 0 else 0.0
    remaining = max(0, total - done)
    if remaining == 0:
        eta = "0s"
    elif rate > 0:
        eta = format_duration(remaining / rate)
    else:
        eta = "?"
    states = "  ".join(f"{s} {counts[s]}" for s in SHOWN_STATES if counts.get(s))
    tail = f" {done}/{total}  {format_rate(rate)} tasks/s  ETA {eta}"
    if states:
        tail += f"  {states}"
    room = width - 1
    bar_width = min(MAX_BAR, room - len(tail) - 2)
    if bar_width >= MIN_BAR:
        filled = bar_width * done // total if total else bar_width
        line = "[" + "#" * filled + "." * (bar_width - filled) + "]" + tail
    else:
        line = tail.lstrip()
    if note:
        line += f"  {note}"
    return line[:room]


def render_change(job: JobSummary, elapsed: float, note: str | None = None) -> str:
    """The plain line written when a job's counts change, for logs rather than terminals."""
    states = ", ".join(f"{s} {job.counts[s]}" for s in SHOWN_STATES if job.counts.get(s))
    line = (
        f"[{format_duration(elapsed)}] {job.state}: {job.count(TaskStatus.DONE)}/{job.total} done"
    )
    line += f", {states}" if states else ""
    return line + (f"; {note}" if note else "")


def terminal_width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return DEFAULT_WIDTH


class JobFollower:
    """Polls one job until it ends and draws its progress on ``stream``.

    Each poll asks the coordinator to answer when the job ends or after POLL_INTERVAL: the
    bar is redrawn that often, and the end is heard the moment it is committed. A coordinator
    that answers at once (one from before such polls) is polled every POLL_INTERVAL, sooner
    as the job nears its end.
    """

    # How often the job is polled; also how often the bar is redrawn.
    POLL_INTERVAL = 1.0
    # Near its expected end the job is polled sooner, down to this: `wait` returns within a
    # few tens of milliseconds of the job's end, not up to a whole interval later (a tenth of
    # the run of a job of a few seconds). Only for a coordinator that does not wait.
    POLL_SOONEST = 0.05
    # How long the coordinator may stay unreachable while we follow before we give up: long
    # enough to ride out a coordinator restart, short enough not to hang a script for ever.
    UNREACHABLE_GRACE = 60.0

    def __init__(
        self,
        api: CoordinatorClient,
        reactor: IReactorTime,
        stream: TextIO,
        isatty: bool | None = None,
        width: int | None = None,
        workers: WorkersWatch | None = None,
    ) -> None:
        self.api = api
        # What keeps the workers from computing, told beside the counts (None: not asked).
        self.workers = workers
        self.reactor = reactor
        self.stream = stream
        self.isatty = stream.isatty() if isatty is None else isatty
        self.width = width
        self._drawn = False
        self._reached = False
        # Whether polls ask the coordinator to wait for the job's end: until one asked to is
        # answered at once.
        self.coordinator_waits = True

    async def follow(self, job_id: str) -> JobSummary:
        """The job's summary once it has ended."""
        start = now(self.reactor)
        try:
            job = await self._poll(job_id)
            done_before = job.count(TaskStatus.DONE)
            last_seen: tuple[str, list[tuple[str, int]], str | None] | None = None
            told: list[tuple[str, int]] = []
            while True:
                note = None
                if self.workers is not None and not job.has_ended:
                    note = await self.workers.update()
                elapsed = now(self.reactor) - start
                # Tasks that would wait forever as things stand: said once, when it changes.
                holding_back = sorted(job.unrunnable.items())
                if holding_back != told:
                    told = holding_back
                    for why, n in holding_back:
                        self.end_line()
                        self.stream.write(f"cannot run {n} task{'s' if n != 1 else ''}: {why}\n")
                        self.stream.flush()
                if self.isatty:
                    width = self.width or terminal_width(self.stream)
                    line = render_progress(job.counts, job.total, elapsed, width, done_before, note)
                    self._draw(line.ljust(width - 1))
                else:
                    seen = (job.state, sorted(job.counts.items()), note)
                    if seen != last_seen:
                        self.stream.write(render_change(job, elapsed, note) + "\n")
                        self.stream.flush()
                        last_seen = seen
                if job.has_ended:
                    return job
                if self.coordinator_waits:
                    asked = now(self.reactor)
                    job = await self._poll(job_id, self.POLL_INTERVAL)
                    if job.has_ended or now(self.reactor) - asked >= self.POLL_INTERVAL / 2:
                        continue
                    # Answered at once, the job running: this coordinator did not hold the poll
                    # (stopping, say), so we wait between polls from now on rather than spin.
                    self.coordinator_waits = False
                elapsed = now(self.reactor) - start
                await self._sleep(self._until_next_poll(job, done_before, elapsed))
                job = await self._poll(job_id)
        finally:
            # Whatever follows (the final state, an error) starts on a fresh line.
            self.end_line()

    def _until_next_poll(self, job: JobSummary, done_before: int, elapsed: float) -> float:
        """Half the time the job seems to need to end (at its pace while followed), between
        POLL_SOONEST and POLL_INTERVAL."""
        done = job.count(TaskStatus.DONE)
        if done <= done_before or elapsed <= 0:
            return self.POLL_INTERVAL
        settled = done + job.count(TaskStatus.FAILED) + job.count(TaskStatus.CANCELLED)
        time_left = max(0, job.total - settled) * elapsed / (done - done_before)
        return min(self.POLL_INTERVAL, max(self.POLL_SOONEST, time_left / 2))

    def end_line(self) -> None:
        """Finish the redrawn line, so what follows starts on a line of its own."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _draw(self, line: str) -> None:
        self.stream.write("\r" + line)
        self.stream.flush()
        self._drawn = True

    async def _sleep(self, seconds: float) -> None:
        await deferLater(self.reactor, seconds, lambda: None)

    async def _poll(self, job_id: str, wait: float = 0.0) -> JobSummary:
        """The job now (or once it ends, within ``wait`` seconds), waiting out a busy or
        briefly unreachable coordinator.

        Only a coordinator that answered once is waited for: a wrong URL fails at once.
        """
        first_failure: float | None = None
        while True:
            try:
                job = await self.api.job(job_id, wait)
                self._reached = True
                return job
            except ApiError as e:
                if e.status != 503:
                    raise
                await self._sleep(e.retry_after or self.POLL_INTERVAL)
            except Unreachable:
                failed_at = now(self.reactor)
                if first_failure is None:
                    first_failure = failed_at
                if not self._reached or failed_at - first_failure >= self.UNREACHABLE_GRACE:
                    raise
                await self._sleep(self.POLL_INTERVAL)


async def follow(
    api: CoordinatorClient,
    job_id: str,
    reactor: IReactorTime,
    stream: TextIO,
    isatty: bool | None = None,
    width: int | None = None,
) -> JobSummary:
    """Follow ``job_id`` until it ends, drawing progress on ``stream`` with what keeps the
    workers from computing; its final summary."""
    watch = WorkersWatch(reactor, api.workers)
    return await JobFollower(api, reactor, stream, isatty, width, watch).follow(job_id)
