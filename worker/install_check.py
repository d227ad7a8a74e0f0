"""Before ``xwch-worker install`` writes anything: does the coordinator answer, and take the
token as a worker's?

An installed worker starts with the session and, refused, would stop where the volunteer does
not look; the mistake is best told while the volunteer is at the command line. One blocking
request (``GET /api/v1/token``), made before any reactor runs: the command does nothing else
meanwhile.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from xwch.errors import XwchError
from xwch.protocol.wire import API_PREFIX, ROLE_WORKER

CHECK_TIMEOUT = 30.0


class InstallRefused(XwchError):
    """The coordinator cannot be reached, or refuses the token for a worker."""


def check_worker_token(urls: str, token: str, timeout: float = CHECK_TIMEOUT) -> str:
    """The token's name, once a coordinator of ``urls`` (comma-separated, as everywhere) said
    it is a worker's token; raises :class:`InstallRefused` saying what is wrong otherwise."""
    unreachable = []
    for url in [u for u in urls.split(",") if u]:
        request = urllib.request.Request(
            f"{url}{API_PREFIX}/token", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise InstallRefused(_refusal(url, e)) from None
        except (OSError, ValueError) as e:
            unreachable.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        role = answer.get("role") if isinstance(answer, dict) else None
        if role != ROLE_WORKER:
            raise InstallRefused(
                f"the token is of role {role!r}: a worker needs a token of role {ROLE_WORKER!r} "
                "(xwch-coordinator token create --role worker)"
            )
        return str(answer.get("name", ""))
    raise InstallRefused(f"no coordinator answers: {'; '.join(unreachable)}")


def _refusal(url: str, error: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(error.read()).get("message") or error.reason
    except (OSError, ValueError, AttributeError):
        message = error.reason
    if error.code in (401, 403):
        return f"the coordinator at {url} refused the token: {message}"
    return f"the coordinator at {url} could not check the token ({error.code}): {message}"
