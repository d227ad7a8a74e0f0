"""The event stream that tells open dashboards to refresh (server-sent events).

Every :attr:`LiveUpdates.INTERVAL` seconds, and only while some page is open, a cheap
fingerprint of the platform (signals and requests counted as they pass, workers, warehouses) is
compared with the last one; when it changed, each open stream gets one event and its page
fetches its content again. Pages are never pushed data: a page renders what it shows itself,
so an event carries nothing but a version number.

Rendering costs the coordinator time it owes to its workers: a 10,000-task job's page takes a
tenth of a second. The pages report what each render took (:meth:`LiveUpdates.spent`), and the
next event waits until what the last round of renders cost is at most :attr:`BUDGET` of the
time between two events: a small platform refreshes every two seconds, a big one less often,
and the dashboards never take more than about a percent of the coordinator.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.web.server import Request


class LiveUpdates(Service):
    """Holds the open event streams and tells them of changes."""

    # Two seconds: live to a person, and at most one render of each open page that often.
    INTERVAL = 2.0
    # A comment sent this often keeps proxies from closing a quiet stream.
    KEEPALIVE = 30.0
    # The share of the coordinator's time that re-rendering open pages may take.
    BUDGET = 0.01
    # What changes with no signal (a worker lost, "last heard") is shown within this time.
    SLOWEST_CHANGE = 10.0
    # However costly the pages, an open page is refreshed at least this often. Five pages with
    # a 40,000-task job's among them (1.5 s a round) ask for two and a half minutes.
    LONGEST_INTERVAL = 300.0

    def __init__(self, clock: IReactorTime, fingerprint: Callable[[], Hashable]) -> None:
        self._clock = clock
        self._fingerprint = fingerprint
        self._streams: set[Request] = set()
        self._last: Hashable = None
        self._quiet_since = 0.0
        self._sent_at = float("-inf")
        # Seconds spent rendering pages since the last event, and the gap they ask for.
        self._spent = 0.0
        self.gap = self.INTERVAL
        self.version = 0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        streams, self._streams = self._streams, set()
        for request in streams:
            if not request.finished:
                request.finish()

    def open(self, request: Request) -> None:
        """Start an event stream on ``request``, kept open until the browser leaves."""
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        # The browser's wait before reconnecting after the coordinator restarts.
        request.write(b"retry: 3000\n\n")
        self._streams.add(request)
        request.notifyFinish().addBoth(lambda _: self._streams.discard(request))

    def spent(self, seconds: float) -> None:
        """A page took ``seconds`` to render (the refreshes an event caused, and others)."""
        self._spent += max(0.0, seconds)

    def _tick(self) -> None:
        if not self._streams:
            self._last = None  # the first page opened next sees a change at once
            return
        now = self._clock.seconds()
        # What the renders since the last event cost (those it caused, mostly) decides how
        # long after it the next may come.
        self.gap = min(self.LONGEST_INTERVAL, max(self.INTERVAL, self._spent / self.BUDGET))
        if now - self._sent_at < self.gap:
            return
        current = self._fingerprint()
        if current != self._last:
            self._last = current
            self.version += 1
            self._send(f"data: {self.version}\n\n".encode())
            self._quiet_since = self._sent_at = now
            self._spent = 0.0
        elif now - self._quiet_since >= self.KEEPALIVE:
            self._send(b": keepalive\n\n")
            self._quiet_since = now

    def _send(self, data: bytes) -> None:
        # A stream whose browser left was discarded when its request failed (notifyFinish).
        for request in list(self._streams):
            request.write(data)
