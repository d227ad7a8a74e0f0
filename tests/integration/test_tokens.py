"""Tokens with real processes: kept out of process listings, revoked within seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.support import CLIENT_TIMEOUT, running_platform, wait_for
from xwch.coordinator.auth import Authenticator
from xwch.localprocess import LocalPlatformProcess

pytestmark = pytest.mark.integration


def coordinator_cli(platform: LocalPlatformProcess, *args: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "xwch.coordinator",
            *args,
            "--data",
            str(platform.home / "coordinator"),
        ],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def client_with_token_file(
    platform: LocalPlatformProcess, token_file: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = platform.env()
    env["XWCH_HOME"] = str(token_file.parent)  # no client.toml there: the file gives it
    env["XWCH_COORDINATOR"] = str(platform.url)
    return subprocess.run(
        [sys.executable, "-m", "xwch.client", "--token-file", str(token_file), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )


def test_tokens_stay_out_of_process_listings_and_a_revoked_one_is_refused(
    tmp_path: Path,
) -> None:
    """xwch-local hands its children their tokens in the environment; a client reads its
    token from a file; once revoked with `token revoke`, the token is refused within seconds
    by the running coordinator, and `token list` no longer shows it."""
    with running_platform(tmp_path / "home", workers=1, slots=1, warehouses=1) as platform:
        for process in platform.descendants:
            command_line = " ".join(process.cmdline())
            assert "--token" not in command_line and "xwch_" not in command_line, command_line
        secret = coordinator_cli(
            platform, "token", "create", "--role", "client", "--name", "to-revoke"
        ).strip()
        token_file = tmp_path / "me" / "token"
        token_file.parent.mkdir()
        token_file.write_text(secret + "\n")
        listed = client_with_token_file(platform, token_file, "list")
        assert listed.returncode == 0, listed.stderr
        [row] = [
            line
            for line in coordinator_cli(platform, "token", "list").splitlines()
            if "to-revoke" in line
        ]
        coordinator_cli(platform, "token", "revoke", row.split()[0])
        assert "to-revoke" not in coordinator_cli(platform, "token", "list")

        def refused() -> subprocess.CompletedProcess[str] | None:
            done = client_with_token_file(platform, token_file, "list")
            return done if done.returncode == 3 else None

        # Bounded by the coordinator's memory of tokens, plus a loaded machine's slack.
        done = wait_for(refused, 30 + Authenticator.REMEMBER, "the revoked token refused")
        assert "refused the credentials" in done.stderr
