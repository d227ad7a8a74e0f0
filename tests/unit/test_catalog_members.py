"""Members sharing one store, each with its own catalog: what one hears, the others learn from
the store (objects on a miss, warehouses' heartbeats on a timer)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from tests.fakes.database import InlineDatabase
from tests.unit.coordinator.harness import CoordinatorTestCase, wire_job
from tests.unit.coordinator.test_api import ApiHarness
from tests.unit.coordinator.test_checkpoints import CheckpointTestCase, checkpoint
from xwch.coordinator.catalog import Catalog, WarehouseRefresh
from xwch.protocol.objects import OutputFile
from xwch.protocol.worker import Assignment, AttemptResult
from xwch.store import jobs as job_queries
from xwch.store import nodes
from xwch.store.records import WarehouseRecord

T = TypeVar("T")
KEY = b"k" * 32


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def done(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of ``coroutine``, which must end at once (the database runs inline)."""
    results: list[T | Failure] = []
    ensureDeferred(coroutine).addBoth(results.append)
    [result] = results
    if isinstance(result, Failure):
        result.raiseException()
    return result  # type: ignore[return-value]


class Member:
    """One member's catalog, on its own connection to the shared store and its own clock."""

    def __init__(self, url: str, clock: Clock) -> None:
        self.db = InlineDatabase(url)
        self.reads: list[str] = []
        read = self.db.read

        def counted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            self.reads.append(fn.__name__)
            return read(fn, *args, **kwargs)

        self.db.read = counted  # type: ignore[method-assign]
        self.clock = clock
        self.catalog = Catalog(clock, self.db, KEY)
        done(self.catalog.load())
        self.stored: list[str] = []
        self.catalog.on_stored.append(self.stored.append)


@pytest.fixture
def members(db_url: str) -> Iterator[tuple[Member, Member]]:
    start = Clock()
    start.advance(1000)
    a, b = Member(db_url, start), Member(db_url, Clock())
    b.clock.advance(1000)
    yield a, b
    a.db.stop()
    b.db.stop()


def test_objects_recorded_by_one_member_are_learned_by_another_on_a_miss(
    members: tuple[Member, Member],
) -> None:
    """A result or job naming objects a warehouse reported to another member is not refused:
    the member looks them up in the store (locations, sizes, inline bytes) and tells its
    listeners of the new copies; an object the store does not know either stays missing."""
    a, b = members
    w = done(a.catalog.register("http://w1", "lab", 10**9, 10**9))
    big, small, nowhere = digest_of("big"), digest_of("small"), digest_of("nowhere")
    done(a.catalog.add_objects(w.id, [(big, 4000)]))
    done(a.db.write(nodes.add_inline_objects_thd, {small: b"tiny"}))
    a.catalog.hold_inline({small: b"tiny"})
    assert b.catalog.missing([big, small, nowhere]) == sorted([big, small, nowhere])

    b.reads.clear()
    done(b.catalog.learn([big, small, nowhere]))
    assert b.reads == ["objects_of_thd"]
    assert b.catalog.missing([big, small, nowhere]) == [nowhere]
    assert b.catalog.size(big) == 4000
    assert [h.id for h in b.catalog.holders(big)] == [w.id]
    assert b.catalog.inline(small) == b"tiny"
    assert b.stored == [big]

    # What is known costs no read.
    b.reads.clear()
    done(b.catalog.learn([big, small]))
    assert b.reads == []


def test_many_unknown_objects_are_learned_in_chunks(members: tuple[Member, Member]) -> None:
    """A result naming more objects than one statement takes still has them all found."""
    a, b = members
    w = done(a.catalog.register("http://w1", "lab", 10**9, 10**9))
    digests = [digest_of(str(i)) for i in range(nodes.LOOKUP_CHUNK * 2 + 7)]
    done(a.catalog.add_objects(w.id, [(d, 1) for d in digests]))
    done(b.catalog.learn(digests))
    assert b.catalog.missing(digests) == []


def test_a_warehouse_heard_by_another_member_is_known_and_stays_alive(
    members: tuple[Member, Member],
) -> None:
    """A warehouse that registered and heartbeats at member A is known to member B after B's
    refresh, and stays alive there past B's own timeout; once A stops hearing it, B lets it
    die too."""
    a, b = members
    refresh = WarehouseRefresh(b.catalog, b.clock)
    refresh.startService()
    w = done(a.catalog.register("http://w1", "lab", 10**9, 5))
    assert w.id not in b.catalog.warehouses
    step = a.catalog.heartbeat_interval
    b.clock.advance(refresh.interval)
    assert b.catalog.is_alive(w.id)
    assert b.catalog.choose_for_upload().id == w.id

    for _ in range(int(2 * b.catalog.warehouse_timeout / step)):
        a.clock.advance(step)
        done(a.catalog.heartbeat(w.id, 10**9, 7))
        b.clock.advance(step)
    assert b.clock.seconds() - 1000 > b.catalog.warehouse_timeout
    assert b.catalog.is_alive(w.id)
    assert b.catalog.warehouses[w.id].free == 7

    b.clock.advance(b.catalog.warehouse_timeout + step)
    assert not b.catalog.is_alive(w.id)
    assert refresh.stopService() is not None
    assert b.clock.getDelayedCalls() == []


def test_an_older_row_does_not_undo_a_heartbeat_heard_here(
    members: tuple[Member, Member],
) -> None:
    """Refreshing moves a warehouse's last heartbeat forward only."""
    a, b = members
    w = done(a.catalog.register("http://w1", "lab", 10**9, 5))
    done(b.catalog.refresh())
    b.clock.advance(30)
    # Heard here, but (say) not yet written: the store still has the registration's time.
    b.catalog.warehouses[w.id] = WarehouseRecord(
        **{**vars(w), "last_heard": b.clock.seconds(), "free": 9}
    )
    done(b.catalog.refresh())
    assert b.catalog.warehouses[w.id].last_heard == b.clock.seconds()
    assert b.catalog.warehouses[w.id].free == 9


def test_a_warehouse_registered_at_another_member_is_known_on_its_first_report(
    members: tuple[Member, Member],
) -> None:
    """Before any refresh, a heartbeat's warehouse id is looked up in the store; an id the store
    does not know either stays unknown."""
    a, b = members
    w = done(a.catalog.register("http://w1", "lab", 10**9, 5))
    assert done(b.catalog.known(w.id))
    done(b.catalog.heartbeat(w.id, 10**9, 3))
    assert b.catalog.is_alive(w.id)
    assert not done(b.catalog.known("wnothing"))
    assert "wnothing" not in b.catalog.warehouses


class OtherMember:
    """A second member's catalog on the harness's store (the harness's coordinator is the
    first): warehouses register and report to it alone."""

    def __init__(self, test: Any) -> None:
        db = InlineDatabase(test.url)
        test.addCleanup(db.stop)
        self.catalog = Catalog(test.clock, db, test.coordinator.catalog.capability_key)
        test.successResultOf(ensureDeferred(self.catalog.load()))


class ResultsThroughAnotherMemberTests(CoordinatorTestCase):
    def work(self, worker_id: str) -> list[Assignment]:
        return self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.work_request(self.worker_token, worker_id, 1.0, 2)
            )
        )

    def states(self, job_id: str) -> dict[str, str]:
        rows = self.successResultOf(self.db.read(job_queries.list_tasks_thd, job_id))
        return {r.id: r.state for r in rows}

    def test_outputs_reported_to_another_member_are_accepted(self) -> None:
        """A worker's outputs stored at a warehouse that reports to another member count:
        the result is accepted, not refused as missing, and the next task can read them."""
        other = OtherMember(self)
        job = self.submit(wire_job([{"id": "x", "outputs": ["o"]}, {"id": "y", "after": ["x"]}]))
        worker = self.register()
        [a] = self.work(worker)
        output = OutputFile("o", digest_of("x's output"), 3)
        self.successResultOf(
            ensureDeferred(other.catalog.add_objects(self.warehouse.id, [(output.digest, 3)]))
        )
        result = AttemptResult(a.attempt, "succeeded", exit_code=0, outputs=(output,))
        self.assertTrue(
            self.successResultOf(
                ensureDeferred(self.coordinator.workers.result(self.worker_token, worker, result))
            )
        )
        self.assertEqual(self.states(job)["x"], "done")
        self.assertTrue(self.coordinator.catalog.has(output.digest))

    def test_a_job_whose_files_went_through_another_member_is_created(self) -> None:
        """A job's binary and files uploaded to a warehouse reporting to another member."""
        other = OtherMember(self)
        wire = wire_job([{"id": "x"}])
        wire["files"]["data"]["digest"] = digest_of("uploaded elsewhere")
        self.successResultOf(
            ensureDeferred(
                other.catalog.add_objects(self.warehouse.id, [(digest_of("uploaded elsewhere"), 4)])
            )
        )
        job = self.submit(wire)
        self.assertEqual(self.states(job), {"x": "ready"})


class CheckpointThroughAnotherMemberTests(CheckpointTestCase):
    def test_a_checkpoint_whose_objects_another_member_heard_of_is_recorded(self) -> None:
        other = OtherMember(self)
        _job, worker, a = self.running_task()
        saved = checkpoint(a.attempt, "1", "c1", "c2")
        objects = [(d, 5) for d in (saved.manifest, *saved.chunks)]
        self.successResultOf(ensureDeferred(other.catalog.add_objects(self.warehouse.id, objects)))
        answer = self.successResultOf(ensureDeferred(self.book.record(worker, saved)))
        assert answer.recorded
        assert self.stored() == [("long", 1)]


class WarehouseReportsToAnotherMemberTests(ApiHarness):
    def test_a_warehouse_registered_at_another_member_reports_here(self) -> None:
        """Its heartbeat and objects report are taken (not 404, not 500), and what it reported
        is downloadable; an id no member registered is still an unknown warehouse."""
        other = OtherMember(self)
        w = self.successResultOf(
            ensureDeferred(other.catalog.register("http://w2", "far", 10**9, 10**9))
        )
        beat = {"capacity": 10**9, "free": 10**8}
        code, _, _ = self.call("POST", f"/warehouses/{w.id}/heartbeat", "warehouse", beat)
        self.assertEqual(code, 200)
        self.assertTrue(self.coordinator.catalog.is_alive(w.id))
        report = {"objects": [{"digest": digest_of("here"), "size": 4}]}
        code, _, _ = self.call("POST", f"/warehouses/{w.id}/objects", "warehouse", report)
        self.assertEqual(code, 200)
        code, body, _ = self.call("POST", "/warehouses/wnobody/heartbeat", "warehouse", beat)
        self.assertEqual((code, body["error"]), (404, "unknown_warehouse"))

    def test_objects_reported_to_another_member_are_downloadable_here(self) -> None:
        other = OtherMember(self)
        digest = digest_of("reported elsewhere")
        self.successResultOf(
            ensureDeferred(other.catalog.add_objects(self.warehouse.id, [(digest, 4)]))
        )
        code, body, _ = self.call("POST", "/objects/downloads", "client", {"digests": [digest]})
        self.assertEqual(code, 200)
        self.assertEqual(body["objects"][0]["size"], 4)
        code, body, _ = self.call("GET", f"/objects/{digest}", "client")
        self.assertEqual((code, [h["id"] for h in body["warehouses"]]), (200, [self.warehouse.id]))

    def test_the_coordinator_hears_of_warehouses_through_the_store(self) -> None:
        """A warehouse heartbeating only to another member stays alive at this coordinator,
        long past the timeout: its managers read the warehouses on a timer."""
        self.coordinator.startService()
        self.addCleanup(self.coordinator.stopService)
        other = OtherMember(self)
        w = self.successResultOf(
            ensureDeferred(other.catalog.register("http://w2", "far", 10**9, 10**9))
        )
        catalog = self.coordinator.catalog
        for _ in range(int(2 * catalog.warehouse_timeout / catalog.heartbeat_interval)):
            self.clock.advance(catalog.heartbeat_interval)
            self.successResultOf(ensureDeferred(other.catalog.heartbeat(w.id, 10**9, 10**9)))
        self.assertTrue(catalog.is_alive(w.id))


class CopiesReportedToAnotherMemberTests(CoordinatorTestCase):
    def test_a_copy_this_member_asked_for_is_learned_when_reported_elsewhere(self) -> None:
        """The scanner asks a second warehouse for copies; that warehouse reports them to
        another member: the next scan finds them in the store, and asks for no copy again."""
        other = OtherMember(self)
        catalog = self.coordinator.catalog
        second = self.successResultOf(
            ensureDeferred(catalog.register("http://127.0.0.1:8", "lab", 10**9, 10**9))
        )
        self.successResultOf(ensureDeferred(self.coordinator.scanner.scan()))
        asked = sorted(digest for _, digest in self.copies.requests)
        self.assertEqual(len(asked), 2)
        self.successResultOf(
            ensureDeferred(other.catalog.add_objects(second.id, [(d, 4) for d in asked]))
        )
        self.successResultOf(ensureDeferred(self.coordinator.scanner.scan()))
        for digest in asked:
            self.assertIn(second.id, [w.id for w in catalog.holders(digest)])
        # Long after the copies' timeout: still none asked again.
        self.advance(self.coordinator.scanner.COPY_TIMEOUT + 1)
        self.successResultOf(ensureDeferred(self.coordinator.scanner.scan()))
        self.assertEqual(len(self.copies.requests), 2)
