"""Checkpoint lineages of replicated tasks: which replica's checkpoints an attempt continues.

A task checked by replication (``quorum``) that keeps checkpoints gives each replica a lineage
of its own, named by the number of the attempt that opened it (0 is the one lineage of a task
not replicated; attempt numbers never repeat within a task, through restarts and retries
alike): the attempt running the replica saves its checkpoints under that number, and only an
attempt continuing that number restores them. Replicas must reach their results apart: one
resumed from another's checkpoint would carry that one's mistakes, or lies, into its own
ballot.

A lineage is *free* when no attempt runs it and its replica has not returned a result: its
worker was lost, gave the attempt back, or the attempt failed. The next replica started takes
a free lineage before it opens a new one, so a lost replica's progress is continued rather
than thrown away; a replica started once none is free (after a disagreement, say) begins a new
lineage from scratch.

Every worker that ran an attempt of a lineage is one of its *contributors*: the lineage's
result depends on each of them. A contributor of one lineage may continue only that one: it
never takes another replica of the task, and the other replicas keep to hosts other than the
contributors' (the same rule as between replicas, :meth:`Replicas.accepts`). An attempt
presumed lost whose lineage was handed on is not taken back when heard of again: its result
would be a second ballot of one replica. So each worker bears on at most one ballot of a task,
even when a lineage crossed several workers.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

TaskKey = tuple[str, str]

# The lineage of every task that is not replicated (and of every attempt of one).
ONLY_LINEAGE = 0
# A lineage to open: it takes the number of the attempt that opens it.
NEW_LINEAGE = -1


@dataclass
class Lineage:
    # Every worker that ran an attempt of it, in whatever way the attempt ended.
    contributors: set[str] = field(default_factory=set)
    # Its replica returned a result: nothing continues it any more.
    over: bool = False
    # The attempt that continued it last (None: not known since a restart).
    last_attempt: str | None = None


class Lineages:
    """The lineages of the replicated tasks under way, and who contributed to each."""

    def __init__(self) -> None:
        self._tasks: dict[TaskKey, dict[int, Lineage]] = {}

    def candidates(self, key: TaskKey, worker_id: str, running: Collection[int]) -> list[int]:
        """The lineages a replica on ``worker_id`` could continue, in the order to try them:
        a free one it contributed to, the other free ones, then a new one."""
        lineages = self._tasks.get(key, {})
        free = [n for n, ln in sorted(lineages.items()) if not ln.over and n not in running]
        own = [n for n in free if worker_id in lineages[n].contributors]
        others = [n for n in free if n not in own]
        return [*own, *others, NEW_LINEAGE]

    def others(self, key: TaskKey, lineage: int) -> set[str]:
        """The workers that contributed to the task's lineages other than ``lineage``."""
        found: set[str] = set()
        for n, ln in self._tasks.get(key, {}).items():
            if n != lineage:
                found |= ln.contributors
        return found

    def crossed(self, key: TaskKey, lineage: int) -> bool:
        """Whether more than one worker ran ``lineage``."""
        found = self._tasks.get(key, {}).get(lineage)
        return found is not None and len(found.contributors) > 1

    def join(
        self, key: TaskKey, lineage: int, worker_id: str, attempt_id: str | None = None
    ) -> None:
        """An attempt continuing ``lineage`` (``attempt_id``, if known) runs on ``worker_id``."""
        found = self._tasks.setdefault(key, {}).setdefault(lineage, Lineage())
        found.contributors.add(worker_id)
        if attempt_id is not None:
            found.last_attempt = attempt_id

    def continued_since(self, key: TaskKey, lineage: int, attempt_id: str) -> bool:
        """Whether another attempt took ``lineage`` over from ``attempt_id`` (presumed lost),
        or its replica's result is in: that attempt, heard of again, would run a second copy
        of one replica, or cast a second ballot for it."""
        found = self._tasks.get(key, {}).get(lineage)
        return found is not None and (found.over or found.last_attempt != attempt_id)

    def finish(self, key: TaskKey, lineage: int) -> None:
        """The replica of ``lineage`` returned its result."""
        found = self._tasks.get(key, {}).get(lineage)
        if found is not None:
            found.over = True

    def forget_task(self, key: TaskKey) -> None:
        """The task is over (its vote decided): its lineages with it."""
        self._tasks.pop(key, None)

    def forget_job(self, job_id: str) -> None:
        for key in [k for k in self._tasks if k[0] == job_id]:
            del self._tasks[key]
