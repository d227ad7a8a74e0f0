"""A coordinator on a Clock with an inline database, and helpers to drive it like a worker."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.database import InlineDatabase
from xwch.coordinator.assembly import Coordinator, CoordinatorConfig, make_coordinator
from xwch.protocol.objects import Source
from xwch.protocol.worker import HostFacts
from xwch.store import tokens
from xwch.store.records import TokenRecord


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


BINARY = digest_of("binary")
DATA = digest_of("data")


def wire_job(tasks: list[dict[str, Any]], name: str = "test", **extra: Any) -> dict[str, Any]:
    """A job's wire form around ``tasks`` (binary ``prog`` and file ``data`` are stored)."""
    full = []
    for t in tasks:
        full.append(
            {
                "binary": "prog",
                "args": [],
                "env": {},
                "inputs": [],
                "outputs": [],
                "cost": 1,
                "retries": 3,
                "timeout": None,
                "after": [],
                **t,
            }
        )
    return {
        "name": name,
        "priority": 0,
        "binaries": {
            "prog": {"any": {"digest": BINARY, "size": 6, "bundle": False, "entry": None}}
        },
        "files": {"data": {"digest": DATA, "size": 4}},
        "tasks": full,
        "results": [],
        **extra,
    }


def diamond() -> dict[str, Any]:
    """a -> (b, c) -> d, through outputs."""
    return wire_job(
        [
            {"id": "a", "inputs": [{"local": "in.txt", "file": "data"}], "outputs": ["a.txt"]},
            {
                "id": "b",
                "inputs": [{"local": "a.txt", "task": "a", "output": "a.txt"}],
                "outputs": ["b.txt"],
            },
            {
                "id": "c",
                "inputs": [{"local": "a.txt", "task": "a", "output": "a.txt"}],
                "outputs": ["c.txt"],
            },
            {
                "id": "d",
                "inputs": [
                    {"local": "b.txt", "task": "b", "output": "b.txt"},
                    {"local": "c.txt", "task": "c", "output": "c.txt"},
                ],
                "outputs": ["d.txt"],
            },
        ],
        name="diamond",
    )


class RecordedCopies:
    """Stands in for warehouses asked to copy objects: records each request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    async def request(
        self, url: str, digest: str, size: int, sources: Sequence[Source], capability: str
    ) -> None:
        assert sources and capability
        self.requests.append((url, digest))


class CoordinatorTestCase(SynchronousTestCase):
    """Builds a coordinator on a Clock with one warehouse holding the job's binary and data."""

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(1000)
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        self.url = f"sqlite:///{path / 'store.sqlite'}"
        self.db = InlineDatabase(self.url)
        self.copies = RecordedCopies()
        self.coordinator = self.build()
        self.warehouse = self.successResultOf(
            _d(self.coordinator.catalog.register("http://127.0.0.1:9", "lab", 10**9, 10**9))
        )
        self.store_objects(BINARY, DATA)
        self.client = self.token("client")
        self.worker_token = self.token("worker")

    def build(self) -> Coordinator:
        config = CoordinatorConfig(db_url=self.url, alive_interval=5.0)
        return self.successResultOf(
            _d(make_coordinator(config, self.clock, db=self.db, request_copy=self.copies.request))
        )

    def advance(self, seconds: float) -> None:
        """Let time pass while the harness's warehouse keeps heartbeating."""
        step = self.coordinator.catalog.heartbeat_interval
        while seconds > 0:
            self.clock.advance(min(step, seconds))
            seconds -= step
            self.successResultOf(
                _d(self.coordinator.catalog.heartbeat(self.warehouse.id, 10**9, 10**9))
            )

    def token(self, role: str) -> TokenRecord:
        with self.db.engine.begin() as conn:
            secret = tokens.create_token_thd(conn, role, role, 0.0)
            record = tokens.find_token_thd(conn, secret)
        assert record is not None
        return record

    def store_objects(self, *digests: str) -> None:
        self.successResultOf(
            _d(self.coordinator.catalog.add_objects(self.warehouse.id, [(d, 4) for d in digests]))
        )

    def submit(self, wire: dict[str, Any]) -> str:
        return self.successResultOf(_d(self.coordinator.tasks.submit(wire, owner=self.client.id)))

    def register(
        self,
        name: str = "host",
        platform: str = "linux-x86_64",
        slots: int = 2,
        replaces: str | None = None,
        token: Any = None,
    ) -> str:
        facts = HostFacts(name, "127.0.0.1", platform, 2, 2**30, slots, 1.0, replaces=replaces)
        record = self.successResultOf(
            _d(self.coordinator.workers.register(token or self.worker_token, facts))
        )
        return record.id


def _d(coroutine: Any) -> Any:
    from twisted.internet.defer import ensureDeferred

    return ensureDeferred(coroutine)
