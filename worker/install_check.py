"""Before ``xwch-worker install`` writes anything: does the coordinator answer, and take the
token as a worker's?

An installed worker starts with the session and, refused, would stop where the volunteer does
not look; the mistake is best told while the volunteer is at the command line. One blocking
request (``GET /api/v1/token``), made before any reactor runs: the command does nothing else
meanwhile.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

from xwch.errors import XwchError
from xwch.protocol.wire import API_PREFIX, ROLE_WORKER
from xwch.tls import split_token

CHECK_TIMEOUT = 30.0


class InstallRefused(XwchError):
    """The coordinator cannot be reached, or refuses the token for a worker."""


def check_worker_token(urls: str, token: str, timeout: float = CHECK_TIMEOUT) -> str:
    """The token's name, once a coordinator of ``urls`` (comma-separated, as everywhere) said
    it is a worker's token; raises :class:`InstallRefused` saying what is wrong otherwise.

    A token pinning the platform's certificate (xwch.tls) is sent only to a server showing it.
    """
    secret, pin = split_token(token)
    unreachable = []
    answer: object
    for url in [u for u in urls.split(",") if u]:
        try:
            if pin is not None and url.startswith("https://"):
                answer = _pinned_get(url, secret, pin, timeout)
            else:
                request = urllib.request.Request(
                    f"{url}{API_PREFIX}/token", headers={"Authorization": f"Bearer {secret}"}
                )
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    answer = json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise InstallRefused(_refusal(url, e)) from None
        except (OSError, ValueError) as e:
            unreachable.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        if not isinstance(answer, dict):
            raise InstallRefused(f"{url} answered something else than a coordinator would")
        role = answer.get("role")
        if role != ROLE_WORKER:
            raise InstallRefused(
                f"the token is of role {role!r}: a worker needs a token of role {ROLE_WORKER!r} "
                "(xwch-coordinator token create --role worker)"
            )
        return str(answer.get("name", ""))
    raise InstallRefused(f"no coordinator answers: {'; '.join(unreachable)}")


def _pinned_get(url: str, secret: str, pin: str, timeout: float) -> object:
    """``GET /api/v1/token`` on one connection whose certificate is checked by its fingerprint
    (not by a CA, nor by name) before the token is sent on it."""
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(
        parts.hostname or "", parts.port or 443, timeout=timeout, context=context
    )
    try:
        connection.connect()
        assert isinstance(connection.sock, ssl.SSLSocket)
        found = hashlib.sha256(connection.sock.getpeercert(binary_form=True) or b"").hexdigest()
        if found != pin:
            raise InstallRefused(
                f"{url} shows a certificate (SHA-256 {found}) other than the one the token "
                f"pins ({pin}): no token was sent"
            )
        connection.request(
            "GET", f"{parts.path}{API_PREFIX}/token", headers={"Authorization": f"Bearer {secret}"}
        )
        response = connection.getresponse()
        body = response.read()
        if response.status >= 400:
            raise urllib.error.HTTPError(
                url, response.status, response.reason, response.headers, io.BytesIO(body)
            )
        return json.loads(body)
    finally:
        connection.close()


def _refusal(url: str, error: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(error.read()).get("message") or error.reason
    except (OSError, ValueError, AttributeError):
        message = error.reason
    if error.code in (401, 403):
        return f"the coordinator at {url} refused the token: {message}"
    return f"the coordinator at {url} could not check the token ({error.code}): {message}"
