"""The one retry helper: Twisted's backoff step, equal jitter, the server's Retry-After a floor."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from xwch.errors import ApiError, Unreachable
from xwch.retry import Retry, equal_jitter, retrying

TOP = equal_jitter(1.0, 30.0, lambda: 1.0)
BOTTOM = equal_jitter(1.0, 30.0, lambda: 0.0)


class Flaky:
    """Fails with the given errors in turn, then answers "done"; records when it was called."""

    def __init__(self, clock: Clock, *errors: Exception) -> None:
        self.clock = clock
        self.errors = list(errors)
        self.calls: list[float] = []

    async def __call__(self) -> str:
        self.calls.append(self.clock.seconds())
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def transient(error: Exception) -> bool:
    return isinstance(error, Unreachable) or (isinstance(error, ApiError) and error.status == 503)


class EqualJitterTests(SynchronousTestCase):
    def test_steps_double_up_to_the_cap(self) -> None:
        """The top of each step doubles from the base and never passes the cap."""
        self.assertEqual([TOP(n) for n in range(7)], [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0])
        self.assertEqual(TOP(10_000), 30.0)

    def test_jitter_stays_in_the_upper_half_of_the_step(self) -> None:
        """Drawn at its lowest, a delay is half its step: retries never collapse to nothing."""
        self.assertEqual([BOTTOM(n) for n in range(6)], [0.5, 1.0, 2.0, 4.0, 8.0, 15.0])


class RetryTests(SynchronousTestCase):
    def test_counts_failures_and_resets(self) -> None:
        retry = Retry(TOP)
        self.assertEqual([retry.next_delay() for _ in range(3)], [1.0, 2.0, 4.0])
        retry.reset()
        self.assertEqual(retry.next_delay(), 1.0)

    def test_retry_after_is_a_floor(self) -> None:
        """A server's Retry-After is waited at least; a shorter one does not cut the delay."""
        retry = Retry(TOP)
        self.assertEqual(retry.next_delay(retry_after=5.0), 5.0)
        self.assertEqual(retry.next_delay(retry_after=0.5), 2.0)


class RetryingTests(SynchronousTestCase):
    def test_retries_transient_failures_on_the_clock(self) -> None:
        clock = Clock()
        call = Flaky(clock, Unreachable("down"), Unreachable("down"))
        logged: list[float] = []
        d = Deferred.fromCoroutine(
            retrying(clock, call, TOP, transient, lambda e, delay: logged.append(delay))
        )
        clock.advance(1.0)
        self.assertNoResult(d)
        clock.advance(2.0)
        self.assertEqual(self.successResultOf(d), "done")
        self.assertEqual(call.calls, [0.0, 1.0, 3.0])
        self.assertEqual(logged, [1.0, 2.0])

    def test_a_busy_server_is_not_asked_again_before_its_retry_after(self) -> None:
        clock = Clock()
        call = Flaky(clock, ApiError(503, "busy", "busy", retry_after=5.0))
        d = Deferred.fromCoroutine(retrying(clock, call, TOP, transient, lambda e, t: None))
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), "done")

    def test_other_errors_are_raised_at_once(self) -> None:
        clock = Clock()
        call = Flaky(clock, ApiError(401, "unauthorized", "no"))
        d = Deferred.fromCoroutine(retrying(clock, call, TOP, transient, lambda e, t: None))
        self.failureResultOf(d, ApiError)
        self.assertEqual(call.calls, [0.0])

    def test_gives_up_after_the_tries_allowed(self) -> None:
        """With ``tries``, the last try's error is raised, after tries - 1 waits."""
        clock = Clock()
        call = Flaky(clock, *(Unreachable(f"down {n}") for n in range(5)))
        d = Deferred.fromCoroutine(
            retrying(clock, call, TOP, transient, lambda e, t: None, tries=3)
        )
        clock.pump([1.0, 2.0])
        failure = self.failureResultOf(d, Unreachable)
        self.assertEqual(str(failure.value), "down 2")
        self.assertEqual(call.calls, [0.0, 1.0, 3.0])
