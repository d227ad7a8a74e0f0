"""Checks for the few bodies that are not messages yet (read field by field).

Every route's body should be a :class:`~xwch.protocol.codec.Message`; these remain for the
free-form answers (the coordinator's status) until they are typed too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from xwch.protocol.codec import ProtocolError
from xwch.protocol.wire import DIGEST_PATTERN

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
