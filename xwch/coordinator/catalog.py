"""The catalog: which warehouses exist and which objects each holds; capabilities to reach them.

Kept in memory for the scheduler's speed and written to the store before any answer relies on it.
Small objects (:data:`xwch.protocol.wire.INLINE_MOST` bytes at most) that workers send inside their
results are held here, bytes and all ("inline"): they are in the store, at no warehouse, and
travel inside the messages that need them.

Several coordinators ("members") may share one store, each with its own catalog: a warehouse
reports to one member, a worker's result may reach another. So what memory lacks is not yet
missing: a member looks in the store for the objects it cannot find (:meth:`Catalog.learn`)
and for a warehouse id it does not know (:meth:`Catalog.known`), and :class:`WarehouseRefresh`
reads every warehouse's last heartbeat from the store, whichever member heard it.
"""

from __future__ import annotations

import base64
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from xwch import capability
from xwch.protocol.objects import Source
from xwch.store import nodes
from xwch.store.database import Database
from xwch.store.records import WarehouseRecord


class NoWarehouse(Exception):
    """No warehouse is registered and alive to take an upload."""


class Catalog:
    """Warehouses, object locations, and the capabilities that open them."""

    log = Logger()

    # A warehouse silent for this long is not offered for new uploads or reads.
    WAREHOUSE_TIMEOUT = 60.0
    HEARTBEAT_INTERVAL = 10.0

    def __init__(
        self,
        reactor: IReactorTime,
        db: Database,
        capability_key: bytes,
        heartbeat_interval: float | None = None,
        warehouse_timeout: float | None = None,
    ) -> None:
        self.heartbeat_interval = heartbeat_interval or self.HEARTBEAT_INTERVAL
        self.warehouse_timeout = warehouse_timeout or self.WAREHOUSE_TIMEOUT
        self._reactor = reactor
        self._db = db
        self.capability_key = capability_key
        self.warehouses: dict[str, WarehouseRecord] = {}
        # How many times each warehouse registered: a new registration is a restarted process,
        # whose copies in progress died with the old one.
        self.registrations: dict[str, int] = {}
        self._locations: dict[str, set[str]] = defaultdict(set)
        # warehouse id -> (expiry, upload target), see upload_target.
        self._upload_targets: dict[str, tuple[float, Source]] = {}
        self._sizes: dict[str, int] = {}
        # digest -> bytes of the objects kept here rather than at a warehouse.
        self._inline: dict[str, bytes] = {}
        # Told of each new copy of an object (the scheduler: where its readers best run moves).
        self.on_stored: list[Callable[[str], None]] = []

    async def load(self) -> None:
        for w in await self._db.read(nodes.list_warehouses_thd):
            # A restarted coordinator gives every warehouse a fresh chance to heartbeat.
            self.warehouses[w.id] = _with_heard(w, self._reactor.seconds())
        for digest, warehouse_id, size in await self._db.read(nodes.all_locations_thd):
            self._locations[digest].add(warehouse_id)
            self._sizes[digest] = size
        self.hold_inline(await self._db.read(nodes.all_inline_objects_thd))

    # Warehouses

    async def register(self, url: str, site: str, capacity: int, free: int) -> WarehouseRecord:
        now = self._reactor.seconds()
        record = WarehouseRecord(
            id="w" + secrets.token_hex(6),
            url=url.rstrip("/"),
            site=site,
            capacity=capacity,
            free=free,
            registered=now,
            last_heard=now,
        )
        stored = await self._db.write(nodes.upsert_warehouse_thd, record)
        self.warehouses[stored.id] = stored
        self.registrations[stored.id] = self.registrations.get(stored.id, 0) + 1
        self.log.info(
            "warehouse {id} registered at {url} (site {site})",
            id=stored.id,
            url=stored.url,
            site=site,
        )
        return stored

    async def heartbeat(self, warehouse_id: str, capacity: int, free: int) -> None:
        now = self._reactor.seconds()
        w = self.warehouses[warehouse_id]
        self.warehouses[warehouse_id] = WarehouseRecord(
            id=w.id,
            url=w.url,
            site=w.site,
            capacity=capacity,
            free=free,
            registered=w.registered,
            last_heard=now,
        )
        await self._db.write(nodes.heartbeat_warehouse_thd, warehouse_id, capacity, free, now)

    async def known(self, warehouse_id: str) -> bool:
        """Whether ``warehouse_id`` is registered: known here, or registered at another member
        (then learned from the store)."""
        if warehouse_id in self.warehouses:
            return True
        stored = await self._db.read(nodes.warehouse_thd, warehouse_id)
        if stored is None:
            return False
        self._hear_of(stored)
        return True

    async def refresh(self) -> None:
        """Learn from the store the warehouses registered at other members, and when each was
        last heard by any member."""
        for stored in await self._db.read(nodes.list_warehouses_thd):
            self._hear_of(stored)

    def _hear_of(self, stored: WarehouseRecord) -> None:
        """Take what the store says of a warehouse if it was heard there no earlier than here.

        ``last_heard`` only moves forward: a heartbeat this member took but has not yet written
        must not be undone by the older row. The store's times are the writing member's reactor
        seconds (wall clock); members' clocks may differ by a few seconds, which is accepted:
        it moves a warehouse's death by that much against a timeout of a minute."""
        known = self.warehouses.get(stored.id)
        if known is None or stored.last_heard >= known.last_heard:
            self.warehouses[stored.id] = stored

    def encoded_key(self) -> str:
        return base64.b64encode(self.capability_key).decode("ascii")

    def is_alive(self, warehouse_id: str) -> bool:
        w = self.warehouses.get(warehouse_id)
        return w is not None and self._reactor.seconds() - w.last_heard <= self.warehouse_timeout

    def alive_count(self) -> int:
        return sum(1 for w in self.warehouses if self.is_alive(w))

    def choose_for_upload(self, site: str | None = None) -> WarehouseRecord:
        """The warehouse new data should go to: the caller's site first, then the most free space."""
        alive = [w for w in self.warehouses.values() if self.is_alive(w.id)]
        if not alive:
            raise NoWarehouse("no warehouse is available: start one (xwch-warehouse) and retry")
        return max(alive, key=lambda w: (w.site == site, w.free))

    # Objects

    async def add_objects(self, warehouse_id: str, objects: Sequence[tuple[str, int]]) -> None:
        new = [(d, s) for d, s in objects if warehouse_id not in self._locations.get(d, ())]
        if new:
            await self._db.write(nodes.add_locations_thd, warehouse_id, new)
        self._locate(warehouse_id, objects)

    async def learn(self, digests: Iterable[str], even_known: bool = False) -> None:
        """Look in the store for those of ``digests`` this member cannot read now (all of them
        with ``even_known``: new copies of known objects), and remember what it finds: another
        member may have recorded them (a warehouse reporting to it, a worker's result kept
        inline there). When all are known, as is usual, nothing is read."""
        unknown = sorted({d for d in digests if even_known or not self.has(d)})
        if not unknown:
            return
        found = await self._db.read(nodes.objects_of_thd, unknown)
        for stored in found.warehouses:
            self._hear_of(stored)
        self.hold_inline(dict(found.inline))
        by_warehouse: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for digest, warehouse_id, size in found.locations:
            by_warehouse[warehouse_id].append((digest, size))
        for warehouse_id, objects in sorted(by_warehouse.items()):
            self._locate(warehouse_id, objects)

    def _locate(self, warehouse_id: str, objects: Sequence[tuple[str, int]]) -> None:
        new = []
        for digest, size in objects:
            holders = self._locations[digest]
            if warehouse_id not in holders:
                holders.add(warehouse_id)
                new.append(digest)
            self._sizes[digest] = size
        for digest in new:
            for listener in self.on_stored:
                listener(digest)

    async def replace_objects(self, warehouse_id: str, objects: Sequence[tuple[str, int]]) -> None:
        """A warehouse's complete inventory: it holds these objects and no others."""
        await self._db.write(nodes.replace_locations_thd, warehouse_id, list(objects))
        held = {digest for digest, _ in objects}
        for digest, holders in self._locations.items():
            if warehouse_id in holders and digest not in held:
                holders.discard(warehouse_id)
        self._locate(warehouse_id, objects)

    async def forget_objects(self, warehouse_id: str, digests: Sequence[str]) -> None:
        """A warehouse deleted these objects (at the coordinator's request)."""
        await self._db.write(nodes.remove_locations_thd, warehouse_id, list(digests))
        for digest in digests:
            holders = self._locations.get(digest)
            if holders is not None:
                holders.discard(warehouse_id)
                if not holders:
                    del self._locations[digest]

    def hold_inline(self, objects: dict[str, bytes]) -> None:
        """Keep these small objects (their bytes checked, and written to the store by the
        caller in the same transaction as what refers to them)."""
        for digest, content in objects.items():
            self._inline[digest] = content
            self._sizes[digest] = len(content)

    def inline(self, digest: str) -> bytes | None:
        """The bytes of ``digest`` when it is kept here, else None."""
        return self._inline.get(digest)

    def holders(self, digest: str) -> list[WarehouseRecord]:
        """The live warehouses holding ``digest``."""
        return [self.warehouses[w] for w in sorted(self._alive_holders(digest))]

    def holder_sites(self, digest: str) -> set[str]:
        """The sites of the live warehouses holding ``digest``."""
        return {self.warehouses[w].site for w in self._alive_holders(digest)}

    def warehouse_at(self, site: str) -> WarehouseRecord | None:
        """The live warehouse of ``site`` with the most free space, if it has one."""
        here = [w for w in self.warehouses.values() if w.site == site and self.is_alive(w.id)]
        return max(here, key=lambda w: (w.free, w.id), default=None)

    def _alive_holders(self, digest: str) -> list[str]:
        return [w for w in self._locations.get(digest, ()) if self.is_alive(w)]

    def is_under_replicated(self, digest: str, wanted: int) -> bool:
        return 0 < len(self._alive_holders(digest)) < wanted

    def under_replicated(self, wanted: int) -> list[tuple[str, int, list[str]]]:
        """Objects with at least one but fewer than ``wanted`` live copies: (digest, size, holders)."""
        found = []
        for digest in self._locations:
            holders = self._alive_holders(digest)
            if 0 < len(holders) < wanted:
                found.append((digest, self._sizes[digest], holders))
        return found

    def choose_copy_target(self, holders: Sequence[str]) -> WarehouseRecord | None:
        """A live warehouse without the object: another site first, then the most free space."""
        sites = {self.warehouses[h].site for h in holders}
        candidates = [
            w for w in self.warehouses.values() if w.id not in holders and self.is_alive(w.id)
        ]
        if not candidates:
            return None
        return max(candidates, key=lambda w: (w.site not in sites, w.free))

    def has(self, digest: str) -> bool:
        """Whether ``digest`` can be read now: kept here, or at a live warehouse."""
        return digest in self._inline or self.at_warehouse(digest)

    def at_warehouse(self, digest: str) -> bool:
        """Whether a live warehouse holds ``digest`` (a copy kept inline does not count)."""
        return any(self.is_alive(w) for w in self._locations.get(digest, ()))

    def missing(self, digests: Iterable[str]) -> list[str]:
        return sorted({d for d in digests if not self.has(d)})

    def size(self, digest: str) -> int | None:
        return self._sizes.get(digest)

    def sources(self, digest: str, site: str | None = None) -> tuple[Source, ...]:
        """Where to read ``digest``, each with a read capability; the reader's site first."""
        holders = [self.warehouses[w] for w in self._locations.get(digest, ()) if self.is_alive(w)]
        holders.sort(key=lambda w: (w.site != site, -w.free))
        expires = self._reactor.seconds() + capability.DEFAULT_LIFETIME
        return tuple(
            Source(
                url=w.url,
                capability=capability.issue(
                    self.capability_key, capability.OP_GET, digest, w.id, expires
                ),
            )
            for w in holders
        )

    def upload_target(self, site: str | None) -> Source | None:
        """Where a worker of ``site`` stores small outputs, with a capability to store any object
        there (None: no warehouse is alive). The capability is reused while it has more than half
        its life left: signing one for every assignment would cost as much as the rest of it."""
        try:
            warehouse = self.choose_for_upload(site)
        except NoWarehouse:
            return None
        now = self._reactor.seconds()
        cached = self._upload_targets.get(warehouse.id)
        if cached is not None and cached[0] - now > capability.DEFAULT_LIFETIME / 2:
            return cached[1]
        expires = now + capability.DEFAULT_LIFETIME
        target = Source(
            url=warehouse.url,
            capability=capability.issue(
                self.capability_key, capability.OP_PUT, capability.ANY_OBJECT, warehouse.id, expires
            ),
        )
        self._upload_targets[warehouse.id] = (expires, target)
        return target

    def delete_capability(self, warehouse: WarehouseRecord, digest: str) -> str:
        expires = self._reactor.seconds() + capability.DEFAULT_LIFETIME
        return capability.issue(
            self.capability_key, capability.OP_DELETE, digest, warehouse.id, expires
        )

    def put_capability(self, warehouse: WarehouseRecord, digest: str) -> str:
        expires = self._reactor.seconds() + capability.DEFAULT_LIFETIME
        return capability.issue(
            self.capability_key, capability.OP_PUT, digest, warehouse.id, expires
        )


class WarehouseRefresh(Service):
    """Reads the warehouses from the store every ``interval`` (the warehouses' heartbeat
    interval), so that a warehouse heartbeating to another member is not taken for dead here."""

    log = Logger()

    def __init__(
        self, catalog: Catalog, reactor: IReactorTime, interval: float | None = None
    ) -> None:
        self._catalog = catalog
        self.interval = interval or catalog.heartbeat_interval
        self._loop = LoopingCall(self._refresh)
        self._loop.clock = reactor
        self._loop_ended: Deferred[LoopingCall] | None = None

    def _refresh(self) -> Deferred[None]:
        # A failed read is logged and the next one tried on time: the loop must not stop.
        refreshed = ensureDeferred(self._catalog.refresh())
        refreshed.addErrback(
            lambda f: self.log.failure("reading the warehouses from the store failed", f)
        )
        return refreshed

    def startService(self) -> None:
        super().startService()
        # Not at once: the catalog was just loaded from the store.
        self._loop_ended = self._loop.start(self.interval, now=False)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        ended, self._loop_ended = self._loop_ended, None
        if ended is None:
            return None
        # Fires once a read in progress has ended.
        return ended.addCallback(lambda _: None)


def _with_heard(w: WarehouseRecord, now: float) -> WarehouseRecord:
    return WarehouseRecord(
        id=w.id,
        url=w.url,
        site=w.site,
        capacity=w.capacity,
        free=w.free,
        registered=w.registered,
        last_heard=now,
    )
