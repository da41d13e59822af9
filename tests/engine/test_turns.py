"""End-to-end turns through the emulator over HTTP: answers, delegation, parallelism, memory, the mailbox.

Every test runs once per backend (the `backend` fixture): Responses + Conversations, Assistants v2, Chat
Completions, and a team mixing all three (`harness.MIXED`)."""

from __future__ import annotations

import itertools

from emulator import ManualClock, Rule, Script, ToolCall, run_emulator
from tests.engine.harness import backend_of, inbound, remote_runs, run_input_texts, running_bot, team


async def test_plain_answer_is_delivered_once_with_usage(emu, store_url, backend):
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("hello there"))
        [(turn, reply)] = await surface.wait_for(1)
        await bot.idle()
        assert reply.kind == "answer"
        assert reply.text == "You said: hello there"
        record = await bot.store.get_turn(turn.id)
        assert record.state == "delivered"
        assert record.input_tokens > 0 and record.output_tokens > 0
        assert next(e.kind for _, e in surface.events) == "started"
        assert len(surface.deliveries) == 1


async def test_one_delegation_reports_progress_and_uses_the_result(emu, store_url, backend):
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("please ask the critic about my plan"))
        [(_, reply)] = await surface.wait_for(1)
        assert reply.kind == "answer"
        assert "critic: done with" in reply.text
        delegated = surface.kinds("delegated")
        finished = surface.kinds("sub_finished")
        assert [d.sub for d in delegated] == ["critic"]
        assert [(f.sub, f.ok) for f in finished] == [("critic", True)]
        # the sub-assistant ran on its own conversation, not the main one
        conv = await bot.store.get_conversation("console:test:c1")
        critic_thread = await bot.store.get_sub_thread(conv.key, 0, "critic")
        assert critic_thread and critic_thread != conv.main_thread
        assert [r.thread for r in remote_runs(emu, "critic")] == [critic_thread]


async def test_three_sub_assistants_run_in_parallel(emu, store_url, backend):
    slow = Script(rules=[Rule(delay=0.3)])
    for name in ("researcher", "critic", "planner"):
        emu.scripts[name] = slow
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("ask the researcher, the critic and the planner"))
        [(_, reply)] = await surface.wait_for(1)
        assert reply.kind == "answer"
        for name in ("researcher", "critic", "planner"):
            assert f"{name}: done with" in reply.text
        subs = [r for r in remote_runs(emu) if r.agent != "proxy"]
        assert len(subs) == 3
        # every sub-assistant run started before any of them finished: they overlapped in time
        assert max(r.created_tick for r in subs) < min(r.finished_tick for r in subs)
        # and all three outputs went back to the proxy in one request
        if backend_of(backend, "proxy") == "responses":
            proxy_followups = [r.record for r in remote_runs(emu, "proxy")
                               if any(i.get("type") == "function_call_output" for i in r.record.input_items)]
            assert len(proxy_followups) == 1
            assert sum(i.get("type") == "function_call_output" for i in proxy_followups[0].input_items) == 3
        elif backend_of(backend, "proxy") == "chat":
            first, followup = remote_runs(emu, "proxy")
            assert first.record.finish_reason == "tool_calls" and len(first.record.tool_calls) == 3
            assert [m["role"] for m in followup.record.messages[-3:]] == ["tool", "tool", "tool"]
        else:
            submits = [e for e in emu.log if e.path.endswith("/submit_tool_outputs")]
            [proxy] = remote_runs(emu, "proxy")
            assert len(submits) == 1 and len(proxy.record.rounds) == 3


async def test_parallelism_is_bounded_by_max_parallel(emu, store_url, backend):
    slow = Script(rules=[Rule(delay=0.15)])
    for name in ("researcher", "critic", "planner"):
        emu.scripts[name] = slow
    async with running_bot(team(emu.base_url, store_url, backend=backend, max_parallel=1)) as (bot, surface):
        await bot.accept(inbound("ask the team"))
        await surface.wait_for(1)
        subs = [r for r in remote_runs(emu) if r.agent != "proxy"]
        assert len(subs) == 3
        for earlier, later in itertools.pairwise(subs):
            assert earlier.finished_tick < later.created_tick


async def test_follow_up_reuses_the_sub_assistant_thread(emu, store_url, backend):
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("ask the critic about plan A"))
        await surface.wait_for(1)
        await bot.accept(inbound("ask the critic about plan B"))
        replies = await surface.wait_for(2)
        assert "I remember 1 earlier requests" in replies[1][1].text
        threads = {r.thread for r in remote_runs(emu, "critic")}
        assert len(threads) == 1


async def test_sub_assistant_receives_task_and_context(emu, store_url, backend):
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("my budget is 500 euros"))
        await surface.wait_for(1)
        await bot.accept(inbound("ask the planner for a trip"))
        await surface.wait_for(2)
        [planner] = remote_runs(emu, "planner")
        sent = run_input_texts(emu, planner)[-1]
        assert "Task: ask the planner for a trip" in sent
        assert "my budget is 500 euros" in sent


async def test_messages_arriving_mid_turn_join_the_next_turn(emu, store_url, backend):
    emu.scripts["critic"] = Script(rules=[Rule(delay=0.3)])
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("ask the critic first"))
        await surface.wait_event("delegated")
        second = await bot.accept(inbound("second message"))
        third = await bot.accept(inbound("third message"))
        assert second.queued_behind_turn and third.queued_behind_turn
        replies = await surface.wait_for(2)
        await bot.idle()
        assert len(surface.deliveries) == 2
        assert replies[1][1].text == "You said: third message"
        turn_two = replies[1][0].id
        joined = await bot.store.inbound_for_turn(turn_two)
        assert [m.text for m in joined] == ["second message", "third message"]
        proxy_second = remote_runs(emu, "proxy")[-1]
        assert run_input_texts(emu, proxy_second) == ["second message", "third message"]


async def test_duplicate_event_id_is_answered_once(emu, store_url, backend):
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        first = await bot.accept(inbound("hi", event_id="E1"))
        again = await bot.accept(inbound("hi", event_id="E1"))
        assert not first.duplicate and again.duplicate
        await surface.wait_for(1)
        await bot.idle()
        assert len(surface.deliveries) == 1
        assert len(remote_runs(emu, "proxy")) == 1


async def test_conversations_do_not_wait_for_each_other(store_url, backend):
    clock = ManualClock()  # the slow conversation's critic works until the test moves the clock
    async with run_emulator(clock=clock, scripts={"critic": Script(rules=[Rule(delay=2.0)])}) as emu:
        async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
            await bot.accept(inbound("ask the critic, slowly", conversation="console:test:slow"))
            await bot.accept(inbound("quick one", conversation="console:test:fast"))
            [(turn, reply)] = await surface.wait_for(1)
            assert turn.conversation == "console:test:fast"
            assert reply.text == "You said: quick one"
            await emu.wait_until(lambda: bool(remote_runs(emu, "critic")))
            await clock.advance(2.0)
            await surface.wait_for(2)


async def test_nested_delegation_up_to_the_configured_depth(emu, store_url, backend):
    import dataclasses

    cfg = team(emu.base_url, store_url, backend=backend, max_depth=2)
    planner = dataclasses.replace(cfg.sub("planner"), delegates=("researcher",))
    cfg = dataclasses.replace(cfg, subs=tuple(planner if s.name == "planner" else s for s in cfg.subs))
    ask_planner = ToolCall("ask_planner", {"task": "{input}", "context": ""})
    emu.scripts["proxy"] = Script(rules=[Rule(on="message", calls=[ask_planner])])
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("ask the planner to involve the researcher"))
        [(_, reply)] = await surface.wait_for(1)
        assert reply.kind == "answer"
        subs = [e.sub for e in surface.kinds("delegated")]
        assert subs == ["planner", "researcher"]
        [nested] = remote_runs(emu, "researcher")
        assert nested.thread == await bot.store.get_sub_thread("console:test:c1", 0, "planner/researcher")


async def test_invalid_messages_are_refused_and_change_nothing(emu, store_url, backend):
    import pytest

    from bot.types import InvalidInbound

    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, _surface):
        for text in ("", "   \n\t ", "x" * 40_000):
            with pytest.raises(InvalidInbound):
                await bot.accept(inbound(text))
        assert await bot.store.conversations() == []
        # nothing reached the provider but the start-up sync of the team's assistants (Assistants backend)
        assert [e.path for e in emu.log if not e.path.startswith("/v1/assistants")] == []
