"""What a worker is told of an attempt it takes: the Assignment of the Work Request's answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xwch.coordinator import trust
from xwch.coordinator.attempts import Attempt
from xwch.coordinator.catalog import Catalog
from xwch.coordinator.job_state import JobState
from xwch.protocol.objects import InputFile
from xwch.protocol.worker import Assignment

if TYPE_CHECKING:
    from xwch.coordinator.checkpoints import CheckpointBook


def assignment_for(
    job: JobState,
    attempt: Attempt,
    platform: str,
    site: str | None,
    catalog: Catalog,
    checkpoints: CheckpointBook | None,
) -> Assignment:
    """``attempt`` of a task of ``job``, for a worker of ``platform`` at ``site``: its program
    and inputs with where to read them (the worker's site first), where to put its outputs, and
    the checkpoints it may resume from."""
    spec = job.tasks[attempt.task_id].spec
    variant = job.spec.binaries[spec.binary].for_platform(platform)
    assert variant is not None and variant.digest is not None and variant.size is not None
    inputs = []
    for ref in spec.inputs:
        found = job.input_digest(ref)
        assert found is not None
        inputs.append(InputFile(path=ref.local, digest=found[0], size=found[1]))
    digests = {variant.digest} | {i.digest for i in inputs}
    checkpoint = None
    if checkpoints is not None:
        checkpoint, saved = checkpoints.plan(job.id, spec, attempt.lineage)
        digests |= saved
    # Small inputs kept here travel in the assignment itself; the rest is read at warehouses.
    inline = {i.digest: c for i in inputs if (c := catalog.inline(i.digest)) is not None}
    return Assignment(
        attempt=attempt.id,
        job=job.id,
        task=spec.id,
        number=attempt.number,
        binary=trust.binary_ref(variant, spec.binary, job.name),
        args=tuple(spec.args),
        env=dict(spec.env),
        inputs=tuple(inputs),
        outputs=tuple(spec.outputs),
        timeout=spec.timeout,
        sources={d: catalog.sources(d, site) for d in sorted(digests - inline.keys())},
        upload=catalog.upload_target(site),
        inline=inline,
        checkpoint=checkpoint,
    )
