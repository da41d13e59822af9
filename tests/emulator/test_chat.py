"""The emulator's Chat Completions endpoint through the real `openai` SDK: scripts, tools, parallel calls, usage,
the 400s OpenAI gives for malformed conversations, and the faults the engine's recovery is tested with."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from emulator import Emulator, Rule, Script

TOOLS: list[Any] = [
    {"type": "function", "function": {"name": f"ask_{n}", "parameters": {"type": "object"}}} for n in ("a", "b")
]
AGENT = {"x-switchboard-agent": "proxy"}


async def _collect(stream: Any) -> tuple[str, list[Any], str | None, Any]:
    text, calls, finish, usage = "", {}, None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": call.id, "name": "", "arguments": ""})
                entry["name"] += (call.function.name or "") if call.function else ""
                entry["arguments"] += (call.function.arguments or "") if call.function else ""
    return text, list(calls.values()), finish, usage


async def test_parallel_tool_calls_streamed_and_answered(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    messages: list[Any] = [{"role": "user", "content": "ask the team"}]
    stream = await client.chat.completions.create(
        model="m", messages=messages, tools=TOOLS, stream=True, extra_headers=AGENT
    )
    text, calls, finish, usage = await _collect(stream)
    assert finish == "tool_calls" and [c["name"] for c in calls] == ["ask_a", "ask_b"] and usage is None
    assert '"task": "ask the team"' in calls[0]["arguments"]
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in calls
    ]})
    messages += [{"role": "tool", "tool_call_id": c["id"], "content": f"done {c['name']}"} for c in calls]
    stream = await client.chat.completions.create(
        model="m", messages=messages, tools=TOOLS, stream=True, stream_options={"include_usage": True},
        extra_headers=AGENT,
    )
    text, calls, finish, usage = await _collect(stream)
    assert finish == "stop" and text == "Here is what the team found:\n- a: done ask_a\n- b: done ask_b"
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert [r.agent for r in emu.chat_completions.values()] == ["proxy", "proxy"]


async def test_no_parallel_calls_when_the_client_says_so(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "ask the team"}], tools=TOOLS, parallel_tool_calls=False
    )
    assert [c.function.name for c in answer.choices[0].message.tool_calls or []] == ["ask_a"]


async def test_sub_assistant_remembers_earlier_user_messages(client: openai.AsyncOpenAI) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You are the critic."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "critic: done with 'first'"},
        {"role": "user", "content": "second"},
    ]
    answer = await client.chat.completions.create(
        model="m", messages=messages, extra_headers={"x-switchboard-agent": "critic"}
    )
    assert answer.choices[0].message.content == "critic: done with 'second' (I remember 1 earlier requests)"


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([{"role": "tool", "tool_call_id": "call_x", "content": "x"}], "must be a response to a preceeding"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
          {"role": "user", "content": "y"}], "did not have response messages: call_1"),
        ([], "non-empty"),
    ],
)
async def test_malformed_conversations_are_refused(client: openai.AsyncOpenAI, messages: Any, needle: str) -> None:
    with pytest.raises(openai.BadRequestError, match=needle):
        await client.chat.completions.create(model="m", messages=messages)


async def test_parameter_rules(client: openai.AsyncOpenAI) -> None:
    messages: Any = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.BadRequestError, match="only allowed when 'store' is enabled"):
        await client.chat.completions.create(model="m", messages=messages, metadata={"agent": "a"})
    with pytest.raises(openai.BadRequestError, match="only allowed when 'stream' is enabled"):
        await client.chat.completions.create(model="m", messages=messages, stream_options={"include_usage": True})
    stored = await client.chat.completions.create(model="m", messages=messages, metadata={"a": "b"}, store=True)
    assert stored.choices[0].finish_reason == "stop"


async def test_context_window_is_enforced(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.chat_api.context_window = 10
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 100}])
    assert caught.value.code == "context_length_exceeded"
    ok = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "short"}])
    assert ok.choices[0].message.content


async def test_scripted_endings(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.scripts["cut"] = Script([Rule(match="long", reply="a b c d e f", incomplete="max_output_tokens"),
                                 Rule(match="rude", reply="", incomplete="content_filter"),
                                 Rule(match="boom", fail="server_error")])
    head = {"x-switchboard-agent": "cut"}

    async def ask(text: str) -> Any:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": text}], stream=True, extra_headers=head
        )
        return await _collect(stream)

    assert (await ask("long"))[2] == "length"
    assert (await ask("rude"))[2] == "content_filter"
    with pytest.raises(openai.APIError, match="model produced an error"):  # once streaming: an `error` chunk
        await ask("boom")


async def test_faults_apply_to_chat(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    messages: Any = [{"role": "user", "content": "hello there"}]

    async def ask() -> Any:
        stream = await client.chat.completions.create(model="m", messages=messages, stream=True)
        return await _collect(stream)

    emu.faults.fail("rate_limit_exceeded", api="chat")
    with pytest.raises(openai.APIError, match="Rate limit"):
        await ask()
    emu.faults.drop_stream(2, api="chat")
    with pytest.raises(openai.APIConnectionError):
        await ask()
    emu.faults.incomplete(api="chat")
    text, _, finish, _ = await ask()
    assert finish == "length" and text
    emu.faults.fail("server_error", api="chat", after_events=2)
    with pytest.raises(openai.APIError, match="model produced an error"):
        await ask()
    emu.faults.http_error(503, path="/v1/chat/completions")
    with pytest.raises(openai.InternalServerError):
        await ask()
    assert (await ask())[2] == "stop"
    assert [i.kind for i in emu.faults.injected] == ["fail", "drop_stream", "incomplete", "fail", "http_error"]
