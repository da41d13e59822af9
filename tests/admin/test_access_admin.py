"""Operating access and budgets: `reload` (command, CLI, SIGHUP path) applies new lists at once without dropping a
message and refuses a broken file; the admin socket audits the OS user the kernel reports (SO_PEERCRED), whatever
the client claims; `switchboard usage | grant | forget` from the shell, through the running bot or offline."""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import os
from pathlib import Path

import pytest

from bot import admin_socket
from bot.config import load_config
from bot.engine import Bot
from bot.types import Actor, CommandContext, Inbound, Refused
from storage.sqlite import SQLiteStore
from tests.admin.test_cli_admin import cli, team_file
from tests.engine.harness import RecordingSurface, inbound, running_bot, team
from tests.engine.test_forget import tables_containing

ADMIN = CommandContext(Actor("slack", "UADMIN"), channel="slack:T1:C1")


def slack(text: str, user: str, conversation: str = "slack:T1:C1:1") -> Inbound:
    return dataclasses.replace(inbound(text, user=user, conversation=conversation), platform="slack",
                               channel="slack:T1:C1")


def slack_lists(blocked: str) -> str:
    return f'[slack]\nadmins = ["UADMIN"]\nblocked_users = [{blocked}]\n'


async def test_reload_applies_new_lists_at_once_without_dropping_a_message(emu, tmp_path):
    path = team_file(tmp_path, emu.base_url, slack_lists('"U1"'))
    bot = Bot.from_config(load_config(path, env={}))
    surface = RecordingSurface()
    surface.platform = "slack"  # type: ignore[assignment]
    bot.add_surface(surface)
    async with bot.running():
        with pytest.raises(Refused):
            await bot.accept(slack("before", "U1"))

        async def steady(n: int) -> None:  # a user the lists never refuse keeps writing through the reloads
            for i in range(n):
                await bot.accept(slack(f"steady {i}", "U3", conversation=f"slack:T1:C1:s{i}"))
                await asyncio.sleep(0)

        path.write_text(path.read_text().replace('blocked_users = ["U1"]', 'blocked_users = ["U2"]'))
        writer = asyncio.create_task(steady(20))
        result = await bot.command(ADMIN, "reload")
        await writer
        assert result.ok and result.text.startswith(f"Reloaded {path}: access lists")
        await bot.accept(slack("after", "U1"))
        with pytest.raises(Refused):
            await bot.accept(slack("after", "U2"))
        replies = await surface.wait_for(21)
        assert sorted(r.text for _, r in replies) == sorted(
            ["You said: after", *(f"You said: steady {i}" for i in range(20))])

        # a broken file is refused and the lists in force stay as they were
        path.write_text(path.read_text().replace('blocked_users = ["U2"]', 'blocked_users = "U1"'))
        result = await bot.command(ADMIN, "reload")
        assert not result.ok and "slack.blocked_users: must be a list of ids" in result.text
        assert "old one stays in force" in result.text
        with pytest.raises(Refused):
            await bot.accept(slack("still blocked", "U2"))
        outcomes = [(e.action, e.outcome) for e in await bot.store.recent_audit() if e.action == "reload"]
        assert outcomes == [("reload", "refused"), ("reload", "done")]
        # not an admin: refused
        nobody = CommandContext(Actor("slack", "U3"), channel="slack:T1:C1")
        assert not (await bot.command(nobody, "reload")).ok


async def test_reload_reports_changes_that_need_a_restart(emu, tmp_path):
    path = team_file(tmp_path, emu.base_url, slack_lists(""))
    bot = Bot.from_config(load_config(path, env={}))
    async with bot.running():
        path.write_text(path.read_text().replace("Criticise.", "Criticise harder.") + "[budgets]\n"
                        "user_tokens_per_day = 5\n")
        result = await bot.command(ADMIN, "reload")
        assert result.ok and result.text.endswith("changes to subs need a restart.")
        assert bot.policy.team.budgets.user_tokens_per_day == 5
        assert bot.team.sub("critic").instructions == "Criticise."


async def test_admin_socket_audits_the_connecting_os_user_not_the_claimed_one(emu, tmp_path):
    async with running_bot(team(emu.base_url, tmp_path / "db")) as (bot, _):
        path = admin_socket.socket_path(bot.team.db_path)
        result = await admin_socket.send(path, "audit", operator="mallory")
        assert result is not None and result.ok
        [entry] = await bot.store.recent_audit()
        assert entry.actor == f"operator:{getpass.getuser()}(uid {os.getuid()}, pid {os.getpid()})"
        assert "mallory" not in entry.actor


async def test_cli_usage_grant_forget_and_reload(emu, tmp_path):
    config = team_file(tmp_path, emu.base_url, '[budgets]\nuser_tokens_per_day = 1000000\n')
    cfg = load_config(config, env={})
    bot = Bot.from_config(cfg)
    bot.add_surface(surface := RecordingSurface())
    async with bot.running():
        await bot.accept(inbound("secret-words-991", user="alice"))
        await bot.accept(inbound("bob-words-992", user="bob", conversation="console:test:bob"))
        await surface.wait_for(2)
        await bot.idle()
        code, out, err = await cli("usage", "--config", str(config))
        assert code == 0, err
        assert "user:console:alice:" in out and "budget 1,000,000 tokens" in out
        code, out, err = await cli("grant", "--config", str(config), "user", "console:alice", "500")
        assert code == 0 and out.strip() == "Granted 500 tokens to user:console:alice for today (UTC).", err
        code, out, err = await cli("grant", "--config", str(config), "user", "console:alice", "lots")
        assert code == 1 and "Usage: `grant user" in err
        code, out, err = await cli("reload", "--config", str(config))
        assert code == 0 and out.startswith("Reloaded"), err
        code, out, err = await cli("forget", "--config", str(config), "--user", "alice", "--platform", "console")
        assert code == 0 and out.startswith("Forgot user:console:alice: 1 messages, 1 turns"), err
        audit = await bot.store.recent_audit()
        assert [e.action for e in audit[:4]] == ["forget", "reload", "grant", "usage"]
        assert all(e.actor.startswith(f"operator:{getpass.getuser()}(uid ") for e in audit[:4])
    # offline: no bot runs; forget works on the database and the provider, reload says there is nothing to reload
    code, _, err = await cli("reload", "--config", str(config))
    assert code == 1 and "no bot is running" in err
    code, out, err = await cli("forget", "--config", str(config), "--user", "bob")
    forgot = "Forgot user:*:bob: 1 messages, 1 turns, 1 conversations, 2/2 provider threads and runs deleted"
    assert code == 0 and out.startswith(forgot), err
    assert tables_containing(Path(cfg.db_path), "bob-words-992") == {}
    store = SQLiteStore(Path(cfg.db_path))
    await store.open()
    try:
        assert [e.action for e in await store.recent_audit(1)] == ["forget"]
    finally:
        await store.close()


async def test_sighup_reloads_like_the_command_and_is_audited(emu, tmp_path):
    from switchboard.runner import reload_on_signal

    path = team_file(tmp_path, emu.base_url, slack_lists('"U1"'))
    bot = Bot.from_config(load_config(path, env={}))
    async with bot.running():
        path.write_text(path.read_text().replace('blocked_users = ["U1"]', 'blocked_users = ["U2"]'))
        await reload_on_signal(bot)
        assert bot.policy.team.platforms["slack"].blocked_users == ("U2",)
        path.write_text("not toml [")
        await reload_on_signal(bot)
        assert bot.policy.team.platforms["slack"].blocked_users == ("U2",)
        entries = [(e.actor, e.outcome) for e in await bot.store.recent_audit() if e.action == "reload"]
        assert entries == [("operator:SIGHUP", "refused"), ("operator:SIGHUP", "done")]
