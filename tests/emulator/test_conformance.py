"""Conformance: what the emulator sends must fit OpenAI's own OpenAPI description.

JSON responses are validated with openapi-core against the operation they answer (path, method, status, content
type). Error bodies, single schemas and SSE events are validated with jsonschema (Draft 2020-12, which OpenAPI 3.1
schemas are) against the named component schema. Skips only when the pinned description is absent, and never in
CI (`CI=true`): there a missing description fails.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import openai
import pytest
from jsonschema.protocols import Validator
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from emulator import Emulator, Rule, Script
from tests.emulator.conftest import ask_tools

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = Path(os.environ.get("SWITCHBOARD_OPENAPI_SPEC") or REPO_ROOT / "../shared/reference/openai-openapi.json")
SPEC_URI = "urn:openai-openapi"
API_HOST = "https://api.openai.com"
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1")

# Locally the conformance tests need ../shared; in CI a missing description is a failure, never a silent skip.
pytestmark = pytest.mark.skipif(
    not SPEC_PATH.is_file() and not IN_CI, reason=f"OpenAI OpenAPI description not found at {SPEC_PATH.resolve()}"
)


def test_the_openapi_description_is_there():
    assert SPEC_PATH.is_file(), f"OpenAI OpenAPI description not found at {SPEC_PATH.resolve()} (CI=true)"


def _nullable_as_null_type(node: Any) -> Any:
    """The description is OpenAPI 3.1 but still marks some fields with 3.0's `nullable: true`, which 3.1 (JSON
    Schema 2020-12) validators ignore; express it the 3.1 way so `null` is accepted where the spec means it."""
    if isinstance(node, list):
        return [_nullable_as_null_type(value) for value in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_as_null_type(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is not True:
        return converted
    if isinstance(converted.get("type"), str):
        converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
        return converted
    return {"anyOf": [converted, {"type": "null"}]}


@cache
def _spec() -> dict[str, Any]:
    return _nullable_as_null_type(json.loads(SPEC_PATH.read_text(encoding="utf-8")))


def _without_implicit_discriminators(node: Any) -> Any:
    """Drop `discriminator`s that have no `mapping`. The description relies on implicit mappings whose names do
    not exist (type "message" -> #/components/schemas/message); a discriminator is only a hint, the `oneOf`
    beside it still validates the value."""
    if isinstance(node, dict):
        return {
            key: _without_implicit_discriminators(value)
            for key, value in node.items()
            if not (key == "discriminator" and isinstance(value, dict) and "mapping" not in value)
        }
    if isinstance(node, list):
        return [_without_implicit_discriminators(value) for value in node]
    return node


@cache
def _openapi() -> OpenAPI:
    spec = _without_implicit_discriminators(_spec())
    return OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))


@cache
def _validator(schema_name: str) -> Validator:
    registry: Registry = Registry().with_resource(
        SPEC_URI, Resource.from_contents(_spec(), default_specification=DRAFT202012)
    )
    schema = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def assert_schema(instance: Any, schema_name: str) -> None:
    errors = sorted(_validator(schema_name).iter_errors(instance), key=lambda error: error.path)
    assert not errors, f"{schema_name}: " + "; ".join(
        f"{list(error.absolute_path)}: {error.message[:300]}" for error in errors[:5]
    )


def assert_operation(method: str, path: str, status: int, body: Any) -> None:
    """Validate a JSON response body against the spec's operation for (method, path, status)."""
    request = MockRequest(API_HOST, method.lower(), path)
    response = MockResponse(json.dumps(body).encode(), status_code=status, content_type="application/json")
    _openapi().validate_response(request, response)


class Recorder:
    """Raw HTTP against the emulator (what the SDK would receive), validated as it goes."""

    def __init__(self, session: aiohttp.ClientSession, emu: Emulator) -> None:
        self.session = session
        self.emu = emu

    async def call(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        async with self.session.request(method, f"{self.emu.url}{path}", json=body) as response:
            data = await response.json()
            assert response.status == expect, data
        if expect == 200:
            assert_operation(method, path.split("?")[0], 200, data)
        else:
            assert_schema(data, "ErrorResponse")
        return data

    async def events(self, method: str, path: str, body: Any = None) -> list[tuple[str, Any]]:
        async with self.session.request(method, f"{self.emu.url}{path}", json=body) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            text = await response.text()
        events = []
        for block in text.strip().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines())
            data = lines["data"]
            events.append((lines.get("event", ""), data if data == "[DONE]" else json.loads(data)))
        return events


@pytest.fixture
async def rec(emu: Emulator) -> AsyncIterator[Recorder]:
    async with aiohttp.ClientSession() as session:
        yield Recorder(session, emu)


@pytest.fixture
async def mrec(memu: Emulator) -> AsyncIterator[Recorder]:
    async with aiohttp.ClientSession() as session:
        yield Recorder(session, memu)


def _check_response_events(events: list[tuple[str, Any]]) -> None:
    for number, (name, data) in enumerate(events):
        assert data["type"] == name and data["sequence_number"] == number
        assert_schema(data, "ResponseStreamEvent")


async def test_response_objects(rec: Recorder, emu: Emulator) -> None:
    text = await rec.call("POST", "/v1/responses", {"model": "m", "input": "hello", "metadata": {"agent": "x"}})
    calls = await rec.call(
        "POST", "/v1/responses", {"model": "m", "input": "ask the critic", "tools": ask_tools("critic")}
    )
    assert calls["output"][0]["type"] == "function_call"
    outputs = [{"type": "function_call_output", "call_id": calls["output"][0]["call_id"], "output": "ok"}]
    await rec.call(
        "POST",
        "/v1/responses",
        {"model": "m", "input": outputs, "previous_response_id": calls["id"], "tools": ask_tools("critic")},
    )
    emu.faults.fail("server_error")
    failed = await rec.call("POST", "/v1/responses", {"model": "m", "input": "x"})
    assert failed["status"] == "failed"
    cut = await rec.call("POST", "/v1/responses", {"model": "m", "input": "x" * 100, "max_output_tokens": 5})
    assert cut["status"] == "incomplete"
    await rec.call("GET", f"/v1/responses/{text['id']}")
    await rec.call("GET", f"/v1/responses/{calls['id']}/input_items?limit=1")
    await rec.call("DELETE", f"/v1/responses/{text['id']}")


async def test_background_and_cancelled_response_objects(mrec: Recorder, memu: Emulator) -> None:
    memu.scripts["slow"] = Script([Rule(delay=10)])
    body = {"model": "m", "input": "x", "background": True, "metadata": {"agent": "slow"}}
    queued = await mrec.call("POST", "/v1/responses", body)
    assert queued["status"] == "queued"
    cancelled = await mrec.call("POST", f"/v1/responses/{queued['id']}/cancel")
    assert cancelled["status"] == "cancelled"


async def test_response_stream_events(rec: Recorder, emu: Emulator) -> None:
    text = await rec.events("POST", "/v1/responses", {"model": "m", "input": "a b c", "stream": True})
    _check_response_events(text)
    calls = await rec.events(
        "POST",
        "/v1/responses",
        {"model": "m", "input": "ask the team", "tools": ask_tools("a", "b"), "stream": True, "background": True},
    )
    _check_response_events(calls)
    assert {name for name, _ in calls} >= {"response.queued", "response.function_call_arguments.done"}
    emu.faults.fail("rate_limit_exceeded")
    failed = await rec.events("POST", "/v1/responses", {"model": "m", "input": "x", "stream": True})
    _check_response_events(failed)
    assert [name for name, _ in failed[-2:]] == ["error", "response.failed"]
    emu.scripts["cut"] = Script([Rule(reply="partial", incomplete="max_output_tokens")])
    body = {"model": "m", "input": "x", "stream": True, "metadata": {"agent": "cut"}}
    incomplete = await rec.events("POST", "/v1/responses", body)
    _check_response_events(incomplete)
    assert incomplete[-1][0] == "response.incomplete"
    response_id = text[0][1]["response"]["id"]
    resumed = await rec.events("GET", f"/v1/responses/{response_id}?stream=true&starting_after=2")
    assert [data["sequence_number"] for _, data in resumed] == list(range(3, len(text)))


async def test_conversation_objects(rec: Recorder) -> None:
    conversation = await rec.call(
        "POST", "/v1/conversations", {"items": [{"role": "user", "content": "hi"}], "metadata": {"k": "v"}}
    )
    conversation_id = conversation["id"]
    await rec.call("GET", f"/v1/conversations/{conversation_id}")
    await rec.call("POST", f"/v1/conversations/{conversation_id}", {"metadata": {"k": "w"}})
    body = {"model": "m", "input": "ask the critic", "tools": ask_tools("critic"), "conversation": conversation_id}
    response = await rec.call("POST", "/v1/responses", body)
    added = await rec.call(
        "POST",
        f"/v1/conversations/{conversation_id}/items",
        {"items": [{"type": "function_call_output", "call_id": response["output"][0]["call_id"], "output": "ok"}]},
    )
    listing = await rec.call("GET", f"/v1/conversations/{conversation_id}/items?limit=10&order=asc")
    assert [item["type"] for item in listing["data"]] == ["message", "message", "function_call", "function_call_output"]
    for item in listing["data"]:
        await rec.call("GET", f"/v1/conversations/{conversation_id}/items/{item['id']}")
    await rec.call("DELETE", f"/v1/conversations/{conversation_id}/items/{added['data'][0]['id']}")
    await rec.call("DELETE", f"/v1/conversations/{conversation_id}")


async def test_error_bodies(rec: Recorder, emu: Emulator) -> None:
    await rec.call("GET", "/v1/responses/resp_missing", expect=404)
    unstored = {"model": "m", "input": "x", "background": True, "store": False}
    await rec.call("POST", "/v1/responses", unstored, expect=400)
    await rec.call("GET", "/v1/nowhere", expect=404)
    emu.faults.http_error(429)
    await rec.call("POST", "/v1/conversations", {}, expect=429)
    emu.faults.http_error(500)
    await rec.call("POST", "/v1/conversations", {}, expect=500)
    conversation = await rec.call("POST", "/v1/conversations", {})
    emu.scripts["slow"] = Script([Rule(delay=3600)])
    background = {"model": "m", "input": "x", "background": True, "conversation": conversation["id"]}
    await rec.call("POST", "/v1/responses", {**background, "metadata": {"agent": "slow"}})
    locked = await rec.call("POST", "/v1/responses", background, expect=400)
    assert locked["error"]["code"] == "conversation_locked"


async def test_sdk_parses_every_shape_without_extra_fields(client: openai.AsyncOpenAI) -> None:
    """The SDK's own (newer) types know every field we send, except `store`, which the real API sends too."""
    response = await client.responses.create(model="m", input="ask the critic", tools=ask_tools("critic"))
    assert set(response.model_extra or {}) <= {"store"}
    assert all(not item.model_extra for item in response.output)
    conversation = await client.conversations.create()
    assert not conversation.model_extra


def _event_data_schema(name: str) -> str:
    if name.startswith("thread.run.step."):
        return "RunStepDeltaObject" if name.endswith(".delta") else "RunStepObject"
    if name.startswith("thread.message."):
        return "MessageDeltaObject" if name.endswith(".delta") else "MessageObject"
    return "RunObject"


def _check_assistant_events(events: list[tuple[str, Any]]) -> None:
    assert events[-1] == ("done", "[DONE]")
    for name, data in events:
        if name != "done":
            assert_schema(data, _event_data_schema(name))
        assert_schema({"event": name, "data": data}, "AssistantStreamEvent")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_assistants_objects_and_events(rec: Recorder, emu: Emulator) -> None:
    tools = [{"type": "function", "function": {"name": "ask_critic", "parameters": {"type": "object"}}}]
    proxy = await rec.call("POST", "/v1/assistants", {"model": "m", "name": "proxy", "tools": tools})
    critic = await rec.call("POST", "/v1/assistants", {"model": "m", "name": "critic", "instructions": "Be fair."})
    await rec.call("GET", "/v1/assistants?limit=1")
    await rec.call("GET", f"/v1/assistants/{critic['id']}")
    await rec.call("POST", f"/v1/assistants/{critic['id']}", {"description": "critic"})
    thread = await rec.call("POST", "/v1/threads", {"messages": [{"role": "user", "content": "ask the critic"}]})
    thread_path = f"/v1/threads/{thread['id']}"
    await rec.call("GET", thread_path)
    await rec.call("POST", thread_path, {"metadata": {"k": "v"}})
    events = await rec.events("POST", f"{thread_path}/runs", {"assistant_id": proxy["id"], "stream": True})
    _check_assistant_events(events)
    run = events[-2][1]
    assert run["status"] == "requires_action"
    run_path = f"{thread_path}/runs/{run['id']}"
    await rec.call("GET", run_path)
    outputs = [
        {"tool_call_id": call["id"], "output": "fine"}
        for call in run["required_action"]["submit_tool_outputs"]["tool_calls"]
    ]
    events = await rec.events("POST", f"{run_path}/submit_tool_outputs", {"tool_outputs": outputs, "stream": True})
    _check_assistant_events(events)
    await rec.call("GET", run_path)
    await rec.call("GET", f"{thread_path}/runs")
    steps = await rec.call("GET", f"{run_path}/steps")
    for step in steps["data"]:
        await rec.call("GET", f"{run_path}/steps/{step['id']}")
    messages = await rec.call("GET", f"{thread_path}/messages")
    await rec.call("GET", f"{thread_path}/messages/{messages['data'][0]['id']}")
    await rec.call("POST", f"{thread_path}/messages", {"role": "user", "content": "again"})
    emu.faults.fail("server_error", agent="critic")
    failed = await rec.events("POST", f"{thread_path}/runs", {"assistant_id": critic["id"], "stream": True})
    _check_assistant_events(failed)
    assert failed[-2][0] == "thread.run.failed"
    emu.scripts["slow"] = Script([Rule(delay=3600)])
    slow = await rec.call("POST", "/v1/assistants", {"model": "m", "name": "slow"})
    queued = await rec.call("POST", f"{thread_path}/runs", {"assistant_id": slow["id"]})
    locked = await rec.call("POST", f"{thread_path}/messages", {"role": "user", "content": "x"}, expect=400)
    assert locked["error"]["message"].startswith("Can't add messages")
    cancelling = await rec.call("POST", f"{thread_path}/runs/{queued['id']}/cancel")
    assert cancelling["status"] == "cancelling"
    await emu.wait_status(queued["id"], "cancelled")
    await rec.call("GET", f"{thread_path}/runs/{queued['id']}")
    await rec.call("POST", f"{thread_path}/runs/{queued['id']}/cancel", expect=400)
    created = await rec.call("POST", "/v1/threads/runs", {"assistant_id": critic["id"], "thread": {}})
    assert created["object"] == "thread.run"
    await rec.call("DELETE", thread_path)
    await rec.call("DELETE", f"/v1/assistants/{critic['id']}")
    await rec.call("GET", thread_path, expect=404)


def chat_tools(*subs: str) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": f"ask_{sub}", "parameters": {"type": "object"}}} for sub in subs
    ]


async def test_chat_completion_objects_and_chunks(rec: Recorder, emu: Emulator) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "ask the team"}], "tools": chat_tools("a", "b")}
    calls = await rec.call("POST", "/v1/chat/completions", body)
    message = calls["choices"][0]["message"]
    assert calls["choices"][0]["finish_reason"] == "tool_calls" and len(message["tool_calls"]) == 2
    follow_up = [
        *body["messages"],
        message,
        *({"role": "tool", "tool_call_id": call["id"], "content": "ok"} for call in message["tool_calls"]),
    ]
    streamed = {**body, "messages": follow_up, "stream": True, "stream_options": {"include_usage": True}}
    chunks = await rec.events("POST", "/v1/chat/completions", streamed)
    assert chunks[-1] == ("", "[DONE]")
    for _, chunk in chunks[:-1]:
        assert_schema(chunk, "CreateChatCompletionStreamResponse")
    assert chunks[-2][1]["choices"] == [] and chunks[-2][1]["usage"]["total_tokens"] > 0
    assert chunks[-3][1]["choices"][0]["finish_reason"] == "stop"
    call_chunks = await rec.events("POST", "/v1/chat/completions", {**body, "stream": True})
    for _, chunk in call_chunks[:-1]:
        assert_schema(chunk, "CreateChatCompletionStreamResponse")
    assert call_chunks[-2][1]["choices"][0]["finish_reason"] == "tool_calls"
    unanswered = {**body, "messages": [*body["messages"], message]}
    await rec.call("POST", "/v1/chat/completions", unanswered, expect=400)
    await rec.call("POST", "/v1/chat/completions", {**body, "metadata": {"agent": "x"}}, expect=400)
    emu.faults.http_error(429)
    await rec.call("POST", "/v1/chat/completions", body, expect=429)
