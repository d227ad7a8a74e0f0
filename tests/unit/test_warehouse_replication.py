"""Copies between warehouses: the route the coordinator's scanner uses to replicate objects."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from twisted.internet.task import Clock

from tests.fakes.warehouse import InMemoryWarehouse, drive
from tests.unit.test_warehouse import answer, call
from xwch import capability
from xwch.protocol.objects import ObjectRef
from xwch.protocol.wire import CAPABILITY_HEADER
from xwch.warehouse.replication import Replicator

DATA = b"replicate me " * 1000
DIGEST = hashlib.sha256(DATA).hexdigest()


def _pair(tmp_path: Path) -> tuple[InMemoryWarehouse, InMemoryWarehouse, Clock]:
    clock = Clock()
    source = InMemoryWarehouse(tmp_path / "source", clock)
    source.store.write_packet(DIGEST, 0, DATA)
    source.store.commit(DIGEST)
    target = InMemoryWarehouse(tmp_path / "target", clock)

    def report(digest: str, size: int):  # type: ignore[no-untyped-def]
        return target.catalog.objects_stored([ObjectRef(digest=digest, size=size)])

    target.resource.replicator = Replicator(clock, target.store, source.http, report)
    return source, target, clock


def _fetch(target: InMemoryWarehouse, body: object, cap: str | None = None) -> tuple[int, object]:
    headers = {CAPABILITY_HEADER: cap or target.capability(capability.OP_PUT, DIGEST)}
    d = call(target, "POST", f"/objects/{DIGEST}/fetch", headers, json.dumps(body).encode())
    target.http.flush()
    code, _, doc = answer(d)
    return code, doc


def test_a_warehouse_copies_an_object_from_another(tmp_path: Path) -> None:
    """Asked to fetch, a warehouse copies the object, verifies it and reports it stored."""
    source, target, clock = _pair(tmp_path)
    body = {"size": len(DATA), "sources": [source.source(DIGEST).to_json()]}
    assert _fetch(target, body) == (202, {"fetching": True})
    copying = target.resource.replicator.copying.get(DIGEST)  # type: ignore[union-attr]
    if copying is not None:
        drive(clock, copying)
    assert target.store.open_read(DIGEST).read() == DATA
    assert target.catalog.reported == [ObjectRef(DIGEST, len(DATA))]
    # Asked again, it says the object is already here.
    assert _fetch(target, body) == (200, {"stored": True})


def test_fetch_needs_a_put_capability_and_a_valid_body(tmp_path: Path) -> None:
    """Only the coordinator may order a copy, and a malformed order is refused clearly."""
    source, target, _ = _pair(tmp_path)
    body = {"size": len(DATA), "sources": [source.source(DIGEST).to_json()]}
    code, doc = _fetch(target, body, cap=target.capability(capability.OP_GET, DIGEST))
    assert code == 403
    code, doc = _fetch(target, {"size": -1, "sources": []})
    assert code == 400 and "size" in doc["message"]  # type: ignore[index]
    assert not target.store.has(DIGEST)
