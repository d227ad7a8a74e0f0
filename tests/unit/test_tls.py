"""The platform's certificate, and tokens that pin it."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from xwch.config import resolve_endpoint
from xwch.coordinator.__main__ import main as coordinator_main
from xwch.errors import ConfigurationError
from xwch.tls import (
    TLS_FOLDER,
    fingerprint,
    make_self_signed,
    pinned_token,
    split_token,
    tls_files,
)

PIN = "0f" * 32


def test_the_certificate_is_made_once_its_key_owner_only(tmp_path: Path) -> None:
    files = make_self_signed(tmp_path)
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    first = fingerprint(files)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert fingerprint(make_self_signed(tmp_path)) == first


def test_a_pinned_token_is_split_into_the_secret_sent_and_the_pin() -> None:
    assert split_token(pinned_token("xwch_client_abc", PIN)) == ("xwch_client_abc", PIN)
    assert split_token("xwch_client_abc") == ("xwch_client_abc", None)
    # Not a fingerprint after the last dot: the whole is the token.
    assert split_token("xwch_client_a.b") == ("xwch_client_a.b", None)


def test_the_endpoint_sends_the_secret_and_keeps_the_pin(tmp_path: Path) -> None:
    env = {"XWCH_HOME": str(tmp_path)}
    endpoint = resolve_endpoint("https://c:1", pinned_token("xwch_worker_s", PIN), environ=env)
    assert (endpoint.token, endpoint.pin) == ("xwch_worker_s", PIN)


@pytest.mark.parametrize(
    ("cert", "key", "why"),
    [("c.pem", None, "go together"), ("missing.pem", "missing.key", "missing.pem")],
)
def test_bad_certificate_flags_are_clear_errors(
    tmp_path: Path, cert: str | None, key: str | None, why: str
) -> None:
    with pytest.raises(ConfigurationError, match=why):
        tls_files(
            True,
            None if cert is None else str(tmp_path / cert),
            None if key is None else str(tmp_path / key),
            None,
        )


def test_tls_without_a_certificate_to_make_asks_for_one() -> None:
    with pytest.raises(ConfigurationError, match="--tls needs --cert and --key"):
        tls_files(True, None, None, None)
    assert tls_files(False, None, None, None) is None


def test_token_create_on_a_tls_coordinator_pins_its_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data", str(tmp_path)]
    coordinator_main(["token", "create", "--role", "worker", *data])
    plain = capsys.readouterr().out.strip()
    assert split_token(plain)[1] is None
    files = make_self_signed(tmp_path / TLS_FOLDER)
    coordinator_main(["token", "create", "--role", "worker", *data])
    assert split_token(capsys.readouterr().out.strip())[1] == fingerprint(files)
