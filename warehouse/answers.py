"""How the warehouse answers: JSON bodies, and errors shaped as docs/protocol.md says.

A route refuses by raising :class:`Refusal`; :func:`refusing` (synchronous renders) and
:class:`Responder` (answers sent later) turn it into ``{"error", "message", ...}`` with its
status, and a ``Retry-After`` header when the client should come back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure
from twisted.web.error import UnsupportedMethod
from twisted.web.resource import Resource
from twisted.web.server import Request

from xwch.protocol.codec import encode


class Refusal(Exception):
    """An error answer: status, code and message, as docs/protocol.md shapes them."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: float | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.extra = extra


def json_body(request: Request, status: int, doc: object) -> bytes:
    """Set the status and content type; the body to return."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return encode(doc)


def refusal_body(request: Request, refusal: Refusal) -> bytes:
    """Set up the error answer; the body to return."""
    doc: dict[str, object] = {"error": refusal.code, "message": refusal.message}
    doc.update(refusal.extra)
    if refusal.retry_after is not None:
        doc["retry_after"] = refusal.retry_after
        # Whole seconds on the header (HTTP says so), never 0, which would invite a hot loop.
        seconds = max(1, math.ceil(refusal.retry_after))
        request.setHeader(b"retry-after", str(seconds).encode("ascii"))
    return json_body(request, refusal.status, doc)


def header_text(request: Request, name: str) -> str | None:
    """A request header as text; a header that is not ASCII is a 400."""
    value = request.getHeader(name.encode("ascii"))
    if value is None:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise Refusal(400, "bad_request", f"{name}: not ASCII") from None


class Responder:
    """Answers a request later, unless its client has gone in the meantime."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self._gone = False
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, reason: Failure) -> None:
        self._gone = True

    def send(self, body: bytes) -> None:
        if self._gone:
            return
        self._request.setHeader(b"content-length", str(len(body)).encode("ascii"))
        self._request.write(body)
        self._request.finish()


class JsonResource(Resource):
    """A resource whose every answer, even to a method it lacks, is JSON."""

    def render(self, request: Request) -> bytes | int:
        try:
            result: bytes | int = super().render(request)
        except UnsupportedMethod as e:
            allowed = b", ".join(e.allowedMethods)
            request.setHeader(b"allow", allowed)
            refusal = Refusal(
                405,
                "method_not_allowed",
                f"{request.method.decode('ascii', 'replace')} is not allowed here; "
                f"try {allowed.decode('ascii')}",
            )
            return refusal_body(request, refusal)
        return result


def refusing(
    render: Callable[[Any, Request], bytes | int],
) -> Callable[[Any, Request], bytes | int]:
    """Turn a :class:`Refusal` raised by a synchronous render into its error answer."""

    def wrapper(self: Any, request: Request) -> bytes | int:
        try:
            return render(self, request)
        except Refusal as refusal:
            return refusal_body(request, refusal)

    return wrapper


class NotFound(Resource):
    """Any path below here: 404 in JSON."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return refusal_body(request, Refusal(404, "not_found", "no such route"))
