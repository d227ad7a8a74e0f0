"""Prefetch: while a task waits, its inputs travel to the warehouse nearest where it will run.

A task waits for the tasks it depends on (blocked) or for a free worker (ready). Meanwhile the
inputs it already has may sit at several sites: a reduce reads the outputs of maps that ran all
over. The prefetcher picks the site where the task will likely run, the site holding most of its
input bytes among the sites that have workers (or the site with the most worker slots, when no
site holding its data has any), and asks that site's warehouse to copy the inputs it lacks from
their holders. The copy is paced like all XWCH traffic (the warehouse's ``fetch`` route); once
it is stored the catalog knows it, and the scheduler sees the task's data at one site.

A task keeps the site first chosen for it, so inputs do not chase a moving target as the
balance of its bytes shifts; each object is asked of each warehouse once at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xwch.coordinator.catalog import Catalog
from xwch.coordinator.copies import CopyRequest
from xwch.coordinator.scheduler import TaskKey
from xwch.protocol.objects import Source
from xwch.store.records import WarehouseRecord


class Prefetcher:
    """Copies waiting tasks' inputs to the warehouse of the site where they will likely run."""

    log = Logger()

    # Inputs under 64 KiB in all are not worth a copy ahead of time.
    MIN_BYTES = 64 * 1024
    # A copy asked for and not yet reported is asked again after this long.
    RETRY_AFTER = 600.0

    def __init__(
        self,
        reactor: IReactorTime,
        catalog: Catalog,
        request_copy: CopyRequest,
        site_slots: Callable[[], Mapping[str, int]],
    ) -> None:
        self._reactor = reactor
        self._catalog = catalog
        self._request_copy = request_copy
        self._site_slots = site_slots
        self._targets: dict[TaskKey, str] = {}
        # digest -> warehouse id -> when its copy there was asked for.
        self._asked: dict[str, dict[str, float]] = {}
        self.copies_asked = 0
        catalog.on_stored.append(self._stored)

    def waiting(self, key: TaskKey, inputs: Sequence[tuple[str, int]]) -> None:
        """``key`` waits with these inputs known (all of them once it is ready)."""
        if sum(size for _, size in inputs) < self.MIN_BYTES:
            return
        site = self._targets.get(key) or self._likely_site(inputs)
        if site is None:
            return
        self._targets[key] = site
        target = self._catalog.warehouse_at(site)
        if target is None:
            return
        now = self._reactor.seconds()
        for digest, size in inputs:
            if site in self._catalog.holder_sites(digest):
                continue
            asked = self._asked.setdefault(digest, {})
            if now - asked.get(target.id, -self.RETRY_AFTER) < self.RETRY_AFTER:
                continue
            sources = self._catalog.sources(digest, site)
            if not sources:
                continue  # lost: lineage will make it again
            asked[target.id] = now
            self.copies_asked += 1
            d = ensureDeferred(self._copy(target, digest, size, sources))
            d.addErrback(self._failed, digest, target.id)

    async def _copy(
        self, target: WarehouseRecord, digest: str, size: int, sources: Sequence[Source]
    ) -> None:
        capability = self._catalog.put_capability(target, digest)
        await self._request_copy(target.url, digest, size, sources, capability)

    def started(self, key: TaskKey) -> None:
        """The task runs: where its inputs should go is decided."""
        self._targets.pop(key, None)

    def forget_job(self, job_id: str) -> None:
        for key in [k for k in self._targets if k[0] == job_id]:
            del self._targets[key]

    def _likely_site(self, inputs: Sequence[tuple[str, int]]) -> str | None:
        slots = self._site_slots()
        staffed = {site for site, n in slots.items() if n > 0}
        if not staffed:
            return None
        by_site: dict[str, int] = {}
        for digest, size in inputs:
            for site in self._catalog.holder_sites(digest):
                if site in staffed:
                    by_site[site] = by_site.get(site, 0) + size
        if by_site:
            return max(by_site, key=lambda s: (by_site[s], slots[s], s))
        return max(staffed, key=lambda s: (slots[s], s))

    def _stored(self, digest: str) -> None:
        asked = self._asked.get(digest)
        if asked is None:
            return
        for w in self._catalog.holders(digest):
            asked.pop(w.id, None)
        if not asked:
            del self._asked[digest]

    def _failed(self, failure: object, digest: str, warehouse_id: str) -> None:
        self._asked.get(digest, {}).pop(warehouse_id, None)
        self.log.warn(
            "prefetching {digest} to warehouse {warehouse} failed: {failure}",
            digest=digest,
            warehouse=warehouse_id,
            failure=failure,
        )
