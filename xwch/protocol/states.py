"""The states of a task and of an attempt, one enum each, shared by the coordinator, the store
and the wire.

Each is a ``StrEnum``: a member is the very string the store keeps and the wire carries
(``TaskStatus.RUNNING == "running"``), so stores written before these enums, and parties that
compare plain strings, read them unchanged. A row read back from the store is a plain string;
``TaskStatus(row.state)`` makes it a member again.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """A task's state, as in docs/cli.md; the members' order is the order a task lives them."""

    BLOCKED = "blocked"
    READY = "ready"
    # Handed to a worker that holds it ahead, not started yet: the store's and users' word
    # only, the tasks' manager counts it with the running ones.
    ASSIGNED = "assigned"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


# The states from which a task does not move on its own.
ENDED_TASK_STATES = frozenset({TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED})


class AttemptStatus(StrEnum):
    """An attempt's state: running until its worker reports, or is lost, or it is stopped."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"
    CANCELLED = "cancelled"
    GIVEN_BACK = "given-back"
