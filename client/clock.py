"""The reactor's clock, read in one place.

Every time the client shows or measures comes from the injected reactor, so the tests drive it
with a ``Clock``. Zope interfaces declare their methods without ``self``, which mypy rejects on
``reactor.seconds()`` unless the mypy-zope plugin is on: the one ignore lives here.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


def now(reactor: IReactorTime) -> float:
    """The reactor's current time, in Unix seconds."""
    return float(reactor.seconds())  # type: ignore[misc]
