"""The one way a task's or an attempt's state changes: memory and the store's change together,
or neither."""

from __future__ import annotations

import pytest

from xwch import dag
from xwch.coordinator.attempts import Attempt
from xwch.coordinator.job_state import TaskState
from xwch.coordinator.transitions import (
    ATTEMPT_TRANSITIONS,
    TASK_TRANSITIONS,
    ImpossibleTransition,
    attempt_begun,
    move_attempt,
    move_in_memory,
    move_tasks,
    move_to_assigned,
    record_task_columns,
)
from xwch.protocol.states import AttemptStatus, TaskStatus
from xwch.store.records import AttemptUpdate, Change, TaskUpdate


def task(task_id: str, state: TaskStatus) -> TaskState:
    return TaskState(spec=dag.Task(id=task_id, binary="b"), position=0, state=state)


def attempt(status: AttemptStatus) -> Attempt:
    return Attempt("a1", "j1", "t1", 1, "w1", started=0.0, status=status)


TASK_MOVES = [(old, new) for old, allowed in TASK_TRANSITIONS.items() for new in allowed]
TASK_REFUSED = [
    (old, new)
    for old in TaskStatus
    for new in TaskStatus
    if new not in TASK_TRANSITIONS[old] and new != TaskStatus.ASSIGNED
]
ATTEMPT_MOVES = [(old, new) for old, allowed in ATTEMPT_TRANSITIONS.items() for new in allowed]
ATTEMPT_REFUSED = [
    (old, new)
    for old in AttemptStatus
    for new in AttemptStatus
    if new not in ATTEMPT_TRANSITIONS[old]
]


def test_every_state_has_a_row_in_the_tables() -> None:
    assert set(TASK_TRANSITIONS) == set(TaskStatus)
    assert set(ATTEMPT_TRANSITIONS) == set(AttemptStatus)


@pytest.mark.parametrize(("old", "new"), TASK_MOVES)
def test_an_allowed_task_transition_changes_memory_and_the_store_together(
    old: TaskStatus, new: TaskStatus
) -> None:
    t = task("t1", old)
    change = Change()
    move_tasks("j1", [t], new, change, ended=5.0)
    assert t.state == new
    assert change.task_updates == [TaskUpdate("j1", ("t1",), {"state": new, "ended": 5.0})]


@pytest.mark.parametrize(("old", "new"), TASK_REFUSED)
def test_an_impossible_task_transition_changes_nothing(old: TaskStatus, new: TaskStatus) -> None:
    # The first task could move: the whole call is refused before anything changes.
    movable = task("t0", TaskStatus.READY)
    stuck = task("t1", old)
    change = Change()
    with pytest.raises(ImpossibleTransition, match=f"task t1 of job j1 cannot go from {old}"):
        move_tasks("j1", [movable, stuck], new, change)
    assert (movable.state, stuck.state) == (TaskStatus.READY, old)
    assert not change


def test_memory_never_holds_assigned() -> None:
    for old in TaskStatus:
        with pytest.raises(ImpossibleTransition):
            move_in_memory("j1", [task("t1", old)], TaskStatus.ASSIGNED)


def test_tasks_moved_together_are_one_update_of_the_store() -> None:
    tasks = [task("t1", TaskStatus.BLOCKED), task("t2", TaskStatus.BLOCKED)]
    change = Change()
    move_tasks("j1", tasks, TaskStatus.READY, change)
    assert change.task_updates == [TaskUpdate("j1", ("t1", "t2"), {"state": TaskStatus.READY})]
    # No task, no update.
    move_tasks("j1", [], TaskStatus.READY, change)
    assert len(change.task_updates) == 1


def test_a_task_given_to_a_worker_is_running_in_memory_and_assigned_in_the_store() -> None:
    t = task("t1", TaskStatus.READY)
    change = Change()
    move_to_assigned("j1", t, change, attempts=1)
    assert t.state == TaskStatus.RUNNING
    assert change.task_updates == [
        TaskUpdate("j1", ("t1",), {"state": TaskStatus.ASSIGNED, "attempts": 1})
    ]


def test_an_attempt_begun_makes_its_task_running_in_the_store() -> None:
    a = attempt(AttemptStatus.RUNNING)
    change = Change()
    attempt_begun(a, change, now=7.0)
    assert a.begun
    assert change.task_updates == [
        TaskUpdate("j1", ("t1",), {"state": TaskStatus.RUNNING, "started": 7.0})
    ]


def test_other_columns_are_recorded_without_a_state() -> None:
    change = Change()
    record_task_columns("j1", task("t1", TaskStatus.RUNNING), change, failures=2)
    assert change.task_updates == [TaskUpdate("j1", ("t1",), {"failures": 2})]
    with pytest.raises(ImpossibleTransition):
        record_task_columns("j1", task("t1", TaskStatus.RUNNING), change, state="done")
    assert len(change.task_updates) == 1


@pytest.mark.parametrize(("old", "new"), ATTEMPT_MOVES)
def test_an_allowed_attempt_transition_changes_memory_and_the_store_together(
    old: AttemptStatus, new: AttemptStatus
) -> None:
    a = attempt(old)
    change = Change()
    move_attempt(a, new, change, ended=3.0, error="why", worker_id="w2")
    assert a.status == new
    assert change.attempt_updates == [AttemptUpdate("a1", new, 3.0, error="why", worker_id="w2")]


@pytest.mark.parametrize(("old", "new"), ATTEMPT_REFUSED)
def test_an_impossible_attempt_transition_changes_nothing(
    old: AttemptStatus, new: AttemptStatus
) -> None:
    a = attempt(old)
    change = Change()
    with pytest.raises(ImpossibleTransition, match=f"attempt a1 cannot go from {old} to {new}"):
        move_attempt(a, new, change, ended=3.0)
    assert a.status == old
    assert not change
