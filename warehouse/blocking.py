"""Where blocking file work runs: a thread pool the service owns, or inline in tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, Protocol, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

P = ParamSpec("P")
R = TypeVar("R")


class BlockingRunner(Protocol):
    """Runs a blocking function away from the reactor thread; its result as a Deferred."""

    def __call__(self, f: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[R]: ...


class ThreadPoolRunner:
    """Runs blocking functions in a thread pool (started and stopped by its owner)."""

    def __init__(self, reactor: IReactorFromThreads, pool: ThreadPool) -> None:
        self._reactor = reactor
        self.pool = pool

    def __call__(self, f: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[R]:
        return deferToThreadPool(self._reactor, self.pool, f, *args, **kwargs)


def run_inline(f: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[R]:
    """Runs the function right away on the calling thread (tests, tiny work)."""
    return defer.execute(f, *args, **kwargs)
