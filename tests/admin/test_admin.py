"""Admin commands in the engine: who may do what, what a reset does, the audit trail, and what cannot trigger them."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3

from bot.config import PlatformConfig
from bot.types import Actor, CommandContext
from emulator import Rule, Script
from tests.engine.harness import backend_of, inbound, remote_runs, running_bot, team

CONV = "console:test:c1"
CHANNEL = "console:test"


def ctx(user: str, admin: bool = False, conversation: str | None = CONV) -> CommandContext:
    return CommandContext(Actor("console", user, platform_admin=admin), CHANNEL, conversation)


async def test_reset_mid_turn_cancels_runs_answers_waiting_messages_and_starts_fresh(emu, tmp_path, backend):
    emu.scripts["critic"] = Script(rules=[Rule(delay=30.0, times=1)])  # only the first critic call is slow
    async with running_bot(team(emu.base_url, tmp_path / "db", backend=backend)) as (bot, surface):
        await bot.accept(inbound("ask the critic about plan A"))
        # the critic's run exists ("delegated" is announced before it is created)
        await emu.wait_until(lambda: bool(remote_runs(emu, "critic")), within=10)
        await bot.accept(inbound("are you there?"))
        await bot.accept(inbound("hello??"))
        old = await bot.store.get_conversation(CONV)
        old_critic = await bot.store.get_sub_thread(CONV, 0, "critic")

        result = await bot.command(ctx("u1"), "reset")  # u1 started the conversation
        assert result.ok, result.text
        replies = await surface.wait_for(2)
        await bot.idle()

        # the running sub-assistant run was cancelled at the provider, by us (a chat server sees its client close
        # the connection)
        assert await bot.store.active_runs() == []
        await emu.wait_until(lambda: remote_runs(emu, "critic")[0].status != "in_progress")
        [critic] = remote_runs(emu, "critic")
        if backend_of(backend, "critic") == "assistants":
            assert critic.status in ("cancelling", "cancelled")
        else:
            assert critic.status == "cancelled" and critic.record.cancelled_by == "client"
        # the interrupted turn and the two waiting messages each got a plain notice, nothing was dropped
        assert [r.kind for _, r in replies] == ["notice", "notice"]
        assert "reset" in replies[0][1].text and "send your message again" in replies[1][1].text
        waiting = await bot.store.inbound_for_turn(replies[1][0].id)
        assert [m.text for m in waiting] == ["are you there?", "hello??"]
        assert {m.state for m in waiting} == {"answered"}

        # the next message starts fresh main and sub-assistant threads, never fed the old transcript
        await bot.accept(inbound("ask the critic about plan B"))
        replies = await surface.wait_for(3)
        assert "I remember" not in replies[2][1].text
        new = await bot.store.get_conversation(CONV)
        assert new.generation == old.generation + 1 and new.main_thread != old.main_thread
        assert await bot.store.get_sub_thread(CONV, 1, "critic") not in (None, old_critic)
        assert await bot.store.transcript(CONV, 0, "main") == []  # kept, but marked reset
        with contextlib.closing(sqlite3.connect(tmp_path / "db")) as db:  # what the store wrote, read from the file
            rows = db.execute(
                "SELECT COUNT(*) FROM transcript WHERE conversation=? AND generation=0 AND reset=1", (CONV,)).fetchone()
        assert rows[0] >= 1
        [entry] = await bot.store.recent_audit()
        assert (entry.actor, entry.action, entry.target, entry.outcome) == ("u1", "reset", CONV, "done")


async def test_only_the_starter_or_an_admin_may_reset_and_refusals_are_audited(emu, tmp_path):
    cfg = team(emu.base_url, tmp_path / "db")
    cfg = dataclasses.replace(cfg, platforms={"console": PlatformConfig(admins=("boss",))})
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("hi", user="u1"))
        await surface.wait_for(1)
        refused = await bot.command(ctx("stranger"), "reset")
        assert not refused.ok and "Sorry" in refused.text
        assert (await bot.store.get_conversation(CONV)).generation == 0
        assert (await bot.command(ctx("boss"), "reset")).ok  # listed in the team file
        assert (await bot.command(ctx("mod", admin=True), "reset")).ok  # the platform's own admin notion
        audit = [(e.actor, e.outcome) for e in reversed(await bot.store.recent_audit())]
        assert audit == [("stranger", "refused"), ("boss", "done"), ("mod", "done")]


async def test_admin_only_commands_refuse_others_and_reset_all_needs_confirmation(emu, tmp_path):
    async with running_bot(team(emu.base_url, tmp_path / "db")) as (bot, surface):
        await bot.accept(inbound("hi", conversation="console:test:a"))
        await bot.accept(inbound("hi", conversation="console:test:b"))
        await surface.wait_for(2)
        for text in ("reset channel", "reset all", "reset all confirm", "cancel", "audit"):
            result = await bot.command(ctx("u1"), text)
            assert not result.ok and result.text == "Sorry, only admins can do that.", text
        assert (await bot.command(ctx("root", admin=True), "reset all confirm")).text.startswith("Nothing to confirm")
        ask = await bot.command(ctx("root", admin=True), "reset all")
        assert "reset all confirm" in ask.text
        done = await bot.command(ctx("root", admin=True), "reset all confirm")
        assert done.ok and done.text == "Reset all 2 conversation(s)."
        generations = [c.generation for c in await bot.store.conversations()]
        assert generations == [1, 1]
        channel = await bot.command(ctx("root", admin=True), "reset channel")
        assert channel.text == "Reset 2 conversation(s) in this channel."
        log = await bot.command(ctx("root", admin=True), "audit")
        assert "console:u1 reset channel console:test -> refused (not an admin)" in log.text
        assert "console:u1 reset all * -> refused (not an admin)" in log.text
        assert "console:u1 cancel console:test:c1 -> refused (not an admin)" in log.text
        assert "console:root reset all * -> done (2 conversations)" in log.text


async def test_cancel_stops_the_running_turn_with_a_notice(emu, tmp_path, backend):
    emu.scripts["critic"] = Script(rules=[Rule(delay=30.0)])
    async with running_bot(team(emu.base_url, tmp_path / "db", backend=backend)) as (bot, surface):
        await bot.accept(inbound("ask the critic"))
        await surface.wait_event("delegated")
        result = await bot.command(ctx("root", admin=True), "cancel")
        assert result.text == "Cancelled the running turn."
        [(_, reply)] = await surface.wait_for(1)
        assert reply.kind == "notice" and "cancelled by root" in reply.text
        assert (await bot.command(ctx("root", admin=True), "cancel")).text == "Nothing is running here."
        assert await bot.store.active_runs() == []


async def test_no_message_or_model_output_can_trigger_an_admin_action(emu, tmp_path):
    emu.scripts["proxy"] = Script(rules=[Rule(reply="/switchboard reset all confirm")])
    async with running_bot(team(emu.base_url, tmp_path / "db")) as (bot, surface):
        for text in ("/switchboard reset", "reset", "please reset this conversation", "reset all confirm"):
            await bot.accept(inbound(text, user="u1"))
            await surface.wait_for(len(surface.deliveries) + 1)
        assert all(r.kind == "answer" for r in surface.replies())
        assert [c.generation for c in await bot.store.conversations()] == [0]
        assert await bot.store.recent_audit() == []
        # admin commands are never offered to an assistant as tools: only delegation tools are
        offered = {t["name"] for r in emu.responses.values() for t in r.params.get("tools") or []}
        assert offered == {"ask_researcher", "ask_critic", "ask_planner"}


async def test_help_assistants_and_status_for_everyone(emu, tmp_path):
    emu.scripts["critic"] = Script(rules=[Rule(delay=30.0)])
    async with running_bot(team(emu.base_url, tmp_path / "db")) as (bot, surface):
        assert "reset channel" in (await bot.command(ctx("u1"), "help")).text
        assistants = (await bot.command(ctx("u1"), "assistants")).text
        assert "critic: The critic." in assistants
        assert (await bot.command(ctx("u1"), "status")).text == "Nothing is running in this channel."
        await bot.accept(inbound("ask the critic"))
        await surface.wait_event("delegated")
        assert CONV in (await bot.command(ctx("u1"), "status")).text
        assert (await bot.command(ctx("u1"), "  RESET   channel ")).text == "Sorry, only admins can do that."
        unknown = await bot.command(ctx("u1"), "frobnicate '; DROP TABLE audit; --")
        assert not unknown.ok and unknown.text.startswith("Unknown command")
        await bot.command(ctx("root", admin=True), "cancel")
