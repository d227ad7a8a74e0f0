"""Where the coordinator and the token are found: flags, then environment, then client.toml."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from xwch.config import Endpoint, read_toml, resolve_endpoint, write_toml
from xwch.errors import ConfigurationError


def write_client_toml(home: Path, url: str = "http://toml:1", token: str = "toml-token") -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "client.toml").write_text(f'coordinator = "{url}"\ntoken = "{token}"\n')


def test_flags_beat_environment_and_file(tmp_path: Path) -> None:
    """--coordinator/--token win over XWCH_COORDINATOR/XWCH_TOKEN and client.toml."""
    write_client_toml(tmp_path)
    env = {"XWCH_HOME": str(tmp_path), "XWCH_COORDINATOR": "http://env:1", "XWCH_TOKEN": "env"}
    assert resolve_endpoint("http://flag:1", "flag", environ=env) == Endpoint(
        "http://flag:1", "flag"
    )


def test_environment_beats_file(tmp_path: Path) -> None:
    """XWCH_COORDINATOR/XWCH_TOKEN win over client.toml."""
    write_client_toml(tmp_path)
    env = {"XWCH_HOME": str(tmp_path), "XWCH_COORDINATOR": "http://env:1", "XWCH_TOKEN": "env"}
    assert resolve_endpoint(None, None, environ=env) == Endpoint("http://env:1", "env")


def test_file_is_the_last_resort(tmp_path: Path) -> None:
    """$XWCH_HOME/client.toml is used when no flag or variable says otherwise."""
    write_client_toml(tmp_path)
    assert resolve_endpoint(None, None, environ={"XWCH_HOME": str(tmp_path)}) == Endpoint(
        "http://toml:1", "toml-token"
    )


def test_each_value_is_resolved_on_its_own(tmp_path: Path) -> None:
    """A flag for the URL and the token from the file combine."""
    write_client_toml(tmp_path)
    env = {"XWCH_HOME": str(tmp_path)}
    assert resolve_endpoint("http://flag:1/", None, environ=env) == Endpoint(
        "http://flag:1", "toml-token"
    )


def test_missing_coordinator_says_how_to_give_one(tmp_path: Path) -> None:
    """With nothing configured, the error names the flag, the variable and the file."""
    with pytest.raises(ConfigurationError) as caught:
        resolve_endpoint(None, "t", environ={"XWCH_HOME": str(tmp_path)})
    message = str(caught.value)
    assert "--coordinator" in message and "XWCH_COORDINATOR" in message
    assert str(tmp_path / "client.toml") in message


def test_missing_token_is_an_error(tmp_path: Path) -> None:
    """A coordinator without a token is refused before any request."""
    with pytest.raises(ConfigurationError, match="no token"):
        resolve_endpoint("http://x:1", None, environ={"XWCH_HOME": str(tmp_path)})


def test_url_must_be_http(tmp_path: Path) -> None:
    """A coordinator address that is not an http(s) URL is refused."""
    with pytest.raises(ConfigurationError, match="http://"):
        resolve_endpoint("coordinator:8750", "t", environ={"XWCH_HOME": str(tmp_path)})


def test_broken_client_toml_is_a_clear_error(tmp_path: Path) -> None:
    """A client.toml that is not TOML is reported with its path."""
    (tmp_path / "client.toml").write_text("coordinator = \n")
    with pytest.raises(ConfigurationError, match=r"client\.toml"):
        resolve_endpoint(None, None, environ={"XWCH_HOME": str(tmp_path)})


@pytest.mark.parametrize(
    "value",
    [
        "line one\nline two",
        "del \x7f here",
        'quote " and backslash \\ and tab \t',
        "control \x01 \x1f",
        "unicode é ✓",
    ],
)
def test_write_toml_writes_what_read_toml_reads_back(tmp_path: Path, value: str) -> None:
    """Any string written (a newline, DEL, a control character) is read back unchanged."""
    path = tmp_path / "worker.toml"
    write_toml(path, {"name": value, "slots": 3, "nothing": None, "keys": ["a", "b"]})
    assert read_toml(path) == {"name": value, "slots": 3, "keys": ["a", "b"]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_toml_refuses_what_toml_cannot_hold_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    write_toml(path, {"name": "before"})
    with pytest.raises(TypeError, match="cannot write to TOML"):
        write_toml(path, {"name": object()})
    assert read_toml(path) == {"name": "before"}


def test_the_token_may_come_from_a_file(tmp_path: Path) -> None:
    """--token-file, then XWCH_TOKEN, then XWCH_TOKEN_FILE: none of them shows in `ps`."""
    path = tmp_path / "token"
    path.write_text("xwch_client_secret\n")
    env = {"XWCH_HOME": str(tmp_path), "XWCH_COORDINATOR": "http://c:1"}
    assert resolve_endpoint(None, None, environ=env, token_file=str(path)).token == (
        "xwch_client_secret"
    )
    from_env = {**env, "XWCH_TOKEN_FILE": str(path)}
    assert resolve_endpoint(None, None, environ=from_env).token == "xwch_client_secret"
    both = {**from_env, "XWCH_TOKEN": "from-variable"}
    assert resolve_endpoint(None, None, environ=both).token == "from-variable"


@pytest.mark.parametrize(
    ("content", "why"),
    [(None, "cannot read the token"), ("", "alone on one line"), ("a\nb\n", "alone on one line")],
)
def test_a_token_file_that_holds_no_token_is_a_clear_error(
    tmp_path: Path, content: str | None, why: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    env = {"XWCH_HOME": str(tmp_path), "XWCH_COORDINATOR": "http://c:1"}
    with pytest.raises(ConfigurationError, match=f"--token-file {path}: .*{why}"):
        resolve_endpoint(None, None, environ=env, token_file=str(path))
