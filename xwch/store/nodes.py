"""Queries about the platform's nodes: workers, warehouses and which objects each warehouse holds."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from xwch.store.driver import execute_plain
from xwch.store.placement import in_groups
from xwch.store.records import StoredObjects, WarehouseRecord, WorkerRecord
from xwch.store.schema import inline_objects, object_locations, warehouses, workers


def _worker(r: sa.Row[object]) -> WorkerRecord:
    m = r._mapping
    return WorkerRecord(
        id=m["id"],
        token_id=m["token_id"],
        name=m["name"],
        address=m["address"],
        platform=m["platform"],
        cores=m["cores"],
        memory=m["memory"],
        slots=m["slots"],
        performance=m["performance"],
        site=m["site"],
        state=m["state"],
        registered=m["registered"],
        last_heard=m["last_heard"],
        tasks_done=m["tasks_done"],
        trusted_keys=tuple((m["trusted_keys"] or "").split()),
        group=m["grp"],
    )


def add_worker_thd(conn: sa.Connection, w: WorkerRecord) -> None:
    conn.execute(
        workers.insert().values(
            id=w.id,
            token_id=w.token_id,
            name=w.name,
            address=w.address,
            platform=w.platform,
            cores=w.cores,
            memory=w.memory,
            slots=w.slots,
            performance=w.performance,
            site=w.site,
            trusted_keys=" ".join(w.trusted_keys) or None,
            state=w.state,
            registered=w.registered,
            last_heard=w.last_heard,
            tasks_done=w.tasks_done,
            grp=w.group,
        )
    )


def set_worker_state_thd(conn: sa.Connection, worker_id: str, state: str, now: float) -> None:
    conn.execute(
        workers.update().where(workers.c.id == worker_id).values(state=state, last_heard=now)
    )


def touch_workers_thd(conn: sa.Connection, heard: dict[str, float]) -> None:
    """Record when each worker was last heard (batched: heartbeats are frequent)."""
    # In the order of the ids (see apply_change_thd's tasks done): no deadlock between members.
    for worker_id, when in sorted(heard.items()):
        conn.execute(workers.update().where(workers.c.id == worker_id).values(last_heard=when))


def worker_thd(conn: sa.Connection, worker_id: str) -> WorkerRecord | None:
    row = conn.execute(sa.select(workers).where(workers.c.id == worker_id)).first()
    return None if row is None else _worker(row)


def list_workers_thd(conn: sa.Connection) -> list[WorkerRecord]:
    return [
        _worker(r) for r in conn.execute(sa.select(workers).order_by(workers.c.name, workers.c.id))
    ]


def active_workers_thd(
    conn: sa.Connection, groups: Collection[str] | None = None
) -> list[WorkerRecord]:
    """The live workers (of ``groups`` only, when given: a member of several loads those of
    the groups it holds)."""
    query = sa.select(workers).where(workers.c.state == "alive")
    if groups is not None:
        query = query.where(in_groups(workers.c.grp, groups))
    return [_worker(r) for r in conn.execute(query)]


def upsert_warehouse_thd(conn: sa.Connection, w: WarehouseRecord) -> WarehouseRecord:
    """Register a warehouse; the same URL registering again keeps its id."""
    existing = conn.execute(
        sa.select(warehouses.c.id, warehouses.c.registered).where(warehouses.c.url == w.url)
    ).first()
    if existing is None:
        conn.execute(warehouses.insert().values(**_warehouse_values(w)))
        return w
    values = _warehouse_values(w)
    values.update(id=existing.id, registered=existing.registered)
    conn.execute(warehouses.update().where(warehouses.c.id == existing.id).values(**values))
    return WarehouseRecord(**values)  # type: ignore[arg-type]


def _warehouse_values(w: WarehouseRecord) -> dict[str, object]:
    return {
        "id": w.id,
        "url": w.url,
        "site": w.site,
        "capacity": w.capacity,
        "free": w.free,
        "registered": w.registered,
        "last_heard": w.last_heard,
    }


def heartbeat_warehouse_thd(
    conn: sa.Connection, warehouse_id: str, capacity: int, free: int, now: float
) -> None:
    conn.execute(
        warehouses.update()
        .where(warehouses.c.id == warehouse_id)
        .values(capacity=capacity, free=free, last_heard=now)
    )


def list_warehouses_thd(conn: sa.Connection) -> list[WarehouseRecord]:
    return [_warehouse(r._mapping) for r in conn.execute(sa.select(warehouses))]


def warehouse_thd(conn: sa.Connection, warehouse_id: str) -> WarehouseRecord | None:
    """The warehouse registered under ``warehouse_id``, if any (at whichever member)."""
    row = conn.execute(sa.select(warehouses).where(warehouses.c.id == warehouse_id)).first()
    return None if row is None else _warehouse(row._mapping)


def _warehouse(m: sa.RowMapping) -> WarehouseRecord:
    return WarehouseRecord(
        id=m["id"],
        url=m["url"],
        site=m["site"],
        capacity=m["capacity"],
        free=m["free"],
        registered=m["registered"],
        last_heard=m["last_heard"],
    )


# Digests per statement when looking some up: an IN list well below SQLite's oldest limit on
# bound parameters (999), and a statement PostgreSQL plans as quickly as one of a few digests.
LOOKUP_CHUNK = 300


def objects_of_thd(conn: sa.Connection, digests: Sequence[str]) -> StoredObjects:
    """What the store knows of ``digests`` alone (another member may have recorded them): their
    copies at warehouses, those warehouses, and the bytes of those kept inline."""
    digests = list(dict.fromkeys(digests))
    locations: list[tuple[str, str, int]] = []
    inline: dict[str, bytes] = {}
    for start in range(0, len(digests), LOOKUP_CHUNK):
        chunk = digests[start : start + LOOKUP_CHUNK]
        query = sa.select(
            object_locations.c.digest, object_locations.c.warehouse_id, object_locations.c.size
        ).where(object_locations.c.digest.in_(chunk))
        locations.extend((r.digest, r.warehouse_id, r.size) for r in conn.execute(query))
        kept = sa.select(inline_objects.c.digest, inline_objects.c.content).where(
            inline_objects.c.digest.in_(chunk)
        )
        inline.update((r.digest, bytes(r.content)) for r in conn.execute(kept))
    holder_ids = sorted({warehouse_id for _, warehouse_id, _ in locations})
    holders: list[WarehouseRecord] = []
    for start in range(0, len(holder_ids), LOOKUP_CHUNK):
        chunk = holder_ids[start : start + LOOKUP_CHUNK]
        query = sa.select(warehouses).where(warehouses.c.id.in_(chunk))
        holders.extend(_warehouse(r._mapping) for r in conn.execute(query))
    return StoredObjects(locations=tuple(locations), warehouses=tuple(holders), inline=inline)


def add_locations_thd(
    conn: sa.Connection, warehouse_id: str, objects: Sequence[tuple[str, int]]
) -> None:
    """Record that a warehouse holds these objects; a repeated report is harmless."""
    if not objects:
        return
    rows = [
        {"digest": d, "warehouse_id": warehouse_id, "size": s} for d, s in dict(objects).items()
    ]
    conn.execute(_insert_new_locations(conn.dialect.name), rows)


def _insert_new_locations(dialect: str) -> sa.Insert:
    """An INSERT of locations that skips those already recorded, in one statement (a SELECT of
    the known ones first doubled the cost of every warehouse report)."""
    if dialect == "sqlite":
        return sqlite.insert(object_locations).on_conflict_do_nothing()
    # The other backend XWCH supports.
    return postgresql.insert(object_locations).on_conflict_do_nothing()


def remove_locations_thd(conn: sa.Connection, warehouse_id: str, digests: Sequence[str]) -> None:
    """A warehouse no longer holds these objects (they were deleted there)."""
    for start in range(0, len(digests), 500):
        conn.execute(
            object_locations.delete().where(
                object_locations.c.warehouse_id == warehouse_id,
                object_locations.c.digest.in_(list(digests[start : start + 500])),
            )
        )


def replace_locations_thd(
    conn: sa.Connection, warehouse_id: str, objects: Sequence[tuple[str, int]]
) -> None:
    """What a warehouse holds is exactly ``objects`` (its inventory when it registers)."""
    conn.execute(object_locations.delete().where(object_locations.c.warehouse_id == warehouse_id))
    rows = [
        {"digest": d, "warehouse_id": warehouse_id, "size": s} for d, s in dict(objects).items()
    ]
    for start in range(0, len(rows), 5000):
        conn.execute(object_locations.insert(), rows[start : start + 5000])


def add_inline_objects_thd(conn: sa.Connection, objects: Mapping[str, bytes]) -> None:
    """Keep these small objects; one already kept is left as it is (same digest, same bytes)."""
    rows = [{"digest": d, "content": c} for d, c in objects.items()]
    execute_plain(conn, _INLINE_INSERT[conn.dialect.name], rows)


# Made once: execute_plain keeps each statement's SQL.
_INLINE_INSERT = {
    "sqlite": sqlite.insert(inline_objects).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(inline_objects).on_conflict_do_nothing(),
}


def all_inline_objects_thd(conn: sa.Connection) -> dict[str, bytes]:
    query = sa.select(inline_objects.c.digest, inline_objects.c.content)
    return {r.digest: bytes(r.content) for r in conn.execute(query)}


def all_locations_thd(conn: sa.Connection) -> list[tuple[str, str, int]]:
    query = sa.select(
        object_locations.c.digest, object_locations.c.warehouse_id, object_locations.c.size
    )
    return [(r.digest, r.warehouse_id, r.size) for r in conn.execute(query)]
