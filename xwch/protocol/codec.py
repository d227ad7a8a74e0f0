"""One codec for every message on the wire, generated from the messages' own field types.

Every message is a :class:`Message`: a frozen ``msgspec.Struct`` whose annotations say what
each field holds (``Annotated[int, Meta(ge=1)]``, ``Literal[...]``, nested messages). msgspec
builds the decoder of each type once, in C, from those annotations: a body is checked and turned
into typed values in one pass over its bytes, with no ``dict`` in between. Measured by
``bench/protocol_codec.py`` against the hand-written ``from_json``/``to_json`` it replaces (a
Work Request's answer of four assignments and a batch of four Work Results).

A body that does not fit its type raises :class:`ProtocolError` naming the place of the field,
``result.outputs[0].digest: Expected `str` matching regex ...``, so a bad request gets a clear
400 and never a stack trace. Checks that span fields (an inline object's bytes against its
digest) live in a message's ``__post_init__``, whose ``ValueError`` gets the same treatment.
Unknown fields are ignored, so a newer party may add some.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from xwch.errors import XwchError
from xwch.protocol.wire import PROTOCOL_VERSION


class ProtocolError(XwchError):
    """A message does not have the shape its route expects."""


class ProtocolVersionError(ProtocolError):
    """The other party speaks another version of the protocol."""


def check_version(spoken: int, party: str) -> None:
    """Refuse a party that speaks another protocol version, saying what to do about it."""
    if spoken != PROTOCOL_VERSION:
        raise ProtocolVersionError(
            f"this {party} speaks protocol version {spoken} and the coordinator "
            f"{PROTOCOL_VERSION}: run the same XWCH release on both"
        )


class Message(msgspec.Struct, frozen=True):
    """A wire message: typed, immutable, checked when decoded."""

    def to_json(self) -> Any:
        """The message as plain JSON-able values (for a body built around it, or ``--json``)."""
        return msgspec.to_builtins(self)


M = TypeVar("M")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
# "... - at `$.a.b[0]`": msgspec's place of the error, after the message.
_MISSING = re.compile(r"^Object missing required field `([^`]*)`$")
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def encode(message: object) -> bytes:
    """A message (or plain JSON values holding messages) as JSON bytes."""
    return _encoder.encode(message)


def decode(raw: bytes, kind: type[M], where: str) -> M:
    """``raw`` JSON bytes as a ``kind``; :class:`ProtocolError` naming the field otherwise."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        message: M = decoder.decode(raw)
        return message
    except msgspec.ValidationError as e:
        raise _named(e, where) from None
    except msgspec.DecodeError as e:
        raise ProtocolError(f"{where}: not valid JSON ({e})") from None


def decode_body(raw: bytes, kind: type[M]) -> M:
    """A request's body as the route's message (its ``WHERE`` names it in errors)."""
    where = getattr(kind, "WHERE", kind.__name__)
    if not raw:
        raise ProtocolError(f"{where}: expected a JSON object, got an empty body")
    return decode(raw, kind, where)


def convert(doc: object, kind: type[M], where: str) -> M:
    """Already-decoded JSON values as a ``kind``; :class:`ProtocolError` naming the field."""
    try:
        message: M = msgspec.convert(doc, kind)
        return message
    except msgspec.ValidationError as e:
        raise _named(e, where) from None


def _named(error: msgspec.ValidationError, where: str) -> ProtocolError:
    """msgspec's ``Expected `int`, got `str` - at `$.cores``` as ``where.cores: expected ...``."""
    match = _AT.match(str(error))
    assert match is not None  # the pattern matches any text
    message, path = match["message"], match["path"] or ""
    missing = _MISSING.match(message)
    if missing is not None:
        path, message = f"{path}.{missing[1]}", "missing field"
    return ProtocolError(f"{where}{path}: {message[:1].lower()}{message[1:]}")
