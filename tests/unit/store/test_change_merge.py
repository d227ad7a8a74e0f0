"""Changes of the tasks' manager queued together are written as one, when that keeps their
meaning."""

from __future__ import annotations

from xwch.store.group_locks import Fence
from xwch.store.jobs import merge_change_writes
from xwch.store.records import Change, OutputRow, TaskUpdate

FENCE = Fence("g1", "c-1", 3)


def done(task: str) -> Change:
    return Change(
        task_updates=[TaskUpdate("j1", (task,), {"state": "done"})],
        outputs=[OutputRow("j1", task, "out", "d" * 64, 1)],
        tasks_done_by_worker={"k1": 1},
    )


def test_changes_under_one_fence_merge_in_order() -> None:
    merged = merge_change_writes([(done("a"), FENCE, 10.0), (done("b"), FENCE, 11.0)])
    assert merged is not None
    change, fence, now = merged
    assert (fence, now) == (FENCE, 11.0)
    assert [u.task_ids for u in change.task_updates] == [("a",), ("b",)]
    assert [o.task_id for o in change.outputs] == ["a", "b"]
    assert change.tasks_done_by_worker == {"k1": 2}


def test_changes_under_different_fences_do_not_merge() -> None:
    other = Fence("g1", "c-1", 4)
    assert merge_change_writes([(done("a"), FENCE, 1.0), (done("b"), other, 1.0)]) is None


def test_outputs_removed_after_outputs_written_do_not_merge() -> None:
    # Written in turn, the later change removes what the earlier wrote; merged, the store
    # would remove first and write after.
    lineage = Change(removed_outputs=[("j1", "a")])
    assert merge_change_writes([(done("a"), FENCE, 1.0), (lineage, FENCE, 1.0)]) is None
    # The other way round is the order the store writes in: fine.
    assert merge_change_writes([(lineage, FENCE, 1.0), (done("a"), FENCE, 1.0)]) is not None
