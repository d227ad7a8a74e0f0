"""Where the coordinator and the token are found: flags, then environment, then client.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from xwch.config import Endpoint, resolve_endpoint
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
