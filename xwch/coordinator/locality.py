"""The locality policy: tasks run where their data is, big tasks on fast workers, users share fairly.

For each free slot of a Work Request, the scheduler first picks a job, then a task of that job.

**The job** comes by fair share: the user (token) with the fewest running attempts first; among
that user's jobs the highest priority (docs/job-file.md: priority orders a user's own jobs),
then the job with the fewest running attempts, then the oldest. Only jobs with ready tasks are
sorted, not tasks.

**The task** is the one whose *regret* on this worker is least: the estimated completion time on
this worker minus the best it could have elsewhere. Completion time is the transfer time of the
inputs the worker lacks (per-link rates: :mod:`xwch.coordinator.estimates`) plus the task's cost
divided by the worker's performance (in seconds: each job learns its seconds per unit of cost from
its finished attempts). The regret is then

- the extra transfer time over running at the task's *home site* (the site holding most of its
  input bytes), zero when the worker is there or caches the inputs; plus
- the extra compute time over running on the fastest worker, zero for the fastest.

A worker looks at work near it first (its own cache's, its site's, the site-less); only when
there is none does it look at work homed at other sites. Among the candidates, a slow worker
takes small tasks while fast ones take big ones: each job's ready tasks are kept in buckets, and each bucket in two heaps by cost, the
smallest first (for workers slower than the median) and the biggest first (for the others).

Buckets: one per *home site* (tasks whose inputs are under :attr:`LocalityScheduler.LOCAL_BYTES`
are tied to no site), and one per worker for tasks whose big inputs that worker caches. A choice
looks only at the top of the worker's own bucket, of its site's, of the site-less one and of each
other site's: O(sites + log n), never a scan of the ready set. Entries of tasks picked through
another bucket are dropped lazily when they come to the top.

**Delay, not waste.** A worker whose own site has nothing for it may take work homed at another
site, but only when fetching the data would take less than the task is likely to wait for a slot
at home (its home bucket's backlog over the home site's slots, times its duration); otherwise it
is left for the workers next to its data. A site with no worker at all never keeps its tasks.
"""

from __future__ import annotations

import heapq
import itertools
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from xwch.coordinator.caches import WorkerCaches, prefix
from xwch.coordinator.estimates import TransferEstimates
from xwch.coordinator.scheduler import (
    POLICY_LOCALITY,
    Accept,
    ReadyTask,
    Scheduler,
    TaskKey,
    WorkerView,
    accept_all,
)

# The bucket of tasks whose inputs are too small to tie them to a site.
ANYWHERE = ""

# (cost, or minus cost; position in its job; insertion order; the task)
_Item = tuple[float, int, int, ReadyTask]


class _Bucket:
    """Ready tasks of one job sharing a place, by cost both ways."""

    __slots__ = ("big_first", "count", "small_first")

    def __init__(self) -> None:
        self.small_first: list[_Item] = []
        self.big_first: list[_Item] = []
        # Ready tasks homed here (site buckets only): the backlog that waits for this site.
        self.count = 0


@dataclass
class _Job:
    id: str
    owner: int
    priority: int
    order: int
    ready: int = 0
    running: int = 0
    # Learnt from finished attempts: seconds of work per unit of cost on a worker of
    # performance 1.0.
    seconds_per_cost: float = 1.0
    sites: dict[str, _Bucket] = field(default_factory=dict)
    workers: dict[str, _Bucket] = field(default_factory=dict)


@dataclass
class _Placed:
    """A ready task and where it is indexed."""

    task: ReadyTask
    homes: set[str]
    # The least transfer time of its inputs anywhere (at its best home site, or none at a
    # worker caching them): what its regret on a worker is measured from.
    home_seconds: float
    # Digests of its inputs big enough to make a cache worth seeking.
    big: tuple[str, ...]


class LocalityScheduler(Scheduler):
    """Ready tasks by job, site and cached data; choices by least regret (see module doc)."""

    policy = POLICY_LOCALITY

    # Inputs under 64 KiB in all tie a task to no site: moving them costs about a round trip.
    LOCAL_BYTES = 64 * 1024
    # An input this big makes the workers caching it the task's favoured place.
    CACHE_BYTES = 64 * 1024
    # How fast learning forgets (weight of the newest finished attempt).
    LEARNING_RATE = 0.2
    # Performance below this is taken for this (a worker reporting 0 is slow, not infinitely).
    MIN_PERFORMANCE = 0.01

    def __init__(self, estimates: TransferEstimates, caches: WorkerCaches | None = None) -> None:
        self.estimates = estimates
        self.caches = caches if caches is not None else WorkerCaches()
        self._placed: dict[TaskKey, _Placed] = {}
        self._jobs: dict[str, _Job] = {}
        self._owner_running: dict[int, int] = {}
        # Ready tasks by the big inputs they read: where to look when a copy or a cache appears.
        self._readers: dict[str, set[TaskKey]] = {}
        self._workers: dict[str, WorkerView] = {}
        self._site_slots: dict[str, int] = {}
        self._seq = itertools.count()
        self._fastest = 1.0
        self._median = 1.0
        self._speeds_stale = True

    def __len__(self) -> int:
        return len(self._placed)

    def is_ready(self, key: TaskKey) -> bool:
        return key in self._placed

    # Ready tasks

    def add_ready(self, task: ReadyTask) -> None:
        if task.key in self._placed:
            return
        job = self._jobs.get(task.job_id)
        if job is None:
            job = _Job(task.job_id, task.owner, task.priority, task.job_order)
            self._jobs[job.id] = job
        homes = self._homes(task)
        big = tuple(d for d, size in task.inputs if size >= self.CACHE_BYTES)
        placed = _Placed(task, homes, self._best_seconds(task, homes, big), big)
        self._placed[task.key] = placed
        job.ready += 1
        for site in homes:
            bucket = job.sites.setdefault(site, _Bucket())
            bucket.count += 1
            self._push(bucket, task)
        for digest in placed.big:
            self._readers.setdefault(digest, set()).add(task.key)
            for worker_id in self.caches.holders(digest):
                if worker_id in self._workers:
                    self._push(job.workers.setdefault(worker_id, _Bucket()), task)

    def remove(self, key: TaskKey) -> None:
        self._forget(key)

    def _forget(self, key: TaskKey) -> None:
        placed = self._placed.pop(key, None)
        if placed is None:
            return
        job = self._jobs[key[0]]
        job.ready -= 1
        for site in placed.homes:
            job.sites[site].count -= 1
        for digest in placed.big:
            readers = self._readers.get(digest)
            if readers is not None:
                readers.discard(key)
                if not readers:
                    del self._readers[digest]

    def _homes(self, task: ReadyTask) -> set[str]:
        """The sites holding the most input bytes, or at least half of them; or ANYWHERE."""
        total = sum(size for _, size in task.inputs)
        if total < self.LOCAL_BYTES:
            return {ANYWHERE}
        by_site: dict[str, int] = {}
        for digest, size in task.inputs:
            for site in self.estimates.locations.holder_sites(digest):
                by_site[site] = by_site.get(site, 0) + size
        if not by_site:
            return {ANYWHERE}
        most = max(by_site.values())
        return {s for s, held in by_site.items() if held == most or 2 * held >= total}

    def _best_seconds(self, task: ReadyTask, homes: set[str], big: tuple[str, ...]) -> float:
        """The least transfer time any worker could have: none for one caching the inputs."""
        if ANYWHERE in homes or (big and all(self.caches.holders(d) for d in big)):
            return 0.0
        return min(self.estimates.seconds_at(task.inputs, site) for site in homes)

    def _push(self, bucket: _Bucket, task: ReadyTask) -> None:
        seq = next(self._seq)
        heapq.heappush(bucket.small_first, (task.cost, task.position, seq, task))
        heapq.heappush(bucket.big_first, (-task.cost, task.position, seq, task))

    # Choices

    def pick(self, worker: WorkerView, slots: int, accept: Accept = accept_all) -> list[TaskKey]:
        self._note_worker(worker)
        fast = worker.performance >= self._speeds()[1]
        chosen: list[TaskKey] = []
        # Heads set aside during this request (wrong platform, or refused): put back after.
        skipped: list[tuple[list[_Item], _Item]] = []
        refused: set[TaskKey] = set()
        try:
            while len(chosen) < slots:
                task = self._choose(worker, fast, skipped, refused)
                if task is None:
                    break
                if not accept(task.key):
                    refused.add(task.key)
                    continue
                self._take(task)
                chosen.append(task.key)
        finally:
            for heap, item in skipped:
                heapq.heappush(heap, item)
        return chosen

    def _take(self, task: ReadyTask) -> None:
        """A picked task counts as running at once, for the fair share of the next slot."""
        self._forget(task.key)
        self._jobs[task.job_id].running += 1
        self._owner_running[task.owner] = self._owner_running.get(task.owner, 0) + 1

    def _choose(
        self,
        worker: WorkerView,
        fast: bool,
        skipped: list[tuple[list[_Item], _Item]],
        refused: set[TaskKey],
    ) -> ReadyTask | None:
        for job in self._fair_order():
            task = self._best_in(job, worker, fast, skipped, refused)
            if task is not None:
                return task
        return None

    def _fair_order(self) -> list[_Job]:
        waiting = [j for j in self._jobs.values() if j.ready > 0]
        waiting.sort(
            key=lambda j: (self._owner_running.get(j.owner, 0), -j.priority, j.running, j.order)
        )
        return waiting

    def _best_in(
        self,
        job: _Job,
        worker: WorkerView,
        fast: bool,
        skipped: list[tuple[list[_Item], _Item]],
        refused: set[TaskKey],
    ) -> ReadyTask | None:
        near = [job.workers.get(worker.id), job.sites.get(worker.site), job.sites.get(ANYWHERE)]
        best = self._least_regret(job, near, worker, fast, skipped, refused)
        if best is not None:
            return best
        # Nothing here for this worker: work homed elsewhere, if it should move at all.
        far = [b for site, b in job.sites.items() if site not in (worker.site, ANYWHERE)]
        return self._least_regret(job, far, worker, fast, skipped, refused)

    def _least_regret(
        self,
        job: _Job,
        buckets: Iterable[_Bucket | None],
        worker: WorkerView,
        fast: bool,
        skipped: list[tuple[list[_Item], _Item]],
        refused: set[TaskKey],
    ) -> ReadyTask | None:
        best: ReadyTask | None = None
        best_regret = float("inf")
        for bucket in buckets:
            if bucket is None:
                continue
            task = self._head(bucket, fast, worker, skipped, refused)
            if task is None:
                continue
            regret = self._regret(job, task, worker)
            if regret is not None and regret < best_regret:
                best, best_regret = task, regret
                if regret <= 0.0:
                    break  # nothing can do better
        return best

    def _head(
        self,
        bucket: _Bucket,
        fast: bool,
        worker: WorkerView,
        skipped: list[tuple[list[_Item], _Item]],
        refused: set[TaskKey],
    ) -> ReadyTask | None:
        heap = bucket.big_first if fast else bucket.small_first
        while heap:
            task = heap[0][3]
            placed = self._placed.get(task.key)
            if placed is None or placed.task is not task:
                heapq.heappop(heap)  # picked through another bucket, or no longer ready
                continue
            if task.key in refused or not task.runs_on(worker.platform):
                skipped.append((heap, heapq.heappop(heap)))
                continue
            return task
        return None

    def _regret(self, job: _Job, task: ReadyTask, worker: WorkerView) -> float | None:
        """Seconds lost by running ``task`` on ``worker`` rather than at its best place; None
        when it should rather wait for a worker at home."""
        placed = self._placed[task.key]
        transfer = self.estimates.seconds(
            task.inputs, worker, lambda digest: self.caches.has(worker.id, digest)
        )
        extra_transfer = max(transfer - placed.home_seconds, 0.0)
        duration = task.cost * job.seconds_per_cost
        fastest, _ = self._speeds()
        performance = max(worker.performance, self.MIN_PERFORMANCE)
        extra_compute = duration * max(1.0 / performance - 1.0 / fastest, 0.0)
        if extra_transfer > 0.0 and worker.site not in placed.homes:
            if extra_transfer > self._wait_at_home(job, placed, duration):
                return None
        return extra_transfer + extra_compute

    def _wait_at_home(self, job: _Job, placed: _Placed, duration: float) -> float:
        """How long the task would likely wait for a slot at its home sites."""
        slots = sum(self._site_slots.get(site, 0) for site in placed.homes)
        if slots == 0:
            return float("inf")  # nobody at home: it must move
        backlog = sum(job.sites[site].count for site in placed.homes if site in job.sites)
        return backlog / slots * duration

    # Workers

    def worker_seen(self, worker: WorkerView) -> None:
        self._note_worker(worker)

    def _note_worker(self, worker: WorkerView) -> None:
        known = self._workers.get(worker.id)
        if known == worker:
            return
        if known is not None:
            self._site_slots[known.site] -= known.slots
        self._workers[worker.id] = worker
        self._site_slots[worker.site] = self._site_slots.get(worker.site, 0) + worker.slots
        self._speeds_stale = True

    def site_slots(self) -> dict[str, int]:
        """Slots of the workers seen, by site (those declared lost excluded)."""
        return {site: n for site, n in self._site_slots.items() if n > 0}

    def _speeds(self) -> tuple[float, float]:
        """The fastest and the median performance of the workers seen."""
        if self._speeds_stale:
            speeds = [max(w.performance, self.MIN_PERFORMANCE) for w in self._workers.values()]
            self._fastest = max(speeds, default=1.0)
            self._median = statistics.median(speeds) if speeds else 1.0
            self._speeds_stale = False
        return self._fastest, self._median

    def worker_gone(self, worker_id: str) -> None:
        self.caches.forget(worker_id)
        known = self._workers.pop(worker_id, None)
        if known is not None:
            self._site_slots[known.site] -= known.slots
            self._speeds_stale = True
        for job in self._jobs.values():
            job.workers.pop(worker_id, None)

    # What the tasks' manager tells

    def attempt_started(self, key: TaskKey, owner: int, worker_id: str) -> None:
        job = self._jobs.get(key[0])
        if job is not None:
            job.running += 1
        self._owner_running[owner] = self._owner_running.get(owner, 0) + 1

    def attempt_ended(
        self,
        key: TaskKey,
        owner: int,
        worker_id: str,
        seconds: float | None = None,
        cost: float = 1.0,
    ) -> None:
        running = self._owner_running.get(owner, 0) - 1
        if running > 0:
            self._owner_running[owner] = running
        else:
            self._owner_running.pop(owner, None)
        job = self._jobs.get(key[0])
        if job is None:
            return
        job.running = max(job.running - 1, 0)
        worker = self._workers.get(worker_id)
        if seconds is not None and worker is not None and cost > 0:
            sample = seconds * max(worker.performance, self.MIN_PERFORMANCE) / cost
            job.seconds_per_cost += self.LEARNING_RATE * (sample - job.seconds_per_cost)

    def job_ended(self, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is None:
            return
        if job.ready:  # the tasks' manager removes them first; this is only a safety net
            for key in [k for k in self._placed if k[0] == job_id]:
                self._forget(key)
        del self._jobs[job_id]

    def worker_cache(self, worker_id: str, prefixes: Iterable[str]) -> None:
        self.caches.replace(worker_id, prefixes)

    def objects_cached(self, worker_id: str, digests: Iterable[str]) -> None:
        digests = list(digests)
        new = set(self.caches.add(worker_id, digests))
        if worker_id not in self._workers:
            return
        for digest in digests:
            if prefix(digest) not in new:
                continue
            for key in self._readers.get(digest, ()):
                job = self._jobs[key[0]]
                placed = self._placed[key]
                self._push(job.workers.setdefault(worker_id, _Bucket()), placed.task)
                placed.home_seconds = self._best_seconds(placed.task, placed.homes, placed.big)

    def objects_evicted(self, worker_id: str, digests: Iterable[str]) -> None:
        self.caches.remove(worker_id, digests)

    def object_stored(self, digest: str) -> None:
        for key in list(self._readers.get(digest, ())):
            placed = self._placed[key]
            homes = self._homes(placed.task)
            job = self._jobs[key[0]]
            for site in homes - placed.homes:
                bucket = job.sites.setdefault(site, _Bucket())
                bucket.count += 1
                self._push(bucket, placed.task)
            placed.homes |= homes
            placed.home_seconds = self._best_seconds(placed.task, placed.homes, placed.big)
