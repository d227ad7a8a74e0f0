"""Storing an attempt's outputs at a warehouse, before its result is reported.

Small outputs (with their ``content``) travel in the result itself and are stored nowhere. The
others go straight to the assignment's upload target when they are small enough, else (or once
that failed) to the warehouse of an uploads plan, which skips those some warehouse already holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xwch.errors import XwchError
from xwch.protocol.codec import ProtocolError
from xwch.protocol.objects import ObjectRef, Source
from xwch.protocol.wire import OUTCOME_FAILED, OUTCOME_SUCCEEDED
from xwch.protocol.worker import AttemptResult
from xwch.retry import RetryPolicy, retrying

from .executor import CompletedAttempt
from .link import UploadPlan

# Stores one output at a warehouse: (warehouse URL, digest, size, local file, put capability).
StoreObject = Callable[[str, str, int, Path, str], Awaitable[None]]


class UploadPlanner(Protocol):
    """Where outputs go when the assignment does not say (a :class:`CoordinatorLink`)."""

    async def upload_plan(self, refs: Sequence[ObjectRef]) -> UploadPlan: ...


class OutputUploader:
    """Stores outputs with ``store_object``, where the assignment or ``planner``'s plan says;
    each new try (a new plan) after a delay of ``retry_policy``."""

    log = Logger()

    # Tries at storing an attempt's outputs (each a new upload plan, so maybe another
    # warehouse) before the attempt is reported failed.
    STORE_TRIES = 5
    # Outputs up to this size go straight to the assignment's upload target: for them a plan's
    # round trip to the coordinator costs more than sending one that a warehouse already holds.
    DIRECT_UPLOAD_MOST = 1024 * 1024

    def __init__(
        self,
        reactor: IReactorTime,
        planner: UploadPlanner,
        store_object: StoreObject,
        retry_policy: RetryPolicy,
    ) -> None:
        self._reactor = reactor
        self._planner = planner
        self._store_object = store_object
        self._retry_policy = retry_policy

    async def store(
        self, completed: CompletedAttempt, direct: Source | None = None
    ) -> AttemptResult:
        """Store a successful attempt's outputs at a warehouse; the result to report.

        Outputs with their ``content`` (small ones) are not stored: the result carries them.
        ``direct``: the assignment's upload target. Small outputs go straight there; bigger
        ones, or all of them once that failed, go by an uploads plan, which skips those some
        warehouse already holds. Outputs that cannot be stored make the result a failure.
        """
        result = completed.result
        if result.outcome != OUTCOME_SUCCEEDED or not result.outputs:
            return result
        # Small outputs travel in the result itself (the coordinator keeps them).
        refs = {o.digest: ObjectRef(o.digest, o.size) for o in result.outputs if o.content is None}
        if not refs:
            return result
        tries = 0
        if direct is not None and all(r.size <= self.DIRECT_UPLOAD_MOST for r in refs.values()):
            try:
                for digest, ref in refs.items():
                    await self._store_object(
                        direct.url, digest, ref.size, completed.files[digest], direct.capability
                    )
                return result
            except (XwchError, OSError) as e:
                tries += 1
                self.log.warn(
                    "storing the outputs of attempt {attempt} at {url} failed: {error}; "
                    "asking the coordinator where to store them",
                    attempt=result.attempt,
                    url=direct.url,
                    error=e,
                )

        async def store_by_plan() -> None:
            plan = await self._planner.upload_plan(list(refs.values()))
            for digest, capability in plan.missing:
                if digest not in refs:
                    raise ProtocolError(f"uploads: {digest} was not asked for")
                ref = refs[digest]
                await self._store_object(
                    plan.url, digest, ref.size, completed.files[digest], capability
                )

        def log_retry(e: Exception, delay: float) -> None:
            self.log.warn(
                "storing the outputs of attempt {attempt} failed: {error}; "
                "trying again in {delay:.1f} s",
                attempt=result.attempt,
                error=e,
                delay=delay,
            )

        try:
            await retrying(
                self._reactor,
                store_by_plan,
                self._retry_policy,
                lambda e: isinstance(e, (XwchError, OSError)),
                log_retry,
                tries=self.STORE_TRIES - tries,
            )
        except (XwchError, OSError) as e:
            self.log.error(
                "cannot store the outputs of attempt {attempt}: {error}",
                attempt=result.attempt,
                error=e,
            )
            return AttemptResult(
                attempt=result.attempt,
                outcome=OUTCOME_FAILED,
                exit_code=result.exit_code,
                error=f"cannot store the outputs: {e}",
                stdout=result.stdout,
                stderr=result.stderr,
                duration=result.duration,
            )
        return result
