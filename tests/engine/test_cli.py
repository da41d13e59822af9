"""The command line, driven as a user would: piped chat and demo, status, clear errors, --help everywhere."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from switchboard.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


async def run_cli(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", *args, cwd=REPO,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate(stdin.encode())
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("backend", ["responses", "chat"])
async def test_demo_with_piped_input_answers_each_line_on_stdout(tmp_path, backend):
    code, out, err = await run_cli("demo", "--token-delay", "0", "--work-seconds", "0", "--db", str(tmp_path / "d.db"),
                                   "--backend", backend,
                                   stdin="ask the researcher and the critic\nhello\n")
    assert code == 0, err
    assert "- researcher: researcher: done with" in out
    assert "- critic: critic: done with" in out
    assert out.rstrip().endswith("You said: hello")
    assert "asking researcher" in err and "researcher finished" in err  # progress goes to stderr


async def test_chat_against_an_emulator_and_status_afterwards(tmp_path):
    from emulator import run_emulator

    team = tmp_path / "team.toml"
    team.write_text((REPO / "switchboard.example.toml").read_text())
    env = {"SWITCHBOARD_CONFIG": str(team), "SWITCHBOARD_DB": str(tmp_path / "chat.db"), "OPENAI_API_KEY": "k"}
    async with run_emulator() as emu:
        env["OPENAI_BASE_URL"] = emu.base_url
        code, out, err = await run_cli("chat", stdin="first\n\n   \nsecond\n", env=env)
        assert code == 0, err
        assert out.splitlines() == ["You said: first", "", "You said: second"]  # a blank line between answers
        code, out, _ = await run_cli("status", env=env)
    assert code == 0
    assert "1 conversation(s)" in out and "console:local:default" in out and "idle" in out
    assert "tokens (input (cached) + output), 2 run(s):" in out and "  by assistant:\n    proxy: " in out


async def test_bad_config_is_a_clear_error_with_exit_code_2(tmp_path):
    team = tmp_path / "team.toml"
    team.write_text('[proxy]\ninstructions = ""\n')
    code, _, err = await run_cli("chat", "--config", str(team), stdin="hi\n")
    assert code == 2
    assert "proxy.instructions" in err


@pytest.mark.parametrize("command", ["run", "chat", "demo", "status", "emulator"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: switchboard" in capsys.readouterr().out


async def test_chat_tells_the_user_when_the_daily_token_budget_is_spent(tmp_path):
    from emulator import run_emulator

    team = tmp_path / "team.toml"
    example = (REPO / "switchboard.example.toml").read_text()
    team.write_text(example.replace("[budgets]\n", "[budgets]\nuser_tokens_per_day = 1\n"))
    env = {"SWITCHBOARD_CONFIG": str(team), "SWITCHBOARD_DB": str(tmp_path / "chat.db"), "OPENAI_API_KEY": "k"}
    async with run_emulator() as emu:
        env["OPENAI_BASE_URL"] = emu.base_url
        code, out, err = await run_cli("chat", stdin="first\nsecond\n", env=env)
        assert code == 0, err
        assert out.splitlines() == ["You said: first"]  # the first turn spends the budget; the second starts no run
        assert "[not sent] Sorry, you have used today's token budget; it resets at 00:00 UTC" in err
        assert len([r for r in emu.responses.values() if r.agent == "proxy"]) == 1
        code, out, _ = await run_cli("usage", env=env)
    assert code == 0 and "user:console:" in out and "budget 1 tokens" in out
