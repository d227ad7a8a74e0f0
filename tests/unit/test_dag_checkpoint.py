"""The job file's checkpoint keys: ``checkpoint`` and ``checkpoint_every`` (docs/job-file.md)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_dag import doc, load, project, rejected, task, wire, wire_rejected
from xwch.dag import parse_wire_job
from xwch.dagcheck import DEFAULT_CHECKPOINT_EVERY

__all__ = ["project"]  # the fixture, used by name


def test_checkpoint_keys_are_read_and_default_to_a_minute(project: Path) -> None:
    """A task names its checkpoint directory; how often it is saved defaults to 60 s."""
    job = load(doc(task("a", checkpoint="state/"), task("b", checkpoint="s/", checkpoint_every=2)))
    a, b = job.tasks
    assert (a.checkpoint, a.checkpoint_every) == ("state/", DEFAULT_CHECKPOINT_EVERY)
    assert (b.checkpoint, b.checkpoint_every) == ("s/", 2.0)
    assert load(doc(task("c"))).tasks[0].checkpoint is None


def test_checkpoint_keys_survive_the_wire_form(project: Path) -> None:
    """What the client sends, the coordinator reads back the same."""
    job = load(doc(task("a", checkpoint="state/", checkpoint_every=0.5)))
    back = parse_wire_job(wire(job))
    assert (back.tasks[0].checkpoint, back.tasks[0].checkpoint_every) == ("state/", 0.5)
    # A job without checkpoints has no such keys on the wire, as before they existed.
    assert "checkpoint" not in wire(load(doc(task("b"))))["tasks"][0]


def test_a_checkpoint_must_name_a_directory_inside_the_working_directory(project: Path) -> None:
    rejected(doc(task(checkpoint="state")), "tasks[0].checkpoint", "end it with /")
    rejected(doc(task(checkpoint="../up/")), "tasks[0].checkpoint", "has a .. component")
    rejected(doc(task(checkpoint="/abs/")), "tasks[0].checkpoint", "is absolute")
    rejected(doc(task(checkpoint=3)), "tasks[0].checkpoint", "expected a string")


def test_checkpoint_every_is_a_positive_number_and_needs_a_checkpoint(project: Path) -> None:
    rejected(doc(task(checkpoint_every=5)), "tasks[0].checkpoint_every", 'needs "checkpoint"')
    rejected(
        doc(task(checkpoint="s/", checkpoint_every=0)),
        "tasks[0].checkpoint_every",
        "expected a positive number",
    )
    rejected(
        doc(task(checkpoint="s/", checkpoint_every="1m")),
        "tasks[0].checkpoint_every",
        "expected a positive number",
    )


def test_no_input_or_output_may_live_in_the_checkpoint_directory(project: Path) -> None:
    """A restored checkpoint replaces its directory whole."""
    rejected(
        doc(task(checkpoint="s/", outputs=["s/out.txt"])),
        "tasks[0].outputs[0]",
        'inside the checkpoint directory "s/"',
    )
    rejected(
        doc(task(checkpoint="s/", inputs={"s": "palette"})),
        'tasks[0].inputs["s"]',
        'inside the checkpoint directory "s/"',
    )


def test_the_wire_form_checks_checkpoints_too(project: Path) -> None:
    document = wire(load(doc(task("a", checkpoint="state/"))))
    document["tasks"][0]["checkpoint"] = "state"
    wire_rejected(document, "tasks[0].checkpoint", "end it with /")
    document["tasks"][0]["checkpoint"] = "state/"
    document["tasks"][0]["checkpoint_every"] = -1
    wire_rejected(document, "tasks[0].checkpoint_every", "expected a positive number")
