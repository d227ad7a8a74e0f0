"""An in-memory warehouse: the real warehouse resource on a temporary folder, behind StubTreq.

Requests through :attr:`InMemoryWarehouse.http` never touch the network: the real routes of
``xwch.warehouse.routes`` answer them synchronously, so a test drives uploads and downloads with a
:class:`~twisted.internet.task.Clock` and :func:`drive`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import IResource

from xwch import capability
from xwch.protocol.objects import ObjectRef, Source
from xwch.warehouse.blocking import run_inline
from xwch.warehouse.objects import ObjectStore
from xwch.warehouse.routes import Registration, WarehouseResource

WAREHOUSE_ID = "wh-test"
KEY = b"k" * 32
URL = "http://warehouse.test:8751"


class FakeCatalog:
    """Records what the warehouse reports; answers at once, or when the test says (``hold``)."""

    def __init__(self) -> None:
        self.reported: list[ObjectRef] = []
        self.hold = False
        self.pending: list[Deferred[None]] = []
        self.error: Exception | None = None

    def objects_stored(self, refs: Sequence[ObjectRef]) -> Deferred[None]:
        if self.error is not None:
            error, self.error = self.error, None
            d: Deferred[None] = Deferred()
            d.errback(error)
            return d
        self.reported.extend(refs)
        if not self.hold:
            return succeed(None)
        d = Deferred()
        self.pending.append(d)
        return d


class InMemoryWarehouse:
    """A registered warehouse on ``root`` whose clock is ``clock``."""

    def __init__(self, root: Path, clock: Clock, registered: bool = True) -> None:
        self.clock = clock
        self.store = ObjectStore(root)
        self.catalog = FakeCatalog()
        self.resource = WarehouseResource(self.store, self.catalog, clock, run_inline)
        if registered:
            self.resource.registration = Registration(WAREHOUSE_ID, KEY, 30.0)
        self.url = URL
        self.http: Any = StubTreq(self.resource)

    def serve(self, resource: IResource) -> None:
        """Put ``resource`` (wrapping :attr:`resource`, say) in front of the client."""
        self.http = StubTreq(resource)

    def capability(self, op: str, digest: str, lifetime: float = 3600.0) -> str:
        return capability.issue(KEY, op, digest, WAREHOUSE_ID, self.clock.seconds() + lifetime)

    def source(self, digest: str) -> Source:
        return Source(url=self.url, capability=self.capability(capability.OP_GET, digest))


def drive(clock: Clock, d: Deferred[Any], limit: int = 100_000) -> None:
    """Advance ``clock`` from one scheduled call to the next until ``d`` has fired."""
    for _ in range(limit):
        if d.called:
            return
        calls = clock.getDelayedCalls()
        if not calls:
            break
        clock.advance(max(0.0, min(c.getTime() for c in calls) - clock.seconds()))
    if not d.called:
        raise AssertionError("the Deferred never fired: nothing left to wait for on the clock")


def result_of(d: Deferred[Any]) -> Any:
    """The result of a fired Deferred, raising its failure's exception."""
    if not d.called:
        raise AssertionError("the Deferred has not fired")
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    value = outcome[0]
    if isinstance(value, Failure):
        value.raiseException()
    return value
