"""Warehouse capabilities: the coordinator's signed permission to read or write one object.

A warehouse accepts a write or serves a read only with a capability. The coordinator signs
``{"op", "digest", "wh", "exp"}`` with HMAC-SHA256 under a key it hands each warehouse when it
registers, so a warehouse checks a capability without asking the coordinator.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

from xwch.errors import CapabilityError

OP_GET = "get"
OP_PUT = "put"
# Deleting an object: the coordinator drops checkpoints nobody needs any more.
OP_DELETE = "delete"
# In place of a digest in a put capability: any object may be stored. A worker gets one with each
# assignment for its outputs, so small outputs go straight to its warehouse without a round trip
# to the coordinator for a capability per digest. It grants no more than a worker could already
# ask for; reads are never granted this way.
ANY_OBJECT = "*"

# Long enough for a slow transfer of a big object; short enough that a leaked one soon dies.
DEFAULT_LIFETIME = 6 * 3600.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Capability:
    op: str
    digest: str
    warehouse: str
    expires: float


def issue(key: bytes, op: str, digest: str, warehouse: str, expires: float) -> str:
    """A capability string allowing ``op`` on ``digest`` at ``warehouse`` until ``expires``."""
    payload = json.dumps(
        {"op": op, "digest": digest, "wh": warehouse, "exp": expires},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    body = _b64(payload)
    signature = hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}"


def verify(key: bytes, token: str | None, op: str, digest: str, warehouse: str, now: float) -> None:
    """Raise :class:`CapabilityError` unless ``token`` allows ``op`` on ``digest`` here, now."""
    if not token:
        raise CapabilityError("no capability: ask the coordinator for one")
    try:
        body, signature = token.split(".", 1)
        expected = hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            raise CapabilityError("capability signature does not match")
        claims = json.loads(_unb64(body))
    except CapabilityError:
        raise
    except (ValueError, UnicodeError) as e:
        raise CapabilityError(f"malformed capability: {e}") from None
    if claims.get("op") != op:
        raise CapabilityError(f"capability is for {claims.get('op')!r}, not {op!r}")
    if claims.get("digest") != digest and not (op == OP_PUT and claims.get("digest") == ANY_OBJECT):
        raise CapabilityError("capability is for another object")
    if claims.get("wh") != warehouse:
        raise CapabilityError("capability is for another warehouse")
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < now:
        raise CapabilityError("capability has expired")
