"""Deleting objects at a warehouse: only with a capability of op ``delete`` (which only the
coordinator signs, for checkpoints nobody needs any more)."""

from __future__ import annotations

from tests.fakes.warehouse import InMemoryWarehouse
from tests.unit.test_warehouse import DATA, DIGEST, answer, call, clock, put, wh
from xwch import capability
from xwch.protocol.wire import CAPABILITY_HEADER

__all__ = ["clock", "wh"]  # the fixtures, used by name


def stored(wh: InMemoryWarehouse) -> None:
    answer(put(wh, wh.capability(capability.OP_PUT, DIGEST), 0, DATA))
    assert wh.store.has(DIGEST)


def delete(wh: InMemoryWarehouse, op: str) -> tuple[int, object]:
    headers = {CAPABILITY_HEADER: wh.capability(op, DIGEST)}
    code, _, body = answer(call(wh, "DELETE", f"/objects/{DIGEST}", headers))
    return code, body


def test_a_delete_capability_removes_the_object(wh: InMemoryWarehouse) -> None:
    """The object is gone, and the warehouse counts one object fewer."""
    stored(wh)
    before = wh.store.count()
    assert delete(wh, capability.OP_DELETE) == (200, {"removed": True})
    assert not wh.store.has(DIGEST)
    assert wh.store.count() == before - 1
    # Deleting what is not there is no error: the coordinator may ask twice.
    assert delete(wh, capability.OP_DELETE) == (200, {"removed": False})


def test_a_read_or_write_capability_deletes_nothing(wh: InMemoryWarehouse) -> None:
    stored(wh)
    for op in (capability.OP_GET, capability.OP_PUT):
        code, body = delete(wh, op)
        assert code == 403 and isinstance(body, dict) and body["error"] == "forbidden"
    assert wh.store.has(DIGEST)
