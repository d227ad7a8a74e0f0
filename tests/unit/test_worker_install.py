"""``xwch-worker install`` and ``uninstall`` under a temporary HOME, systemd never called."""

from __future__ import annotations

import os
import plistlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.fakes.token_check import token_check_server
from xwch.config import read_toml
from xwch.worker.__main__ import main
from xwch.worker.install import UNIT_NAME, Setup, install, uninstall
from xwch.worker.preferences import load_preferences

REPO = Path(__file__).resolve().parents[2]


class FakeRunner:
    """Records the commands given to the service manager; answers each with ``status``."""

    def __init__(self, status: int = 0) -> None:
        self.commands: list[list[str]] = []
        self.status = status

    def __call__(self, command: Sequence[str]) -> int:
        self.commands.append(list(command))
        return self.status


def setup_for(tmp_path: Path, platform: str = "linux", **environ: str) -> Setup:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return Setup(
        home=home,
        xwch_home=home / ".xwch",
        platform=platform,
        python="/opt/xwch venv/bin/python",
        environ=environ,
    )


def test_install_writes_the_configuration_and_a_user_unit(tmp_path: Path) -> None:
    """Install writes worker.toml (owner-only) and a systemd user unit that runs the worker."""
    setup = setup_for(tmp_path, XWCH_NO_SYSTEMCTL="1", USER="ada")
    runner = FakeRunner()
    said = install(
        setup,
        {"coordinator": "http://coord:8750", "token": "T0K3N", "idle_minutes": 5},
        runner,
    )
    assert read_toml(setup.config) == {
        "coordinator": "http://coord:8750",
        "token": "T0K3N",
        "idle_minutes": 5,
    }
    assert setup.config.stat().st_mode & 0o777 == 0o600
    unit = (setup.home / ".config" / "systemd" / "user" / UNIT_NAME).read_text()
    assert 'ExecStart="/opt/xwch venv/bin/python" -m xwch.worker run' in unit
    assert f"Environment=XWCH_HOME={setup.xwch_home}" in unit
    assert "WantedBy=default.target" in unit
    assert "Restart=on-failure" in unit
    # Not enabled here: the volunteer is told what to run.
    assert runner.commands == []
    assert (
        "to start it now and with each session, run: systemctl --user daemon-reload && "
        "systemctl --user enable --now xwch-worker.service"
    ) in said
    assert "loginctl enable-linger ada" in said[-1]


def test_install_enables_the_unit_where_a_user_bus_answers(tmp_path: Path) -> None:
    """With systemctl and a user bus, install reloads systemd and enables the unit now."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    (runtime / "bus").touch()
    setup = setup_for(tmp_path, XDG_RUNTIME_DIR=str(runtime))
    runner = FakeRunner()
    if not setup.service_manager_usable():
        pytest.skip("no systemctl on this machine")
    said = install(setup, {"coordinator": "http://c", "token": "t"}, runner)
    assert runner.commands == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", UNIT_NAME],
    ]
    assert "the worker is running, and will start with each session" in said


def test_a_failing_systemctl_is_reported_with_the_commands(tmp_path: Path) -> None:
    """When systemctl fails the volunteer is told which command failed and what to run."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    (runtime / "bus").touch()
    setup = setup_for(tmp_path, XDG_RUNTIME_DIR=str(runtime))
    if not setup.service_manager_usable():
        pytest.skip("no systemctl on this machine")
    said = install(setup, {"coordinator": "http://c", "token": "t"}, FakeRunner(status=1))
    assert any(line.startswith("`systemctl --user daemon-reload` failed") for line in said)


def test_reinstalling_keeps_earlier_preferences(tmp_path: Path) -> None:
    """Installing again with new flags changes those, and keeps the other preferences."""
    setup = setup_for(tmp_path, XWCH_NO_SYSTEMCTL="1")
    install(setup, {"coordinator": "http://c", "token": "t", "idle_minutes": 5}, FakeRunner())
    install(setup, {"coordinator": "http://c", "token": "t2", "hours": "22-7"}, FakeRunner())
    assert read_toml(setup.config) == {
        "coordinator": "http://c",
        "token": "t2",
        "idle_minutes": 5,
        "hours": "22-7",
    }


def test_uninstall_removes_everything(tmp_path: Path) -> None:
    """Uninstall removes the unit, the configuration and the worker's data."""
    setup = setup_for(tmp_path, XWCH_NO_SYSTEMCTL="1")
    install(setup, {"coordinator": "http://c", "token": "t"}, FakeRunner())
    data = setup.xwch_home / "worker" / "cache" / "bundles" / "x"
    data.mkdir(parents=True)
    data.chmod(0o555)
    (setup.xwch_home / "client.toml").write_text('token = "client"\n')
    runner = FakeRunner()
    said = uninstall(setup, runner)
    assert not setup.unit_path.exists()
    assert not setup.config.exists()
    assert not (setup.xwch_home / "worker").exists()
    # The client's configuration is not the worker's to remove.
    assert (setup.xwch_home / "client.toml").exists()
    assert f"removed {setup.unit_path}" in said
    assert runner.commands == []
    assert uninstall(setup, runner) == ["nothing to remove: the worker is not installed here"]


def test_install_on_macos_writes_a_launchd_agent(tmp_path: Path) -> None:
    """On macOS install writes a launch agent that starts at login and restarts on failure."""
    setup = setup_for(tmp_path, platform="darwin", XWCH_NO_SYSTEMCTL="1")
    said = install(setup, {"coordinator": "http://c", "token": "t"}, FakeRunner())
    plist = plistlib.loads(setup.plist_path.read_bytes())
    assert plist["ProgramArguments"] == ["/opt/xwch venv/bin/python", "-m", "xwch.worker", "run"]
    assert plist["RunAtLoad"] is True
    assert plist["EnvironmentVariables"] == {"XWCH_HOME": str(setup.xwch_home)}
    assert f"run: launchctl load -w {setup.plist_path}" in said[-1]
    uninstall(setup, FakeRunner())
    assert not setup.plist_path.exists()


def test_install_elsewhere_says_how_to_run_it(tmp_path: Path) -> None:
    """Without a supported service manager, install says how to start the worker by hand."""
    setup = setup_for(tmp_path, platform="freebsd14")
    said = install(setup, {"coordinator": "http://c", "token": "t"}, FakeRunner())
    assert said[-1].startswith("no service manager support on freebsd14: start the worker with")
    assert setup.config.exists()


def test_install_command_takes_preferences_as_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``xwch-worker install --coordinator URL --token T --max-cpus 50% ...`` for this user."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XWCH_HOME", str(tmp_path / "xwch"))
    monkeypatch.setenv("XWCH_NO_SYSTEMCTL", "1")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    with token_check_server({"T": "worker"}) as url:
        main(
            [
                "install",
                "--coordinator",
                url,
                "--token",
                "T",
                "--max-cpus",
                "50%",
                "--idle-minutes",
                "5",
                "--download-rate",
                "2M",
                "--hours",
                "22:00-07:00",
                "--suspend-on-battery",
                "yes",
            ]
        )
        config = tmp_path / "xwch" / "worker.toml"
        assert read_toml(config) == {
            "coordinator": url,
            "token": "T",
            "max_cpus": "50%",
            "idle_minutes": 5,
            "suspend_on_battery": True,
            "download_rate": "2M",
            "hours": "22:00-07:00",
        }
        assert load_preferences(config).download_rate == 2 << 20
        unit = tmp_path / ".config" / "systemd" / "user" / UNIT_NAME
        assert unit.exists()
        assert f"wrote {unit}" in capsys.readouterr().out
        main(["uninstall"])
        assert not unit.exists() and not config.exists()


def test_install_checks_the_coordinator_and_the_token_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown token, a token of another role, or no coordinator answering: exit 3 with
    the reason, and nothing written."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XWCH_HOME", str(tmp_path / "xwch"))
    monkeypatch.setenv("XWCH_NO_SYSTEMCTL", "1")
    with token_check_server({"W": "worker", "C": "client"}) as url:
        for token, why in (
            ("unknown", "refused the token: unknown token"),
            ("C", "the token is of role 'client': a worker needs a token of role 'worker'"),
        ):
            with pytest.raises(SystemExit) as exit:
                main(["install", "--coordinator", url, "--token", token])
            assert exit.value.code == 3
            assert why in capsys.readouterr().err
    # The server has stopped: its port answers no more.
    with pytest.raises(SystemExit) as exit:
        main(["install", "--coordinator", url, "--token", "W"])
    assert exit.value.code == 3
    assert "no coordinator answers" in capsys.readouterr().err
    assert not (tmp_path / "xwch").exists()
    assert not (tmp_path / ".config").exists()


def test_install_command_refuses_a_bad_preference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong preference flag exits 2 naming it, and installs nothing."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XWCH_HOME", str(tmp_path / "xwch"))
    with pytest.raises(SystemExit) as exit:
        main(["install", "--coordinator", "http://c", "--token", "T", "--max-cpus", "200%"])
    assert exit.value.code == 2
    assert "--max-cpus: must be between 0 and 100" in capsys.readouterr().err
    assert not (tmp_path / "xwch").exists()


def test_installer_script_is_valid_shell() -> None:
    """The one-line installer parses as POSIX shell and runs ``xwch-worker install``."""
    script = REPO / "install-worker.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    text = script.read_text()
    assert 'xwch-worker" install' in text or "xwch-worker install" in text
    assert os.access(script, os.X_OK)


def test_install_writes_the_trusted_keys_and_refuses_a_malformed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--trust KEY goes to worker.toml as trusted_keys; a key of another type is exit 2."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from xwch.signing import format_public_key

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XWCH_HOME", str(tmp_path / "xwch"))
    monkeypatch.setenv("XWCH_NO_SYSTEMCTL", "1")
    key = format_public_key(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(SystemExit) as exit:
        main(["install", "--coordinator", "http://c", "--token", "T", "--trust", "rsa:AAAA"])
    assert exit.value.code == 2
    assert "--trust: key of the wrong type 'rsa'" in capsys.readouterr().err
    with token_check_server({"T": "worker"}) as url:
        main(["install", "--coordinator", url, "--token", "T", "--trust", key])
    assert read_toml(tmp_path / "xwch" / "worker.toml")["trusted_keys"] == [key]
    main(["uninstall"])


def test_install_with_a_pinned_token_sends_it_only_to_the_pinned_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Facing another certificate, install sends no token and writes nothing; facing the
    pinned one, the token (its secret alone) reaches the server."""
    from tests.fakes.recording_https import recording_https_server
    from xwch.tls import pinned_token

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XWCH_HOME", str(tmp_path / "xwch"))
    with recording_https_server(tmp_path / "cert") as server:
        wrong = pinned_token("xwch_worker_s", "cd" * 32)
        with pytest.raises(SystemExit) as exit:
            main(["install", "--coordinator", server.url, "--token", wrong])
        assert exit.value.code == 3
        assert "other than the one the token pins" in capsys.readouterr().err
        assert server.requests == []
        right = pinned_token("xwch_worker_s", server.fingerprint)
        with pytest.raises(SystemExit):
            main(["install", "--coordinator", server.url, "--token", right])
        assert server.requests == [("GET", "/api/v1/token", "Bearer xwch_worker_s")]
    assert not (tmp_path / "xwch").exists()
