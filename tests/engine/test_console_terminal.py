"""The terminal chat as a user meets it: answers stream under the progress lines, progress in words, piped output
that scripts can split (blank lines or `--jsonl`) with a non-zero exit when a turn failed, an unreachable provider
reported at once, and Ctrl-C at the prompt and mid-turn in a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
import time
from pathlib import Path

import openai
import pytest
from rich.console import Console

from adapters.console import ConsoleSurface
from bot.backends.base import Transient
from bot.backends.openai_errors import translate
from bot.types import Delegated, Retrying, Started, TextDelta, TurnRef
from emulator import Rule, Script, run_emulator
from tests.engine.harness import inbound, running_bot, team
from tests.engine.test_first_run import cli
from tests.pty_session import PtySession

REPO = Path(__file__).resolve().parents[2]
TURN = TurnRef(id="t1", conversation="console:local:default", channel="console:local", platform="console", route={})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_answers_stream_below_the_progress_lines():
    surface = ConsoleSurface(out=io.StringIO(), err=io.StringIO(), live=True)
    await surface.progress(TURN, Started())
    await surface.progress(TURN, Delegated("researcher", "look it up", "call-1"))
    for word in ("The ", "answer ", "so ", "far"):
        await surface.progress(TURN, TextDelta(word))
    assert surface._live is not None
    screen = Console(file=io.StringIO(), width=80, record=True)
    screen.print(surface._live.renderable)
    rows = screen.export_text().splitlines()
    assert any("thinking" in r for r in rows[:1]) and any("researcher: look it up" in r for r in rows)
    assert rows[-1] == "The answer so far"  # the partial answer, under the progress lines
    await surface.progress(TURN, Retrying("stuck_tool_call", attempt=1, who="proxy"))
    screen = Console(file=io.StringIO(), width=120, record=True)
    screen.print(surface._live.renderable)
    text = screen.export_text()
    assert "The answer so far" not in text  # a retried attempt streams again from the start
    surface.stop()
    assert surface._live is None


async def test_progress_lines_use_words_not_internal_codes():
    err = io.StringIO()
    surface = ConsoleSurface(out=io.StringIO(), err=err, live=False)
    for code in ("stuck_tool_call", "thread_locked_by_unknown_run", "unreachable", "some_new_code"):
        await surface.progress(TURN, Retrying(code, attempt=1, who="proxy"))
    lines = err.getvalue().splitlines()
    assert "stuck on an unanswered step" in lines[0] and "cannot connect to the AI provider" in lines[2]
    assert not any(code in err.getvalue() for code in ("stuck_tool_call", "unknown_run", "some_new_code"))


@pytest.mark.parametrize("transport", ["default", "aiohttp"])
def test_nothing_listening_is_unreachable_and_names_the_address(transport):
    async def attempt() -> Exception:
        http = openai.DefaultAioHttpClient() if transport == "aiohttp" else None  # the engine uses aiohttp
        client = openai.AsyncOpenAI(api_key="k", base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=0,
                                    http_client=http)
        try:
            await client.models.list()
        except openai.OpenAIError as exc:
            return translate(exc)
        finally:
            await client.close()
        raise AssertionError("connected to a closed port")

    error = asyncio.run(attempt())
    assert isinstance(error, Transient) and error.reason == "unreachable"  # not "timeout", as aiohttp's SDK says
    assert str(error).startswith("cannot connect to http://127.0.0.1:")


async def test_a_running_bot_waits_for_an_unreachable_provider_without_spending_its_budget(tmp_path):
    port = closed_port()
    cfg = team(f"http://127.0.0.1:{port}/v1", tmp_path / "db", retry_budget=1)
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("hello"))
        retries = await surface.wait_event("retrying", count=4)  # well past the budget of 1
        assert {r.reason for r in retries} == {"unreachable"}  # type: ignore[union-attr]
        assert not surface.replies()  # no "ran out of retries"
        async with run_emulator(port=port):  # the provider comes up: the same turn goes through
            [(_, reply)] = await surface.wait_for(1)
    assert reply.kind == "answer" and reply.text == "You said: hello"


async def test_chat_reports_an_unreachable_provider_within_seconds(tmp_path):
    await cli(tmp_path, "init")
    url = f"http://127.0.0.1:{closed_port()}/v1"
    started = time.monotonic()
    code, out, err = await cli(tmp_path, "chat", stdin="hello\n", env={"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": url})
    assert code == 2 and err.startswith(f"switchboard: cannot connect to {url} (connection refused)"), err
    assert "Traceback" not in err
    assert "ran out of retries" not in err and out == ""
    assert time.monotonic() - started < 20  # not the retry budget's ~33 s (generous for a loaded CI machine)


async def test_piped_chat_exits_non_zero_when_a_turn_failed_and_jsonl_has_one_object_per_answer(tmp_path):
    await cli(tmp_path, "init")
    async with run_emulator(scripts={"proxy": Script(rules=[Rule(match="boom", fail="invalid_prompt"),
                                                            Rule(reply="line one\n\nline three")])}) as emu:
        env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": emu.base_url}
        code, out, err = await cli(tmp_path, "chat", "--jsonl", stdin="hi\nboom\nagain\n", env=env)
        assert code == 1, err
        records = [json.loads(line) for line in out.splitlines()]
        assert [r["kind"] for r in records] == ["answer", "failure", "answer"]
        assert records[0]["text"] == "line one\n\nline three"  # a blank line inside an answer stays unambiguous
        code, out, err = await cli(tmp_path, "chat", stdin="hi\n", env=env)
        assert code == 0, err


def test_ctrl_c_at_the_prompt_and_mid_turn_in_a_terminal(tmp_path):
    env = {"PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "switchboard.cli", "demo", "--work-seconds", "60", "--token-delay", "0"]
    with PtySession(command, cwd=tmp_path, env=env) as term:
        term.expect("you> ")
        term.interrupt()  # at the prompt: no Enter needed
        assert term.wait() == 130
    with PtySession(command, cwd=tmp_path, env=env) as term:
        term.expect("you> ")
        term.send("ask the researcher about our launch\r")
        term.expect("researcher: ask the researcher")  # its live line: the turn is running
        term.interrupt()  # mid-turn
        assert term.wait() == 130
        assert term.output.rstrip().endswith("resumes when you start the chat again.")  # nothing drawn after
    code, out, _ = asyncio.run(cli(tmp_path, "status"))  # no team file: the demo's database
    assert code == 0 and "console:demo:default" in out and "awaiting_tools" in out  # left to resume


def test_init_on_a_terminal_asks_which_platforms_to_enable(tmp_path):
    import tomllib

    from bot.config import parse_config

    command = [sys.executable, "-m", "switchboard.cli", "init"]
    with PtySession(command, cwd=tmp_path, env={"PYTHONPATH": str(REPO)}) as term:
        term.expect("Enable Slack? [y/N] ")
        term.send("y\r")
        term.expect("Enable Discord? [y/N] ")
        term.send("\r")
        assert term.wait() == 0
        assert "Create New App > From a manifest" in term.output and "Discord:" not in term.output
    team = parse_config(tomllib.loads((tmp_path / "switchboard.toml").read_text()), env={})
    assert team.platforms["slack"].enabled and not team.platforms["discord"].enabled
