"""Tokens: listed and revoked from the shell, a revoked one refused within seconds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.coordinator.test_api import ApiHarness
from xwch.coordinator.__main__ import main as coordinator_main
from xwch.coordinator.auth import Authenticator
from xwch.coordinator.token_admin import create_token, revoke_token, token_table
from xwch.errors import ConfigurationError
from xwch.store import tokens
from xwch.store.database import default_url


class RevokedTokenTests(ApiHarness):
    def test_a_revoked_token_is_refused_once_its_memory_runs_out(self) -> None:
        """The coordinator remembers a token it checked for Authenticator.REMEMBER seconds at
        most: after a revocation by another process, the token is refused from then on."""
        code, _, _ = self.call("GET", "/jobs", role="client")
        self.assertEqual(code, 200)
        with self.db.engine.begin() as conn:
            self.assertTrue(tokens.revoke_token_thd(conn, None, self.secrets["client"]))
        self.clock.advance(Authenticator.REMEMBER)
        code, body, _ = self.call("GET", "/jobs", role="client")
        self.assertEqual((code, body["message"]), (401, "unknown token"))
        # The other tokens still work.
        code, _, _ = self.call("GET", "/workers/nobody/alive", role="worker")
        self.assertNotEqual(code, 401)


def test_token_list_shows_ids_roles_and_names_never_secrets(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    secret = create_token(url, "worker", "lab machine")
    table = token_table(url)
    assert "lab machine" in table and "worker" in table
    assert secret not in table


def test_token_revoke_by_id_or_by_token(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    first = create_token(url, "client", "alice")
    create_token(url, "client", "bob")
    revoke_token(url, first)
    [bob_row] = [line for line in token_table(url).splitlines() if "bob" in line]
    assert "alice" not in token_table(url)
    revoke_token(url, bob_row.split()[0])
    assert "bob" not in token_table(url)


@pytest.mark.parametrize(
    ("which", "why"), [("999", "no such token"), ("alice", "neither a token id")]
)
def test_revoking_what_is_no_token_is_a_clear_error(tmp_path: Path, which: str, why: str) -> None:
    url = default_url(tmp_path)
    create_token(url, "client", "alice")
    with pytest.raises(ConfigurationError, match=why):
        revoke_token(url, which)
    assert "alice" in token_table(url)


def test_token_commands_from_the_shell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """create prints the secret alone on a line; list shows it by id; revoke takes the id;
    an unknown id is exit 2 with the reason."""
    data = ["--data", str(tmp_path)]
    coordinator_main(["token", "create", "--role", "metrics", "--name", "prometheus", *data])
    secret = capsys.readouterr().out.strip()
    assert re.fullmatch(r"xwch_metrics_\S+", secret)
    coordinator_main(["token", "list", *data])
    [row] = [line for line in capsys.readouterr().out.splitlines() if "prometheus" in line]
    coordinator_main(["token", "revoke", row.split()[0], *data])
    coordinator_main(["token", "list", *data])
    assert "prometheus" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        coordinator_main(["token", "revoke", row.split()[0], *data])
    assert exited.value.code == 2
    assert "no such token" in capsys.readouterr().err
