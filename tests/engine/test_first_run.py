"""A new operator's first commands, run as subprocesses in an empty folder: `init`, `.env` secrets, `run` reporting
every missing piece at once, `--version`, and the database commands working without a team file."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from bot.admin_socket import AlreadyRunning, InstanceLock
from bot.config import parse_config
from switchboard import data

REPO = Path(__file__).resolve().parents[2]
SECRETS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SWITCHBOARD_CONFIG", "SWITCHBOARD_DB", "SLACK_BOT_TOKEN",
           "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_MODE", "DISCORD_TOKEN")


async def cli(folder: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", *args, cwd=folder,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**clean, "PYTHONPATH": str(REPO), **(env or {})},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate(stdin.encode())
    return proc.returncode or 0, out.decode(), err.decode()


def test_the_shipped_files_are_the_ones_in_the_checkout():
    assert data.read(data.EXAMPLE_TEAM) == (REPO / "switchboard.example.toml").read_text()
    assert data.read(data.SLACK_MANIFEST) == (REPO / "manifest.yml").read_text()
    assert "critic" in data.read(data.EMULATOR_SCRIPTS)


def test_pyproject_declares_the_licence_the_current_way():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"  # an SPDX expression (PEP 639), not the deprecated table
    assert project["license-files"] == ["LICENSE"] and (REPO / "LICENSE").read_text().startswith("MIT License")


async def test_init_writes_the_team_file_and_a_private_env_template_then_keeps_them(tmp_path):
    code, out, err = await cli(tmp_path, "init", "--slack", "--manifest")
    assert code == 0, err
    team = parse_config(tomllib.loads((tmp_path / "switchboard.toml").read_text()), env={})
    assert team.platforms["slack"].enabled and not team.platforms["discord"].enabled
    env_text = (tmp_path / ".env").read_text()
    assert "OPENAI_API_KEY=" in env_text and "SLACK_BOT_TOKEN=" in env_text and "DISCORD_TOKEN" not in env_text
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert (tmp_path / "manifest.yml").read_text() == data.read(data.SLACK_MANIFEST)
    assert "Create New App > From a manifest" in out and "Copy member ID" in out and "switchboard demo" in out
    (tmp_path / ".env").write_text("OPENAI_API_KEY=mine\n")
    code, out, _ = await cli(tmp_path, "init", "--discord")
    assert code == 0 and "kept" in out and (tmp_path / ".env").read_text() == "OPENAI_API_KEY=mine\n"
    code, out, _ = await cli(tmp_path, "init", "--discord", "--force")
    team = parse_config(tomllib.loads((tmp_path / "switchboard.toml").read_text()), env={})
    assert team.platforms["discord"].enabled and not team.platforms["slack"].enabled
    assert "Copy User ID" in out and "invite URL" in out


async def test_init_without_a_terminal_asks_nothing_and_enables_no_platform(tmp_path):
    code, out, err = await cli(tmp_path, "init")
    assert code == 0 and "Next steps" in out, err
    team = parse_config(tomllib.loads((tmp_path / "switchboard.toml").read_text()), env={})
    assert not any(p.enabled for p in team.platforms.values())
    assert "?" not in err  # no question was asked


async def test_run_reports_every_missing_piece_at_once(tmp_path):
    code, _, err = await cli(tmp_path, "run")
    assert code == 2
    assert "team file" in err and "switchboard init" in err and "OPENAI_API_KEY is not set" in err
    await cli(tmp_path, "init", "--slack", "--discord")
    code, _, err = await cli(tmp_path, "run")
    assert code == 2
    for piece in ("OPENAI_API_KEY", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "DISCORD_TOKEN"):
        assert f"{piece} is not set" in err, err
    await cli(tmp_path, "init", "--force")  # no platform this time
    code, _, err = await cli(tmp_path, "run", env={"OPENAI_API_KEY": "k"})
    assert code == 2 and "no platform is enabled" in err and "OPENAI_API_KEY" not in err


async def test_secrets_come_from_the_env_file_and_the_environment_wins(tmp_path):
    await cli(tmp_path, "init", "--slack")
    (tmp_path / ".env").write_text("OPENAI_API_KEY=from-file\nSLACK_BOT_TOKEN=xoxb-1\nSLACK_APP_TOKEN=bad\n")
    code, _, err = await cli(tmp_path, "run")
    assert code == 2 and "OPENAI_API_KEY" not in err and "SLACK_BOT_TOKEN" not in err
    assert "SLACK_APP_TOKEN must be an app-level token" in err  # the file's value was read and checked
    code, _, err = await cli(tmp_path, "run", env={"SLACK_APP_TOKEN": "also-bad-but-mine"})
    assert code == 2 and "SLACK_APP_TOKEN must be an app-level token" in err
    assert "from-file" not in err and "also-bad-but-mine" not in err  # secrets are never echoed


async def test_doctor_without_a_team_file_still_checks_the_key(tmp_path):
    code, out, _ = await cli(tmp_path, "doctor")
    assert code == 1
    assert "[FAIL] team file" in out and "switchboard init" in out and "OPENAI_API_KEY is not set" in out
    assert out.rstrip().endswith("2 problem(s) found.")


async def test_version_flag(tmp_path):
    code, out, _ = await cli(tmp_path, "--version")
    assert code == 0 and out.startswith("switchboard ")


async def test_database_commands_work_after_the_demo_without_a_team_file(tmp_path):
    code, out, err = await cli(tmp_path, "demo", "--token-delay", "0", "--work-seconds", "0", stdin="hello\n")
    assert code == 0, err
    code, out, err = await cli(tmp_path, "status")
    assert code == 0, err
    assert "1 conversation(s) in switchboard-demo.db" in out and "console:demo:default" in out
    assert not (tmp_path / "switchboard.db").exists()  # never the bot's database: `run` must not resume demo turns
    code, out, err = await cli(tmp_path, "reset", "--conversation", "default")  # the short key
    assert code == 0, err
    assert out.startswith("Done")
    code, out, err = await cli(tmp_path, "cancel", "--conversation", "nope")
    assert code == 1 and "no conversation 'nope'" in err
    code, out, err = await cli(tmp_path, "audit")
    assert code == 0, err
    assert "reset console:demo:default -> done" in out and " audit " not in out  # the audit is not in its own list
    code, out, _ = await cli(tmp_path, "audit")
    assert " audit " in out  # but it was recorded
    code, _, err = await cli(tmp_path, "reset", "--all")
    assert code == 1 and "nothing was reset" in err


async def test_an_ambiguous_short_key_is_refused_with_the_candidates(tmp_path):
    from storage.base import InboxMessage
    from storage.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "switchboard.db")
    await store.open()
    for i, conv in enumerate(("slack:T1:C1:17.1", "slack:T1:C2:17.1")):
        await store.add_inbound(InboxMessage(f"e{i}", conv, "slack", conv.rsplit(":", 1)[0], "u", "hi", {}, 0.0))
    await store.close()
    code, _, err = await cli(tmp_path, "cancel", "--conversation", "17.1")
    assert code == 1 and "could be 2 conversations" in err and "slack:T1:C1:17.1" in err
    code, _, err = await cli(tmp_path, "cancel", "--conversation", "C2:17.1")
    assert code == 0, err


def test_the_instance_lock_names_the_holding_pid_and_what_to_do(tmp_path):
    held = InstanceLock(str(tmp_path / "x.db"))
    held.acquire()
    try:
        with pytest.raises(AlreadyRunning) as caught:
            InstanceLock(str(tmp_path / "x.db")).acquire()
    finally:
        held.release()
    assert f"(PID {os.getpid()})" in str(caught.value) and f"kill {os.getpid()}" in str(caught.value)
    assert "SWITCHBOARD_DB" in str(caught.value)


@pytest.mark.parametrize("content", [None, "critic: [unclosed\n", "critic:\n  - colour: red\n", "- just a list\n"])
async def test_emulator_scripts_problems_are_one_line_errors(tmp_path, content):
    path = tmp_path / "scripts.yml"
    if content is not None:
        path.write_text(content)
    code, out, err = await cli(tmp_path, "emulator", "--port", "0", "--scripts", str(path))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"emulator: --scripts {path}: "), err


def test_the_readme_shows_the_terminal_demo_drawn_by_its_script():
    assert "![switchboard demo in a terminal](docs/demo.svg)" in (REPO / "README.md").read_text()
    svg = (REPO / "docs" / "demo.svg").read_text()
    assert svg.startswith("<svg") and "Generated with Rich" in svg  # benchmarks/demo_svg.py wrote it


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 failed"), ("", "skipped")])
def test_a_missing_openapi_description_fails_in_ci_and_skips_elsewhere(tmp_path, ci, outcome):
    import subprocess

    env = {**os.environ, "CI": ci, "SWITCHBOARD_OPENAPI_SPEC": str(tmp_path / "absent.json")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/emulator/test_conformance.py::test_the_openapi_description_is_there"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert outcome in done.stdout, done.stdout


def test_startup_logs_carry_no_library_noise(capsys):
    import logging

    from bot.logs import setup_logging

    setup_logging("INFO")
    try:
        logging.getLogger("discord.client").warning("PyNaCl is not installed, voice will NOT be supported")
        logging.getLogger("slack_bolt.App").warning("As you gave `client` as well, `token` will be unused.")
        logging.getLogger("switchboard.run").warning("something an operator needs")
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "voice" not in err and "`token`" not in err and "something an operator needs" in err


def test_docs_emulator_lists_exactly_the_emulator_flags_the_cli_wires():
    import re as regex

    from switchboard.cli import build_parser

    usage = (REPO / "docs" / "EMULATOR.md").read_text().split("switchboard emulator --port 8765", 1)[1].split("```")[0]
    documented = set(regex.findall(r"--[a-z-]+", usage)) | {"--port"}
    emulator = build_parser()._subparsers._group_actions[0].choices["emulator"]  # type: ignore[union-attr]
    wired = {flag for action in emulator._actions for flag in action.option_strings if flag.startswith("--")}
    assert documented == wired - {"--help"}


def test_the_readmes_say_how_to_find_admin_ids_and_that_http_mode_needs_a_public_https_url():
    readme = " ".join((REPO / "README.md").read_text().split())
    slack = " ".join((REPO / "adapters" / "slack" / "README.md").read_text().split())
    discord = " ".join((REPO / "adapters" / "discord" / "README.md").read_text().split())
    for text in (readme, slack):
        assert "Copy member ID" in text and "public HTTPS URL" in text and "ngrok http 3000" in text
    for text in (readme, discord):
        assert "Copy User ID" in text and "Developer Mode" in text
    assert "invite URL" in discord and "removes the global commands" in discord
