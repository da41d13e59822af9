"""Several Switchboard instances on one PostgreSQL database (a real server, tests/conftest.py): each conversation has
at most one live owner, a message accepted by any instance is answered once by the owner, a dead instance's turn is
taken over and finished once, an admin action on any instance stops the owner's writes (fencing), and a lease that
was taken over refuses the old owner's writes whole."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bot.config import StorageConfig, TeamConfig
from bot.engine import Bot
from bot.ownership import LeasedOwnership
from bot.types import Actor, CommandContext
from emulator import Rule, Script
from storage.base import InboxMessage, LeaseLost, TurnRecord, TurnUpdate
from storage.leases import Leases
from storage.postgres import PostgresStore
from tests.engine.harness import RecordingSurface, inbound, team

CONV = "console:test:c1"
LEASE_SECONDS = 1.0


def shared_team(base_url: str, url: str, backend: str = "responses") -> TeamConfig:
    return dataclasses.replace(team(base_url, url, backend=backend), storage=StorageConfig(lease_seconds=LEASE_SECONDS))


@asynccontextmanager
async def instance(cfg: TeamConfig, name: str) -> AsyncIterator[tuple[Bot, RecordingSurface]]:
    bot = Bot.from_config(dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, instance=name)))
    surface = RecordingSurface()
    bot.add_surface(surface)
    await bot.start()
    try:
        yield bot, surface
    finally:
        await bot.stop()


async def die(bot: Bot) -> None:
    """What SIGKILL leaves behind: the work stops mid-turn, nothing is given back, leases run until they expire."""
    assert isinstance(bot.ownership, LeasedOwnership) and bot.ownership._heartbeat is not None
    bot.ownership._heartbeat.cancel()
    await bot.cancel_work(unanswered=0)  # a create being sent loses its connection with the process: unrecorded
    assert isinstance(bot.store, PostgresStore)
    bot.store.pool.terminate()


async def test_a_message_accepted_anywhere_is_answered_once_by_the_owner(emu, pg_url):
    cfg = shared_team(emu.base_url, pg_url)
    async with instance(cfg, "a") as (a, a_surface), instance(cfg, "b") as (b, b_surface):
        await a.accept(inbound("one", conversation=CONV))
        await a_surface.wait_for(1)
        await b.accept(inbound("two", conversation=CONV))  # stored by b, answered by the owner a
        await a_surface.wait_for(2)
        await b.accept(inbound("elsewhere", conversation="console:test:c2"))  # nobody owns it: b takes it
        await b_surface.wait_for(1)
        await a.idle()
        await b.idle()
        assert [r.text for r in a_surface.replies()] == ["You said: one", "You said: two"]
        assert [r.text for r in b_surface.replies()] == ["You said: elsewhere"]
        assert await a.store.pending_inbound(CONV) == [] and await a.store.unfinished_turns() == []
        # an idle conversation's lease is given back at the next heartbeat; whoever stores the next message takes it
        assert isinstance(a.ownership, LeasedOwnership) and isinstance(a.store, PostgresStore)
        await a.ownership.beat()
        assert CONV not in a.store.tokens
        await b.accept(inbound("three", conversation=CONV))
        await b_surface.wait_for(2)
        await b.idle()
        assert [r.text for r in b_surface.replies()] == ["You said: elsewhere", "You said: three"]
        assert len(a_surface.deliveries) == 2


async def test_a_dead_instances_turn_is_taken_over_and_answered_once(emu, pg_url):
    emu.scripts["proxy"] = Script(rules=[Rule(delay=1.0, times=1)])  # a's turn is in flight when it dies
    cfg = shared_team(emu.base_url, pg_url)
    async with instance(cfg, "b") as (b, b_surface):
        a = Bot.from_config(dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, instance="a")))
        a_surface = RecordingSurface()
        a.add_surface(a_surface)
        await a.start()
        await a.accept(inbound("hello", conversation=CONV))
        await emu.wait_until(lambda: any(r.agent == "proxy" for r in emu.responses.values()), within=10)
        await die(a)
        [(turn, reply)] = await b_surface.wait_for(1)
        await b.idle()
        assert reply.text == "You said: hello" and a_surface.deliveries == []
        assert isinstance(b.ownership, LeasedOwnership) and b.ownership.takeovers == 1
        record = await b.store.get_turn(turn.id)
        assert record is not None and record.state == "delivered"
        # the resumed turn went on with the run a had started, not a second one
        assert [r.status for r in emu.responses.values() if r.agent == "proxy"] == ["completed"]


#: the provider creates of a turn that delegates once: the proxy's, the critic's, the proxy's with the critic's result
DELEGATING_CREATES = 3
TAKERS = ("heartbeat", "new message", "admin door")


@pytest.mark.parametrize("nth", range(1, DELEGATING_CREATES + 1))
@pytest.mark.parametrize("taker", TAKERS)
@pytest.mark.parametrize("backend", ["responses", "chains"])
async def test_a_dead_instances_turn_is_resumed_by_whatever_takes_its_conversation_at_every_create(
    emu, pg_url, backend, taker, nth
):
    # The instances soak lost a message this way: the dead owner's lease ran out, a new message for the conversation
    # reached another instance, whose worker took the lease before its heartbeat did, and started a turn for the new
    # message. The dead instance's turn was left unfinished, under a live owner's lease, for good. An admin action's
    # door takes a lease too. Each way of taking it, with the owner killed at each create of a delegating turn (the
    # create took effect, its answer never came), on both kinds of Responses thread.
    cfg = shared_team(emu.base_url, pg_url, backend)
    async with instance(cfg, "b") as (b, b_surface):
        assert isinstance(b.ownership, LeasedOwnership) and b.ownership._heartbeat is not None
        b.ownership._heartbeat.cancel()  # the taker under test, and nothing else, takes the conversation
        a = Bot.from_config(dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, instance="a")))
        a.add_surface(RecordingSurface())
        await a.start()
        emu.faults.hang(method="POST", template="/v1/responses", nth=nth)
        await a.accept(inbound("ask the critic about plan A", conversation=CONV))
        await emu.wait_until(lambda: any(i.kind == "hang" for i in emu.faults.injected), within=10)
        await die(a)
        assert isinstance(b.store, PostgresStore)
        await b.store._execute("UPDATE leases SET expires_at = 0 WHERE conversation = $1", CONV)  # a's ran out
        expected = 1
        if taker == "heartbeat":
            await b.ownership.beat()
        elif taker == "new message":
            await b.accept(inbound("second", conversation=CONV))
            expected = 2
        else:
            async with b.commands.control.doors.exclusive(CONV):
                pass
        await b_surface.wait_for(expected)
        await b.idle()
        replies = b_surface.replies()
        assert len(replies) == expected and all(r.kind == "answer" for r in replies)
        assert "critic" in replies[0].text.lower()  # the delegating turn first, answered with the critic's part
        if taker == "new message":
            assert replies[1].text == "You said: second"
        assert await b.store.unfinished_turns() == [] and await b.store.pending_inbound(CONV) == []


async def test_a_dead_instances_chat_turn_is_taken_over_and_its_thread_holds_it_once(emu, pg_url):
    emu.scripts["proxy"] = Script(rules=[Rule(delay=1.0, times=1)])  # a's completion is streaming when it dies
    cfg = shared_team(emu.base_url, pg_url, backend="chat")
    async with instance(cfg, "b") as (b, b_surface):
        a = Bot.from_config(dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, instance="a")))
        a_surface = RecordingSurface()
        a.add_surface(a_surface)
        await a.start()
        await a.accept(inbound("hello", conversation=CONV))
        assert isinstance(a.store, PostgresStore)
        await emu.wait_until(lambda: any(c.agent == "proxy" for c in emu.chat_completions.values()), within=10)
        await die(a)
        [(_, reply)] = await b_surface.wait_for(1)
        await b.idle()
        assert reply.text == "You said: hello" and a_surface.deliveries == []
        conversation = await b.store.get_conversation(CONV)
        assert conversation is not None and conversation.main_thread is not None
        thread = await b.store.chat_thread(conversation.main_thread)
        assert thread is not None
        contents = [m.message.get("content") for m in thread.messages]
        assert contents.count("hello") == 1 and contents.count("You said: hello") == 1


async def test_a_reset_on_another_instance_stops_the_owners_turn_and_answers_once(emu, pg_url):
    emu.scripts["critic"] = Script(rules=[Rule(delay=30.0, times=1)])
    cfg = shared_team(emu.base_url, pg_url)
    async with instance(cfg, "a") as (a, a_surface), instance(cfg, "b") as (b, b_surface):
        await a.accept(inbound("ask the critic about plan A", conversation=CONV, user="u1"))
        await emu.wait_until(lambda: any(r.agent == "critic" for r in emu.responses.values()), within=10)
        result = await b.command(CommandContext(Actor("console", "u1"), "console:test", CONV), "reset")
        assert result.ok, result.text
        [(_, notice)] = await b_surface.wait_for(1)
        await asyncio.gather(a.idle(), b.idle())
        assert notice.kind == "notice" and "reset" in notice.text
        assert a_surface.deliveries == []  # the old owner's writes were fenced: it posted nothing
        # the critic's run was cancelled by the reset. The old owner may have made another before its next write was
        # refused (a provider call cannot be fenced): that one was never recorded, nor used, and is cancelled by it
        # if still running (bot/supervisor.py, `_record`)
        critics = sorted((r for r in emu.responses.values() if r.agent == "critic"), key=lambda r: r.created_tick)
        assert critics[0].status == "cancelled"
        assert isinstance(b.store, PostgresStore)
        recorded = await b.store._fetch("SELECT remote_id FROM runs WHERE agent = 'critic'")
        assert [r["remote_id"] for r in recorded] == [critics[0].id]
        assert all(r.status in ("cancelled", "completed") for r in critics)
        conversation = await b.store.get_conversation(CONV)
        assert conversation is not None and conversation.generation == 1


async def test_the_old_owners_writes_fail_whole_once_its_lease_is_taken(pg_url):
    a, b = PostgresStore(pg_url, owner="a"), PostgresStore(pg_url, owner="b")
    await a.open()
    await b.open()
    try:
        a_leases, b_leases = Leases(a, LEASE_SECONDS), Leases(b, LEASE_SECONDS)
        assert await a_leases.acquire(CONV)
        assert not await b_leases.acquire(CONV)  # a is live
        now = 1.0
        await a.create_turn(TurnRecord("t1", CONV, 0, "running", now, now))
        assert await b_leases.acquire(CONV, steal=True)  # an admin action on b
        with pytest.raises(LeaseLost):
            await a.update_turn("t1", TurnUpdate(state="delivering", reply_kind="answer", reply_text="late"))
        with pytest.raises(LeaseLost):
            await a.create_turn(TurnRecord("t2", CONV, 0, "running", now, now))
        turn = await b.get_turn("t1")
        assert turn is not None and (turn.state, turn.reply_text) == ("running", None)
        assert await b.get_turn("t2") is None
        renewal = await a_leases.renew()
        assert renewal.lost == {CONV} and CONV not in a.tokens
        # a turn's chat-thread writes are fenced too, by the conversation that uses the thread
        await b.add_inbound(InboxMessage("e1", CONV, "console", "ch", "u", "hi", {}, now))
        await b.set_main_thread(CONV, 0, "chat_1")
        await b.create_chat_thread("chat_1", [{"role": "user", "content": "seed"}])
        with pytest.raises(LeaseLost):
            await a.finish_chat_run("run_late", "chat_1", [{"role": "assistant", "content": "late"}], {"s": 1})
        with pytest.raises(LeaseLost):
            await a.add_chat_summary("chat_1", 1, "late summary")
        assert await b.chat_run("run_late") is None
        thread = await b.chat_thread("chat_1")
        assert thread is not None and thread.summary is None and len(thread.messages) == 1
        assert await b.finish_chat_run("run_1", "chat_1", [{"role": "assistant", "content": "ok"}], {"s": 1})
        await b.update_turn("t1", TurnUpdate(state="replied"))  # the new owner writes
        await b_leases.release_all()
        assert await a_leases.claimable_work() == [CONV]  # unfinished and free again
    finally:
        await a.close()
        await b.close()
