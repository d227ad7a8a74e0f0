"""Why a ready task does not run: no live worker can take it.

A task waits in ``ready`` while no worker is free, which needs no explanation; but one that no
live worker could ever run waits forever, and the user must be told why (HTCondor's
``condor_q -better-analyze`` does this). Today the only such reasons are that no worker is
connected at all, that the task's program exists only for platforms no live worker runs, and
that every live worker that could run it trusts only programs signed by other keys.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping

from xwch import dag
from xwch.coordinator.trust import refused_by_all


def unrunnable_tasks(
    ready_binaries: Mapping[str, str],
    platforms: Mapping[str, frozenset[str] | None],
    live_platforms: Collection[str],
) -> dict[str, str]:
    """Task id -> why no live worker can run it, for the ready tasks that cannot run.

    ``ready_binaries``: each ready task's program name; ``platforms``: the platforms each
    program exists for (None: any); ``live_platforms``: those of the live workers.
    """
    if not live_platforms:
        why = "no worker is connected"
        return dict.fromkeys(ready_binaries, why)
    live = set(live_platforms)
    reasons = {}
    for task_id, binary in ready_binaries.items():
        wanted = platforms.get(binary)
        if wanted is None or not wanted.isdisjoint(live):
            continue
        reasons[task_id] = (
            f"program {binary!r} exists for {', '.join(sorted(wanted))}; "
            f"no live worker runs it (live workers run {', '.join(sorted(live))})"
        )
    return reasons


def counted(reasons: Mapping[str, str]) -> dict[str, int]:
    """Each reason with the number of tasks it holds back."""
    return dict(Counter(reasons.values()))


def untrusted_tasks(
    ready_binaries: Mapping[str, str],
    binaries: Mapping[str, dag.Binary],
    live: Collection[tuple[str, frozenset[str]]],
) -> dict[str, str]:
    """Task id -> why, for the ready tasks whose program every live worker refuses to run
    (``live``: each live worker's platform and the keys it trusts, see trust.py)."""
    why_by_binary = {
        name: refused_by_all(binaries[name], live) for name in set(ready_binaries.values())
    }
    return {
        task_id: why
        for task_id, binary in ready_binaries.items()
        if (why := why_by_binary[binary]) is not None
    }
