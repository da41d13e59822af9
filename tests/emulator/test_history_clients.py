"""Clients that resend the whole history with every request (as the OpenAI Agents SDK with a session does) and
teams that talk through one generic "send a message to agent X" tool, through the real `openai` SDK."""

from __future__ import annotations

import json
from typing import Any

import openai

from emulator import Emulator
from tests.emulator.conftest import ask_tools

PROXY = {"agent": "proxy"}
SEND_MESSAGE: dict[str, Any] = {
    "type": "function",
    "name": "send_message",
    "description": "Send a message to another agent.",
    "parameters": {
        "type": "object",
        "properties": {
            "recipient_agent": {"type": "string", "enum": ["critic", "planner"]},
            "message": {"type": "string"},
            "additional_instructions": {"type": "string"},
        },
        "required": ["recipient_agent", "message", "additional_instructions"],
    },
}


def _calls(response: Any) -> list[Any]:
    return [item for item in response.output if item.type == "function_call"]


async def _round(client: openai.AsyncOpenAI, history: list[Any], tools: list[Any]) -> Any:
    """One proxy request with the whole history as input; its output is appended to the history."""
    response = await client.responses.create(model="m", input=history, tools=tools, metadata=PROXY, store=False)
    history += [item.model_dump(exclude_none=True) for item in response.output]
    return response


def _answer(history: list[Any], calls: list[Any]) -> None:
    history += [{"type": "function_call_output", "call_id": call.call_id, "output": f"ok {call.name}"}
                for call in calls]


async def test_a_new_message_after_earlier_tool_outputs_is_a_new_delegation(client: openai.AsyncOpenAI) -> None:
    tools = ask_tools("critic", "planner")
    history: list[Any] = [{"role": "user", "content": "ask the team"}]
    first = await _round(client, history, tools)
    _answer(history, _calls(first))
    summary = await _round(client, history, tools)
    assert summary.output_text == "Here is what the team found:\n- critic: ok ask_critic\n- planner: ok ask_planner"

    history.append({"role": "user", "content": "and now ask the critic"})
    follow_up = await _round(client, history, tools)
    assert [call.name for call in _calls(follow_up)] == ["ask_critic"]  # not a second summary of old outputs
    _answer(history, _calls(follow_up))
    last = await _round(client, history, tools)
    assert last.output_text == "Here is what the team found:\n- critic: ok ask_critic"


async def test_a_resent_history_ending_in_outputs_is_results_coming_back(client: openai.AsyncOpenAI) -> None:
    tools = ask_tools("critic")
    history: list[Any] = [{"role": "user", "content": "critic, look"}]
    first = await _round(client, history, tools)
    _answer(history, _calls(first))
    history.append({"role": "assistant", "content": "noted"})  # a message after the outputs: they are not news
    again = await client.responses.create(model="m", input=history, tools=tools, metadata=PROXY, store=False)
    assert [call.name for call in _calls(again)] == ["ask_critic"]


async def test_a_messenger_tool_reaches_the_named_agents(client: openai.AsyncOpenAI) -> None:
    history: list[Any] = [{"role": "user", "content": "ask the team"}]
    first = await _round(client, history, [SEND_MESSAGE])
    calls = _calls(first)
    assert [call.name for call in calls] == ["send_message", "send_message"]

    assert [json.loads(call.arguments) for call in calls] == [
        {"recipient_agent": "critic", "message": "ask the team", "additional_instructions": ""},
        {"recipient_agent": "planner", "message": "ask the team", "additional_instructions": ""},
    ]
    _answer(history, calls)
    summary = await _round(client, history, [SEND_MESSAGE])
    assert summary.output_text == "Here is what the team found:\n- critic: ok send_message\n- planner: ok send_message"


async def test_a_messenger_tool_one_at_a_time_asks_each_agent_once(client: openai.AsyncOpenAI) -> None:
    history: list[Any] = [{"role": "user", "content": "planner and critic please"}]
    asked = []
    for _ in range(3):
        response = await client.responses.create(
            model="m", input=history, tools=[SEND_MESSAGE], metadata=PROXY, store=False, parallel_tool_calls=False
        )
        history += [item.model_dump(exclude_none=True) for item in response.output]
        if not _calls(response):
            break
        asked += [call.arguments for call in _calls(response)]
        _answer(history, _calls(response))
    assert len(asked) == 2 and '"critic"' in asked[0] and '"planner"' in asked[1]
    assert response.output_text.startswith("Here is what the team found:\n- critic:")


async def test_chat_messenger_tool(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    tool = {"type": "function", "function": {"name": "send_message", "parameters": SEND_MESSAGE["parameters"]}}
    answer = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "critic, look"}], tools=[tool],  # type: ignore[list-item]
        extra_headers={"x-switchboard-agent": "proxy"},
    )
    calls = answer.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls] == ["send_message"]  # type: ignore[union-attr]
    assert '"recipient_agent": "critic"' in calls[0].function.arguments  # type: ignore[union-attr]


async def test_an_agent_offered_as_a_tool_gets_the_text_in_its_one_parameter(client: openai.AsyncOpenAI) -> None:
    tool = {"type": "function", "name": "ask_critic", "strict": True, "parameters": {
        "type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"],
        "additionalProperties": False}}
    response = await client.responses.create(
        model="m", input="critic, look", tools=[tool], metadata=PROXY  # type: ignore[list-item]
    )
    assert [json.loads(call.arguments) for call in _calls(response)] == [{"input": "critic, look"}]
