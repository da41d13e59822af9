"""Assistants v2 through the real SDK: CRUD, the run state machine, expiry on the manual clock, thread locks,
streams and faults."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from openai.types.beta import Assistant

from emulator import Emulator, ManualClock, Rule, Script

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

POLL_MS = 5


def function_tools(*subs: str) -> list[dict[str, object]]:
    return [
        {"type": "function", "function": {"name": f"ask_{sub}", "parameters": {"type": "object", "properties": {}}}}
        for sub in subs
    ]


async def _assistant(client: openai.AsyncOpenAI, name: str, *subs: str) -> Assistant:
    return await client.beta.assistants.create(model="gpt-test", name=name, tools=function_tools(*subs))


async def test_assistant_crud(client: openai.AsyncOpenAI) -> None:
    created = await client.beta.assistants.create(
        model="gpt-test", name="critic", instructions="Be fair.", metadata={"team": "a"}
    )
    assert created.object == "assistant" and created.id.startswith("asst_")
    assert (await client.beta.assistants.retrieve(created.id)).instructions == "Be fair."
    updated = await client.beta.assistants.update(created.id, name="critic2", tools=function_tools("x"))
    assert updated.name == "critic2" and updated.tools[0].function.name == "ask_x"
    second = await client.beta.assistants.create(model="gpt-test", name="planner")
    listing = await client.beta.assistants.list(limit=1)
    assert [item.id for item in listing.data] == [second.id] and listing.has_more is True
    assert (await client.beta.assistants.delete(created.id)).deleted is True
    with pytest.raises(openai.NotFoundError) as caught:
        await client.beta.assistants.retrieve(created.id)
    assert caught.value.body["message"] == f"No assistant found with id '{created.id}'."


async def test_thread_and_message_crud(client: openai.AsyncOpenAI) -> None:
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "first"}], metadata={"k": "v"})
    assert thread.object == "thread" and thread.metadata == {"k": "v"}
    assert (await client.beta.threads.update(thread.id, metadata={"k": "w"})).metadata == {"k": "w"}
    message = await client.beta.threads.messages.create(
        thread.id, role="user", content=[{"type": "text", "text": "second"}]
    )
    assert message.content[0].text.value == "second" and message.run_id is None
    listing = await client.beta.threads.messages.list(thread.id, order="asc")
    assert [item.content[0].text.value for item in listing.data] == ["first", "second"]
    assert (await client.beta.threads.messages.retrieve(message.id, thread_id=thread.id)).id == message.id
    assert (await client.beta.threads.delete(thread.id)).deleted is True
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.retrieve(thread.id)


async def test_proxy_run_requires_action_then_completes(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    proxy = await _assistant(client, "proxy", "critic", "planner")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "ask the critic and planner"}])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=proxy.id, poll_interval_ms=POLL_MS
    )
    assert run.status == "requires_action" and run.required_action is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [call.function.name for call in calls] == ["ask_critic", "ask_planner"]
    assert json.loads(calls[0].function.arguments) == {"task": "ask the critic and planner", "context": ""}
    assert run.expires_at == run.created_at + 600
    outputs = [{"tool_call_id": call.id, "output": f"{call.function.name} says ok"} for call in calls]
    done = await client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=outputs, poll_interval_ms=POLL_MS
    )
    assert done.status == "completed" and done.expires_at is None and done.completed_at is not None
    assert done.usage is not None and done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    newest = (await client.beta.threads.messages.list(thread.id, limit=1)).data[0]
    assert newest.role == "assistant" and newest.run_id == run.id
    assert newest.content[0].text.value == (
        "Here is what the team found:\n- critic: ask_critic says ok\n- planner: ask_planner says ok"
    )
    steps = await client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc")
    assert [(step.type, step.status) for step in steps.data] == [
        ("tool_calls", "completed"),
        ("message_creation", "completed"),
    ]
    assert steps.data[0].step_details.tool_calls[0].function.output == "ask_critic says ok"
    step = await client.beta.threads.runs.steps.retrieve(steps.data[1].id, thread_id=thread.id, run_id=run.id)
    assert step.step_details.message_creation.message_id == newest.id
    assert emu.counters.runs["completed"] == 1


async def test_sub_assistant_thread_remembers(client: openai.AsyncOpenAI) -> None:
    critic = await _assistant(client, "critic")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": '{"task": "one"}'}])
    first = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=critic.id, poll_interval_ms=POLL_MS
    )
    assert first.status == "completed"
    await client.beta.threads.messages.create(thread.id, role="user", content="two")
    await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=critic.id, poll_interval_ms=POLL_MS
    )
    texts = [m.content[0].text.value for m in (await client.beta.threads.messages.list(thread.id, order="asc")).data]
    assert texts == [
        '{"task": "one"}',
        "critic: done with 'one'",
        "two",
        "critic: done with 'two' (I remember 1 earlier requests)",
    ]


async def test_thread_lock_errors_are_exact(mclient: openai.AsyncOpenAI, memu: Emulator) -> None:
    memu.scripts["slow"] = Script([Rule(delay=30)])
    slow = await _assistant(mclient, "slow")
    thread = await mclient.beta.threads.create()
    run = await mclient.beta.threads.runs.create(thread.id, assistant_id=slow.id)
    with pytest.raises(openai.BadRequestError) as caught:
        await mclient.beta.threads.messages.create(thread.id, role="user", content="x")
    assert caught.value.body["message"] == f"Can't add messages to {thread.id} while a run {run.id} is active."
    with pytest.raises(openai.BadRequestError) as caught:
        await mclient.beta.threads.runs.create(thread.id, assistant_id=slow.id)
    assert caught.value.body["message"] == f"Thread {thread.id} already has an active run {run.id}."
    assert caught.value.body["type"] == "invalid_request_error"


async def test_run_expires_on_the_manual_clock(mclient: openai.AsyncOpenAI, memu: Emulator, clock: ManualClock) -> None:
    proxy = await _assistant(mclient, "proxy", "critic")
    thread = await mclient.beta.threads.create(messages=[{"role": "user", "content": "ask the critic"}])
    run = await mclient.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=proxy.id, poll_interval_ms=POLL_MS
    )
    assert run.status == "requires_action"
    await clock.advance(599)
    assert (await mclient.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status == "requires_action"
    await clock.advance(1)
    expired = await mclient.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert expired.status == "expired" and expired.expires_at == int(clock.now())
    call_id = run.required_action.submit_tool_outputs.tool_calls[0].id  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError) as caught:
        await mclient.beta.threads.runs.submit_tool_outputs(
            run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call_id, "output": "late"}]
        )
    assert caught.value.body["message"] == 'Runs in status "expired" do not accept tool outputs.'
    with pytest.raises(openai.BadRequestError) as caught:
        await mclient.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert "Cannot cancel run" in caught.value.body["message"]
    steps = await mclient.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id)
    assert steps.data[0].status == "expired"
    await mclient.beta.threads.messages.create(thread.id, role="user", content="unlocked again")


async def test_submit_must_answer_every_call(client: openai.AsyncOpenAI) -> None:
    proxy = await _assistant(client, "proxy", "a", "b")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "ask everyone"}])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=proxy.id, poll_interval_ms=POLL_MS
    )
    first = run.required_action.submit_tool_outputs.tool_calls[0].id  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.runs.submit_tool_outputs(
            run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": first, "output": "x"}]
        )
    assert caught.value.body["message"].startswith("Expected tool outputs for call_ids")
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.submit_tool_outputs(
            run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_nope", "output": "x"}]
        )


async def test_cancel_goes_through_cancelling(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    proxy = await _assistant(client, "proxy", "critic")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "ask the critic"}])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=proxy.id, poll_interval_ms=POLL_MS
    )
    cancelling = await client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.status == "cancelling"
    await emu.wait_status(run.id, "cancelled")
    cancelled = await client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert emu.runs[run.id].cancelled_by == "client"
    runs = await client.beta.threads.runs.list(thread.id)
    assert [item.id for item in runs.data] == [run.id]


async def test_streamed_run_and_streamed_submit(client: openai.AsyncOpenAI) -> None:
    proxy = await _assistant(client, "proxy", "critic")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "ask the critic"}])
    stream = await client.beta.threads.runs.create(thread.id, assistant_id=proxy.id, stream=True)
    first = [event async for event in stream]
    assert [event.event for event in first] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.requires_action",
    ]
    run = first[-1].data
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    stream = await client.beta.threads.runs.submit_tool_outputs(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "fine"}], stream=True
    )
    second = [event async for event in stream]
    names = [event.event for event in second]
    assert names[:3] == ["thread.run.step.completed", "thread.run.queued", "thread.run.in_progress"]
    assert names[-3:] == ["thread.message.completed", "thread.run.step.completed", "thread.run.completed"]
    deltas = "".join(
        event.data.delta.content[0].text.value for event in second if event.event == "thread.message.delta"
    )
    assert deltas == "Here is what the team found:\n- critic: fine"


async def test_create_thread_and_run(client: openai.AsyncOpenAI) -> None:
    critic = await _assistant(client, "critic")
    run = await client.beta.threads.create_and_run_poll(
        assistant_id=critic.id, thread={"messages": [{"role": "user", "content": "look"}]}, poll_interval_ms=POLL_MS
    )
    assert run.status == "completed"
    newest = (await client.beta.threads.messages.list(run.thread_id, limit=1)).data[0]
    assert newest.content[0].text.value == "critic: done with 'look'"


async def test_poll_after_header_on_run_retrieve(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    critic = await _assistant(client, "critic")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    run = await client.beta.threads.runs.create(thread.id, assistant_id=critic.id)
    raw = await client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=thread.id)
    assert raw.headers["openai-poll-after-ms"] == str(emu.poll_after_ms)


@pytest.mark.parametrize("code", ["server_error", "rate_limit_exceeded", "invalid_prompt"])
async def test_fail_fault_for_one_assistant(client: openai.AsyncOpenAI, emu: Emulator, code: str) -> None:
    critic = await _assistant(client, "critic")
    planner = await _assistant(client, "planner")
    emu.faults.fail(code, agent="critic", api="assistants")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    ok = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=planner.id, poll_interval_ms=POLL_MS
    )
    assert ok.status == "completed"
    failed = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=critic.id, poll_interval_ms=POLL_MS
    )
    assert failed.status == "failed" and failed.last_error is not None and failed.last_error.code == code
    assert failed.failed_at is not None


async def test_expire_fault_when_waiting_for_outputs(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    proxy = await _assistant(client, "proxy", "critic")
    emu.faults.expire(agent="proxy")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "ask the critic"}])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=proxy.id, poll_interval_ms=POLL_MS
    )
    assert run.status == "expired"


async def test_expire_now_and_provider_cancel_after_seconds(
    mclient: openai.AsyncOpenAI, memu: Emulator, clock: ManualClock
) -> None:
    memu.scripts["slow"] = Script([Rule(delay=100)])
    slow = await _assistant(mclient, "slow")
    memu.faults.cancel(agent="slow", after_seconds=5)
    thread = await mclient.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    run = await mclient.beta.threads.runs.create(thread.id, assistant_id=slow.id)
    await clock.advance(5)
    await memu.wait_status(run.id, "cancelled")
    assert memu.runs[run.id].cancelled_by == "provider"
    second = await mclient.beta.threads.runs.create(thread.id, assistant_id=slow.id)
    memu.faults.expire(second.id)
    assert (await mclient.beta.threads.runs.retrieve(second.id, thread_id=thread.id)).status == "expired"


async def test_provider_cancel_after_events_in_a_stream(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    critic = await _assistant(client, "critic")
    emu.faults.cancel(agent="critic", after_events=3)
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    stream = await client.beta.threads.runs.create(thread.id, assistant_id=critic.id, stream=True)
    names = [event.event async for event in stream]
    assert names == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.cancelling",
        "thread.run.cancelled",
    ]


async def test_stay_queued_run(mclient: openai.AsyncOpenAI, memu: Emulator, clock: ManualClock) -> None:
    critic = await _assistant(mclient, "critic")
    memu.faults.stay_queued(agent="critic")
    thread = await mclient.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    run = await mclient.beta.threads.runs.create(thread.id, assistant_id=critic.id)
    assert (await mclient.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status == "queued"
    await clock.advance(600)
    assert (await mclient.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status == "expired"


async def test_dropped_run_stream(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    critic = await _assistant(client, "critic")
    emu.faults.drop_stream(after_events=2, api="assistants")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    stream = await client.beta.threads.runs.create(thread.id, assistant_id=critic.id, stream=True)
    names = []
    with pytest.raises(openai.APIConnectionError):
        async for event in stream:
            names.append(event.event)
    assert names == ["thread.run.created", "thread.run.queued"]
    run_id = next(iter(emu.runs))
    await emu.wait_status(run_id, "completed")


async def test_thread_deleted_behind_the_clients_back(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    critic = await _assistant(client, "critic")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    emu.faults.delete_thread(agent="critic")
    with pytest.raises(openai.NotFoundError) as caught:
        await client.beta.threads.runs.create(thread.id, assistant_id=critic.id)
    assert caught.value.body["message"] == f"No thread found with id '{thread.id}'."
    other = await client.beta.threads.create()
    emu.faults.delete_thread(other.id)
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.messages.list(other.id)


async def test_sync_client_assistants_round_trip(emu: Emulator) -> None:
    def scenario() -> str:
        with openai.OpenAI(base_url=emu.base_url, api_key="x", max_retries=0) as client:
            critic = client.beta.assistants.create(model="m", name="critic")
            run = client.beta.threads.create_and_run_poll(
                assistant_id=critic.id,
                thread={"messages": [{"role": "user", "content": "sync"}]},
                poll_interval_ms=POLL_MS,
            )
            message = client.beta.threads.messages.list(run.thread_id, limit=1).data[0]
            return message.content[0].text.value  # type: ignore[union-attr]

    assert await asyncio.to_thread(scenario) == "critic: done with 'sync'"
