"""The job file's keys for results checked by replication: quorum, max_attempts, compare."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_dag import doc, load, project, rejected, task, wire, wire_rejected
from xwch.dag import parse_wire_job
from xwch.dagreplication import Replication

__all__ = ["project"]  # the fixture, used by name


def test_the_tasks_quorum_wins_over_the_jobs(project: Path) -> None:
    job = load(doc(task("a"), task("b", quorum=1), task("c", quorum=3), quorum=2))
    by_id = {t.id: t.replication for t in job.tasks}
    assert by_id == {
        "a": Replication(quorum=2, max_attempts=4),
        "b": None,
        "c": Replication(quorum=3, max_attempts=5),
    }


def test_adaptive_and_compare_travel_in_the_wire_form(project: Path) -> None:
    document = doc(
        task("a", max_attempts=6),
        quorum="adaptive",
        compare="near",
        binaries={"prog": "bin/prog", "near": "bin/prog"},
    )
    job = load(document)
    assert job.tasks[0].replication == Replication(2, 6, adaptive=True, compare="near")
    again = parse_wire_job(wire(job))
    assert again.tasks == job.tasks


def test_a_task_without_quorum_keeps_the_wire_form_it_had(project: Path) -> None:
    """Jobs written before replication existed read the same: the keys are left out."""
    sent = wire(load(doc(task("a"))))
    assert not {"quorum", "max_attempts", "compare"} & set(sent["tasks"][0])


@pytest.mark.parametrize(
    ("fields", "top", "path", "problem"),
    [
        ({"quorum": 0}, {}, "tasks[0].quorum", "0 is out of range (1 to 10"),
        ({"quorum": 11}, {}, "tasks[0].quorum", "11 is out of range"),
        ({"quorum": "three"}, {}, "tasks[0].quorum", 'or "adaptive", got "three"'),
        ({"quorum": True}, {}, "tasks[0].quorum", "got a boolean"),
        ({"quorum": 2.5}, {}, "tasks[0].quorum", "got a number"),
        ({"quorum": 3, "max_attempts": 2}, {}, "tasks[0].max_attempts", "less than the quorum"),
        ({"quorum": 3}, {"max_attempts": 2}, "max_attempts", "less than the quorum (3)"),
        ({"max_attempts": 4}, {}, "tasks[0].max_attempts", "needs a quorum"),
        ({"quorum": 2, "compare": "nope"}, {}, "tasks[0].compare", 'unknown binary "nope"'),
        ({"quorum": 1, "compare": "prog"}, {}, "tasks[0].compare", "needs a quorum"),
        ({}, {"compare": "prog"}, "compare", "no task of the job has one"),
        ({"quorum": 2, "max_attempts": 0}, {}, "tasks[0].max_attempts", "out of range"),
        ({}, {"quorum": -1}, "quorum", "out of range"),
    ],
)
def test_bad_replication_keys_are_named(
    project: Path, fields: dict[str, object], top: dict[str, object], path: str, problem: str
) -> None:
    rejected(doc(task("a", **fields), **top), path, problem)


def test_the_wire_form_is_checked_again(project: Path) -> None:
    sent = wire(load(doc(task("a", quorum=2))))
    sent["tasks"][0]["quorum"] = 20
    wire_rejected(sent, "tasks[0].quorum", "out of range")
    sent["tasks"][0].pop("quorum")
    wire_rejected(sent, "tasks[0]", "need a quorum")
