"""The store contract's rate, usage and deletion operations (`storage.base`: admit_inbound, add_usage, usage_on,
forget_user), on both stores (`store_url`): what each promises, concurrency included."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from storage.base import InboxMessage, Store, TurnRecord
from storage.select import store_for


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = store_for(store_url)
    await s.open()
    yield s
    await s.close()


def message(event_id: str, user: str = "u1", conversation: str = "c1", text: str = "hello") -> InboxMessage:
    return InboxMessage(event_id, conversation, "slack", "slack:T:C", user, text, {}, time.time())


async def test_admit_is_add_inbound_under_quotas(store):
    quotas = {"rate:user": 2, "rate:conversation": 3}
    assert await store.admit_inbound(message("e1"), quotas, 100) == ""
    assert await store.admit_inbound(message("e1"), quotas, 100) == "duplicate"  # counts nothing
    assert await store.admit_inbound(message("e2"), quotas, 100) == ""
    assert await store.admit_inbound(message("e3"), quotas, 100) == "rate:user"  # the first full one, in order
    assert await store.admit_inbound(message("e4", user="u2"), {"rate:conversation": 3}, 100) == ""
    assert await store.admit_inbound(message("e5", user="u2"), {"rate:conversation": 3}, 100) == "rate:conversation"
    assert [m.event_id for m in await store.pending_inbound("c1")] == ["e1", "e2", "e4"]
    assert (await store.get_conversation("c1")).started_by == "u1"
    assert await store.admit_inbound(message("e3"), quotas, 101) == ""  # a new minute; refused ids are not kept
    assert await store.admit_inbound(message("e6"), {}, 101) == ""  # no quotas: add_inbound


async def test_admit_is_exact_under_concurrency(store):
    outcomes = await asyncio.gather(*(store.admit_inbound(message(f"e{i}", conversation=f"c{i}"), {"u": 13}, 7)
                                      for i in range(200)))
    assert outcomes.count("") == 13 and outcomes.count("u") == 187


async def test_usage_adds_up_per_day_and_bucket(store):
    await store.add_usage("2026-01-01", ["bot", "user:slack:u1", "bot"], input_tokens=10, output_tokens=5, cost=0.5)
    await store.add_usage("2026-01-01", ["bot"], input_tokens=1, output_tokens=1, cost=0.25)
    await store.add_usage("2026-01-01", ["user:slack:u1"], granted_tokens=100, granted_cost=2.0)
    await store.add_usage("2026-01-02", ["bot"], input_tokens=7, cached_input_tokens=3)
    await store.add_usage("2026-01-02", ["bot"], input_tokens=2, cached_input_tokens=2)
    bot, user = await store.usage_on("2026-01-01")
    assert (bot.bucket, bot.tokens, bot.cost) == ("bot", 17, 0.75)  # a bucket named twice in one call counts once
    assert (user.tokens, user.granted_tokens, user.granted_cost) == (15, 100, 2.0)
    assert [r.bucket for r in await store.usage_on("2026-01-01", ["user:slack:u1", "channel:x"])] == [
        "user:slack:u1"]
    assert [(r.tokens, r.cached_input_tokens) for r in await store.usage_on("2026-01-02")] == [(9, 5)]


async def test_forget_dry_run_changes_nothing_and_the_real_one_keeps_others(store):
    await store.admit_inbound(message("a1", user="alice", text="alice-secret"), {}, 1)
    await store.admit_inbound(message("b1", user="bob", text="bob-words"), {}, 1)
    turn = TurnRecord.new("c1", 0)
    await store.start_turn(turn, await store.pending_inbound("c1"), "main")
    await store.set_main_thread("c1", 0, "conv_1")
    await store.set_sub_thread("c1", 0, "critic", "conv_2")
    preview = await store.forget_user("alice", "slack", dry_run=True)
    assert (preview.messages, preview.turns, preview.conversations) == (1, 1, ("c1",))
    assert set(preview.threads) == {"conv_1", "conv_2"}
    assert len(await store.inbound_for_turn(turn.id)) == 2 and await store.get_turn(turn.id) is not None
    assert await store.forget_user("alice", "discord") == (await store.forget_user("nobody"))  # other platform
    report = await store.forget_user("alice")
    assert (report.messages, report.turns) == (1, 1)
    assert await store.get_turn(turn.id) is None
    # bob's message lost its turn before an answer was delivered: it waits to be answered anew
    assert [(m.event_id, m.state) for m in await store.pending_inbound("c1")] == [("b1", "pending")]
    conv = await store.get_conversation("c1")
    assert conv.main_thread is None and conv.started_by == ""
    assert await store.get_sub_thread("c1", 0, "critic") is None
    assert [e.text for e in await store.transcript("c1", 0, "main")] == []
