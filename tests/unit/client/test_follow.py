"""Following a job: the progress line and how polling rides out a flaky coordinator."""

from __future__ import annotations

import io
from typing import cast

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase

from xwch.client.coordinator import CoordinatorClient
from xwch.client.follow import JobFollower, render_change, render_progress
from xwch.client.workers_note import WorkersWatch, workers_note
from xwch.errors import ApiError, Unreachable
from xwch.protocol.client import JobSummary, WorkerInfo


def summary(state: str = "running", **counts: int) -> JobSummary:
    return JobSummary(
        id="j",
        name="demo",
        state=state,
        priority=0,
        created=0.0,
        ended=None,
        total=100,
        counts=counts,
    )


class RenderProgressTests(SynchronousTestCase):
    def test_shows_bar_done_total_rate_eta_and_counts(self) -> None:
        """The line shows a bar, done/total, tasks per second, time left and counts by state."""
        line = render_progress(
            {"done": 50, "running": 8, "ready": 12, "blocked": 30}, 100, 10.0, 100
        )
        self.assertEqual(
            line,
            "[" + "#" * 15 + "." * 15 + "] 50/100  5.0 tasks/s  ETA 10s"
            "  running 8  ready 12  blocked 30",
        )

    def test_never_wider_than_the_terminal(self) -> None:
        """The line leaves the last column free so the terminal never wraps it."""
        counts = {"done": 3, "running": 1, "failed": 2}
        for width in (20, 40, 60, 80, 200):
            line = render_progress(counts, 10, 3.0, width)
            self.assertLessEqual(len(line), width - 1)
        self.assertTrue(render_progress(counts, 10, 3.0, 200).startswith("["))

    def test_narrow_terminal_drops_the_bar(self) -> None:
        """On a narrow terminal the bar goes first, the numbers stay."""
        line = render_progress({"done": 1}, 4, 1.0, 30)
        self.assertTrue(line.startswith("1/4"))

    def test_rate_counts_only_tasks_done_while_following(self) -> None:
        """Joining a job half done does not claim the tasks already done as speed."""
        line = render_progress({"done": 60}, 100, 10.0, 120, done_before=50)
        self.assertIn("1.0 tasks/s", line)
        self.assertIn("ETA 40s", line)

    def test_unknown_eta_before_anything_finished(self) -> None:
        """Before any task finishes the time left is unknown, not zero or infinite."""
        line = render_progress({"running": 4}, 4, 0.0, 120)
        self.assertIn("0.00 tasks/s  ETA ?", line)

    def test_plain_change_line(self) -> None:
        """The line written to logs tells elapsed time, state, done/total and counts."""
        self.assertEqual(
            render_change(summary(done=3, running=2), 65.0),
            "[1m05s] running: 3/100 done, running 2",
        )


class ScriptedApi:
    """Answers `job` at once from a script: a summary, or an exception to raise (a coordinator
    that does not hold polls)."""

    def __init__(self, answers: list[JobSummary | Exception]) -> None:
        self.answers = answers
        self.calls = 0
        self.waits: list[float] = []

    async def job(self, job_id: str, wait: float = 0.0) -> JobSummary:
        self.calls += 1
        self.waits.append(wait)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class HoldingApi:
    """A coordinator that holds polls: each scripted summary comes after its delay, or after
    the poll's ``wait`` if that is shorter (then the job is as it was)."""

    def __init__(self, clock: Clock, script: list[tuple[float, JobSummary]]) -> None:
        self.clock = clock
        self.script = script
        self.current = summary()
        self.calls = 0

    async def job(self, job_id: str, wait: float = 0.0) -> JobSummary:
        self.calls += 1
        if not wait:
            return self.current
        delay, next_summary = self.script[0]
        if delay > wait:
            self.script[0] = (delay - wait, next_summary)
            await deferLater(self.clock, wait)
            return self.current
        self.script.pop(0)
        await deferLater(self.clock, delay)
        self.current = next_summary
        return next_summary


class FollowerTests(SynchronousTestCase):
    def follow(
        self, api: ScriptedApi | HoldingApi, clock: Clock, holds: bool = False
    ) -> Deferred[JobSummary]:
        # The fakes stand in for the one method of CoordinatorClient a follower calls.
        follower = JobFollower(cast(CoordinatorClient, api), clock, io.StringIO(), isatty=False)
        # A coordinator that answers at once is found out by the first poll asking to wait:
        # most tests here follow the polling that comes after.
        follower.coordinator_waits = holds
        return ensureDeferred(follower.follow("j"))

    def test_hears_the_end_the_moment_a_holding_coordinator_tells_it(self) -> None:
        """Asked to wait, the coordinator answers when the job ends: the follower has it then,
        having polled twice, not at its next poll."""
        clock = Clock()
        api = HoldingApi(clock, [(0.3, summary("done", done=100))])
        done = self.follow(api, clock, holds=True)
        clock.advance(0.299)
        self.assertNoResult(done)
        clock.advance(0.001)
        self.assertEqual(self.successResultOf(done).state, "done")
        self.assertEqual(api.calls, 2)

    def test_redraws_once_per_interval_while_a_holding_coordinator_waits(self) -> None:
        """A poll held for POLL_INTERVAL comes back with the job as it is, and the follower
        asks again at once (no sleep between held polls)."""
        clock = Clock()
        api = HoldingApi(clock, [(2.5, summary("done", done=100))])
        stream = io.StringIO()
        follower = JobFollower(cast(CoordinatorClient, api), clock, stream, isatty=False)
        done = ensureDeferred(follower.follow("j"))
        clock.advance(JobFollower.POLL_INTERVAL)
        self.assertEqual(api.calls, 3)
        clock.advance(JobFollower.POLL_INTERVAL)
        self.assertEqual(api.calls, 4)
        clock.advance(0.5)
        self.successResultOf(done)
        self.assertIn("done: 100/100", stream.getvalue())

    def test_polls_as_before_a_coordinator_that_answers_at_once(self) -> None:
        """The first poll asking to wait, answered at once with the job running, tells of a
        coordinator that does not hold polls: the follower sleeps between polls from then on
        and stops asking it to wait."""
        api = ScriptedApi([summary(), summary(), summary(), summary("done", done=100)])
        clock = Clock()
        follower = JobFollower(cast(CoordinatorClient, api), clock, io.StringIO(), isatty=False)
        done = ensureDeferred(follower.follow("j"))
        self.assertEqual(api.waits, [0.0, JobFollower.POLL_INTERVAL])
        self.assertFalse(follower.coordinator_waits)
        clock.advance(JobFollower.POLL_INTERVAL)
        self.assertEqual(api.calls, 3)
        clock.advance(JobFollower.POLL_INTERVAL)
        self.assertEqual(self.successResultOf(done).state, "done")
        self.assertEqual(api.waits[2:], [0.0, 0.0])

    def test_polls_at_the_named_interval_until_the_job_ends(self) -> None:
        """The job is polled every POLL_INTERVAL and following stops when it ends."""
        api = ScriptedApi([summary(), summary(), summary("done", done=100)])
        clock = Clock()
        done = self.follow(api, clock)
        self.assertEqual(api.calls, 1)
        clock.advance(JobFollower.POLL_INTERVAL)
        self.assertEqual(api.calls, 2)
        clock.advance(JobFollower.POLL_INTERVAL)
        self.assertEqual(self.successResultOf(done).state, "done")

    def test_polls_sooner_as_the_job_nears_its_end(self) -> None:
        """At 80 of 100 done in 1 s, the rest should take 0.25 s: the next poll comes after
        half that, and never sooner than POLL_SOONEST; `wait` hears the end promptly."""
        api = ScriptedApi(
            [summary(), summary(done=80), summary(done=99), summary("done", done=100)]
        )
        clock = Clock()
        done = self.follow(api, clock)
        clock.advance(JobFollower.POLL_INTERVAL)
        self.assertEqual(api.calls, 2)
        clock.advance(0.124)
        self.assertEqual(api.calls, 2)
        clock.advance(0.001)
        self.assertEqual(api.calls, 3)
        clock.advance(JobFollower.POLL_SOONEST)
        self.assertEqual(self.successResultOf(done).state, "done")

    def test_a_job_making_no_progress_is_polled_at_the_interval(self) -> None:
        api = ScriptedApi([summary(done=5), summary(done=5), summary("done", done=100)])
        clock = Clock()
        done = self.follow(api, clock)
        clock.advance(JobFollower.POLL_INTERVAL - 0.01)
        self.assertEqual(api.calls, 1)
        clock.advance(0.01)
        self.assertEqual(api.calls, 2)
        clock.advance(JobFollower.POLL_INTERVAL)
        self.successResultOf(done)

    def test_rides_out_a_short_outage(self) -> None:
        """A coordinator unreachable for a few polls does not end the wait."""
        lost = Unreachable("down")
        api = ScriptedApi([summary(), lost, lost, summary("done", done=100)])
        clock = Clock()
        done = self.follow(api, clock)
        clock.pump([JobFollower.POLL_INTERVAL] * 3)
        self.assertEqual(self.successResultOf(done).state, "done")

    def test_gives_up_after_the_grace_period(self) -> None:
        """A coordinator unreachable for longer than UNREACHABLE_GRACE ends the wait with an error."""
        polls = int(JobFollower.UNREACHABLE_GRACE / JobFollower.POLL_INTERVAL) + 2
        api = ScriptedApi([summary()] + [Unreachable("down")] * polls)
        clock = Clock()
        done = self.follow(api, clock)
        clock.pump([JobFollower.POLL_INTERVAL] * polls)
        self.failureResultOf(done, Unreachable)

    def test_a_coordinator_never_reached_fails_at_once(self) -> None:
        """A coordinator unreachable from the first poll (a wrong URL) ends the wait at once."""
        api = ScriptedApi([Unreachable("down")])
        self.failureResultOf(self.follow(api, Clock()), Unreachable)

    def test_waits_as_told_when_busy(self) -> None:
        """A busy coordinator is asked again after its Retry-After."""
        busy = ApiError(503, "busy", "busy", retry_after=5.0)
        api = ScriptedApi([summary(), busy, summary("done", done=100)])
        clock = Clock()
        done = self.follow(api, clock)
        clock.advance(JobFollower.POLL_INTERVAL)
        self.assertEqual(api.calls, 2)
        clock.advance(4.9)
        self.assertNoResult(done)
        clock.advance(0.1)
        self.successResultOf(done)

    def test_other_errors_end_the_wait(self) -> None:
        """An error other than busy or unreachable (an unknown job) ends the wait at once."""
        api = ScriptedApi([ApiError(404, "not_found", "no job j")])
        self.failureResultOf(self.follow(api, Clock()), ApiError)


def worker(state: str = "alive", reason: str | None = None, wid: str = "w") -> WorkerInfo:
    return WorkerInfo(
        id=wid,
        name="h",
        state=state,
        address="127.0.0.1",
        platform="linux-x86_64",
        cores=2,
        memory=1,
        slots=2,
        performance=1.0,
        tasks_done=0,
        last_heard=0.0,
        reason=reason,
    )


class WorkersNoteTests(SynchronousTestCase):
    def test_nothing_is_said_while_the_workers_compute(self) -> None:
        self.assertIsNone(workers_note([worker(), worker("lost")]))

    def test_suspended_workers_are_counted_with_their_commonest_reason(self) -> None:
        """The note counts the suspended among the live workers and gives the reason most of
        them gave, saying when there are others."""
        in_use = "the computer is in use (5 min idle required)"
        self.assertEqual(
            workers_note([worker("suspended", in_use), worker("suspended", in_use), worker()]),
            f"2/3 workers suspended: {in_use}",
        )
        self.assertEqual(
            workers_note([worker("suspended", in_use), worker("suspended", "outside hours")]),
            f"2/2 workers suspended: {in_use} (and 1 other reason(s))",
        )

    def test_no_live_worker_is_said(self) -> None:
        """With only lost workers (or none), nobody will run the job: the note says so."""
        self.assertEqual(
            workers_note([worker("lost")]), "no live worker: tasks wait until one registers"
        )

    def test_the_note_ends_the_progress_line(self) -> None:
        line = render_progress({"ready": 8}, 8, 1.0, 200, note="2/2 workers suspended: x")
        self.assertTrue(line.endswith("ready 8  2/2 workers suspended: x"))
        self.assertEqual(
            render_change(summary(ready=8), 1.0, "2/2 workers suspended: x"),
            "[1s] running: 0/100 done, ready 8; 2/2 workers suspended: x",
        )


class FollowingWorkersTests(SynchronousTestCase):
    def test_a_plain_line_is_written_when_the_workers_change(self) -> None:
        """Following a job whose counts do not move, a worker's suspension and resumption each
        write a line; the workers are asked at most once per WorkersWatch.INTERVAL."""
        clock = Clock()
        api = ScriptedApi([summary(ready=8)] * 12 + [summary("done", done=100)])
        seen = [[worker()], [worker("suspended", "outside the allowed hours 22:00-07:00")]]
        asked = []

        async def workers() -> list[WorkerInfo]:
            asked.append(clock.seconds())
            return seen[0] if len(asked) == 1 else seen[1]

        stream = io.StringIO()
        follower = JobFollower(
            cast(CoordinatorClient, api),
            clock,
            stream,
            isatty=False,
            workers=WorkersWatch(clock, workers),
        )
        follower.coordinator_waits = False
        done = ensureDeferred(follower.follow("j"))
        clock.pump([JobFollower.POLL_INTERVAL] * 12)
        self.successResultOf(done)
        self.assertEqual(asked, [0.0, 5.0, 10.0])
        self.assertEqual(
            stream.getvalue().splitlines(),
            [
                "[0ms] running: 0/100 done, ready 8",
                "[5s] running: 0/100 done, ready 8; 1/1 workers suspended: "
                "outside the allowed hours 22:00-07:00",
                "[12s] done: 100/100 done",
            ],
        )
