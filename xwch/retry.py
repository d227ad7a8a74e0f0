"""Retrying network calls: one helper, on Twisted's backoff policy, for every retry loop.

A *policy* is what :class:`twisted.application.internet.ClientService` takes: a function of the
number of failed tries so far (0 before the first retry) giving the seconds to wait. Ours,
:func:`equal_jitter`, is Twisted's :func:`~twisted.application.internet.backoffPolicy` for the
exponential step, with the jitter drawn within the step rather than added to it.

:func:`retrying` calls until an answer or an error that is not worth retrying. Loops that
retry something other than one call (the worker's pull loop, a download's rounds over its
warehouses) keep a :class:`Retry` of their own: the same delays, counted across their tries,
``reset`` when one succeeds. Either way a server's ``Retry-After`` (``ApiError.retry_after``) is
a floor: a busy server that asks for 5 s is not asked again sooner.
"""

from __future__ import annotations

import random as _random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from twisted.application.internet import backoffPolicy
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from xwch.errors import ApiError

T = TypeVar("T")

# Failed tries so far (0 before the first retry) -> seconds to wait before the next.
RetryPolicy = Callable[[int], float]


def equal_jitter(
    base: float, cap: float, random: Callable[[], float] = _random.random
) -> RetryPolicy:
    """Delays that double from ``base`` up to ``cap``, each drawn in the upper half of its step.

    Half fixed, half random ("equal jitter"): retries never collapse to nothing, and many
    senders that failed together (a restarted coordinator) spread out instead of coming back
    at the same instant. Twisted's own jitter is added on top of the step, in seconds whatever
    the step; ours scales with it, and never passes ``cap``.

    ``random``: a draw in [0, 1); tests give a constant (1.0: the top of every step).
    """
    step = backoffPolicy(initialDelay=base, maxDelay=cap, factor=2.0, jitter=lambda: 0.0)

    def policy(failures: int) -> float:
        whole = step(failures)
        return whole / 2 + random() * whole / 2

    return policy


def retry_after_of(error: BaseException) -> float | None:
    """The delay a server asked for in refusing (Retry-After), if it asked for one."""
    return error.retry_after if isinstance(error, ApiError) else None


class Retry:
    """The delays of one retry loop: each from ``policy``, never below the server's wish."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        # Failed tries since the last success.
        self.failures = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        """The delay before the next try (at least ``retry_after``); counts one failed try."""
        delay = self._policy(self.failures)
        self.failures += 1
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def reset(self) -> None:
        """A try succeeded: the next failure waits the policy's first delay again."""
        self.failures = 0


async def retrying(
    reactor: IReactorTime,
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    is_transient: Callable[[Exception], bool],
    on_retry: Callable[[Exception, float], None],
    tries: int | None = None,
) -> T:
    """``attempt()``'s answer, trying again after each transient failure.

    ``is_transient``: whether an error is worth another try; any other is raised at once.
    ``on_retry(error, delay)``: called before each wait (to log it). ``tries``: the most tries
    in all (None: no limit); the last one's error is raised.
    """
    retry = Retry(policy)
    while True:
        try:
            return await attempt()
        except Exception as e:
            if not is_transient(e) or (tries is not None and retry.failures + 1 >= tries):
                raise
            delay = retry.next_delay(retry_after_of(e))
            on_retry(e, delay)
        await deferLater(reactor, delay)
