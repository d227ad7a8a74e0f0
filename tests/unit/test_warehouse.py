"""The warehouse: its routes, its object store, its life with the coordinator."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from tests.fakes.warehouse import KEY, WAREHOUSE_ID, InMemoryWarehouse, result_of
from xwch import capability
from xwch.errors import ApiError, DigestMismatch, OffsetMismatch, Unreachable
from xwch.protocol.codec import convert, encode
from xwch.protocol.objects import ObjectRef
from xwch.protocol.wire import CAPABILITY_HEADER, OBJECT_SIZE_HEADER, PACKET_DIGEST_HEADER
from xwch.protocol.worker import Policy
from xwch.retry import equal_jitter
from xwch.warehouse import routes
from xwch.warehouse.blocking import run_inline
from xwch.warehouse.node import WarehouseService
from xwch.warehouse.objects import ObjectStore

PACKET = 1000
DATA = random.Random(3).randbytes(3 * PACKET)
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wh(tmp_path: Path, clock: Clock) -> InMemoryWarehouse:
    return InMemoryWarehouse(tmp_path / "warehouse", clock)


async def _call(
    http: Any, method: str, path: str, headers: dict[str, str] | None, data: bytes | None
) -> tuple[int, Any, bytes]:
    response = await http.request(
        method, "http://warehouse.test:8751" + path, headers=headers or {}, data=data
    )
    return response.code, response.headers, await response.content()


def call(
    wh: InMemoryWarehouse | Any,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> Deferred[tuple[int, Any, bytes]]:
    http = wh.http if isinstance(wh, InMemoryWarehouse) else wh
    return Deferred.fromCoroutine(_call(http, method, path, headers, data))


def answer(d: Deferred[tuple[int, Any, bytes]]) -> tuple[int, Any, Any]:
    """(status, headers, JSON body or raw bytes) of a request that has been answered."""
    code, headers, body = result_of(d)
    try:
        return code, headers, json.loads(body)
    except ValueError:
        return code, headers, body


def put(
    wh: InMemoryWarehouse | Any,
    cap: str,
    offset: int,
    packet: bytes,
    size: int = len(DATA),
    digest: str = DIGEST,
) -> Deferred[tuple[int, Any, bytes]]:
    headers = {
        CAPABILITY_HEADER: cap,
        PACKET_DIGEST_HEADER: hashlib.sha256(packet).hexdigest(),
    }
    return call(wh, "PUT", f"/objects/{digest}?offset={offset}&size={size}", headers, packet)


def upload_all(wh: InMemoryWarehouse, packets: int = 3) -> None:
    cap = wh.capability(capability.OP_PUT, DIGEST)
    for n in range(packets):
        answer(put(wh, cap, n * PACKET, DATA[n * PACKET : (n + 1) * PACKET]))


def get(wh: InMemoryWarehouse, rng: str | None = None, method: str = "GET"):
    headers = {CAPABILITY_HEADER: wh.capability(capability.OP_GET, DIGEST)}
    if rng is not None:
        headers["Range"] = rng
    return answer(call(wh, method, f"/objects/{DIGEST}", headers))


# -- capabilities -------------------------------------------------------------------------


def _forged(wh: InMemoryWarehouse) -> str:
    return capability.issue(b"x" * 32, "put", DIGEST, WAREHOUSE_ID, wh.clock.seconds() + 60)


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda wh: None, "no capability"),
        (_forged, "signature"),
        (lambda wh: wh.capability("put", DIGEST, lifetime=-1), "expired"),
        (lambda wh: wh.capability("get", DIGEST), "not 'put'"),
        (lambda wh: wh.capability("put", "0" * 64), "another object"),
        (
            lambda wh: capability.issue(KEY, "put", DIGEST, "wh-other", wh.clock.seconds() + 60),
            "another warehouse",
        ),
        (lambda wh: "garbage", "malformed"),
    ],
    ids=["missing", "forged", "expired", "wrong-op", "wrong-digest", "wrong-warehouse", "garbage"],
)
def test_write_without_a_valid_capability_is_forbidden(
    wh: InMemoryWarehouse, make: Any, why: str
) -> None:
    """A PUT without a valid put capability is refused with 403 forbidden and stores nothing."""
    cap = make(wh)
    headers = {PACKET_DIGEST_HEADER: hashlib.sha256(DATA).hexdigest()}
    if cap is not None:
        headers[CAPABILITY_HEADER] = cap
    code, _, body = answer(
        call(wh, "PUT", f"/objects/{DIGEST}?offset=0&size={len(DATA)}", headers, DATA)
    )
    assert code == 403
    assert body["error"] == "forbidden"
    assert why in body["message"]
    assert wh.store.partial_size(DIGEST) == 0


def test_read_without_a_valid_capability_is_forbidden(wh: InMemoryWarehouse) -> None:
    """A GET with a put capability, or none, is refused with 403 forbidden."""
    upload_all(wh)
    for headers in ({}, {CAPABILITY_HEADER: wh.capability("put", DIGEST)}):
        code, _, body = answer(call(wh, "GET", f"/objects/{DIGEST}", headers))
        assert (code, body["error"]) == (403, "forbidden")
        assert set(body) == {"error", "message"}


def test_a_put_any_capability_stores_any_object_and_reads_none(wh: InMemoryWarehouse) -> None:
    """An assignment's upload capability (digest "*") stores whatever object it is shown with,
    here only; it never reads."""
    any_object = wh.capability(capability.OP_PUT, capability.ANY_OBJECT)
    other = b"another output"
    other_digest = hashlib.sha256(other).hexdigest()
    for digest, data in ((DIGEST, DATA), (other_digest, other)):
        code, _, body = answer(put(wh, any_object, 0, data, len(data), digest))
        assert (code, body) == (201, {"stored": True})
    assert wh.store.has(DIGEST) and wh.store.has(other_digest)
    read_any = wh.capability(capability.OP_GET, capability.ANY_OBJECT)
    for cap in (any_object, read_any):
        code, _, body = answer(call(wh, "GET", f"/objects/{DIGEST}", {CAPABILITY_HEADER: cap}))
        assert (code, body["error"]) == (403, "forbidden")
    elsewhere = capability.issue(
        KEY, capability.OP_PUT, capability.ANY_OBJECT, "wh-other", wh.clock.seconds() + 60
    )
    code, _, body = answer(put(wh, elsewhere, 0, b"x", 1, hashlib.sha256(b"x").hexdigest()))
    assert (code, body["error"]) == (403, "forbidden")


def test_unregistered_warehouse_answers_busy(tmp_path: Path, clock: Clock) -> None:
    """Before the coordinator has answered its registration, the warehouse says busy, retry in 1 s."""
    wh = InMemoryWarehouse(tmp_path, clock, registered=False)
    code, headers, body = answer(put(wh, "whatever", 0, DATA))
    assert code == 503
    assert body == {
        "error": "busy",
        "message": "this warehouse is still registering with its coordinator",
        "retry_after": 1.0,
    }
    assert headers.getRawHeaders(b"retry-after") == [b"1"]


def test_health_answers_without_registration(tmp_path: Path, clock: Clock) -> None:
    """GET /health tells the free space, even before registration, with no capability."""
    wh = InMemoryWarehouse(tmp_path, clock, registered=False)
    code, _, body = answer(call(wh, "GET", "/health"))
    assert code == 200
    assert body["ok"] is True
    assert isinstance(body["free"], int) and body["free"] > 0


# -- uploads ------------------------------------------------------------------------------


def test_upload_answers_offsets_then_stored(wh: InMemoryWarehouse) -> None:
    """Each packet is acknowledged with the new offset; the last with 201 stored."""
    cap = wh.capability("put", DIGEST)
    assert answer(put(wh, cap, 0, DATA[:PACKET]))[::2] == (200, {"offset": PACKET})
    code, _, body = answer(call(wh, "GET", f"/objects/{DIGEST}/upload", {CAPABILITY_HEADER: cap}))
    assert (code, body) == (200, {"offset": PACKET})
    assert answer(put(wh, cap, PACKET, DATA[PACKET:]))[::2] == (201, {"stored": True})
    code, _, body = answer(call(wh, "GET", f"/objects/{DIGEST}/upload", {CAPABILITY_HEADER: cap}))
    assert (code, body) == (200, {"stored": True})


def test_commit_is_atomic_and_survives_a_crash(wh: InMemoryWarehouse, clock: Clock) -> None:
    """No object is visible until its last packet; after a crash the upload resumes and ends well."""
    cap = wh.capability("put", DIGEST)
    answer(put(wh, cap, 0, DATA[:PACKET]))
    answer(put(wh, cap, PACKET, DATA[PACKET : 2 * PACKET]))
    assert not wh.store.has(DIGEST)
    assert get(wh)[0] == 404
    assert list((wh.store.root / "objects").iterdir()) == []

    # The process dies; a new one starts on the same folder, with no memory of the upload.
    again = InMemoryWarehouse(wh.store.root, clock)
    assert not again.store.has(DIGEST)
    code, _, body = answer(
        call(again, "GET", f"/objects/{DIGEST}/upload", {CAPABILITY_HEADER: cap})
    )
    assert (code, body) == (200, {"offset": 2 * PACKET})
    assert answer(put(again, cap, 2 * PACKET, DATA[2 * PACKET :]))[0] == 201
    with again.store.open_read(DIGEST) as f:
        assert f.read() == DATA
    assert again.store.count() == 1
    assert ObjectStore(wh.store.root).count() == 1


def test_packet_at_the_wrong_offset_gets_409_with_expected(wh: InMemoryWarehouse) -> None:
    """A packet that does not start where the held bytes end is refused with the offset to use."""
    cap = wh.capability("put", DIGEST)
    answer(put(wh, cap, 0, DATA[:PACKET]))
    code, _, body = answer(put(wh, cap, 2 * PACKET, DATA[2 * PACKET :]))
    assert code == 409
    assert body["error"] == "offset"
    assert body["expected"] == PACKET


def test_corrupt_packet_gets_422(wh: InMemoryWarehouse) -> None:
    """A packet whose bytes do not match its header digest is refused with 422 corrupt_packet."""
    cap = wh.capability("put", DIGEST)
    headers = {CAPABILITY_HEADER: cap, PACKET_DIGEST_HEADER: hashlib.sha256(b"other").hexdigest()}
    code, _, body = answer(
        call(wh, "PUT", f"/objects/{DIGEST}?offset=0&size={len(DATA)}", headers, DATA[:PACKET])
    )
    assert (code, body["error"]) == (422, "corrupt_packet")
    assert wh.store.partial_size(DIGEST) == 0


def test_whole_object_mismatch_is_discarded(wh: InMemoryWarehouse) -> None:
    """Bytes that do not hash to the object's name answer 422 digest_mismatch and vanish."""
    wrong = hashlib.sha256(b"not this").hexdigest()
    cap = wh.capability("put", wrong)
    code, _, body = answer(put(wh, cap, 0, DATA, digest=wrong))
    assert (code, body["error"]) == (422, "digest_mismatch")
    assert not wh.store.has(wrong)
    assert wh.store.partial_size(wrong) == 0
    assert wh.catalog.reported == []


def test_a_whole_object_replaces_a_longer_stale_part(wh: InMemoryWarehouse) -> None:
    """A part left by an upload that claimed a bigger size is no prefix: a whole-object PUT
    discards it and stores the object."""
    wh.store.write_packet(DIGEST, 0, DATA + b"tail of another claim")
    code, _, body = answer(put(wh, wh.capability("put", DIGEST), 0, DATA))
    assert (code, body) == (201, {"stored": True})
    assert wh.store.has(DIGEST)
    assert wh.store.partial_size(DIGEST) == 0
    assert wh.catalog.reported == [ObjectRef(DIGEST, len(DATA))]


@pytest.mark.parametrize(
    ("path", "headers", "data", "field"),
    [
        ("/objects/NOTADIGEST?offset=0&size=3", {}, b"abc", "digest"),
        (f"/objects/{DIGEST}?size=3", {}, b"abc", "offset"),
        (f"/objects/{DIGEST}?offset=-1&size=3", {}, b"abc", "offset"),
        (f"/objects/{DIGEST}?offset=0", {}, b"abc", "size"),
        (f"/objects/{DIGEST}?offset=0&size=2", {}, b"abc", "passes the size"),
        (f"/objects/{DIGEST}?offset=0&size=3", {PACKET_DIGEST_HEADER: None}, b"abc", "Sha256"),
    ],
    ids=["digest", "no-offset", "negative-offset", "no-size", "past-size", "no-packet-digest"],
)
def test_malformed_put_gets_400_naming_the_problem(
    wh: InMemoryWarehouse, path: str, headers: dict[str, Any], data: bytes, field: str
) -> None:
    """A PUT with a bad digest, offset, size or packet header is refused with 400 bad_request."""
    full = {
        CAPABILITY_HEADER: wh.capability("put", DIGEST),
        PACKET_DIGEST_HEADER: hashlib.sha256(data).hexdigest(),
    }
    full.update(headers)
    code, _, body = answer(
        call(wh, "PUT", path, {k: v for k, v in full.items() if v is not None}, data)
    )
    assert (code, body["error"]) == (400, "bad_request")
    assert field in body["message"]


def test_oversize_packet_gets_400(wh: InMemoryWarehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """A packet over the size limit is refused with 400 and a message giving the limit."""
    monkeypatch.setattr(routes, "MAX_PACKET_SIZE", 100)
    code, _, body = answer(put(wh, wh.capability("put", DIGEST), 0, DATA[:101]))
    assert (code, body["error"]) == (400, "bad_request")
    assert "limit of 100 bytes" in body["message"]


def test_unknown_method_and_route_answer_json(wh: InMemoryWarehouse) -> None:
    """A wrong method gets 405 and an unknown route 404, both with a JSON error body."""
    code, _, body = answer(call(wh, "PATCH", f"/objects/{DIGEST}"))
    assert (code, body["error"]) == (405, "method_not_allowed")
    code, _, body = answer(call(wh, "GET", "/nowhere"))
    assert (code, body["error"]) == (404, "not_found")


# -- the catalog --------------------------------------------------------------------------


def test_object_is_reported_before_the_201(wh: InMemoryWarehouse) -> None:
    """The uploader gets 201 only once the coordinator knows the object is here."""
    cap = wh.capability("put", DIGEST)
    answer(put(wh, cap, 0, DATA[: 2 * PACKET]))
    wh.catalog.hold = True
    last = put(wh, cap, 2 * PACKET, DATA[2 * PACKET :])
    assert wh.catalog.reported == [ObjectRef(DIGEST, len(DATA))]
    assert not last.called
    wh.catalog.pending[0].callback(None)
    wh.http.flush()
    assert answer(last)[::2] == (201, {"stored": True})


def test_stored_object_uploaded_again_is_reported_again(wh: InMemoryWarehouse) -> None:
    """A PUT of an object already here answers 200 stored at once, and re-tells the catalog."""
    upload_all(wh)
    code, _, body = answer(put(wh, wh.capability("put", DIGEST), 0, DATA[:PACKET]))
    assert (code, body) == (200, {"stored": True})
    assert wh.catalog.reported == [ObjectRef(DIGEST, len(DATA))] * 2


def test_unreported_object_answers_busy_then_stored(wh: InMemoryWarehouse) -> None:
    """If the coordinator cannot be told, the uploader hears busy; asking again reports it."""
    cap = wh.capability("put", DIGEST)
    wh.catalog.error = Unreachable("coordinator down")
    code, _, body = answer(put(wh, cap, 0, DATA))
    assert (code, body["error"], body["retry_after"]) == (503, "busy", routes.REPORT_RETRY_AFTER)
    assert wh.store.has(DIGEST)
    code, _, body = answer(call(wh, "GET", f"/objects/{DIGEST}/upload", {CAPABILITY_HEADER: cap}))
    assert (code, body) == (200, {"stored": True})
    assert wh.catalog.reported == [ObjectRef(DIGEST, len(DATA))]


# -- reads --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rng", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=2500-", 2500, 2999),
        ("bytes=-10", 2990, 2999),
        ("bytes=2990-999999", 2990, 2999),
    ],
)
def test_get_with_range_answers_206_with_those_bytes(
    wh: InMemoryWarehouse, rng: str, first: int, last: int
) -> None:
    """A ranged GET answers 206 with exactly the bytes asked and a Content-Range."""
    upload_all(wh)
    code, headers, body = get(wh, rng)
    assert code == 206
    assert body == DATA[first : last + 1]
    assert headers.getRawHeaders(b"content-range") == [f"bytes {first}-{last}/3000".encode()]
    assert headers.getRawHeaders(OBJECT_SIZE_HEADER.encode()) == [b"3000"]


def test_get_without_range_answers_the_whole_object(wh: InMemoryWarehouse) -> None:
    """A plain GET answers 200 with the whole object and its size."""
    upload_all(wh)
    code, headers, body = get(wh)
    assert (code, body) == (200, DATA)
    assert headers.getRawHeaders(OBJECT_SIZE_HEADER.encode()) == [b"3000"]


@pytest.mark.parametrize(
    ("rng", "status"),
    [("bytes=3000-", 416), ("bytes=5-1", 400), ("items=1-2", 400), ("bytes=0-1,5-6", 400)],
)
def test_get_with_a_bad_range_is_refused(wh: InMemoryWarehouse, rng: str, status: int) -> None:
    """A Range past the end answers 416; a malformed one 400."""
    upload_all(wh)
    code, _, body = get(wh, rng)
    assert code == status
    assert "Range" in body["message"]


def test_head_tells_the_size_or_404(wh: InMemoryWarehouse) -> None:
    """HEAD answers 404 for an absent object, 200 with its size once stored."""
    assert get(wh, method="HEAD")[0] == 404
    upload_all(wh)
    code, headers, body = get(wh, method="HEAD")
    assert (code, body) == (200, b"")
    assert headers.getRawHeaders(OBJECT_SIZE_HEADER.encode()) == [b"3000"]


# -- the store ----------------------------------------------------------------------------


def test_store_refuses_a_packet_at_the_wrong_offset(tmp_path: Path) -> None:
    """The store only appends: a packet elsewhere raises OffsetMismatch carrying the offset to use."""
    store = ObjectStore(tmp_path)
    store.write_packet(DIGEST, 0, DATA[:10])
    with pytest.raises(OffsetMismatch) as caught:
        store.write_packet(DIGEST, 20, DATA[20:30])
    assert caught.value.expected == 10


def test_store_commit_mismatch_deletes_the_part(tmp_path: Path) -> None:
    """Committing bytes that do not hash to the name raises DigestMismatch and keeps nothing."""
    store = ObjectStore(tmp_path)
    store.write_packet(DIGEST, 0, b"wrong bytes")
    with pytest.raises(DigestMismatch):
        store.commit(DIGEST)
    assert not store.has(DIGEST)
    assert store.partial_size(DIGEST) == 0


# -- the service --------------------------------------------------------------------------

REGISTER = "/api/v1/warehouses"
HEARTBEAT = f"/api/v1/warehouses/{WAREHOUSE_ID}/heartbeat"
OBJECTS = f"/api/v1/warehouses/{WAREHOUSE_ID}/objects"
INTERVAL = 10.0
ACCEPTED = {
    "warehouse_id": WAREHOUSE_ID,
    "heartbeat_interval": INTERVAL,
    "capability_key": base64.b64encode(KEY).decode(),
}


class FakeCoordinator:
    """Answers the warehouse routes of the coordinator from scripted outcomes, noting the time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, str, Any]] = []
        self.script: dict[str, list[Any]] = {}

    def post(self, path: str, body: object | None = None) -> Deferred[Any]:
        self.calls.append((self.clock.seconds(), path, json.loads(encode(body))))
        queue = self.script.get(path)
        outcome = queue.pop(0) if queue else (ACCEPTED if path == REGISTER else {})
        if isinstance(outcome, Exception):
            return fail(outcome)
        return succeed(outcome)

    def post_as(self, path: str, answer: type[Any], body: object | None = None) -> Deferred[Any]:
        """As the real client: the scripted answer must fit the route's message."""
        if path.endswith("/heartbeat") and not self.script.get(path):
            self.script[path] = [{"policy": Policy().to_json()}]
        return self.post(path, body).addCallback(convert, answer, answer.__name__)

    def times(self, path: str) -> list[float]:
        return [t for t, p, _ in self.calls if p == path]


def make_service(tmp_path: Path, jitter: float = 0.0):
    reactor = MemoryReactorClock()
    coordinator = FakeCoordinator(reactor)
    service = WarehouseService(
        reactor,
        ObjectStore(tmp_path / "warehouse"),
        coordinator,
        None,
        "lab",
        "tcp:8751",
        blocking=run_inline,
        retry_policy=equal_jitter(
            WarehouseService.REGISTER_BACKOFF_BASE,
            WarehouseService.REGISTER_BACKOFF_MAX,
            lambda: jitter,
        ),
    )
    return reactor, coordinator, service


def test_service_listens_then_registers(tmp_path: Path) -> None:
    """The warehouse tells its URL once listening, then registers it with its site and space."""
    reactor, coordinator, service = make_service(tmp_path)
    service.startService()
    assert result_of(service.when_listening()) == "http://127.0.0.1:8751"
    assert reactor.tcpServers[0][0] == 8751
    registration = result_of(service.when_registered())
    assert registration.warehouse_id == WAREHOUSE_ID
    assert registration.capability_key == KEY
    (_, path, body) = coordinator.calls[0]
    assert path == REGISTER
    assert body["url"] == "http://127.0.0.1:8751"
    assert body["site"] == "lab"
    assert body["capacity"] >= body["free"] > 0


def test_registration_retries_while_the_coordinator_is_unreachable(tmp_path: Path) -> None:
    """An unreachable or busy coordinator is asked again with growing delays until it answers."""
    reactor, coordinator, service = make_service(tmp_path)
    coordinator.script[REGISTER] = [
        Unreachable("down"),
        Unreachable("down"),
        ApiError(503, "busy", "busy", retry_after=5.0),
    ]
    service.startService()
    registered = service.when_registered()
    # Equal jitter at its lowest: half of 1 s, half of 2 s, then the server's 5 s over 2 s.
    reactor.advance(0.5)
    reactor.advance(1.0)
    reactor.advance(4.9)
    assert not registered.called
    assert service.resource.registration is None
    reactor.advance(0.1)
    assert registered.called
    assert coordinator.times(REGISTER) == pytest.approx([0.0, 0.5, 1.5, 6.5])


def test_registration_backoff_is_capped(tmp_path: Path) -> None:
    """However long the coordinator stays down, the warehouse asks again at least every 30 s."""
    reactor, coordinator, service = make_service(tmp_path, jitter=1.0)
    coordinator.script[REGISTER] = [Unreachable("down")] * 10
    service.startService()
    for _ in range(10):
        due = min(c.getTime() for c in reactor.getDelayedCalls())
        reactor.advance(due - reactor.seconds())
    times = coordinator.times(REGISTER)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert max(gaps) == WarehouseService.REGISTER_BACKOFF_MAX
    assert service.resource.registration is not None


def test_refused_token_stops_the_service(tmp_path: Path) -> None:
    """A coordinator refusing the token is not retried: the failure is reported at once."""
    reactor, coordinator, service = make_service(tmp_path)
    coordinator.script[REGISTER] = [ApiError(401, "unauthorized", "bad token")]
    service.startService()
    with pytest.raises(ApiError):
        result_of(service.when_failed())
    reactor.advance(60.0)
    assert len(coordinator.times(REGISTER)) == 1


def test_heartbeats_follow_the_interval_and_stop_with_the_service(tmp_path: Path) -> None:
    """Heartbeats carry space and traffic every interval, and stop when the service stops."""
    reactor, coordinator, service = make_service(tmp_path)
    service.startService()
    reactor.advance(INTERVAL)
    reactor.advance(INTERVAL)
    assert coordinator.times(HEARTBEAT) == [INTERVAL, 2 * INTERVAL]
    body = coordinator.calls[-1][2]
    assert body["capacity"] >= body["free"]
    result_of(service.stopService())
    reactor.advance(10 * INTERVAL)
    assert len(coordinator.times(HEARTBEAT)) == 2


def test_forgotten_warehouse_registers_again(tmp_path: Path) -> None:
    """A heartbeat answered 404 (the coordinator forgot us) makes the warehouse register again."""
    reactor, coordinator, service = make_service(tmp_path)
    coordinator.script[HEARTBEAT] = [ApiError(404, "not_found", "who?")]
    service.startService()
    reactor.advance(INTERVAL)
    assert coordinator.times(REGISTER) == [0.0, INTERVAL]
    reactor.advance(INTERVAL)
    assert coordinator.times(HEARTBEAT) == [INTERVAL, 2 * INTERVAL]


def test_service_reports_uploads_to_the_coordinator(tmp_path: Path) -> None:
    """An upload to the running service is reported to the coordinator's catalog."""
    reactor, coordinator, service = make_service(tmp_path)
    service.startService()
    http = StubTreq(service.resource)
    cap = capability.issue(KEY, "put", DIGEST, WAREHOUSE_ID, reactor.seconds() + 60)
    code, _, body = answer(put(http, cap, 0, DATA))
    assert (code, body) == (201, {"stored": True})
    assert coordinator.calls[-1][1:] == (OBJECTS, {"objects": [{"digest": DIGEST, "size": 3000}]})


def test_two_writers_of_one_object_one_finishing_at_once_both_succeed(tmp_path: Path) -> None:
    """Two workers upload the same object at once (two replicas saving identical checkpoint
    chunks): the second waits for the first, and when it then finishes without waiting on
    anything, both uploads end well and no lock is left behind. Each used to answer HTTP 500
    at the first, its object left at the warehouse without anyone told it was saved."""

    class _Catalog:
        def objects_stored(self, refs: object) -> Deferred[None]:
            return succeed(None)

    resource = routes.WarehouseResource(ObjectStore(tmp_path), _Catalog(), Clock(), run_inline)
    digest = "ab" * 32
    gate: Deferred[None] = Deferred()

    async def first() -> None:
        async with resource.writing(digest):
            await gate

    async def second() -> None:
        async with resource.writing(digest):
            pass

    one, two = ensureDeferred(first()), ensureDeferred(second())
    gate.callback(None)
    assert result_of(one) is None and result_of(two) is None
    assert resource._locks == {}
