"""Asking a warehouse to delete an object nobody needs any more (a superseded checkpoint)."""

from __future__ import annotations

from treq.client import HTTPClient

from xwch.coordinator.checkpoints import DropRequest
from xwch.http import decode_error
from xwch.protocol.wire import CAPABILITY_HEADER

# The warehouse answers once the file is gone: a short timeout suffices.
REQUEST_TIMEOUT = 30.0


def drop_requester(http: HTTPClient) -> DropRequest:
    """A :data:`DropRequest` over ``http``."""

    async def request_drop(url: str, digest: str, capability: str) -> None:
        headers: dict[bytes | str, list[bytes | str]] = {
            CAPABILITY_HEADER.encode("ascii"): [capability.encode("ascii")],
        }
        response = await http.delete(
            f"{url}/objects/{digest}", headers=headers, timeout=REQUEST_TIMEOUT
        )
        if response.code >= 400:
            raise await decode_error(response)
        await response.content()

    return request_drop
