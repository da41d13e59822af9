"""Switching backends with live conversations (`switchboard migrate`), and `switchboard sync`."""

from __future__ import annotations

import argparse

import pytest

from bot.admin_socket import InstanceLock
from bot.migrate import migrate, migrate_command, thread_paths
from emulator import ManualClock, Rule, Script, run_emulator
from tests.engine.harness import inbound, remote_runs, run_input_texts, running_bot, team, thread_texts
from tests.engine.test_cli import run_cli

TEAM_FILE = """
backend = "{backend}"

[proxy]
instructions = "You are the proxy."
model = "emu-1"

[[assistants]]
name = "researcher"
description = "The researcher."
instructions = "You are the researcher."
model = "emu-1"

[[assistants]]
name = "critic"
description = "The critic."
instructions = "You are the critic."
model = "emu-1"

[[assistants]]
name = "planner"
description = "The planner."
instructions = "You are the planner."
model = "emu-1"
"""


async def two_turns(cfg) -> list[str]:
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("my budget is 500 euros"))
        await surface.wait_for(1)
        await bot.accept(inbound("ask the critic about plan A"))
        replies = await surface.wait_for(2)
        await bot.idle()
    return [reply.text for _, reply in replies]


@pytest.mark.parametrize(
    ("source", "target"),
    [("assistants", "responses"), ("responses", "assistants"), ("responses", "chat"), ("chat", "responses"),
     ("assistants", "chat"), ("chat", "assistants"), ("chains", "chat"), ("chains", "assistants")],
)
async def test_migration_mid_history_and_the_next_turn_sees_it(emu, tmp_path, source, target):
    db = tmp_path / "db"
    earlier = await two_turns(team(emu.base_url, db, backend=source))
    before = {r.id for r in remote_runs(emu)}

    report = await migrate(team(emu.base_url, db, backend=source), target)
    assert sorted((m.path, m.messages) for m in report.moved) == [("critic", 2), ("main", 4)]
    assert report.skipped == []

    async with running_bot(team(emu.base_url, db, backend=target)) as (bot, surface):
        await bot.accept(inbound("ask the critic about plan B"))
        [(_, reply)] = await surface.wait_for(1)
        await bot.idle()
        conv = await bot.store.get_conversation("console:test:c1")
        critic_thread = await bot.store.get_sub_thread(conv.key, 0, "critic")
    assert reply.kind == "answer"
    # the critic's own thread came along: it remembers the earlier request
    assert "(I remember 1 earlier requests)" in reply.text
    new_runs = [r for r in remote_runs(emu) if r.id not in before]
    assert {r.thread for r in new_runs} == {conv.main_thread, critic_thread}
    prefix = {"responses": "conv_", "assistants": "thread_", "chat": "chat_"}[target]
    assert conv.main_thread.startswith(prefix) and critic_thread.startswith(prefix)
    # the proxy's new thread holds the earlier turns before this one...
    assert thread_texts(emu, conv.main_thread)[:4] == [
        "my budget is 500 euros", earlier[0], "ask the critic about plan A", earlier[1],
    ]
    # ...and the proxy used them: it handed the earlier messages to the critic as context
    [critic_run] = [r for r in new_runs if r.agent == "critic"]
    sent = run_input_texts(emu, critic_run)[-1]
    assert "Task: ask the critic about plan B" in sent
    assert "my budget is 500 euros" in sent and "ask the critic about plan A" in sent

    # a second run moves nothing: everything is on the target already
    again = await migrate(team(emu.base_url, db, backend=target), target)
    assert again.moved == [] and sorted(p for _, p in again.already) == ["critic", "main"]


async def test_chained_threads_are_already_on_responses_whatever_its_threads_setting(emu, tmp_path):
    db = tmp_path / "db"
    await two_turns(team(emu.base_url, db, backend="chains"))
    report = await migrate(team(emu.base_url, db, backend="responses"), "responses")
    assert report.moved == [] and sorted(p for _, p in report.already) == ["critic", "main"]


async def test_conversation_with_an_unfinished_turn_is_skipped(tmp_path):
    clock = ManualClock()
    async with run_emulator(clock=clock, scripts={"critic": Script(rules=[Rule(delay=30.0)])}) as emu:
        cfg = team(emu.base_url, tmp_path / "db", backend="assistants")
        async with running_bot(cfg) as (bot, surface):
            await bot.accept(inbound("ask the critic"))
            # the critic's run exists ("delegated" is announced before it is created), so its delay has started
            await emu.wait_until(lambda: any(r.agent == "critic" for r in emu.runs.values()), within=10)
            report = await migrate(cfg, "responses")
            await clock.advance(30.0)
            await surface.wait_for(1)
    assert report.moved == []
    assert [key for key, _ in report.skipped] == ["console:test:c1"]


def test_thread_paths_follow_the_delegation_tree(tmp_path):
    import dataclasses

    cfg = team("http://x/v1", tmp_path / "db", max_depth=2)
    planner = dataclasses.replace(cfg.sub("planner"), delegates=("researcher",))
    cfg = dataclasses.replace(cfg, subs=tuple(planner if s.name == "planner" else s for s in cfg.subs))
    assert thread_paths(cfg) == ["main", "researcher", "critic", "planner", "planner/researcher"]
    assert thread_paths(dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, max_depth=1))) == [
        "main", "researcher", "critic", "planner",
    ]


async def test_sync_and_migrate_from_the_command_line(emu, tmp_path):
    db = tmp_path / "team.db"
    config = tmp_path / "team.toml"
    config.write_text(TEAM_FILE.format(backend="assistants"), encoding="utf-8")
    env = {"OPENAI_BASE_URL": emu.base_url, "OPENAI_API_KEY": "test-key", "SWITCHBOARD_DB": str(db)}

    code, out, err = await run_cli("sync", "--config", str(config), env=env)
    assert code == 0, err
    assert [line.split()[:2] for line in out.splitlines()[:4]] == [
        ["created", "proxy"], ["created", "researcher"], ["created", "critic"], ["created", "planner"],
    ]
    assert out.splitlines()[-1] == "4 assistant(s): 4 created, 0 updated, 0 unchanged"
    code, out, err = await run_cli("sync", "--config", str(config), env=env)
    assert code == 0, err
    assert out.splitlines()[-1] == "4 assistant(s): 0 created, 0 updated, 4 unchanged"
    assert len(emu.assistants) == 4

    await two_turns(team(emu.base_url, db, backend="assistants"))
    code, out, err = await run_cli("migrate", "--to", "responses", "--config", str(config), env=env)
    assert code == 0, err
    assert sum(line.startswith("moved ") for line in out.splitlines()) == 2
    assert "2 thread(s) of 1 conversation(s) moved to the responses backend" in out
    assert 'set backend = "responses"' in out


async def test_migrate_refuses_while_a_bot_holds_the_database(emu, tmp_path, monkeypatch, capsys):
    db = tmp_path / "team.db"
    config = tmp_path / "team.toml"
    config.write_text(TEAM_FILE.format(backend="assistants"), encoding="utf-8")
    monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
    monkeypatch.setenv("SWITCHBOARD_DB", str(db))
    lock = InstanceLock(str(db))
    lock.acquire()
    try:
        code = migrate_command(argparse.Namespace(config=str(config), to="responses"))
    finally:
        lock.release()
    assert code == 1
    assert "stop the bot before migrating" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["sync", "migrate"])
def test_sync_and_migrate_have_help(command, capsys):
    from switchboard.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: switchboard {command}" in capsys.readouterr().out
