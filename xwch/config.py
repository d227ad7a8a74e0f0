"""Where things are found: ``XWCH_HOME``, the coordinator's address and the token.

Order, as docs/cli.md promises: the flags, then ``XWCH_COORDINATOR`` / ``XWCH_TOKEN``, then a TOML
file in ``$XWCH_HOME`` (``client.toml`` for the client, ``worker.toml`` for the worker, which
falls back to ``client.toml`` too).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from xwch.errors import ConfigurationError
from xwch.tls import split_token

DEFAULT_PORT = 8750


def xwch_home() -> Path:
    """``$XWCH_HOME``, default ``~/.xwch``."""
    return Path(os.environ.get("XWCH_HOME") or Path.home() / ".xwch")


def read_toml(path: Path) -> dict[str, object]:
    """A TOML file as a dict; a missing file is empty; a broken one is a clear error."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError) as e:
        raise ConfigurationError(f"{path}: {e}") from None


def write_toml(path: Path, values: Mapping[str, object], mode: int = 0o600) -> None:
    """Write ``values`` as TOML atomically, readable by its owner only (it holds tokens).

    tomli-w escapes what TOML requires (newlines, DEL and the other control characters), so
    whatever is written here :func:`read_toml` reads back as it was; None values are left out.
    """
    try:
        text = tomli_w.dumps({key: v for key, v in values.items() if v is not None})
    except TypeError as e:
        raise TypeError(f"cannot write to TOML: {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Endpoint:
    """A coordinator to talk to, and the token to show it."""

    url: str
    token: str
    # The SHA-256 of the platform's certificate, when the token pins one (see xwch.tls).
    pin: str | None = None


def read_token_file(path: str, origin: str) -> str:
    """The token held in the file ``path`` (its only line); a clear error naming ``origin``
    (the flag or variable that gave the path) when it cannot be read or holds no token."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(64 * 1024)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"{origin} {path}: cannot read the token: {e}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1 or any(c.isspace() for c in lines[0]):
        raise ConfigurationError(f"{origin} {path}: expected the token alone on one line")
    return lines[0]


def resolve_endpoint(
    url_flag: str | None,
    token_flag: str | None,
    files: tuple[str, ...] = ("client.toml",),
    environ: Mapping[str, str] | None = None,
    token_file: str | None = None,
) -> Endpoint:
    """The coordinator's URL and token, by the order of docs/cli.md.

    The token may be given in a file (``--token-file``, ``XWCH_TOKEN_FILE``) or the environment
    rather than on the command line, where any user's process listing shows it.
    """
    env = os.environ if environ is None else environ
    url, token = url_flag, token_flag
    if url is None:
        url = env.get("XWCH_COORDINATOR") or None
    if token is None and token_file is not None:
        token = read_token_file(token_file, "--token-file")
    if token is None:
        token = env.get("XWCH_TOKEN") or None
    if token is None and env.get("XWCH_TOKEN_FILE"):
        token = read_token_file(env["XWCH_TOKEN_FILE"], "XWCH_TOKEN_FILE")
    home = Path(env.get("XWCH_HOME") or Path.home() / ".xwch")
    for name in files:
        if url is not None and token is not None:
            break
        values = read_toml(home / name)
        if url is None and isinstance(values.get("coordinator"), str):
            url = str(values["coordinator"])
        if token is None and isinstance(values.get("token"), str):
            token = str(values["token"])
    if not url:
        raise ConfigurationError(
            "no coordinator: give --coordinator URL, set XWCH_COORDINATOR, "
            f'or write coordinator = "URL" in {home / files[0]}'
        )
    # Several coordinators of one platform: comma-separated, any one that answers is enough.
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise ConfigurationError(f"no coordinator URL in {url!r}")
    for one in urls:
        if not one.startswith(("http://", "https://")):
            raise ConfigurationError(f"coordinator URL must start with http:// or https://: {one}")
    url = ",".join(u.rstrip("/") for u in urls)
    if not token:
        raise ConfigurationError(
            "no token: give --token-file PATH (or --token T), set XWCH_TOKEN or XWCH_TOKEN_FILE, "
            f'or write token = "T" in {home / files[0]}'
        )
    # A token made on a coordinator with --tls ends with its certificate's fingerprint: the
    # secret alone is ever sent, the fingerprint checks whom it is sent to.
    secret, pin = split_token(token)
    return Endpoint(url=url.rstrip("/"), token=secret, pin=pin)
