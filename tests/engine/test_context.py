"""Context for sub-assistants (`context = "brief" | "fork" | "recent:N"`): what a sub-assistant receives, read from
the emulator, on every backend; a forked thread rebuilt after the provider lost it; bad values in the team file."""

from __future__ import annotations

import dataclasses
import sqlite3
import tomllib
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from bot.context import BRIEF, ContextMode, Message, agent_of_path, fork_seed, parse_context
from bot.orchestrator import delegation_tool
from emulator import Emulator, Rule, Script, ToolCall
from tests.engine.harness import backend_of, inbound, item_text, remote_runs, running_bot, team

FORK_EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "fork.toml").read_text(encoding="utf-8")
FACTS = ("The launch code is ALPHA-7.", "The budget is 300 euros.")
ASK = "researcher: draft the launch plan"
# A proxy that hands over the bare task and no context: what the sub-assistant learns of the conversation comes
# from its context mode alone.
TERSE_PROXY = Script(rules=[
    Rule(on="message", match="researcher", calls=[ToolCall("ask_researcher", {"task": "{input}", "context": ""})]),
    Rule(on="tool_outputs", reply="Team: {outputs}"),
])


def seen_texts(emu: Emulator, run) -> list[str]:
    """Every message text the sub-assistant's run was given (its thread or conversation, and its input)."""
    if run.id in emu.responses:
        return list(run.record.seen_texts)
    if run.id in emu.chat_completions:
        return [item_text(m) for m in run.record.messages if m.get("role") in ("user", "assistant")]
    return list(run.record.seen_texts)


def with_context(cfg, name: str, mode: ContextMode):
    subs = tuple(dataclasses.replace(s, context=mode) if s.name == name else s for s in cfg.subs)
    return dataclasses.replace(cfg, subs=subs)


async def converse(bot, surface, texts: list[str]) -> None:
    for i, text in enumerate(texts, 1):
        await bot.accept(inbound(text))
        await surface.wait_for(i)
        await bot.idle()


@pytest.mark.parametrize("mode, present", [
    ("brief", ()),
    ("fork", FACTS),
    ("recent:1", FACTS[1:]),
])
async def test_the_sub_assistant_receives_what_its_mode_copies(emu, tmp_path, backend, mode, present):
    emu.scripts["proxy"] = TERSE_PROXY
    cfg = with_context(team(emu.base_url, tmp_path / "db", backend=backend), "researcher", parse_context(mode))
    async with running_bot(cfg) as (bot, surface):
        await converse(bot, surface, [*FACTS, ASK])
        assert surface.replies()[-1].text.startswith("Team: researcher: done with")
        [run] = remote_runs(emu, "researcher")
        seen = "\n".join(seen_texts(emu, run))
        assert ASK in seen
        for fact in FACTS:
            assert (fact in seen) == (fact in present), (mode, fact, seen)
        if mode != "brief":
            assert "You said: The budget is 300 euros." in seen  # the proxy's answers are copied too...
            assert "written by the proxy assistant, not by you" in seen  # ...and attributed
            main = (await bot.store.get_conversation("console:test:c1")).main_thread
            reads = [e for e in emu.log if e.method == "GET" and main in e.path and e.path.endswith(("/items",
                                                                                                   "/messages"))]
            # copied on the provider where it keeps the thread; from the local transcript on chat and chains
            assert bool(reads) == (backend_of(backend, "proxy") != "chat" and backend != "chains")
        [path] = [p for p in sub_paths(cfg) if p.startswith("researcher")]
        assert (path == "researcher") == (mode == "brief") and (path.startswith("researcher#") or mode == "brief")
        assert await bot.store.get_sub_thread("console:test:c1", 0, path) == run.thread


def sub_paths(cfg) -> list[str]:
    with sqlite3.connect(cfg.db_path) as conn:
        return [row[0] for row in conn.execute("SELECT path FROM sub_threads ORDER BY path")]


async def test_each_forked_call_gets_its_own_thread_and_later_calls_see_earlier_answers(emu, tmp_path, backend):
    emu.scripts["proxy"] = TERSE_PROXY
    cfg = with_context(team(emu.base_url, tmp_path / "db", backend=backend), "researcher", ContextMode("fork"))
    async with running_bot(cfg) as (bot, surface):
        await converse(bot, surface, [FACTS[0], ASK, "researcher: now the budget"])
        first, second = remote_runs(emu, "researcher")
        assert first.thread != second.thread  # a fresh fork per call, not the brief mode's kept thread
        assert "Team: researcher: done with" in "\n".join(seen_texts(emu, second))  # the first answer, via the proxy
        forks = [p for p in sub_paths(cfg) if p.startswith("researcher")]
        assert len(forks) == 2 and all(p.startswith("researcher#") for p in forks)


async def test_a_forked_thread_lost_by_the_provider_is_forked_again(emu, tmp_path, backend):
    on = backend_of(backend, "researcher")
    if on == "chat":
        pytest.skip("chat threads are ours: the provider cannot lose one")
    emu.scripts["proxy"] = TERSE_PROXY
    cfg = with_context(team(emu.base_url, tmp_path / "db", backend=backend), "researcher", ContextMode("fork"))
    async with running_bot(cfg) as (bot, surface):
        await converse(bot, surface, [FACTS[0]])
        if on == "responses":
            emu.faults.delete_conversation(agent="researcher")
        else:
            emu.faults.delete_thread(agent="researcher")
        await converse(bot, surface, [FACTS[0], ASK][1:])
        assert surface.replies()[-1].text.startswith("Team: researcher: done with")
        done = [r for r in remote_runs(emu, "researcher") if r.status == "completed"]
        assert len(done) == 1
        seen = "\n".join(seen_texts(emu, done[0]))
        assert FACTS[0] in seen and ASK in seen
        [fork] = [p for p in sub_paths(cfg) if p.startswith("researcher")]
        assert await bot.store.get_sub_thread("console:test:c1", 0, fork) == done[0].thread


def test_fork_seed_keeps_whole_turns():
    turns = [Message("user", "a"), Message("assistant", "A"), Message("user", "b1"), Message("user", "b2"),
             Message("assistant", "B"), Message("user", "now")]
    assert fork_seed(turns, ContextMode("fork")) == turns
    assert fork_seed(turns, ContextMode("recent", 1)) == turns[2:]
    assert fork_seed(turns, ContextMode("recent", 5)) == turns
    assert fork_seed(turns, BRIEF) == []
    assert agent_of_path("planner/researcher#call_1") == "researcher"


def test_the_ask_tool_says_what_a_forked_sub_assistant_already_sees(tmp_path):
    cfg = team("http://127.0.0.1:1/v1", tmp_path / "db")
    brief = delegation_tool(cfg.subs[0])
    forked = delegation_tool(dataclasses.replace(cfg.subs[0], context=ContextMode("fork")))
    describe = lambda tool: tool["parameters"]["properties"]["context"]["description"]  # noqa: E731
    assert "sees only the task and this context" in describe(brief)
    assert "a copy of this conversation so far" in describe(forked)


TEAM = """
[proxy]
instructions = "p"
{proxy_extra}

[[assistants]]
name = "researcher"
description = "r"
instructions = "r"
{sub_extra}
"""


@pytest.mark.parametrize("value, parsed", [
    ('"brief"', BRIEF), ('"fork"', ContextMode("fork")), ('"recent:3"', ContextMode("recent", 3)),
])
def test_valid_context_values(tmp_path, value, parsed):
    path = tmp_path / "team.toml"
    path.write_text(TEAM.format(proxy_extra="", sub_extra=f"context = {value}"))
    assert load_config(path, env={}).subs[0].context == parsed


@pytest.mark.parametrize("value", ['"forked"', '"recent"', '"recent:0"', '"recent:-1"', '"recent:x"', '"recent:1001"',
                                   "3", "true", '["fork"]', '"FORK"'])
def test_bad_context_values_are_clear_errors(tmp_path, value):
    path = tmp_path / "team.toml"
    path.write_text(TEAM.format(proxy_extra="", sub_extra=f"context = {value}"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value).startswith("assistants[0].context: must be one of \"brief\", \"fork\" or \"recent:N\"")


def test_the_proxy_has_no_context_mode(tmp_path):
    path = tmp_path / "team.toml"
    path.write_text(TEAM.format(proxy_extra='context = "fork"', sub_extra=""))
    with pytest.raises(ConfigError, match=r"^proxy\.context: only a sub-assistant has one"):
        load_config(path, env={})


async def test_the_fork_example_team_file_works(emu, tmp_path):
    from bot.config import parse_config

    raw = tomllib.loads(FORK_EXAMPLE)
    raw["openai"] = {"base_url": emu.base_url}
    raw["storage"] = {"path": str(tmp_path / "db")}
    cfg = dataclasses.replace(parse_config(raw, env={"OPENAI_API_KEY": "k"}),
                              limits=team("x", "y").limits)
    assert [str(s.context) for s in cfg.subs] == ["fork", "recent:2", "brief"]
    async with running_bot(cfg) as (bot, surface):
        await converse(bot, surface, [FACTS[0], "ask the researcher, the critic and the planner"])
    assert all(f"{name}: done with" in surface.replies()[-1].text for name in ("researcher", "critic", "planner"))
    seen = {name: "\n".join(seen_texts(emu, run)) for name in ("researcher", "critic", "planner")
            for run in remote_runs(emu, name)}
    assert FACTS[0] in seen["researcher"] and FACTS[0] in seen["critic"]
    assert "written by the proxy assistant" not in seen["planner"]


async def test_a_fork_falls_back_to_the_local_transcript_when_the_provider_cannot_be_read(emu, tmp_path):
    emu.scripts["proxy"] = TERSE_PROXY
    cfg = with_context(team(emu.base_url, tmp_path / "db", retry_budget=1), "researcher", ContextMode("fork"))
    async with running_bot(cfg) as (bot, surface):
        await converse(bot, surface, [FACTS[0]])
        emu.faults.http_error(500, method="GET", path="/v1/conversations/*/items", count=None)
        await converse(bot, surface, [FACTS[0], ASK][1:])
        assert surface.replies()[-1].text.startswith("Team: researcher: done with")
    assert [e.status for e in emu.log if e.method == "GET" and e.path.endswith("/items")] == [500, 500]
    [run] = remote_runs(emu, "researcher")
    seen = "\n".join(seen_texts(emu, run))
    assert FACTS[0] in seen and "You said: " + FACTS[0] in seen and ASK in seen
