"""The synchronous SDK client against the emulator (run in a worker thread while the server runs in the loop)."""

from __future__ import annotations

import asyncio

import openai
import pytest

from emulator import Emulator
from tests.emulator.conftest import ask_tools


def _client(emu: Emulator, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.base_url, api_key="x", max_retries=retries)


async def test_sync_create_stream_and_tool_round_trip(emu: Emulator) -> None:
    def scenario() -> tuple[str, list[str], str]:
        with _client(emu) as client:
            plain = client.responses.create(model="m", input="hi", metadata={"agent": "critic"})
            with client.responses.create(model="m", input="ask the team", tools=ask_tools("a", "b"), stream=True) as s:
                events = list(s)
            calls = [item for item in events[-1].response.output if item.type == "function_call"]
            final = client.responses.create(
                model="m",
                input=[{"type": "function_call_output", "call_id": call.call_id, "output": "ok"} for call in calls],
                previous_response_id=events[-1].response.id,
                tools=ask_tools("a", "b"),
            )
            return plain.output_text, [event.type for event in events], final.output_text

    text, types, final = await asyncio.to_thread(scenario)
    assert text == "critic: done with 'hi'"
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert final == "Here is what the team found:\n- a: ok\n- b: ok"


async def test_sync_errors_and_retries(emu: Emulator) -> None:
    emu.faults.http_error(429, path="/v1/conversations", count=1, retry_after=0.01)

    def scenario() -> int:
        with _client(emu, retries=1) as client:
            raw = client.conversations.with_raw_response.create()
            with pytest.raises(openai.NotFoundError):
                client.conversations.retrieve("conv_missing")
            return raw.retries_taken

    assert await asyncio.to_thread(scenario) == 1


async def test_sync_dropped_stream_raises_connection_error(emu: Emulator) -> None:
    emu.faults.drop_stream(after_events=2)

    def scenario() -> list[int]:
        seen: list[int] = []
        with _client(emu) as client:
            stream = client.responses.create(model="m", input="x y z", stream=True)
            with pytest.raises(openai.APIConnectionError):
                for event in stream:
                    seen.append(event.sequence_number)
        return seen

    assert await asyncio.to_thread(scenario) == [0, 1]
