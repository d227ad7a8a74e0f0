"""What the tasks' manager holds of a job and of each of its tasks while the job runs.

A task's ``state`` changes only through :mod:`xwch.coordinator.transitions`, which records the
change in the store with it; its running attempts are in the attempt ledger
(:mod:`xwch.coordinator.attempts`), not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.interfaces import IDelayedCall

from xwch import dag
from xwch.coordinator.speculation import Stragglers
from xwch.protocol.states import TaskStatus
from xwch.protocol.wire import JOB_RUNNING


@dataclass
class TaskState:
    spec: dag.Task
    position: int
    state: TaskStatus
    failures: int = 0
    attempts: int = 0
    # How many of the tasks it depends on are not done yet.
    waiting: int = 0
    dependents: list[str] = field(default_factory=list)
    outputs: dict[str, tuple[str, int]] = field(default_factory=dict)
    # Workers on which an attempt of this task failed (not merely lost).
    failed_on: set[str] = field(default_factory=set)
    # A relaunch waits until then (back-off); None: no wait.
    relaunch: IDelayedCall | None = None

    def stop_relaunch(self) -> None:
        """No relaunch after a back-off: the task ran, or runs, or will not run again."""
        if self.relaunch is not None and self.relaunch.active():
            self.relaunch.cancel()


@dataclass
class JobState:
    id: str
    name: str
    owner: int
    priority: int
    order: int
    spec: dag.Job
    tasks: dict[str, TaskState]
    remaining: int
    # binary name -> the platforms it exists for (None: any platform).
    platforms: dict[str, frozenset[str] | None]
    state: str = JOB_RUNNING
    stragglers: Stragglers = field(default_factory=Stragglers)
    # What the job was told while it ran (a result found wrong after others had read it):
    # its message in ``status``, kept when it ends done.
    note: str | None = None

    def input_digest(self, ref: dag.InputRef) -> tuple[str, int] | None:
        """(digest, size) of one input of a task: a file of the job, or an output of another
        task (None while that task has not made it)."""
        if ref.file is not None:
            entry = self.spec.files[ref.file]
            assert entry.digest is not None and entry.size is not None
            return entry.digest, entry.size
        assert ref.task is not None and ref.output is not None
        return self.tasks[ref.task].outputs.get(ref.output)

    def known_inputs(self, task: TaskState) -> list[tuple[str, int]]:
        """(digest, size) of the task's inputs that exist: all of them once it is ready."""
        inputs = []
        for ref in task.spec.inputs:
            found = self.input_digest(ref)
            if found is not None:
                inputs.append(found)
        return inputs


def platforms_of(binary: dag.Binary) -> frozenset[str] | None:
    if dag.PLATFORM_ANY in binary.variants:
        return None
    return frozenset(binary.variants)
