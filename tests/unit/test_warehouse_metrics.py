"""A warehouse's /metrics: who may read it, as the coordinator says."""

from __future__ import annotations

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from warehouse.metrics import MetricsAccess, coordinator_check
from xwch.errors import ApiError


class FakeCoordinatorCheck:
    """Answers the access route like the coordinator: known tokens pass, others are 403."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed
        self.asked: list[str] = []

    async def __call__(self, token: str) -> object:
        self.asked.append(token)
        if token not in self.allowed:
            raise ApiError(403, "forbidden", "a worker token cannot do this")
        return {"role": "metrics"}


class MetricsAccessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.coordinator = FakeCoordinatorCheck({"good"})
        self.access = MetricsAccess(self.clock, coordinator_check(self.coordinator))

    def allows(self, token: str) -> bool:
        return bool(self.successResultOf(ensureDeferred(self.access.allows(token))))

    def test_a_yes_is_remembered_for_a_while(self) -> None:
        """Scrapes every few seconds ask the coordinator once a minute, not each time."""
        assert self.allows("good") and self.allows("good")
        assert self.coordinator.asked == ["good"]
        self.clock.advance(MetricsAccess.REMEMBER + 1)
        assert self.allows("good")
        assert self.coordinator.asked == ["good", "good"]

    def test_a_no_is_not_remembered(self) -> None:
        """A refused token is asked about again: one created since works at once."""
        assert not self.allows("new")
        self.coordinator.allowed.add("new")
        assert self.allows("new")

    def test_a_coordinator_that_cannot_say_is_an_error(self) -> None:
        async def broken(token: str) -> object:
            raise ApiError(500, "internal", "internal error")

        access = MetricsAccess(self.clock, coordinator_check(broken))
        self.failureResultOf(ensureDeferred(access.allows("good")), ApiError)
