"""The event stream: open pages are told of changes, and only of changes."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from xwch.dashboard.live import LiveUpdates


class LiveUpdatesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.state = [0]
        self.live = LiveUpdates(self.clock, lambda: self.state[0])
        self.live.startService()
        self.addCleanup(self.live.stopService)

    def events(self, request: DummyRequest) -> list[bytes]:
        return [w for w in request.written if w.startswith(b"data:")]

    def test_a_change_is_told_once(self) -> None:
        """An open page gets one event when the platform changes, none while it stays."""
        request = DummyRequest([b"events"])
        self.live.open(request)
        self.clock.advance(LiveUpdates.INTERVAL)
        assert self.events(request) == [b"data: 1\n\n"]  # the first look is a change
        self.clock.advance(LiveUpdates.INTERVAL * 3)
        assert len(self.events(request)) == 1
        self.state[0] = 1
        self.clock.advance(LiveUpdates.INTERVAL)
        assert self.events(request)[-1] == b"data: 2\n\n"

    def test_a_closed_page_is_forgotten(self) -> None:
        request = DummyRequest([b"events"])
        self.live.open(request)
        assert self.live.open_streams == 1
        request.processingFailed(Exception("gone"))  # the browser left
        assert self.live.open_streams == 0

    def test_no_page_no_work(self) -> None:
        """With no page open, the fingerprint is never computed."""
        calls = []
        live = LiveUpdates(self.clock, lambda: calls.append(1))
        live.startService()
        self.clock.advance(LiveUpdates.INTERVAL * 5)
        live.stopService()
        assert calls == []

    def test_stopping_ends_the_streams(self) -> None:
        request = DummyRequest([b"events"])
        self.live.open(request)
        self.live.stopService()
        assert request.finished

    def test_costly_pages_are_refreshed_less_often(self) -> None:
        """When the renders an event caused cost more than the budget of the time since, the
        next event waits; once cheap again, pages get the shortest interval."""
        request = DummyRequest([b"events"])
        self.live.open(request)
        self.clock.advance(LiveUpdates.INTERVAL)
        assert len(self.events(request)) == 1
        # The renders that event caused took half a second.
        self.live.spent(0.5)
        self.state[0] = 1
        gap = 0.5 / LiveUpdates.BUDGET
        self.clock.advance(gap - LiveUpdates.INTERVAL)
        assert len(self.events(request)) == 1
        self.clock.advance(LiveUpdates.INTERVAL)
        assert len(self.events(request)) == 2
        self.state[0] = 2
        self.clock.advance(LiveUpdates.INTERVAL)
        assert len(self.events(request)) == 3  # nothing rendered meanwhile: cheap again
