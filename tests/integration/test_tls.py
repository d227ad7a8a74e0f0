"""Encrypted links with real processes: a platform over HTTPS whose tokens pin its certificate,
and parts that stop, sending no token, when they face another certificate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.recording_https import recording_https_server
from tests.integration.support import CLIENT_TIMEOUT, client, job_file, running_platform, script
from xwch.tls import pinned_token

pytestmark = pytest.mark.integration

SECRET = "xwch_worker_secret-that-must-not-leak"
OTHER_PIN = "ab" * 32


def run_part(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", *argv],
        env={"XWCH_HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )


def test_a_platform_over_tls_runs_a_job(tmp_path: Path) -> None:
    """xwch-local --tls: the coordinator and the warehouses serve HTTPS, client.toml holds a
    token pinning the certificate, and a job with an input file runs to its results."""
    program = script(tmp_path, "count.sh", "wc -c < in.bin > out.txt\n")
    (tmp_path / "in.bin").write_bytes(b"x" * 300_000)
    job = job_file(
        tmp_path,
        {
            "name": "over-tls",
            "binaries": {"count": str(program)},
            "files": {"data": str(tmp_path / "in.bin")},
            "tasks": [
                {"id": "t", "binary": "count", "inputs": {"in.bin": "data"}, "outputs": ["out.txt"]}
            ],
        },
    )
    home = tmp_path / "home"
    with running_platform(home, workers=1, slots=1, warehouses=1, extra=["--tls"]) as platform:
        assert str(platform.url).startswith("https://")
        state = platform.state()
        urls = [p["url"] for p in [*state["coordinators"], *state["warehouses"]]]
        assert all(url.startswith("https://") for url in urls), urls
        done = client(platform, "submit", "--wait", str(job), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "over-tls-results" / "t" / "out.txt").read_text().strip() == "300000"


def test_the_recording_server_sees_a_token_pinned_to_it(tmp_path: Path) -> None:
    """The control of the tests below: pinned to the server's own certificate, the client
    does send its token, and the server records it."""
    with recording_https_server(tmp_path / "cert") as server:
        token = pinned_token(SECRET, server.fingerprint)
        done = run_part(
            tmp_path / "home", "xwch.client", "--coordinator", server.url, "--token", token, "list"
        )
        assert done.returncode == 3, done.stderr
        assert ("GET", "/api/v1/jobs", f"Bearer {SECRET}") in server.requests


@pytest.mark.parametrize(
    "argv",
    [
        ["xwch.client", "list"],
        ["xwch.worker", "--slots", "1"],
        ["xwch.warehouse", "--listen", "tcp:0:interface=127.0.0.1"],
    ],
    ids=["client", "worker", "warehouse"],
)
def test_a_part_facing_another_certificate_stops_and_sends_no_token(
    tmp_path: Path, argv: list[str]
) -> None:
    with recording_https_server(tmp_path / "cert") as server:
        token = pinned_token(SECRET, OTHER_PIN)
        home = tmp_path / "home"
        done = run_part(
            home,
            *argv[:1],
            "--coordinator",
            server.url,
            "--token",
            token,
            *argv[1:],
            *(["--data", str(home / "data")] if argv[0] != "xwch.client" else []),
        )
        assert done.returncode == 3, (done.stdout, done.stderr)
        assert f"shows a certificate (SHA-256 {server.fingerprint})" in done.stderr
        assert f"other than the one the token pins ({OTHER_PIN})" in done.stderr
        assert server.requests == []
        assert SECRET not in json.dumps(server.requests)
