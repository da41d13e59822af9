"""The Responses backend with `[openai] threads = "chains"`: a thread is a chain of stored responses.

What the chain mode must keep of what conversations give: a conversation's first turn creates nothing but its runs,
every later run continues the thread's last completed response, a call given up on is answered "cancelled" by the
next run, a lost create is answered once, and a chain whose responses are gone is rebuilt from our transcript. The
engine-wide behaviour (crashes, admin races, recovery) runs on chains through the `backend` fixture ("chains")."""

from __future__ import annotations

import pytest

from emulator import Rule, Script
from tests.engine.harness import delete_remote_thread, inbound, remote_runs, running_bot, team

CANCELLED_OUTPUT = "(cancelled: no longer needed)"


def _posts(emu, pattern_end: str) -> list:  # type: ignore[no-untyped-def]
    return [e for e in emu.log if e.method == "POST" and e.path.endswith(pattern_end)]


async def test_a_first_turn_sends_only_its_runs_and_a_follow_up_continues_each_chain(emu, store_url):
    async with running_bot(team(emu.base_url, store_url, backend="chains")) as (bot, surface):
        await bot.accept(inbound("ask the researcher, the critic and the planner"))
        [(_, first)] = await surface.wait_for(1)
        await bot.idle()
        assert first.kind == "answer"
        # k = 3 delegations: the proxy, three sub-assistants, the proxy again; nothing else
        assert [e.path for e in emu.log] == ["/v1/responses"] * 5
        assert not emu.conversations

        await bot.accept(inbound("ask the critic about plan B"))
        replies = await surface.wait_for(2)
        await bot.idle()
        assert "I remember 1 earlier requests" in replies[1][1].text  # the critic's chain carried its first task
        critic = remote_runs(emu, "critic")
        assert critic[1].record.previous_response_id == critic[0].id
        proxy = remote_runs(emu, "proxy")
        assert proxy[2].record.previous_response_id == proxy[1].id  # turn 2 continues turn 1's final answer
        conversation = await bot.store.get_conversation("console:test:c1")
        assert (await bot.store.chain(conversation.main_thread)).head == proxy[-1].id
        assert len(_posts(emu, "/conversations")) == 0


async def test_a_create_whose_answer_was_lost_is_sent_again_and_answered_once(emu, store_url):
    emu.faults.drop_stream(0, agent="proxy")  # the create runs; its stream breaks before the first event
    async with running_bot(team(emu.base_url, store_url, backend="chains")) as (bot, surface):
        await bot.accept(inbound("hello"))
        [(_, reply)] = await surface.wait_for(1)
        await bot.idle()
        assert reply.text == "You said: hello"
        assert len(surface.deliveries) == 1
        lost, resent = remote_runs(emu, "proxy")  # the price of chains: nothing finds the lost one, so it ran twice
        assert lost.record.previous_response_id is None and resent.record.previous_response_id is None
        conversation = await bot.store.get_conversation("console:test:c1")
        assert (await bot.store.chain(conversation.main_thread)).head == resent.id

        await bot.accept(inbound("and again"))
        await surface.wait_for(2)
        assert remote_runs(emu, "proxy")[-1].record.previous_response_id == resent.id


async def test_calls_of_a_failed_turn_are_answered_cancelled_by_the_next_run_without_a_request(emu, store_url):
    """The proxy's run with the three results is refused: the turn fails, and the calls of the response it
    continued are given up (`abandon`). On a chain there are no items to write: the next run carries their
    "cancelled" outputs itself, so it is never refused for calls without outputs."""
    emu.scripts["proxy"] = Script([Rule(on="tool_outputs", fail="invalid_prompt")])
    async with running_bot(team(emu.base_url, store_url, backend="chains")) as (bot, surface):
        await bot.accept(inbound("ask the team about plan A"))  # three parallel calls, then a refusal
        [(_, failed)] = await surface.wait_for(1)
        await bot.idle()
        assert failed.kind == "failure" and "refused" in failed.text
        waiting = remote_runs(emu, "proxy")[0]
        calls = [i["call_id"] for i in waiting.record.output if i.get("type") == "function_call"]
        assert len(calls) == 3

        await bot.accept(inbound("hello again"))
        replies = await surface.wait_for(2)
        await bot.idle()
        assert (replies[1][1].kind, replies[1][1].text) == ("answer", "You said: hello again")
        after = remote_runs(emu, "proxy")[-1].record
        assert after.previous_response_id == waiting.id
        assert [(i["call_id"], i["output"]) for i in after.input_items if i["type"] == "function_call_output"] == [
            (call, CANCELLED_OUTPUT) for call in calls]
        assert [e.error for e in emu.log if e.status == 400] == []  # never refused
        assert not _posts(emu, "/items")  # the answers rode on the run
        conversation = await bot.store.get_conversation("console:test:c1")
        assert (await bot.store.chain(conversation.main_thread)).cancelled == ()


async def test_a_chain_whose_responses_are_gone_is_rebuilt_from_the_transcript(emu, store_url):
    async with running_bot(team(emu.base_url, store_url, backend="chains")) as (bot, surface):
        await bot.accept(inbound("my name is Ada"))
        await surface.wait_for(1)
        await bot.idle()
        conversation = await bot.store.get_conversation("console:test:c1")
        delete_remote_thread(emu, conversation.main_thread)  # as the responses' 30 days of storage ending would

        await bot.accept(inbound("what is my name"))
        replies = await surface.wait_for(2)
        await bot.idle()
        assert replies[1][1].kind == "answer"
        assert bot.supervisor.recovery_counts.get("thread_gone") == 1
        rebuilt = (await bot.store.get_conversation("console:test:c1")).main_thread
        assert rebuilt in emu.conversations  # seeded with history, the thread is a conversation now
        texts = [i for i in emu.conversations[rebuilt].items if i.get("type") == "message"]
        assert any("my name is Ada" in str(i.get("content")) for i in texts)
        assert await bot.store.chain(conversation.main_thread) is not None  # the old chain's row stays until reset


async def test_the_emulator_deletes_the_response_a_create_continues_only_for_creates_that_continue_one(emu):
    """The fault matrix's `deleted` cell on chains: bound to a create with `previous_response_id`, it deletes that
    response just before the create is handled (404 for the create); a create continuing nothing is not its kind."""
    import openai

    client = openai.AsyncOpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
    first = await client.responses.create(model="emu-1", input="hello", store=True)
    emu.faults.delete_previous_response(agent="assistant")
    await client.responses.create(model="emu-1", input="no previous", store=True)  # not bound: continues nothing
    try:
        await client.responses.create(model="emu-1", input="again", previous_response_id=first.id, store=True)
        raise AssertionError("the continued response was not deleted")
    except openai.NotFoundError as exc:
        assert exc.body["param"] == "previous_response_id"  # type: ignore[index]
    try:
        await client.responses.retrieve(first.id)
        raise AssertionError("the deleted response is still stored")
    except openai.NotFoundError:
        pass
    await client.close()


async def test_calls_of_a_stopped_turn_are_found_at_the_head_when_the_next_run_is_refused(emu, store_url):
    """A turn stopped by its timeout while the critic works gives nothing up (nor does a process killed then): the
    next run chains from a head whose call has no output, the provider answers `No tool output found`, and the
    head's calls are answered "cancelled" on the run sent again."""
    emu.scripts["critic"] = Script(rules=[Rule(delay=30.0)])
    async with running_bot(team(emu.base_url, store_url, backend="chains", turn_timeout=0.5)) as (bot, surface):
        await bot.accept(inbound("ask the critic"))
        [(_, stopped)] = await surface.wait_for(1)
        await bot.idle()
        assert stopped.kind == "failure"
        del emu.scripts["critic"]
        await bot.accept(inbound("hello again"))
        replies = await surface.wait_for(2)
        await bot.idle()
        assert replies[1][1].text == "You said: hello again"
        assert bot.supervisor.recovery_counts.get("stuck_tool_call") == 1
        refused = [e for e in emu.log if e.status == 400]
        assert len(refused) == 1 and "No tool output found" in str(refused[0].error)
        waiting = remote_runs(emu, "proxy")[0]
        [call] = [i["call_id"] for i in waiting.record.output if i.get("type") == "function_call"]
        after = remote_runs(emu, "proxy")[-1].record
        assert after.previous_response_id == waiting.id
        assert [(i["call_id"], i["output"]) for i in after.input_items if i["type"] == "function_call_output"] == [
            (call, CANCELLED_OUTPUT)]


@pytest.mark.parametrize("method", ["create_chain", "chain", "advance_chain", "cancel_chain_calls"])
async def test_a_store_fault_at_each_step_of_a_chain_ends_the_turn_visibly_and_the_next_one_is_answered(
    emu, tmp_path, method
):
    """The store refuses once at each chain operation of a turn that creates its threads, delegates, and fails (its
    run with the results is refused, so its calls are given up): that turn gets one explicit reply, never silence,
    and the conversation goes on: the next message is answered from a head that still works."""
    from bot.backends.providers import make_backend
    from bot.engine import Bot
    from storage.base import StoreError
    from storage.sqlite import SQLiteStore
    from tests.engine.harness import RecordingSurface

    class RefusesOnce(SQLiteStore):
        refused = 0

        def __getattribute__(self, name: str):  # type: ignore[no-untyped-def]
            attr = super().__getattribute__(name)
            if name != method:
                return attr

            async def once(*args, **kwargs):  # type: ignore[no-untyped-def]
                if type(self).refused == 0:
                    type(self).refused = 1
                    raise StoreError("database write failed (disk I/O error)")
                return await attr(*args, **kwargs)

            return once

    emu.scripts["proxy"] = Script([Rule(on="tool_outputs", fail="invalid_prompt")])
    cfg = team(emu.base_url, tmp_path / "db", backend="chains")
    bot = Bot(cfg, RefusesOnce(tmp_path / "db"), make_backend(cfg))
    surface = RecordingSurface()
    bot.add_surface(surface)
    async with bot.running():
        await bot.accept(inbound("ask the critic"))  # one call, then a refusal
        [(_, first)] = await surface.wait_for(1)
        await bot.idle()
        assert first.kind == "failure"  # the provider's refusal or the store's: said either way
        assert RefusesOnce.refused == 1  # the fault was met
        await bot.accept(inbound("hello again"))
        replies = await surface.wait_for(2)
        await bot.idle()
    assert len(surface.deliveries) == 2
    assert replies[1][1].text == "You said: hello again"
