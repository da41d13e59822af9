"""Every row of the supervisor's recovery table, triggered by its emulator fault, ends in exactly one reply.

Tests taking the `backend` fixture run on every backend. On `chat` a provider-side cancel is a stream the server
breaks off (the request is sent again), and there is no remote thread to lose or lock. Three rows are inherently
Responses-only (the `conversation_locked` error, a conversation stuck on an unanswered function call, resuming a
stream by sequence number); their Assistants counterparts (thread lock held by a stale run of ours vs someone
else's, polling with `openai-poll-after-ms`) are in test_assistants.py."""

from __future__ import annotations

import asyncio

import openai
import pytest

from emulator import Rule, Script
from tests.engine.harness import (
    RUN_CREATE_PATHS,
    backend_of,
    delete_remote_thread,
    inbound,
    remote_runs,
    run_creates,
    running_bot,
    team,
    thread_texts,
)


def reasons(surface) -> list[str]:
    return [e.reason for e in surface.kinds("retrying")]


async def one_reply(bot, surface):
    [(turn, reply)] = await surface.wait_for(1)
    await bot.idle()
    assert len(surface.deliveries) == 1
    return turn, reply


async def test_provider_cancel_is_recreated(emu, store_url, backend):
    emu.faults.cancel(agent="proxy", after_events=2)
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("hello"))
        _, reply = await one_reply(bot, surface)
        assert reply.text == "You said: hello"
        on_chat = backend_of(backend, "proxy") == "chat"
        assert reasons(surface) == ["stream_dropped" if on_chat else "cancelled_by_provider"]
        statuses = [r.status for r in remote_runs(emu, "proxy")]
        assert statuses == ["cancelled", "completed"]


async def test_sub_assistant_cancelled_by_provider_is_recreated(emu, store_url, backend):
    emu.faults.cancel(agent="critic", after_events=1)
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("ask the critic"))
        _, reply = await one_reply(bot, surface)
        assert "critic: done with" in reply.text
        reason = "stream_dropped" if backend_of(backend, "critic") == "chat" else "cancelled_by_provider"
        assert [(e.who, e.reason) for e in surface.kinds("retrying")] == [("critic", reason)]


async def test_server_error_backs_off_and_retries(emu, store_url, backend):
    emu.faults.fail("server_error", agent="proxy", count=2)
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("hello"))
        _, reply = await one_reply(bot, surface)
        assert reply.kind == "answer"
        assert reasons(surface) == ["server_error", "server_error"]


async def test_http_429_honours_retry_after(emu, store_url, backend):
    emu.faults.http_error(429, method="POST", path=RUN_CREATE_PATHS[backend], count=2, retry_after=0.05)
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("hello"))
        _, reply = await one_reply(bot, surface)
        assert reply.kind == "answer"
        assert reasons(surface) == ["rate_limit", "rate_limit"]
        posts = run_creates(emu, backend)
        assert [e.status for e in posts] == [429, 429, 200]
        # the retry waited at least the Retry-After the emulator sent
        assert posts[1].t_start - posts[0].t_end >= 0.04


async def test_invalid_prompt_fails_plainly_without_retrying(emu, store_url, backend):
    emu.faults.fail("invalid_prompt", agent="proxy")
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("hello"))
        turn, reply = await one_reply(bot, surface)
        assert reply.kind == "failure"
        assert "refused this request" in reply.text
        assert reasons(surface) == []
        assert (await bot.store.get_turn(turn.id)).state == "delivered"


async def test_incomplete_is_delivered_and_says_so(emu, store_url, backend):
    emu.scripts["proxy"] = Script(rules=[Rule(reply="A partial answer", incomplete="max_output_tokens")])
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("hello"))
        _, reply = await one_reply(bot, surface)
        assert reply.kind == "answer"
        assert reply.text.startswith("A partial answer")
        assert "cut short" in reply.text


async def test_locked_conversation_is_waited_for(emu, store_url):
    async with running_bot(team(emu.base_url, store_url)) as (bot, surface):
        await bot.accept(inbound("first"))
        await surface.wait_for(1)
        conv = await bot.store.get_conversation("console:test:c1")
        # someone else (another process) holds the conversation for a moment
        emu.scripts["intruder"] = Script(rules=[Rule(reply="mine", delay=0.3)])
        client = openai.AsyncOpenAI(base_url=emu.base_url, api_key="x", max_retries=0)
        await client.responses.create(model="m", input="x", conversation=conv.main_thread, background=True,
                                      store=True, metadata={"agent": "intruder"})
        await bot.accept(inbound("second"))
        replies = await surface.wait_for(2)
        assert replies[1][1].text == "You said: second"
        assert "thread_locked" in reasons(surface)
        locked = [e for e in emu.log if e.status == 400 and e.path == "/v1/responses"]
        assert locked, "the engine should have met the lock at least once"
        await client.close()


async def test_deleted_conversation_is_rebuilt_from_the_transcript(emu, store_url, backend):
    if backend_of(backend, "proxy") == "chat":
        pytest.skip("chat threads live in our database: the provider has none to lose (see test_chat.py)")
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("remember: the code word is heron"))
        await surface.wait_for(1)
        old = (await bot.store.get_conversation("console:test:c1")).main_thread
        delete_remote_thread(emu, old)
        await bot.accept(inbound("what was the code word?"))
        replies = await surface.wait_for(2)
        assert replies[1][1].text == "You said: what was the code word?"
        new = (await bot.store.get_conversation("console:test:c1")).main_thread
        assert new != old
        assert "thread_gone" in reasons(surface)
        texts = thread_texts(emu, new)
        assert texts[:2] == ["remember: the code word is heron", "You said: remember: the code word is heron"]


async def test_stuck_unanswered_function_call_is_answered(emu, store_url):
    async with running_bot(team(emu.base_url, store_url)) as (bot, surface):
        await bot.accept(inbound("first"))
        await surface.wait_for(1)
        conv = (await bot.store.get_conversation("console:test:c1")).main_thread
        client = openai.AsyncOpenAI(base_url=emu.base_url, api_key="x")
        await client.conversations.items.create(
            conv, items=[{"type": "function_call", "call_id": "call_orphan", "name": "ask_critic",
                          "arguments": "{}"}]
        )
        await bot.accept(inbound("second"))
        replies = await surface.wait_for(2)
        assert replies[1][1].text == "You said: second"
        assert "stuck_tool_call" in reasons(surface)
        await client.close()


async def test_response_stuck_in_queued_is_cancelled_and_recreated(emu, store_url, backend):
    if backend_of(backend, "proxy") == "chat":
        pytest.skip("a chat completion has no queue; its silent stream is test_chat.py's stalled-stream test")
    emu.faults.stay_queued(agent="proxy")
    async with running_bot(team(emu.base_url, store_url, backend=backend, queued_timeout=0.2)) as (bot, surface):
        await bot.accept(inbound("hello"))
        _, reply = await one_reply(bot, surface)
        assert reply.text == "You said: hello"
        assert reasons(surface) == ["queued_too_long"]
        first = remote_runs(emu, "proxy")[0]
        assert first.status == "cancelled"


async def test_dropped_stream_is_resumed_without_duplicating_text(emu, store_url):
    emu.faults.drop_stream(3, agent="proxy")
    async with running_bot(team(emu.base_url, store_url)) as (bot, surface):
        await bot.accept(inbound("hello resumable world"))
        _, reply = await one_reply(bot, surface)
        assert reply.text == "You said: hello resumable world"
        streamed = "".join(e.text for e in surface.kinds("text_delta"))
        assert streamed == reply.text
        resumes = [e for e in emu.log if e.method == "GET" and e.path.startswith("/v1/responses/")]
        assert resumes, "the engine should resume the stream by sequence number"
        assert len([r for r in emu.responses.values() if r.agent == "proxy"]) == 1


async def test_failing_sub_assistant_gives_the_proxy_an_error_to_answer_with(emu, store_url, backend):
    emu.faults.fail("server_error", agent="critic", count=None)
    async with running_bot(team(emu.base_url, store_url, backend=backend, retry_budget=2)) as (bot, surface):
        await bot.accept(inbound("ask the critic and the researcher"))
        _, reply = await one_reply(bot, surface)
        assert reply.kind == "answer"
        assert "researcher: done with" in reply.text
        assert "ERROR: the critic assistant could not finish" in reply.text
        finished = {e.sub: e.ok for e in surface.kinds("sub_finished")}
        assert finished == {"critic": False, "researcher": True}


async def test_spent_budget_ends_in_a_clear_failure_message(emu, store_url, backend):
    emu.faults.http_error(500, method="POST", path=RUN_CREATE_PATHS[backend], count=None)
    async with running_bot(team(emu.base_url, store_url, backend=backend, retry_budget=3)) as (bot, surface):
        await bot.accept(inbound("hello"))
        turn, reply = await one_reply(bot, surface)
        assert reply.kind == "failure"
        assert "ran out of retries" in reply.text
        assert reasons(surface) == ["server_error"] * 3
        assert (await bot.store.get_turn(turn.id)).retries == 3


async def test_duplicate_response_from_a_lost_create_is_waited_out(emu, store_url, backend):
    # A create that reached the provider but whose answer was lost looks to us like a dropped connection before
    # the id arrived; the orphan then holds the conversation. We must neither fail nor post a second reply.
    emu.faults.drop_stream(0, agent="proxy")
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("hello"))
        _, reply = await one_reply(bot, surface)
        assert reply.text == "You said: hello"


async def test_recovery_counts_are_kept_per_reason(emu, store_url, backend):
    emu.faults.fail("server_error", agent="proxy")
    async with running_bot(team(emu.base_url, store_url, backend=backend)) as (bot, surface):
        await bot.accept(inbound("hello"))
        await one_reply(bot, surface)
        assert bot.supervisor.recovery_counts == {"server_error": 1}
        await asyncio.sleep(0)


async def test_run_timeout_stops_a_sub_assistant_and_the_proxy_still_answers(emu, store_url, backend):
    emu.scripts["critic"] = Script(rules=[Rule(delay=30.0)])
    async with running_bot(team(emu.base_url, store_url, backend=backend, run_timeout=0.5)) as (bot, surface):
        await bot.accept(inbound("ask the critic"))
        _, reply = await one_reply(bot, surface)
        assert reply.kind == "answer"
        assert "took longer than 0.5 s" in reply.text
        assert await bot.store.active_runs() == []
        # (a chat server sees its client close the connection, a moment later)
        await emu.wait_until(lambda: [r.status for r in remote_runs(emu, "critic")] == ["cancelled"])


async def test_a_recovery_lookup_that_fails_transiently_is_retried_not_reported_as_an_internal_error(emu, tmp_path):
    """The window the fault soak found: a create whose answer was lost (its stream broke before the first event)
    finishes just after we looked for it, so the resend meets its unanswered call (`StuckToolCall`); looking for it
    again is then rate-limited. That 429 must be backed off and retried like any other, not end the turn with the
    internal-error text."""
    from bot.backends.providers import make_backend
    from bot.engine import Bot
    from storage.sqlite import SQLiteStore
    from tests.engine.harness import RecordingSurface

    cfg = team(emu.base_url, tmp_path / "db")
    backend = make_backend(cfg)
    real_lookup = backend.lost_create
    lookups = 0

    async def looked_too_early_once(request):  # type: ignore[no-untyped-def]
        nonlocal lookups
        lookups += 1
        if lookups == 1:
            return None  # the race: the lost create had not finished when we first looked
        return await real_lookup(request)

    backend.lost_create = looked_too_early_once  # type: ignore[method-assign]
    emu.faults.drop_stream(0, agent="proxy")  # the first create runs, its answer is lost
    emu.faults.http_error(429, method="GET", path="/v1/conversations/*/items", count=1)  # the second lookup
    bot = Bot(cfg, SQLiteStore(tmp_path / "db"), backend)
    surface = RecordingSurface()
    bot.add_surface(surface)
    async with bot.running():
        await bot.accept(inbound("ask the critic please"))
        _, reply = await one_reply(bot, surface)
    assert reply.kind == "answer", reply.text
    assert "critic" in reply.text
    requests = [(e.method, e.path.rsplit("/", 1)[-1], e.status) for e in emu.log if e.path != "/v1/conversations"]
    assert requests[:5] == [
        ("POST", "responses", 599),  # the lost create (the emulator's mark for a connection it broke off)
        ("POST", "responses", 400),  # the resend meets the call the lost create left unanswered
        ("GET", "items", 429),  # looking for the lost create again: rate-limited
        ("GET", "items", 200),  # backed off, looked again, adopted it
        ("POST", "responses", 200),  # the critic
    ], requests
    assert bot.supervisor.recovery_counts["rate_limit"] == 1
    assert bot.supervisor.recovery_counts["lost_create_adopted"] == 1
    assert len(remote_runs(emu, "critic")) == 1  # the adopted create's call was answered once


async def test_a_stop_while_a_create_goes_unanswered_ends_and_the_next_start_answers_once(emu, store_url, backend):
    # The cancelled worker waits, shielded, for the create's answer (its run must be on record). The provider never
    # answers: the stop closes the connections after `unanswered` seconds rather than waiting out the request
    # timeout (600 s) or the turn's (60 s here), and the next start finds what the create left, as after a crash.
    cfg = team(emu.base_url, store_url, backend=backend)
    emu.faults.hang(method="POST", path=RUN_CREATE_PATHS[backend])
    async with running_bot(cfg) as (bot, _):
        await bot.accept(inbound("hello"))
        await emu.wait_until(lambda: any(i.kind == "hang" for i in emu.faults.injected), within=10)
        async with asyncio.timeout(20):
            await bot.stop(grace=0, unanswered=0.2)
    async with running_bot(cfg) as (bot, surface):
        _, reply = await one_reply(bot, surface)
        assert reply.kind == "answer" and reply.text == "You said: hello"
        assert await bot.store.unfinished_turns() == []
