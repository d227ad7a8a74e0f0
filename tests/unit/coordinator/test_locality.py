"""The locality policy's choices, on hand-built catalogs (no coordinator, no clock)."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from xwch.coordinator.estimates import TransferEstimates
from xwch.coordinator.load import LinkEstimate
from xwch.coordinator.locality import LocalityScheduler
from xwch.coordinator.scheduler import FifoScheduler, ReadyTask, Scheduler, WorkerView

MIB = 1 << 20


class FakeLocations:
    """A catalog reduced to where each object is: digest -> sites."""

    def __init__(self, sites: dict[str, set[str]] | None = None) -> None:
        self.sites = sites or {}

    def holder_sites(self, digest: str) -> Collection[str]:
        return self.sites.get(digest, set())


def digest(name: str) -> str:
    return (name.encode().hex() * 64)[:64]


def task(
    name: str,
    position: int,
    inputs: tuple[tuple[str, int], ...] = (),
    job: str = "j1",
    owner: int = 1,
    priority: int = 0,
    cost: float = 1.0,
    job_order: int = 0,
    platforms: frozenset[str] | None = None,
) -> ReadyTask:
    return ReadyTask(
        key=(job, name),
        owner=owner,
        priority=priority,
        job_order=job_order,
        position=position,
        platforms=platforms,
        cost=cost,
        inputs=inputs,
    )


def worker(
    name: str, site: str = "a", performance: float = 1.0, slots: int = 1, platform: str = "linux"
) -> WorkerView:
    return WorkerView(name, platform, performance, site, slots)


def locality(locations: FakeLocations) -> LocalityScheduler:
    return LocalityScheduler(TransferEstimates(locations))


def test_a_task_goes_to_a_worker_at_the_site_of_its_data() -> None:
    where = FakeLocations({digest("x"): {"a"}, digest("y"): {"b"}})
    s = locality(where)
    s.add_ready(task("reads-x", 0, ((digest("x"), 8 * MIB),)))
    s.add_ready(task("reads-y", 1, ((digest("y"), 8 * MIB),)))
    # Both sites have a worker, so neither task should cross.
    s.pick(worker("k-a", "a"), 0)
    assert s.pick(worker("k-b", "b"), 1) == [("j1", "reads-y")]
    assert s.pick(worker("k-a", "a"), 1) == [("j1", "reads-x")]


def test_fifo_ignores_where_data_is() -> None:
    s = FifoScheduler()
    s.add_ready(task("reads-x", 0, ((digest("x"), 8 * MIB),)))
    s.add_ready(task("reads-y", 1, ((digest("y"), 8 * MIB),)))
    assert s.pick(worker("k-b", "b"), 1) == [("j1", "reads-x")]


def test_a_task_goes_to_the_worker_caching_its_input() -> None:
    where = FakeLocations({digest("x"): {"a"}, digest("y"): {"a"}})
    s = locality(where)
    for w in ("k1", "k2"):
        s.pick(worker(w), 0)
    s.objects_cached("k2", [digest("y")])
    s.add_ready(task("reads-x", 0, ((digest("x"), 8 * MIB),)))
    s.add_ready(task("reads-y", 1, ((digest("y"), 8 * MIB),)))
    assert s.pick(worker("k2"), 1) == [("j1", "reads-y")]
    assert s.pick(worker("k1"), 1) == [("j1", "reads-x")]


def test_a_cache_learnt_after_the_task_was_ready_counts_too() -> None:
    where = FakeLocations({digest("x"): {"a"}, digest("y"): {"a"}})
    s = locality(where)
    s.pick(worker("k1"), 0)
    s.add_ready(task("reads-x", 0, ((digest("x"), 8 * MIB),)))
    s.add_ready(task("reads-y", 1, ((digest("y"), 8 * MIB),)))
    s.objects_cached("k1", [digest("y")])
    assert s.pick(worker("k1"), 1) == [("j1", "reads-y")]


def test_an_evicted_object_no_longer_attracts_its_readers() -> None:
    where = FakeLocations({digest("x"): {"a"}, digest("y"): {"a"}})
    s = locality(where)
    s.pick(worker("k1"), 0)
    s.objects_cached("k1", [digest("y")])
    s.objects_evicted("k1", [digest("y")])
    s.add_ready(task("reads-x", 0, ((digest("x"), 8 * MIB),)))
    s.add_ready(task("reads-y", 1, ((digest("y"), 8 * MIB),)))
    assert s.pick(worker("k1"), 1) == [("j1", "reads-x")]


def test_a_big_task_goes_to_the_faster_of_two_workers() -> None:
    s = locality(FakeLocations())
    slow, fast = worker("slow", performance=0.5), worker("fast", performance=2.0)
    s.pick(slow, 0)
    s.pick(fast, 0)
    s.add_ready(task("big", 0, cost=10))
    s.add_ready(task("small", 1, cost=1))
    # The slow worker asks first, yet leaves the big task to the fast one.
    assert s.pick(slow, 1) == [("j1", "small")]
    assert s.pick(fast, 1) == [("j1", "big")]


def test_the_fast_worker_asking_first_takes_the_big_task() -> None:
    s = locality(FakeLocations())
    slow, fast = worker("slow", performance=0.5), worker("fast", performance=2.0)
    s.pick(slow, 0)
    s.pick(fast, 0)
    s.add_ready(task("small", 0, cost=1))
    s.add_ready(task("big", 1, cost=10))
    assert s.pick(fast, 1) == [("j1", "big")]


def test_fair_share_between_two_users() -> None:
    s = locality(FakeLocations())
    for n in range(10):
        s.add_ready(task(f"a{n}", n, job="ja", owner=1, job_order=0))
    for n in range(10):
        s.add_ready(task(f"b{n}", n, job="jb", owner=2, job_order=1))
    picked = s.pick(worker("k", slots=4), 4)
    assert sorted(job for job, _ in picked) == ["ja", "ja", "jb", "jb"]
    # Attempts of the first user end: the next slots go to it until the shares are even.
    for key in picked:
        if key[0] == "ja":
            s.attempt_ended(key, 1, "k")
    assert [job for job, _ in s.pick(worker("k", slots=4), 2)] == ["ja", "ja"]


def test_fifo_serves_the_older_job_first() -> None:
    s = FifoScheduler()
    for n in range(3):
        s.add_ready(task(f"a{n}", n, job="ja", owner=1, job_order=0))
        s.add_ready(task(f"b{n}", n, job="jb", owner=2, job_order=1))
    assert [job for job, _ in s.pick(worker("k"), 3)] == ["ja", "ja", "ja"]


def test_priority_orders_a_users_own_jobs() -> None:
    s = locality(FakeLocations())
    s.add_ready(task("low", 0, job="j-low", priority=0, job_order=0))
    s.add_ready(task("high", 0, job="j-high", priority=5, job_order=1))
    assert s.pick(worker("k"), 1) == [("j-high", "high")]


def test_a_worker_leaves_remote_work_to_the_workers_next_to_its_data() -> None:
    where = FakeLocations({digest("x"): {"a"}})
    s = locality(where)
    s.pick(worker("k-a", "a"), 0)
    s.add_ready(task("reads-x", 0, ((digest("x"), 64 * MIB),)))
    # 64 MiB over the WAN take longer than the task would wait at site a.
    assert s.pick(worker("k-b", "b"), 1) == []
    assert s.pick(worker("k-a", "a"), 1) == [("j1", "reads-x")]


def test_work_moves_when_its_site_has_no_worker() -> None:
    where = FakeLocations({digest("x"): {"a"}})
    s = locality(where)
    s.add_ready(task("reads-x", 0, ((digest("x"), 64 * MIB),)))
    assert s.pick(worker("k-b", "b"), 1) == [("j1", "reads-x")]


def test_work_moves_when_the_wait_at_home_is_longer_than_the_transfer() -> None:
    where = FakeLocations({digest(f"x{n}"): {"a"} for n in range(40)})
    s = locality(where)
    s.pick(worker("k-a", "a"), 0)
    # 40 tasks of 100 s each wait for site a's one slot; a 1 MiB input moves in 0.1 s.
    for n in range(40):
        s.add_ready(task(f"t{n}", n, ((digest(f"x{n}"), MIB),), cost=100))
    assert len(s.pick(worker("k-b", "b"), 1)) == 1


def test_a_new_copy_at_another_site_brings_the_task_there() -> None:
    where = FakeLocations({digest("x"): {"a"}})
    s = locality(where)
    s.pick(worker("k-a", "a"), 0)
    s.add_ready(task("reads-x", 0, ((digest("x"), 64 * MIB),)))
    assert s.pick(worker("k-b", "b"), 1) == []
    where.sites[digest("x")].add("b")
    s.object_stored(digest("x"))
    assert s.pick(worker("k-b", "b"), 1) == [("j1", "reads-x")]


def test_a_busy_link_makes_transfers_slower() -> None:
    where = FakeLocations({digest("x"): {"a"}})
    busy = LinkEstimate("k", "worker", 50e6, 0.0, 45e6, 0.01, 0.02, 0.1, 0.9, 0.0)
    estimates = TransferEstimates(where, lambda link: busy if link == "k" else None)
    inputs = ((digest("x"), 10 * MIB),)
    calm = TransferEstimates(where).seconds(inputs, worker("k"), lambda _d: False)
    loaded = estimates.seconds(inputs, worker("k"), lambda _d: False)
    assert loaded > 5 * calm


@pytest.mark.parametrize("make", [FifoScheduler, lambda: locality(FakeLocations())])
def test_tasks_for_another_platform_are_left_ready(make: object) -> None:
    s: Scheduler = make()  # type: ignore[operator]
    s.add_ready(task("mac-only", 0, platforms=frozenset({"darwin"})))
    s.add_ready(task("anywhere", 1))
    assert s.pick(worker("k", platform="linux"), 2) == [("j1", "anywhere")]
    assert s.is_ready(("j1", "mac-only"))
    assert s.pick(worker("m", platform="darwin"), 2) == [("j1", "mac-only")]
    assert len(s) == 0


@pytest.mark.parametrize("make", [FifoScheduler, lambda: locality(FakeLocations())])
def test_a_refused_task_stays_ready(make: object) -> None:
    s: Scheduler = make()  # type: ignore[operator]
    s.add_ready(task("t0", 0))
    s.add_ready(task("t1", 1))
    assert s.pick(worker("k"), 2, accept=lambda key: key[1] != "t0") == [("j1", "t1")]
    assert s.pick(worker("k"), 2) == [("j1", "t0")]


@pytest.mark.parametrize("make", [FifoScheduler, lambda: locality(FakeLocations())])
def test_a_removed_task_is_never_picked(make: object) -> None:
    s: Scheduler = make()  # type: ignore[operator]
    s.add_ready(task("t0", 0))
    s.add_ready(task("t1", 1))
    s.remove(("j1", "t0"))
    assert s.pick(worker("k"), 2) == [("j1", "t1")]
    assert len(s) == 0


def test_learnt_durations_decide_whether_work_moves() -> None:
    """Once the job's tasks are known to be long, waiting at home costs more than moving."""
    where = FakeLocations({digest(f"x{n}"): {"a"} for n in range(4)})
    s = locality(where)
    s.pick(worker("k-a", "a"), 0)
    for n in range(4):
        s.add_ready(task(f"t{n}", n, ((digest(f"x{n}"), 64 * MIB),)))
    # 64 MiB over the WAN (6.7 s) against 4 tasks of 1 s (the guess) waiting at home: stay.
    assert s.pick(worker("k-b", "b"), 1) == []
    [key] = s.pick(worker("k-a", "a"), 1)
    # That task took 100 s: the 3 others would wait minutes at home.
    s.attempt_ended(key, 1, "k-a", seconds=100.0, cost=1.0)
    assert len(s.pick(worker("k-b", "b"), 1)) == 1
