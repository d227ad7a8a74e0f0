"""Asking a warehouse to copy an object from others (the warehouse's ``fetch`` route)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from treq.client import HTTPClient

from xwch.http import decode_error
from xwch.protocol.codec import encode
from xwch.protocol.objects import Source
from xwch.protocol.warehouse import FetchRequest
from xwch.protocol.wire import CAPABILITY_HEADER

# (warehouse URL, digest, size, sources, put capability) -> asks that warehouse to copy it.
CopyRequest = Callable[[str, str, int, Sequence[Source], str], Awaitable[None]]

# The warehouse answers at once (the copy runs in its background): a short timeout suffices.
REQUEST_TIMEOUT = 30.0


def copy_requester(http: HTTPClient) -> CopyRequest:
    """A :data:`CopyRequest` over ``http``."""

    async def request_copy(
        url: str, digest: str, size: int, sources: Sequence[Source], capability: str
    ) -> None:
        headers: dict[bytes | str, list[bytes | str]] = {
            b"content-type": [b"application/json"],
            CAPABILITY_HEADER.encode("ascii"): [capability.encode("ascii")],
        }
        body = encode(FetchRequest(size=size, sources=tuple(sources)))
        response = await http.post(
            f"{url}/objects/{digest}/fetch",
            data=body,
            headers=headers,
            timeout=REQUEST_TIMEOUT,
        )
        if response.code >= 400:
            raise await decode_error(response)
        await response.content()

    return request_copy
