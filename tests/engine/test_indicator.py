"""The thinking indicator of a message that reaches an idle conversation is shown when the message is accepted, not
when the worker gets to it, and its turn keeps that indicator's id; a message deleted before its turn began takes
its indicator back with it (`Withdrawn`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.engine import Bot, make_backend
from bot.types import Actor, CommandContext
from storage.base import InboxMessage, StoreError
from storage.sqlite import SQLiteStore
from tests.engine.harness import RecordingSurface, inbound, team


class SlowInbox(SQLiteStore):
    """A real SQLite store whose worker-side inbox read waits until `opened` is set: a worker that is behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.opened = asyncio.Event()
        self.reading = asyncio.Event()

    async def pending_inbound(self, conversation: str) -> list[InboxMessage]:
        self.reading.set()
        await self.opened.wait()
        return await super().pending_inbound(conversation)


@asynccontextmanager
async def slow_bot(base_url: str, tmp_path: Path) -> AsyncIterator[tuple[Bot, RecordingSurface, SlowInbox]]:
    cfg = team(base_url, tmp_path / "db")
    store = SlowInbox(tmp_path / "db")
    bot = Bot(cfg, store, make_backend(cfg))
    surface = RecordingSurface()
    bot.add_surface(surface)
    async with bot.running():
        yield bot, surface, store


async def test_the_indicator_shows_before_the_worker_reads_the_inbox_and_the_turn_keeps_its_id(emu, tmp_path):
    async with slow_bot(emu.base_url, tmp_path) as (bot, surface, store):
        await bot.accept(inbound("hello while the worker is behind"))
        await surface.wait_event("started")
        await store.reading.wait()  # the worker is stuck before it has even seen the message
        assert surface.deliveries == [] and not emu.log
        [shown_for] = [turn_id for turn_id, e in surface.events if e.kind == "started"]
        store.opened.set()
        [(turn, reply)] = await surface.wait_for(1)
        await bot.idle()
        assert turn.id == shown_for and reply.text == "You said: hello while the worker is behind"
        assert len(surface.kinds("started")) == 1  # the worker does not show it a second time
        assert (await bot.store.get_turn(turn.id)) is not None


async def test_a_message_arriving_after_the_announced_one_starts_the_next_turn(emu, tmp_path):
    async with slow_bot(emu.base_url, tmp_path) as (bot, surface, store):
        first = await bot.accept(inbound("first"))
        second = await bot.accept(inbound("second"))
        assert not first.queued_behind_turn and second.queued_behind_turn
        await surface.wait_event("started")
        store.opened.set()
        replies = await surface.wait_for(2)
        await bot.idle()
        assert [r.text for _, r in replies] == ["You said: first", "You said: second"]
        started = [turn_id for turn_id, e in surface.events if e.kind == "started"]
        assert started == [replies[0][0].id, replies[1][0].id]  # one indicator per turn, each with its turn's id
        assert [m.text for m in await bot.store.inbound_for_turn(replies[0][0].id)] == ["first"]


async def test_a_message_forgotten_before_its_turn_began_withdraws_its_indicator(emu, tmp_path):
    async with slow_bot(emu.base_url, tmp_path) as (bot, surface, store):
        await bot.accept(inbound("please forget me", user="leaver"))
        await surface.wait_event("started")
        await store.reading.wait()
        store.opened.set()  # the admin's door cancels the stuck worker; the worker after it finds nothing
        admin = CommandContext(Actor("console", "root", platform_admin=True), channel="console:test")
        result = await bot.command(admin, "forget user console:leaver")
        assert result.ok, result.text
        await surface.wait_event("withdrawn")
        await bot.idle()
        [(shown_for, _)] = [(t, e) for t, e in surface.events if e.kind == "started"]
        assert [t for t, e in surface.events if e.kind == "withdrawn"] == [shown_for]
        assert surface.deliveries == [] and not emu.log
        assert await bot.store.get_turn(shown_for) is None


async def test_a_message_sent_while_the_last_reply_is_delivered_is_shown_at_once(emu, tmp_path):
    """The closed loop of a chat: the user answers the moment a reply appears, while the worker is still finishing
    that turn. The new message starts the next turn either way, so its indicator is shown at accept too."""
    async with slow_bot(emu.base_url, tmp_path) as (bot, surface, store):
        store.opened.set()
        original = surface.deliver

        async def answer_at_once(turn, reply):  # type: ignore[no-untyped-def]
            if not surface.deliveries:
                store.opened.clear()  # the worker's next look at the inbox waits
                store.reading.clear()
                accepted = await bot.accept(inbound("and one more thing"))
                assert accepted.queued_behind_turn  # its worker is busy finishing this turn
            return await original(turn, reply)

        surface.deliver = answer_at_once  # type: ignore[method-assign]
        await bot.accept(inbound("first question"))
        await surface.wait_for(1)
        await store.reading.wait()  # the worker is back at the inbox, stuck
        started = [turn_id for turn_id, e in surface.events if e.kind == "started"]
        assert len(started) == 2 and len(surface.deliveries) == 1
        store.opened.set()
        replies = await surface.wait_for(2)
        await bot.idle()
        assert replies[1][0].id == started[1] and replies[1][1].text == "You said: and one more thing"
        assert len(surface.kinds("started")) == 2


class SlowBooking(SQLiteStore):
    """A real SQLite store whose usage booking waits until `opened` is set, and which says when a delivery is
    recorded: the worker is then past its reply and waits for the booking, before it reads the inbox again. The
    faults of that window: the booking refused (`refuse_booking`), the next inbox read failing once (`fail_read`)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.opened = asyncio.Event()
        self.delivery_recorded = asyncio.Event()
        self.refuse_booking = False
        self.fail_read = False

    async def finish_delivery(self, turn_id: str, delivered_ref: str, event_ids: list[str]) -> None:
        await super().finish_delivery(turn_id, delivered_ref, event_ids)
        self.delivery_recorded.set()

    async def add_usage(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        await self.opened.wait()
        if self.refuse_booking:
            raise StoreError("database or disk is full")
        await super().add_usage(*args, **kwargs)

    async def pending_inbound(self, conversation: str) -> list[InboxMessage]:
        if self.fail_read:
            self.fail_read = False
            raise StoreError("disk I/O error")
        return await super().pending_inbound(conversation)


@pytest.mark.parametrize("fault", [None, "booking refused", "inbox read fails once"])
async def test_a_message_sent_while_the_last_turn_finishes_after_its_reply_is_shown_at_once(emu, tmp_path, fault):
    """After the reply is posted the worker still books the turn's usage before it reads the inbox: a message
    accepted then starts the next turn all the same, so its indicator is shown at accept, not when the worker is
    done (under load that wait was the 0.4 s tail of accept -> indicator with 10,000 conversations). With a fault
    at either step of that window the message is still answered once, under the indicator's turn."""
    cfg = team(emu.base_url, tmp_path / "db")
    store = SlowBooking(tmp_path / "db")
    bot = Bot(cfg, store, make_backend(cfg))
    surface = RecordingSurface()
    bot.add_surface(surface)
    async with bot.running():
        await bot.accept(inbound("first question"))
        await store.delivery_recorded.wait()  # the worker now waits for the booking, past its turn's delivery
        accepted = await bot.accept(inbound("and one more thing"))
        assert accepted.queued_behind_turn
        await surface.wait_event("started", 2)  # shown while the worker still waits
        assert len(surface.deliveries) == 1
        store.refuse_booking = fault == "booking refused"
        store.fail_read = fault == "inbox read fails once"
        store.opened.set()
        replies = await surface.wait_for(2)
        await bot.idle()
        started = [turn_id for turn_id, e in surface.events if e.kind == "started"]
        assert [turn.id for turn, _ in replies] == started
        assert [r.text for _, r in replies] == ["You said: first question", "You said: and one more thing"]
        assert not surface.kinds("withdrawn") and not store.fail_read
