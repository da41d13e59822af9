"""The `Store` contract (storage/base.py), method by method, on both stores: each test runs once on SQLite and once
on a real PostgreSQL server (`store_url` in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from storage.base import (
    AuditEntry,
    ChainRecord,
    InboxMessage,
    RunRecord,
    RunTokens,
    Store,
    StoreError,
    ToolCallRecord,
    TranscriptEntry,
    TurnRecord,
    TurnUpdate,
)
from storage.select import store_for


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = store_for(store_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def msg(event_id: str, conversation: str = "c1", text: str = "hi") -> InboxMessage:
    return InboxMessage(event_id, conversation, "slack", "ch1", "u1", text, {"ts": event_id}, time.time())


def turn(turn_id: str, conversation: str = "c1", state: str = "received") -> TurnRecord:
    now = time.time()
    return TurnRecord(turn_id, conversation, 0, state, now, now)  # type: ignore[arg-type]


async def test_inbox_claims_are_idempotent_and_ordered(store: Store) -> None:
    for event in ("e1", "e2", "e3"):
        assert await store.add_inbound(msg(event))
    await store.add_inbound(msg("x1", conversation="c2"))
    assert sorted(await store.conversations_with_pending()) == ["c1", "c2"]
    await store.claim_inbound(["e1", "e2", "nope"], "t1")
    await store.claim_inbound(["e1", "e3"], "t2")  # e1 is taken already: only e3 moves
    assert [m.event_id for m in await store.pending_inbound("c1")] == []
    claimed = await store.inbound_for_turn("t1")
    assert [(m.event_id, m.state, m.turn_id) for m in claimed] == [("e1", "in_turn", "t1"), ("e2", "in_turn", "t1")]
    assert [m.event_id for m in await store.inbound_for_turn("t2")] == ["e3"]
    assert claimed[0].route == {"ts": "e1"} and claimed[0].user == "u1" and claimed[0].platform == "slack"
    conversation = await store.get_conversation("c1")
    assert conversation is not None and (conversation.channel, conversation.started_by) == ("ch1", "u1")


async def test_a_turn_from_start_to_delivery(store: Store) -> None:
    await store.add_inbound(msg("e1", text="question"))
    t = turn("t1")
    await store.start_turn(t, [msg("e1", text="question")], "main")
    with pytest.raises(StoreError):
        await store.start_turn(t, [], "main")
    assert [e.text for e in await store.transcript("c1", 0, "main")] == ["question"]
    await store.record_reply(t, TurnUpdate(state="delivering", reply_kind="answer", reply_text="answer",
                                           add_input_tokens=5, add_output_tokens=7), "main")
    assert [(e.role, e.text, e.turn_id) for e in await store.transcript("c1", 0, "main")] == [
        ("user", "question", "t1"), ("assistant", "answer", "t1")]
    assert [x.id for x in await store.unfinished_turns("c1")] == ["t1"]
    await store.finish_delivery("t1", "ref-1", ["e1"])
    await store.finish_delivery("t1", "ref-1", ["e1"])  # idempotent
    done = await store.get_turn("t1")
    assert done is not None
    assert (done.state, done.delivered_ref, done.input_tokens, done.output_tokens) == ("delivered", "ref-1", 5, 7)
    assert await store.unfinished_turns() == []
    assert [m.state for m in await store.inbound_for_turn("t1")] == ["answered"]
    with pytest.raises(StoreError):
        await store.update_turn("missing", TurnUpdate(state="running"))
    assert await store.get_turn("missing") is None


async def test_unfinished_turns_are_oldest_first(store: Store) -> None:
    for i, conversation in enumerate(("c1", "c2", "c1")):
        now = time.time() + i
        await store.create_turn(TurnRecord(f"t{i}", conversation, 0, "running", now, now))
    await store.update_turn("t1", TurnUpdate(state="delivered"))
    assert [t.id for t in await store.unfinished_turns()] == ["t0", "t2"]
    assert [t.id for t in await store.unfinished_turns("c2")] == []


async def test_runs_latest_and_active(store: Store) -> None:
    base = RunRecord("r1", "t1", "proxy", "proxy", "th1", "in_progress", 1, [{"role": "user", "content": "x"}],
                     created_at=100.0)
    await store.record_run(base)
    await store.record_run(RunRecord("r2", "t1", "proxy", "proxy", "th1", "queued", 2, [], created_at=100.0))
    latest = await store.latest_run("t1", "proxy")
    assert latest is not None and latest.remote_id == "r2"  # same created_at: the last recorded wins
    await store.record_run(base)  # replacing r1 records it again, so it is now the last recorded
    latest = await store.latest_run("t1", "proxy")
    assert latest is not None and (latest.remote_id, latest.input) == ("r1", [{"role": "user", "content": "x"}])
    await store.update_run("r2", status="completed", last_seq=9)
    await store.update_run("unknown", status="failed")
    assert [r.remote_id for r in await store.active_runs()] == ["r1"]
    assert [r.remote_id for r in await store.active_runs("t1")] == ["r1"]
    assert await store.active_runs("t2") == []
    await store.update_run("r1", status="cancelled")
    assert await store.active_runs() == []
    assert await store.latest_run("t1", "other") is None


async def test_run_tokens_replace_earlier_figures_and_sum_per_turn_and_assistant(store: Store) -> None:
    await store.start_turn(turn("t1"), [], "main")
    await store.start_turn(turn("t2", conversation="c2"), [], "main")
    for remote_id, turn_id, agent in (("r1", "t1", "proxy"), ("r2", "t1", "critic"), ("r3", "t1", "proxy"),
                                      ("r4", "t2", "proxy")):
        await store.record_run(RunRecord(remote_id, turn_id, agent, agent, "th", "in_progress", 0, []))
    await store.update_run("r1", status="in_progress", tokens=RunTokens(5, 0, 1))
    await store.update_run("r1", status="completed", tokens=RunTokens(50, 20, 10))  # cumulative: replaces
    await store.update_run("r1", status="completed")  # no figures: the recorded ones stay
    await store.update_run("r2", status="completed", tokens=RunTokens(7, 0, 3))
    await store.update_run("r3", status="completed", tokens=RunTokens(60, 40, 2))
    await store.update_run("r4", status="completed", tokens=RunTokens(1, 1, 1))
    rows = {(r.conversation, r.turn_id, r.agent): (r.runs, r.tokens) for r in await store.token_rows()}
    assert rows == {("c1", "t1", "proxy"): (2, RunTokens(110, 60, 12)), ("c1", "t1", "critic"): (1, RunTokens(7, 0, 3)),
                    ("c2", "t2", "proxy"): (1, RunTokens(1, 1, 1))}
    assert [(r.agent, r.tokens) for r in await store.token_rows("c2")] == [("proxy", RunTokens(1, 1, 1))]


async def test_tool_calls_keep_the_first_record_and_take_outputs(store: Store) -> None:
    call = ToolCallRecord("t1", "proxy", "call_1", "ask_critic", '{"q": 1}')
    await store.record_tool_call(call)
    await store.finish_tool_call("t1", "proxy", "call_1", "fine", True)
    await store.record_tool_call(ToolCallRecord("t1", "proxy", "call_1", "ask_other", "{}"))
    got = await store.get_tool_call("t1", "proxy", "call_1")
    assert got is not None and (got.name, got.output, got.ok) == ("ask_critic", "fine", True)
    await store.finish_tool_call("t1", "proxy", "nope", "x", False)
    assert await store.get_tool_call("t1", "proxy", "nope") is None


async def test_threads_generations_and_transcript_reset(store: Store) -> None:
    await store.add_inbound(msg("e1"))
    await store.set_main_thread("c1", 0, "thread_a")
    await store.set_sub_thread("c1", 0, "critic", "sub_1")
    await store.set_sub_thread("c1", 0, "critic", "sub_2")
    assert await store.get_sub_thread("c1", 0, "critic") == "sub_2"
    await store.append_transcript("c1", 0, "main", TranscriptEntry("user", "old"))
    assert await store.bump_generation("c1") == 1
    assert await store.bump_generation("unknown") == 0
    assert await store.get_conversation("unknown") is None
    await store.set_main_thread("c1", 0, "stale")  # made before the reset: never attached after it
    conversation = await store.get_conversation("c1")
    assert conversation is not None and (conversation.generation, conversation.main_thread) == (1, None)
    await store.mark_transcript_reset("c1", 0)
    await store.mark_transcript_reset("c1", 0)
    assert await store.transcript("c1", 0, "main") == []
    await store.append_transcript("c1", 1, "main", TranscriptEntry("assistant", "new", "t9"))
    assert await store.transcript("c1", 1, "main") == [TranscriptEntry("assistant", "new", "t9")]


async def test_agents_conversations_and_audit(store: Store) -> None:
    assert await store.get_agent("responses", "proxy") is None
    await store.set_agent("responses", "proxy", "asst_1", "h1")
    await store.set_agent("responses", "proxy", "asst_2", "h2")
    assert await store.get_agent("responses", "proxy") == ("asst_2", "h2")
    await store.add_inbound(msg("e1", conversation="c1"))
    await store.add_inbound(InboxMessage("e2", "c2", "discord", "ch2", "u2", "x", {}, time.time() + 1))
    assert [c.key for c in await store.conversations()] == ["c1", "c2"]
    assert [c.key for c in await store.conversations("ch2")] == ["c2"]
    for i in range(3):
        await store.add_audit(AuditEntry(time.time(), "slack", "u1", f"act{i}", "c1", "done", "d"))
    assert [a.action for a in await store.recent_audit(2)] == ["act2", "act1"]
    assert await store.writable()


async def test_a_cancelled_caller_leaves_its_write_whole_and_later_reads_see_it(store: Store) -> None:
    await store.add_inbound(msg("e1"))
    await store.add_inbound(msg("e2"))
    task = asyncio.ensure_future(store.start_turn(turn("t1"), [msg("e1"), msg("e2")], "main"))
    await asyncio.sleep(0)  # it has started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    claimed = [m.event_id for m in await store.inbound_for_turn("t1")]
    assert claimed in ([], ["e1", "e2"])  # whole or not at all
    assert len(await store.transcript("c1", 0, "main")) == len(claimed)


async def test_prune_deletes_only_old_finished_records_and_keeps_what_a_rebuild_needs(store: Store) -> None:
    day = 86_400.0
    old = time.time() - 40 * day
    # an old conversation, answered and delivered, then reset: everything finished and old
    await store.add_inbound(InboxMessage("e-old", "c1", "slack", "ch", "u1", "q", {}, old))
    await store.start_turn(TurnRecord("t-old", "c1", 0, "running", old, old), [msg("e-old")], "main")
    await store.record_run(RunRecord("r-old", "t-old", "proxy", "proxy", "th", "completed", 1, [], created_at=old))
    await store.record_tool_call(ToolCallRecord("t-old", "proxy", "call", "ask_critic", "{}"))
    await store.record_reply(turn("t-old"), TurnUpdate(state="delivering", reply_kind="answer", reply_text="a"),
                             "main")
    await store.finish_delivery("t-old", "ref", ["e-old"])
    await store.mark_transcript_reset("c1", 0)
    await store.bump_generation("c1")
    await store.append_transcript("c1", 1, "main", TranscriptEntry("user", "live generation"))
    # an unfinished turn of the same age: kept whole
    await store.add_inbound(InboxMessage("e-open", "c2", "slack", "ch", "u1", "q", {}, old))
    await store.start_turn(TurnRecord("t-open", "c2", 0, "running", old, old), [msg("e-open", "c2")], "main")
    await store.record_run(RunRecord("r-open", "t-open", "proxy", "proxy", "th", "in_progress", 1, [],
                                     created_at=old))
    await store.add_audit(AuditEntry(old, "slack", "u1", "reset", "c1", "done"))
    await store.add_audit(AuditEntry(time.time(), "slack", "u1", "cancel", "c1", "done"))

    from storage.base import RetentionPolicy

    await store.add_usage(time.strftime("%Y-%m-%d", time.gmtime(old)), ["bot", "user:slack:u1"], input_tokens=5)
    await store.add_usage(time.strftime("%Y-%m-%d", time.gmtime(time.time())), ["bot"], input_tokens=7)
    from storage.handoffs import Transfer

    handoffs = store
    for turn_id, conv in (("t-old", "c1"), ("t-open", "c2")):  # with the turn: its author and transfers
        await handoffs.record_turn_agent(turn_id, conv, 0, "editor")
        await handoffs.apply_transfer(Transfer(conv, 0, "greeter", "editor", turn_id=turn_id, call_id="x"), 3)
    keep_all = RetentionPolicy(inbox_days=0, runs_days=0, transcript_days=0, audit_days=0, usage_days=0)
    assert (await store.prune(keep_all)).total == 0
    # "now" is 31 days ahead: records of today are 31 days old, the `old` ones 71
    later = time.time() + 31 * day
    counts = await store.prune(RetentionPolicy(inbox_days=30, runs_days=30, transcript_days=30, audit_days=60,
                                               usage_days=60), now=later)
    assert (counts.inbox, counts.turns, counts.runs, counts.tool_calls, counts.transcript, counts.audit,
            counts.usage, counts.handoffs) == (1, 1, 1, 1, 2, 1, 2, 2)
    assert await handoffs.turn_agents("c1", 0) == {} and await handoffs.turn_agents("c2", 0) == {"t-open": "editor"}
    assert await handoffs.transfers("c1", 0) == [] and len(await handoffs.transfers("c2", 0)) == 1
    assert (await handoffs.handoff_state("c1", 0)).active == "editor"  # the state the transfer led to stays
    today = time.strftime("%Y-%m-%d", time.gmtime(time.time()))
    assert [(r.day, r.bucket) for r in await store.usage_on(today)] == [(today, "bot")]
    assert await store.get_turn("t-old") is None and await store.latest_run("t-old", "proxy") is None
    assert await store.get_tool_call("t-old", "proxy", "call") is None
    assert [t.id for t in await store.unfinished_turns()] == ["t-open"]
    assert [m.event_id for m in await store.inbound_for_turn("t-open")] == ["e-open"]
    assert [r.remote_id for r in await store.active_runs()] == ["r-open"]
    assert [e.text for e in await store.transcript("c1", 1, "main")] == ["live generation"]
    assert [e.text for e in await store.transcript("c2", 0, "main")] == ["hi"]
    assert [a.action for a in await store.recent_audit()] == ["cancel"]
    assert (await store.prune(RetentionPolicy(), now=later)).total == 0  # idempotent


async def test_chat_threads_runs_and_summaries(store: Store) -> None:
    assert await store.chat_thread("chat_x") is None
    seed = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "1"}]
    await store.create_chat_thread("chat_x", seed)
    with pytest.raises(StoreError):
        await store.create_chat_thread("chat_x", [])
    answer = [{"role": "user", "content": "two"}, {"role": "assistant", "content": "2"}]
    assert await store.finish_chat_run("run_1", "chat_x", answer, {"status": "completed"})
    assert not await store.finish_chat_run("run_1", "chat_x", answer, {"status": "other"})  # once only
    assert await store.chat_run("run_1") == {"status": "completed"} and await store.chat_run("run_2") is None
    thread = await store.chat_thread("chat_x")
    assert [m.message["content"] for m in thread.messages] == ["one", "1", "two", "2"] and thread.summary is None
    await store.add_chat_summary("chat_x", thread.messages[1].id, "they said one")
    folded = await store.chat_thread("chat_x")
    assert folded.summary == "they said one" and [m.message["content"] for m in folded.messages] == ["two", "2"]
    await store.set_thread_provider("conv_1", "responses|x|K|")
    assert await store.thread_provider("conv_1") == "responses|x|K|" and await store.thread_provider("c2") is None
    await store.delete_chat_thread("chat_x")
    assert await store.chat_thread("chat_x") is None and await store.chat_run("run_1") is None
    await store.create_chat_thread("chat_nul", [{"role": "user", "content": "a\u0000b"}])  # JSON escapes NUL
    [kept] = (await store.chat_thread("chat_nul")).messages
    assert kept.message["content"] == "a\u0000b"


async def test_response_chains_are_created_empty_read_and_deleted(store: Store) -> None:
    assert await store.chain("chain_1") is None
    await store.create_chain("chain_1")
    assert await store.chain("chain_1") == ChainRecord("chain_1", None, ())
    with pytest.raises(StoreError):
        await store.create_chain("chain_1")
    assert await store.chain("chain_1") == ChainRecord("chain_1", None, ())  # the failed create changed nothing
    await store.create_chain("chain_2")
    await store.delete_chain("chain_1")
    await store.delete_chain("chain_1")  # unknown: nothing
    assert await store.chain("chain_1") is None and await store.chain("chain_2") == ChainRecord("chain_2", None, ())
    await store.create_chain("chain_1")  # a deleted id can be created again, empty
    assert await store.chain("chain_1") == ChainRecord("chain_1", None, ())


async def test_advance_chain_is_a_compare_and_set_that_clears_the_cancelled_calls(store: Store) -> None:
    await store.create_chain("chain_1")
    assert not await store.advance_chain("chain_1", "resp_x", "resp_1")  # the head is None, not resp_x
    assert await store.chain("chain_1") == ChainRecord("chain_1", None, ())
    assert await store.advance_chain("chain_1", None, "resp_1")
    assert await store.chain("chain_1") == ChainRecord("chain_1", "resp_1", ())
    await store.cancel_chain_calls("chain_1", ["call_a"])
    assert await store.advance_chain("chain_1", None, "resp_1")  # again: already done, and nothing changes
    assert await store.chain("chain_1") == ChainRecord("chain_1", "resp_1", ("call_a",))
    for previous in (None, "resp_x"):  # the head is resp_1: a run that did not continue it is left out
        assert not await store.advance_chain("chain_1", previous, "resp_2")
    assert await store.chain("chain_1") == ChainRecord("chain_1", "resp_1", ("call_a",))
    assert await store.advance_chain("chain_1", "resp_1", "resp_2")
    assert await store.chain("chain_1") == ChainRecord("chain_1", "resp_2", ())  # the new head's calls: none yet
    assert not await store.advance_chain("unknown", None, "resp_1")
    assert await store.chain("unknown") is None  # not created by an advance


async def test_cancel_chain_calls_keeps_order_without_repeats(store: Store) -> None:
    await store.create_chain("chain_1")
    await store.cancel_chain_calls("chain_1", ["call_b", "call_a"])
    await store.cancel_chain_calls("chain_1", ["call_a", "call_c", "call_b", "call_d", "call_c"])
    await store.cancel_chain_calls("chain_1", [])
    assert await store.chain("chain_1") == ChainRecord("chain_1", None, ("call_b", "call_a", "call_c", "call_d"))
    await store.cancel_chain_calls("unknown", ["call_a"])  # nothing, and no chain made
    assert await store.chain("unknown") is None


async def test_racing_advances_of_a_chain_move_its_head_once(store_url: str) -> None:
    """Two stores on one database (two instances), each trying to move the same head: exactly one wins."""
    stores = [store_for(store_url) for _ in range(2)]
    for opened in stores:
        await opened.open()
    try:
        previous: str | None = None
        await stores[0].create_chain("chain_1")
        for n in range(20):
            results = await asyncio.gather(*(
                s.advance_chain("chain_1", previous, f"resp_{n}_{i}") for i, s in enumerate(stores)))
            assert sorted(results) == [False, True], n
            previous = f"resp_{n}_{results.index(True)}"
            for opened in stores:
                got = await opened.chain("chain_1")
                assert got is not None and got.head == previous
    finally:
        for opened in stores:
            await opened.close()


async def test_handoff_transfers_apply_once_merge_state_and_respect_the_turn_limit(store: Store) -> None:
    from storage.handoffs import Transfer

    handoffs = store
    assert (await handoffs.handoff_state("c1", 0)).active is None
    first = Transfer("c1", 0, "greeter", "editor", "asked", "notes\x00here", {"page": "42", "x": "1"}, "t1", "call1")
    assert await handoffs.apply_transfer(first, 2) == "applied"
    assert await handoffs.apply_transfer(first, 2) == "repeated"  # a resumed turn: nothing changes
    second = Transfer("c1", 0, "editor", "layout", "", "", {"x": None, "y": "2"}, "t1", "call2")
    assert await handoffs.apply_transfer(second, 2) == "applied"
    third = Transfer("c1", 0, "layout", "editor", "", "", {"z": "3"}, "t1", "call3")
    assert await handoffs.apply_transfer(third, 2) == "over_limit"
    held = await handoffs.handoff_state("c1", 0)
    assert (held.active, dict(held.state), held.from_agent) == ("layout", {"page": "42", "y": "2"}, "editor")
    admin = Transfer("c1", 0, "layout", "greeter", "set by root", source="admin")
    assert await handoffs.apply_transfer(admin, 2) == "applied"  # an admin's switch has no turn and no limit
    assert (await handoffs.handoff_state("c1", 0)).active == "greeter"
    assert [(t.to_agent, t.source) for t in await handoffs.transfers("c1", 0)] == [
        ("editor", "model"), ("layout", "model"), ("greeter", "admin")]
    assert (await handoffs.handoff_state("c1", 1)).active is None  # a new generation starts at the entry
    assert (await handoffs.handoff_state("c2", 0)).state == {}


async def test_turn_agents_record_who_answered_each_turn(store: Store) -> None:
    handoffs = store
    await handoffs.record_turn_agent("t1", "c1", 0, "greeter")
    await handoffs.record_turn_agent("t2", "c1", 0, "greeter")
    await handoffs.record_turn_agent("t2", "c1", 0, "editor")  # a resumed turn that ended with another assistant
    await handoffs.record_turn_agent("t3", "c1", 1, "greeter")
    assert await handoffs.turn_agents("c1", 0) == {"t1": "greeter", "t2": "editor"}


async def test_forget_starts_the_users_conversations_afresh_at_the_entry(store: Store) -> None:
    from storage.handoffs import Transfer

    handoffs = store
    await store.add_inbound(msg("e1"))
    await store.start_turn(turn("t1"), [msg("e1")], "main")
    await handoffs.apply_transfer(Transfer("c1", 0, "greeter", "billing", "", "user said invoice 7",
                                           {"invoice": "7"}, "t1", "call1"), 3)
    await handoffs.record_turn_agent("t1", "c1", 0, "billing")
    await handoffs.apply_transfer(Transfer("c9", 0, "greeter", "billing", turn_id="t9", call_id="c"), 3)  # another's
    dry = await store.forget_user("u1", dry_run=True)
    assert dry.conversations == ("c1",) and (await handoffs.handoff_state("c1", 0)).active == "billing"
    await store.forget_user("u1")
    held = await handoffs.handoff_state("c1", 0)
    assert (held.active, dict(held.state), held.notes) == (None, {}, "")
    assert await handoffs.transfers("c1", 0) == [] and await handoffs.turn_agents("c1", 0) == {}
    assert (await handoffs.handoff_state("c9", 0)).active == "billing"
