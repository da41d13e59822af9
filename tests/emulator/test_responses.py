"""The Responses surface through the real async SDK: default script, streaming, background, cancel, resume."""

from __future__ import annotations

import json
import math
import time

import openai
import pytest

from emulator import Emulator, ManualClock, Rule, Script, ToolCall, run_emulator
from tests.emulator.conftest import ask_tools


async def test_plain_create_returns_completed_text_with_consistent_usage(
    client: openai.AsyncOpenAI, emu: Emulator
) -> None:
    response = await client.responses.create(model="gpt-test", input="hello there", metadata={"agent": "critic"})
    assert response.status == "completed"
    assert response.object == "response"
    assert response.output_text == "critic: done with 'hello there'"
    assert response.model == "gpt-test"
    assert response.metadata == {"agent": "critic"}
    assert response.usage is not None
    assert response.usage.input_tokens == math.ceil(len("hello there") / 4)
    assert response.usage.output_tokens == math.ceil(len(response.output_text) / 4)
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert emu.responses[response.id].status == "completed"


async def test_every_response_carries_a_request_id(client: openai.AsyncOpenAI) -> None:
    raw = await client.responses.with_raw_response.create(model="m", input="hi")
    assert raw.headers["x-request-id"].startswith("req_")
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.retrieve("resp_missing")
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")


async def test_proxy_calls_each_named_sub_in_one_response(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model="m",
        input="Ask the Critic and the researcher about our launch",
        tools=ask_tools("researcher", "critic", "planner"),
        metadata={"agent": "proxy"},
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["ask_researcher", "ask_critic"]
    assert all(call.call_id.startswith("call_") for call in calls)
    assert json.loads(calls[0].arguments) == {
        "task": "Ask the Critic and the researcher about our launch",
        "context": "",
    }


async def test_proxy_asks_everyone_for_team_and_combines_outputs_in_call_order(client: openai.AsyncOpenAI) -> None:
    tools = ask_tools("researcher", "critic")
    first = await client.responses.create(model="m", input="ask the team", tools=tools)
    calls = [item for item in first.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["ask_researcher", "ask_critic"]
    outputs = [
        {"type": "function_call_output", "call_id": calls[1].call_id, "output": "too risky"},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "three sources"},
    ]
    second = await client.responses.create(model="m", input=outputs, previous_response_id=first.id, tools=tools)
    assert second.output_text == "Here is what the team found:\n- researcher: three sources\n- critic: too risky"


async def test_proxy_without_a_named_sub_echoes(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="m", input="good morning", tools=ask_tools("critic"))
    assert response.output_text == "You said: good morning"


async def test_sub_names_match_whole_words_only(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="m", input="the critics agree", tools=ask_tools("critic"))
    assert response.output_text == "You said: the critics agree"


async def test_parallel_tool_calls_false_calls_one_sub_per_response(client: openai.AsyncOpenAI) -> None:
    tools = ask_tools("researcher", "critic")
    first = await client.responses.create(model="m", input="ask everyone", tools=tools, parallel_tool_calls=False)
    assert [item.name for item in first.output if item.type == "function_call"] == ["ask_researcher"]
    assert first.parallel_tool_calls is False
    second = await client.responses.create(
        model="m",
        input=[{"type": "function_call_output", "call_id": first.output[0].call_id, "output": "r"}],
        previous_response_id=first.id,
        tools=tools,
        parallel_tool_calls=False,
    )
    assert [item.name for item in second.output if item.type == "function_call"] == ["ask_critic"]
    third = await client.responses.create(
        model="m",
        input=[{"type": "function_call_output", "call_id": second.output[0].call_id, "output": "c"}],
        previous_response_id=second.id,
        tools=tools,
        parallel_tool_calls=False,
    )
    assert third.output_text == "Here is what the team found:\n- researcher: r\n- critic: c"


async def test_context_argument_carries_earlier_user_messages(client: openai.AsyncOpenAI) -> None:
    conversation = await client.conversations.create(
        items=[{"role": "user", "content": "we launch in May"}, {"role": "assistant", "content": "noted"}]
    )
    response = await client.responses.create(
        model="m", input="ask the critic", tools=ask_tools("critic"), conversation=conversation.id
    )
    assert json.loads(response.output[0].arguments) == {"task": "ask the critic", "context": "we launch in May"}


async def test_sub_assistant_remembers_earlier_requests_on_its_conversation(client: openai.AsyncOpenAI) -> None:
    conversation = await client.conversations.create()
    task = json.dumps({"task": "review the plan", "context": ""})
    first = await client.responses.create(
        model="m", input=task, conversation=conversation.id, metadata={"agent": "critic"}
    )
    assert first.output_text == "critic: done with 'review the plan'"
    second = await client.responses.create(
        model="m", input="and the budget", conversation=conversation.id, metadata={"agent": "critic"}
    )
    assert second.output_text == "critic: done with 'and the budget' (I remember 1 earlier requests)"


async def test_stream_event_order_and_sequence_numbers(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model="m", input="one two three", stream=True)
    events = [event async for event in stream]
    types = [event.type for event in events]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) > 1
    final = events[-1].response
    assert "".join(deltas) == final.output_text == "assistant: done with 'one two three'"
    assert events[0].response.status == "in_progress"


async def test_stream_function_call_events(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model="m", input="ask the critic", tools=ask_tools("critic"), stream=True)
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds
    done = next(event for event in events if event.type == "response.function_call_arguments.done")
    deltas = "".join(event.delta for event in events if event.type == "response.function_call_arguments.delta")
    assert deltas == done.arguments
    added = next(event for event in events if event.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.status == "in_progress"
    finished = next(event for event in events if event.type == "response.output_item.done")
    assert finished.item.status == "completed" and finished.item.arguments == done.arguments


async def test_background_requires_store(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="m", input="x", background=True, store=False)
    assert caught.value.param == "background"


async def test_background_delay_runs_on_the_manual_clock(
    mclient: openai.AsyncOpenAI, memu: Emulator, clock: ManualClock
) -> None:
    memu.scripts["slow"] = Script([Rule(delay=5)])
    created = await mclient.responses.create(model="m", input="x", background=True, metadata={"agent": "slow"})
    assert created.status == "queued"
    await memu.wait_status(created.id, "in_progress")
    await clock.advance(4.9)
    assert (await mclient.responses.retrieve(created.id)).status == "in_progress"
    await clock.advance(0.1)
    finished = await mclient.responses.retrieve(created.id)
    assert finished.status == "completed"
    assert finished.completed_at == int(clock.now())
    record = memu.responses[created.id]
    assert record.finished_at is not None and record.finished_at - record.created_at == 5


async def test_background_stream_shows_queued_then_in_progress(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model="m", input="x", background=True, stream=True)
    events = [event async for event in stream]
    assert [event.type for event in events[:3]] == ["response.created", "response.queued", "response.in_progress"]
    assert events[0].response.status == "queued"
    assert events[-1].type == "response.completed"


async def test_cancel_background_twice_returns_the_final_object(mclient: openai.AsyncOpenAI, memu: Emulator) -> None:
    memu.scripts["slow"] = Script([Rule(delay=60)])
    created = await mclient.responses.create(model="m", input="x", background=True, metadata={"agent": "slow"})
    cancelled = await mclient.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    again = await mclient.responses.cancel(created.id)
    assert again.status == "cancelled" and again.id == created.id
    assert memu.responses[created.id].cancelled_by == "client"
    assert memu.counters.responses["cancelled"] == 1


async def test_cancel_synchronous_response_is_400(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="m", input="x")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.cancel(response.id)
    assert caught.value.body["message"] == "Cannot cancel a synchronous response."


async def test_resume_stream_with_starting_after(
    mclient: openai.AsyncOpenAI, memu: Emulator, clock: ManualClock
) -> None:
    memu.scripts["slow"] = Script([Rule(delay=3)])
    stream = await mclient.responses.create(
        model="m", input="resume me please", background=True, stream=True, metadata={"agent": "slow"}
    )
    seen = []
    async for event in stream:
        seen.append(event)
        if event.type == "response.in_progress":
            break
    await stream.close()
    response_id = seen[0].response.id
    await clock.advance(3)
    resumed = await mclient.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number)
    rest = [event async for event in resumed]
    assert rest[0].sequence_number == seen[-1].sequence_number + 1
    assert [event.sequence_number for event in rest] == list(range(rest[0].sequence_number, len(seen) + len(rest)))
    assert rest[-1].type == "response.completed"
    replay = await mclient.responses.retrieve(response_id, stream=True, starting_after=0)
    assert next(iter([event.sequence_number async for event in replay])) == 1


async def test_resume_of_a_response_not_created_with_stream_is_400(client: openai.AsyncOpenAI) -> None:
    created = await client.responses.create(model="m", input="x", background=True)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.retrieve(created.id, stream=True, starting_after=0)
    assert caught.value.param == "stream"


async def test_previous_response_and_conversation_are_mutually_exclusive(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model="m", input="x")
    conversation = await client.conversations.create()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="m", input="y", previous_response_id=first.id, conversation=conversation.id)
    assert "previous_response_id" in caught.value.body["message"]


async def test_previous_response_chain_is_context(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model="m", input="one", metadata={"agent": "critic"})
    second = await client.responses.create(
        model="m", input="two", previous_response_id=first.id, metadata={"agent": "critic"}
    )
    third = await client.responses.create(
        model="m", input="three", previous_response_id=second.id, metadata={"agent": "critic"}
    )
    assert third.previous_response_id == second.id
    assert third.output_text == "critic: done with 'three' (I remember 2 earlier requests)"


async def test_unknown_previous_response_is_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="m", input="x", previous_response_id="resp_nope")
    assert caught.value.param == "previous_response_id"


async def test_missing_tool_output_is_400_with_exact_text(client: openai.AsyncOpenAI) -> None:
    tools = ask_tools("critic", "planner")
    first = await client.responses.create(model="m", input="ask the critic and planner", tools=tools)
    calls = [item for item in first.output if item.type == "function_call"]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(
            model="m",
            input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "ok"}],
            previous_response_id=first.id,
            tools=tools,
        )
    assert caught.value.body["message"] == f"No tool output found for function call {calls[1].call_id}."


async def test_output_for_unknown_call_is_400_with_exact_text(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model="m", input="hello")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(
            model="m",
            input=[{"type": "function_call_output", "call_id": "call_X", "output": "ok"}],
            previous_response_id=first.id,
        )
    assert caught.value.body["message"] == "No tool call found for function call output with call_id call_X."


async def test_input_items_list_pages(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model="m", input=[{"role": "user", "content": f"message {index}"} for index in range(5)]
    )
    page = await client.responses.input_items.list(response.id, limit=2)
    assert [item.content[0].text for item in page.data] == ["message 4", "message 3"]
    assert page.has_more is True
    everything = [item async for item in client.responses.input_items.list(response.id, limit=2, order="asc")]
    assert [item.content[0].text for item in everything] == [f"message {index}" for index in range(5)]


async def test_delete_then_retrieve_is_404(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="m", input="x")
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_unstored_response_cannot_be_retrieved(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="m", input="x", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_script_rules_reply_fail_incomplete_and_times(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.scripts["critic"] = Script(
        [
            Rule(match="flaky", fail="server_error", times=1),
            Rule(match="(?i)long", reply="{agent} says {input}", incomplete="max_output_tokens"),
            Rule(match="forbidden", fail="invalid_prompt"),
            Rule(reply="fixed: {input}"),
        ]
    )
    meta = {"agent": "critic"}
    failed = await client.responses.create(model="m", input="flaky one", metadata=meta)
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"
    retried = await client.responses.create(model="m", input="flaky one", metadata=meta)
    assert retried.output_text == "fixed: flaky one"
    cut = await client.responses.create(model="m", input="a LONG one", metadata=meta)
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text == "critic says a LONG one"
    refused = await client.responses.create(model="m", input="forbidden", metadata=meta)
    assert refused.error is not None and refused.error.code == "invalid_prompt"


async def test_script_rule_calls_tools_with_templated_arguments(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.scripts["proxy"] = Script(
        [
            Rule(on="message", calls=[ToolCall("lookup", {"query": "{input}"}), ToolCall("notify", "{}")]),
            Rule(on="tool_outputs", reply="got {outputs}"),
        ]
    )
    tools = [{"type": "function", "name": name, "parameters": {"type": "object"}} for name in ("lookup", "notify")]
    meta = {"agent": "proxy"}
    first = await client.responses.create(model="m", input="weather", tools=tools, metadata=meta)
    assert [(item.name, json.loads(item.arguments)) for item in first.output] == [
        ("lookup", {"query": "weather"}),
        ("notify", {}),
    ]
    outputs = [
        {"type": "function_call_output", "call_id": item.call_id, "output": item.name.upper()} for item in first.output
    ]
    second = await client.responses.create(
        model="m", input=outputs, previous_response_id=first.id, tools=tools, metadata=meta
    )
    assert second.output_text == "got LOOKUP\nNOTIFY"


async def test_max_output_tokens_cuts_the_reply(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="m", input="x" * 200, max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert len(response.output_text) == 16 * 4


async def test_response_lifetimes_show_overlap(mclient: openai.AsyncOpenAI, memu: Emulator, clock: ManualClock) -> None:
    memu.scripts["critic"] = Script([Rule(delay=2)])
    memu.scripts["planner"] = Script([Rule(delay=1)])
    first = await mclient.responses.create(model="m", input="a", background=True, metadata={"agent": "critic"})
    second = await mclient.responses.create(model="m", input="b", background=True, metadata={"agent": "planner"})
    await clock.advance(3)
    await memu.wait_status(first.id, "completed")
    third = await mclient.responses.create(model="m", input="c", metadata={"agent": "researcher"})
    assert memu.overlapped(first.id, second.id)
    assert not memu.overlapped(first.id, third.id)
    assert memu.responses[second.id].finished_at == memu.responses[second.id].created_at + 1
    assert memu.responses[first.id].finished_at == memu.responses[first.id].created_at + 2


async def test_latency_and_token_delay_are_real_time() -> None:
    latency, token_delay = 0.05, 0.01
    async with (
        run_emulator(latency=latency, token_delay=token_delay) as emu,
        openai.AsyncOpenAI(base_url=emu.base_url, api_key="x", max_retries=0) as client,
    ):
        started = time.perf_counter()
        await client.conversations.create()
        assert time.perf_counter() - started >= latency
        stream = await client.responses.create(model="m", input="one two three four", stream=True)
        arrivals = [time.perf_counter() async for event in stream if event.type == "response.output_text.delta"]
    assert len(arrivals) == 7
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) * token_delay * 0.9
