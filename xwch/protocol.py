"""The wire messages, shared by every part.

Everything on the wire is JSON. Each message is a frozen dataclass with ``to_json`` (a plain
JSON-able dict) and ``from_json`` (which checks every field and raises :class:`ProtocolError`
naming the field, so a bad request gets a clear 400 and never a stack trace).

The HTTP routes that carry them are listed in ``docs/protocol.md``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from xwch.errors import XwchError

API_PREFIX = "/api/v1"
CAPABILITY_HEADER = "X-Xwch-Capability"
PACKET_DIGEST_HEADER = "X-Xwch-Packet-Sha256"
OBJECT_SIZE_HEADER = "X-Xwch-Object-Size"
# A ranged GET's answer: the CRC-32 of the packet's bytes (uncompressed), 8 lowercase hex digits.
PACKET_CRC_HEADER = "X-Xwch-Packet-Crc32"
# Sent by a downloader that can check a packet by its XXH3-64 instead: the answer then carries
# PACKET_XXH3_HEADER (16 lowercase hex digits) in place of the CRC-32, which costs six times the
# CPU of XXH3 at the rates of a fast link.
ACCEPT_PACKET_CHECK_HEADER = "X-Xwch-Accept-Packet-Check"
PACKET_CHECK_XXH3 = "xxh3-64"
PACKET_XXH3_HEADER = "X-Xwch-Packet-Xxh3"
# How a packet's body is encoded on the wire ("zstd"); absent: raw bytes.
PACKET_ENCODING_HEADER = "X-Xwch-Packet-Encoding"
# Sent by a downloader that can decode zstd packets.
ACCEPT_PACKET_ENCODING_HEADER = "X-Xwch-Accept-Packet-Encoding"
PACKET_ENCODING_ZSTD = "zstd"
# One transfer (all the packets of one object between two parties): what a warehouse admits.
SESSION_HEADER = "X-Xwch-Session"

DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")

# Roles a token may have; every API route names the roles it accepts.
ROLE_CLIENT = "client"
ROLE_WORKER = "worker"
ROLE_WAREHOUSE = "warehouse"
ROLES = (ROLE_CLIENT, ROLE_WORKER, ROLE_WAREHOUSE)

# Task and job states, as in spec/cli.md.
TASK_BLOCKED = "blocked"
TASK_READY = "ready"
TASK_RUNNING = "running"
TASK_DONE = "done"
TASK_FAILED = "failed"
TASK_CANCELLED = "cancelled"
TASK_STATES = (TASK_BLOCKED, TASK_READY, TASK_RUNNING, TASK_DONE, TASK_FAILED, TASK_CANCELLED)

JOB_RUNNING = "running"
JOB_DONE = "done"
JOB_FAILED = "failed"
JOB_CANCELLED = "cancelled"
JOB_STATES = (JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED)
JOB_ENDED_STATES = (JOB_DONE, JOB_FAILED, JOB_CANCELLED)

# What a worker says of an attempt it finished.
OUTCOME_SUCCEEDED = "succeeded"
OUTCOME_FAILED = "failed"

# How many bytes of each of a task's standard streams are kept (spec: the last 64 KiB).
LOG_TAIL_BYTES = 64 * 1024

# Objects of at most this many bytes travel inside the messages (a Work Result's outputs, an
# Assignment's inputs, a downloads answer) and are kept by the coordinator in its store, not at
# a warehouse: for a task's small result, a PUT to a warehouse, its fsyncs and its report to the
# coordinator cost more than the task. Small enough that the coordinator keeps every one of them
# in memory (a kibibyte for each task of a 100,000-task job is 100 MB at worst).
INLINE_MOST = 1024


class ProtocolError(XwchError):
    """A message does not have the shape its route expects."""


T = TypeVar("T")


def get_field(doc: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...], where: str) -> T:
    if key not in doc:
        raise ProtocolError(f"{where}: missing field {key!r}")
    value = doc[key]
    # bool is an int in Python, never on our wire.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ProtocolError(f"{where}.{key}: expected {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ProtocolError(
            f"{where}.{key}: expected {_kind_name(kind)}, got {type(value).__name__}"
        )
    return value  # type: ignore[return-value]


def get_optional(
    doc: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...], where: str
) -> T | None:
    if doc.get(key) is None:
        return None
    return get_field(doc, key, kind, where)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def require_object(doc: object, where: str) -> Mapping[str, Any]:
    """The body as a JSON object, or a :class:`ProtocolError`."""
    if not isinstance(doc, dict):
        raise ProtocolError(f"{where}: expected a JSON object")
    return doc


def require_digest(value: object, where: str) -> str:
    if not isinstance(value, str) or not DIGEST_PATTERN.match(value):
        raise ProtocolError(f"{where}: not a SHA-256 digest (64 lowercase hex digits)")
    return value


NUMBER = (int, float)


@dataclass(frozen=True)
class Policy:
    """How every sender paces its transfers, set by the communication manager."""

    packet_size: int = 1024 * 1024
    packet_sleep: float = 0.0
    max_transfers: int = 4

    def to_json(self) -> dict[str, Any]:
        return {
            "packet_size": self.packet_size,
            "packet_sleep": self.packet_sleep,
            "max_transfers": self.max_transfers,
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "policy") -> Policy:
        d = require_object(doc, where)
        return cls(
            packet_size=get_field(d, "packet_size", int, where),
            packet_sleep=float(get_field(d, "packet_sleep", NUMBER, where)),
            max_transfers=get_field(d, "max_transfers", int, where),
        )


# Hex digits of a digest a worker's cache report carries (64 bits; see coordinator/caches.py).
CACHE_PREFIX = 16
# At most this many prefixes in a registration (the most recently used first): 1.7 MB of JSON.
CACHE_REPORT_MAX = 100_000
_HEX = frozenset("0123456789abcdef")


def _cache_prefixes(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ProtocolError(f"{where}: expected a list of digest prefixes")
    if len(value) > CACHE_REPORT_MAX:
        raise ProtocolError(f"{where}: at most {CACHE_REPORT_MAX} prefixes, got {len(value)}")
    for n, item in enumerate(value):
        if not (isinstance(item, str) and len(item) == CACHE_PREFIX and set(item) <= _HEX):
            raise ProtocolError(
                f"{where}[{n}]: expected {CACHE_PREFIX} lowercase hex digits of a digest"
            )
    return tuple(value)


@dataclass(frozen=True)
class HostFacts:
    """What a worker tells of its machine in its Register Request."""

    name: str
    address: str
    platform: str
    cores: int
    memory: int
    slots: int
    performance: float
    site: str | None = None
    # What its cache holds, as digest prefixes of CACHE_PREFIX hex digits (compact: a hint for
    # the scheduler's locality, not a promise). Optional on the wire.
    cached: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "address": self.address,
            "platform": self.platform,
            "cores": self.cores,
            "memory": self.memory,
            "slots": self.slots,
            "performance": self.performance,
            "site": self.site,
        }
        if self.cached:
            doc["cached"] = list(self.cached)
        return doc

    @classmethod
    def from_json(cls, doc: object, where: str = "register") -> HostFacts:
        d = require_object(doc, where)
        facts = cls(
            name=get_field(d, "name", str, where),
            address=get_field(d, "address", str, where),
            platform=get_field(d, "platform", str, where),
            cores=get_field(d, "cores", int, where),
            memory=get_field(d, "memory", int, where),
            slots=get_field(d, "slots", int, where),
            performance=float(get_field(d, "performance", NUMBER, where)),
            site=get_optional(d, "site", str, where),
            cached=_cache_prefixes(d.get("cached"), f"{where}.cached"),
        )
        if facts.slots < 1 or facts.cores < 1:
            raise ProtocolError(f"{where}: slots and cores must be at least 1")
        if not facts.performance > 0:
            raise ProtocolError(f"{where}.performance: must be positive")
        return facts


@dataclass(frozen=True)
class Source:
    """Where an object can be read: a warehouse URL and a read capability for it."""

    url: str
    capability: str

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "capability": self.capability}

    @classmethod
    def from_json(cls, doc: object, where: str) -> Source:
        d = require_object(doc, where)
        return cls(
            url=get_field(d, "url", str, where), capability=get_field(d, "capability", str, where)
        )


@dataclass(frozen=True)
class ObjectRef:
    """An object by content: its SHA-256 and size."""

    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size}

    @classmethod
    def from_json(cls, doc: object, where: str) -> ObjectRef:
        d = require_object(doc, where)
        digest = require_digest(d.get("digest"), f"{where}.digest")
        size = get_field(d, "size", int, where)
        if size < 0:
            raise ProtocolError(f"{where}.size: must not be negative")
        return cls(digest=digest, size=size)


@dataclass(frozen=True)
class InputFile:
    """One file an attempt finds in its working directory before it starts."""

    path: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "digest": self.digest, "size": self.size}

    @classmethod
    def from_json(cls, doc: object, where: str) -> InputFile:
        d = require_object(doc, where)
        ref = ObjectRef.from_json(d, where)
        return cls(path=get_field(d, "path", str, where), digest=ref.digest, size=ref.size)


@dataclass(frozen=True)
class BinaryRef:
    """The program an attempt runs: a single executable, or a bundle archive and its entry."""

    digest: str
    size: int
    bundle: bool = False
    entry: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "bundle": self.bundle,
            "entry": self.entry,
        }

    @classmethod
    def from_json(cls, doc: object, where: str) -> BinaryRef:
        d = require_object(doc, where)
        ref = ObjectRef.from_json(d, where)
        bundle = get_field(d, "bundle", bool, where)
        entry = get_optional(d, "entry", str, where)
        if bundle and not entry:
            raise ProtocolError(f"{where}.entry: a bundle needs an entry")
        return cls(digest=ref.digest, size=ref.size, bundle=bundle, entry=entry)


@dataclass(frozen=True)
class Assignment:
    """One attempt of a task given to a worker in the reply to its Work Request."""

    attempt: str
    job: str
    task: str
    number: int
    binary: BinaryRef
    args: tuple[str, ...]
    env: Mapping[str, str]
    inputs: tuple[InputFile, ...]
    outputs: tuple[str, ...]
    timeout: float | None
    # digest -> where to read it; covers the binary and every input.
    sources: Mapping[str, tuple[Source, ...]] = field(default_factory=dict)
    # Where small outputs may go without asking for an uploads plan, with a capability to store
    # any object there (absent: every output goes through the plan).
    upload: Source | None = None
    # digest -> bytes, for the inputs the coordinator keeps itself (INLINE_MOST at most).
    inline: Mapping[str, bytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "attempt": self.attempt,
            "job": self.job,
            "task": self.task,
            "number": self.number,
            "binary": self.binary.to_json(),
            "args": list(self.args),
            "env": dict(self.env),
            "inputs": [i.to_json() for i in self.inputs],
            "outputs": list(self.outputs),
            "timeout": self.timeout,
            "sources": {d: [s.to_json() for s in ss] for d, ss in self.sources.items()},
        }
        if self.upload is not None:
            doc["upload"] = self.upload.to_json()
        if self.inline:
            doc["inline"] = {d: encode_content(c) for d, c in self.inline.items()}
        return doc

    @classmethod
    def from_json(cls, doc: object, where: str = "assignment") -> Assignment:
        d = require_object(doc, where)
        args = get_field(d, "args", list, where)
        env = get_field(d, "env", dict, where)
        if not all(isinstance(a, str) for a in args):
            raise ProtocolError(f"{where}.args: expected strings")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ProtocolError(f"{where}.env: expected strings")
        outputs = get_field(d, "outputs", list, where)
        if not all(isinstance(o, str) for o in outputs):
            raise ProtocolError(f"{where}.outputs: expected strings")
        inputs = tuple(
            InputFile.from_json(i, f"{where}.inputs[{n}]")
            for n, i in enumerate(get_field(d, "inputs", list, where))
        )
        timeout = get_optional(d, "timeout", NUMBER, where)
        sources_doc = get_field(d, "sources", dict, where)
        sizes = {i.digest: i.size for i in inputs}
        inline: dict[str, bytes] = {}
        for digest, content in (get_optional(d, "inline", dict, where) or {}).items():
            if digest not in sizes:
                raise ProtocolError(f"{where}.inline: {digest!r} is none of the inputs")
            ref = ObjectRef(digest, sizes[digest])
            inline[digest] = decode_content(content, ref, f"{where}.inline[{digest!r}]")
        return cls(
            attempt=get_field(d, "attempt", str, where),
            job=get_field(d, "job", str, where),
            task=get_field(d, "task", str, where),
            number=get_field(d, "number", int, where),
            binary=BinaryRef.from_json(d.get("binary"), f"{where}.binary"),
            args=tuple(args),
            env=dict(env),
            inputs=inputs,
            outputs=tuple(outputs),
            timeout=None if timeout is None else float(timeout),
            sources={
                require_digest(dg, f"{where}.sources"): tuple(
                    Source.from_json(s, f"{where}.sources[{dg!r}]") for s in ss
                )
                for dg, ss in sources_doc.items()
            },
            upload=None
            if d.get("upload") is None
            else Source.from_json(d["upload"], f"{where}.upload"),
            inline=inline,
        )


@dataclass(frozen=True)
class OutputFile:
    """One output an attempt left: already stored at a warehouse, or (``content``, at most
    :data:`INLINE_MOST` bytes) carried in the result for the coordinator to keep."""

    name: str
    digest: str
    size: int
    content: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "digest": self.digest, "size": self.size}
        if self.content is not None:
            doc["content"] = encode_content(self.content)
        return doc

    @classmethod
    def from_json(cls, doc: object, where: str) -> OutputFile:
        d = require_object(doc, where)
        ref = ObjectRef.from_json(d, where)
        content = None
        if d.get("content") is not None:
            content = decode_content(d["content"], ref, f"{where}.content")
        return cls(
            name=get_field(d, "name", str, where), digest=ref.digest, size=ref.size, content=content
        )


def encode_content(content: bytes) -> str:
    return base64.b64encode(content).decode("ascii")


def decode_content(doc: object, ref: ObjectRef, where: str) -> bytes:
    """The bytes of an inline object, checked against its size, digest and the inline limit."""
    if not isinstance(doc, str):
        raise ProtocolError(f"{where}: expected base64 text")
    if ref.size > INLINE_MOST:
        raise ProtocolError(
            f"{where}: only objects of at most {INLINE_MOST} bytes travel inline, not {ref.size}"
        )
    try:
        content = base64.b64decode(doc, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{where}: not valid base64") from None
    if len(content) != ref.size:
        raise ProtocolError(f"{where}: {len(content)} bytes, not the {ref.size} announced")
    if hashlib.sha256(content).hexdigest() != ref.digest:
        raise ProtocolError(f"{where}: the bytes do not hash to {ref.digest}")
    return content


@dataclass(frozen=True)
class AttemptResult:
    """A Work Result: how an attempt ended."""

    attempt: str
    outcome: str  # OUTCOME_SUCCEEDED or OUTCOME_FAILED
    exit_code: int | None = None
    error: str | None = None
    outputs: tuple[OutputFile, ...] = ()
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "error": self.error,
            "outputs": [o.to_json() for o in self.outputs],
            "stdout": self.stdout,
            "stderr": self.stderr,
            "duration": self.duration,
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "result") -> AttemptResult:
        d = require_object(doc, where)
        outcome = get_field(d, "outcome", str, where)
        if outcome not in (OUTCOME_SUCCEEDED, OUTCOME_FAILED):
            raise ProtocolError(
                f"{where}.outcome: must be {OUTCOME_SUCCEEDED!r} or {OUTCOME_FAILED!r}"
            )
        return cls(
            attempt=get_field(d, "attempt", str, where),
            outcome=outcome,
            exit_code=get_optional(d, "exit_code", int, where),
            error=get_optional(d, "error", str, where),
            outputs=tuple(
                OutputFile.from_json(o, f"{where}.outputs[{n}]")
                for n, o in enumerate(get_field(d, "outputs", list, where))
            ),
            stdout=get_field(d, "stdout", str, where)[-LOG_TAIL_BYTES:],
            stderr=get_field(d, "stderr", str, where)[-LOG_TAIL_BYTES:],
            duration=float(get_field(d, "duration", NUMBER, where)),
        )


@dataclass(frozen=True)
class RunningAttempt:
    """One attempt a worker reports in its Work Alive."""

    attempt: str
    state: str = "running"  # or "suspended"

    def to_json(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "state": self.state}

    @classmethod
    def from_json(cls, doc: object, where: str) -> RunningAttempt:
        d = require_object(doc, where)
        state = get_field(d, "state", str, where)
        if state not in ("running", "suspended"):
            raise ProtocolError(f"{where}.state: must be 'running' or 'suspended'")
        return cls(attempt=get_field(d, "attempt", str, where), state=state)


# A transfers report names at most this many peers: a worker talks to a few warehouses, a
# warehouse reports its clients as one; the bound keeps a report's memory small.
MAX_REPORTED_PEERS = 64


def _non_negative(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = get_optional(d, key, kind, where)
    if value is not None and value < 0:
        raise ProtocolError(f"{where}.{key}: must not be negative")
    return value


@dataclass(frozen=True)
class PeerTraffic:
    """What a party's transfers with one peer did since its last report.

    ``busy``: seconds spent with a packet in flight; ``min_rtt``/``avg_rtt``: the packets' delay
    (a download's time to the answer's first byte, an upload's time beyond the best rate seen).
    """

    peer: str
    sent: int = 0
    received: int = 0
    busy: float = 0.0
    packets: int = 0
    min_rtt: float | None = None
    avg_rtt: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "received": self.received,
            "busy": self.busy,
            "packets": self.packets,
            "min_rtt": self.min_rtt,
            "avg_rtt": self.avg_rtt,
        }

    @classmethod
    def from_json(cls, peer: str, doc: object, where: str) -> PeerTraffic:
        d = require_object(doc, where)
        min_rtt = _non_negative(d, "min_rtt", NUMBER, where)
        avg_rtt = _non_negative(d, "avg_rtt", NUMBER, where)
        return cls(
            peer=peer,
            sent=_non_negative(d, "sent", int, where) or 0,
            received=_non_negative(d, "received", int, where) or 0,
            busy=float(_non_negative(d, "busy", NUMBER, where) or 0.0),
            packets=_non_negative(d, "packets", int, where) or 0,
            min_rtt=None if min_rtt is None else float(min_rtt),
            avg_rtt=None if avg_rtt is None else float(avg_rtt),
        )


@dataclass(frozen=True)
class TransfersReport:
    """A party's traffic since its last report (the optional ``transfers`` of WA and heartbeat).

    ``interface_sent``/``interface_received``: what the host's network interfaces carried over
    the same period (loopback excluded), XWCH's traffic and everyone else's: the difference is
    the other traffic sharing the link.
    """

    seconds: float
    peers: tuple[PeerTraffic, ...] = ()
    interface_sent: int | None = None
    interface_received: int | None = None

    def to_json(self) -> dict[str, Any]:
        interface = None
        if self.interface_sent is not None and self.interface_received is not None:
            interface = {"sent": self.interface_sent, "received": self.interface_received}
        return {
            "seconds": self.seconds,
            "peers": {p.peer: p.to_json() for p in self.peers},
            "interface": interface,
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "transfers") -> TransfersReport:
        d = require_object(doc, where)
        seconds = float(get_field(d, "seconds", NUMBER, where))
        if seconds < 0:
            raise ProtocolError(f"{where}.seconds: must not be negative")
        peers_doc = get_optional(d, "peers", dict, where) or {}
        if len(peers_doc) > MAX_REPORTED_PEERS:
            raise ProtocolError(f"{where}.peers: at most {MAX_REPORTED_PEERS} peers")
        peers = tuple(
            PeerTraffic.from_json(str(peer), p, f"{where}.peers[{peer!r}]")
            for peer, p in peers_doc.items()
        )
        interface = get_optional(d, "interface", dict, where)
        sent = received = None
        if interface is not None:
            sent = _non_negative(interface, "sent", int, f"{where}.interface")
            received = _non_negative(interface, "received", int, f"{where}.interface")
        return cls(seconds=seconds, peers=peers, interface_sent=sent, interface_received=received)
