"""The lean streamed requests (`bot.backends.sse`) behave as the `openai` SDK's: same events from the same bytes,
however they are cut into chunks, and the same typed errors, so the backend's error translation sees no difference."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp import web
from openai import AsyncStream

from bot.backends.base import Delta, StreamDropped, Transient
from bot.backends.openai_errors import translate
from bot.backends.responses import TEXT_EVENTS, UNUSED_EVENTS, ResponseStream
from bot.backends.sse import ALIVE, LeanStreams, event_names

EVENTS: list[dict[str, Any]] = [
    {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "status": "queued"}},
    {"type": "response.output_text.delta", "sequence_number": 1, "delta": "héllo\nworld"},
    {"type": "response.completed", "sequence_number": 2, "response": {"id": "resp_1", "status": "completed"}},
]


def sse(events: list[dict[str, Any]], newline: str = "\n") -> bytes:
    frames = [f"event: {e['type']}{newline}data: {json.dumps(e, ensure_ascii=False)}{newline}{newline}"
              for e in events]
    return (f": a comment{newline}{newline}" + "".join(frames) + f"data: [DONE]{newline}{newline}").encode()


class Server:
    """Serves one canned answer per request: a body sent in chunks of `chunk` bytes, or an error status."""

    def __init__(self) -> None:
        self.body = b""
        self.chunk = 7
        self.status = 200
        self.headers: dict[str, str] = {}
        self.seen: list[web.Request] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        await request.read()
        if self.status != 200:
            return web.Response(status=self.status, body=self.body, headers=self.headers,
                                content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for start in range(0, len(self.body), self.chunk):
            await response.write(self.body[start : start + self.chunk])
            await asyncio.sleep(0)
        await response.write_eof()
        return response


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    canned = Server()
    app = web.Application()
    app.router.add_route("*", "/v1/{tail:.*}", canned.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield canned, f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", base_url=url, max_retries=0,
                              default_headers={"X-Extra": "1"}, default_query={"api-version": "v9"},
                              http_client=openai.DefaultAioHttpClient())


async def read_sdk(c: openai.AsyncOpenAI) -> list[Any]:
    stream = await c.post("/responses", body={"a": 1}, cast_to=object, stream=True, stream_cls=AsyncStream[object])
    return [event async for event in stream]


async def read_lean(streams: LeanStreams) -> list[Any]:
    stream = await streams.post("/responses", {"a": 1})
    return [event async for event in stream]


@pytest.mark.parametrize("chunk", [1, 7, 64, 100_000])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
async def test_the_same_events_as_the_sdk_however_the_bytes_are_cut(server, chunk, newline):
    canned, url = server
    canned.body, canned.chunk = sse(EVENTS, newline), chunk
    c = client(url)
    streams = LeanStreams(c, 10)
    try:
        assert await read_lean(streams) == await read_sdk(c) == EVENTS
    finally:
        await streams.close()
        await c.close()


CALL_ARGS = json.dumps({"task": "check the plan", "context": "earlier " * 400})
DELEGATION: list[dict[str, Any]] = [  # a response that calls a tool, with every item-level event the API sends
    {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_2", "status": "in_progress"}},
    {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
     "item": {"type": "function_call", "call_id": "call_1", "name": "ask_critic", "arguments": ""}},
    *[{"type": "response.function_call_arguments.delta", "sequence_number": 2 + i, "output_index": 0,
       "delta": CALL_ARGS[i * 200 : (i + 1) * 200]} for i in range(len(CALL_ARGS) // 200 + 1)],
    {"type": "response.function_call_arguments.done", "sequence_number": 90, "output_index": 0,
     "arguments": CALL_ARGS},
    {"type": "response.output_item.done", "sequence_number": 91, "output_index": 0,
     "item": {"type": "function_call", "call_id": "call_1", "name": "ask_critic", "arguments": CALL_ARGS}},
    {"type": "response.output_text.delta", "sequence_number": 92, "delta": "checking"},
    {"type": "response.content_part.done", "sequence_number": 93, "part": {"type": "output_text", "text": "x"}},
    {"type": "response.completed", "sequence_number": 94, "response": {
        "id": "resp_2", "status": "completed", "usage": {"input_tokens": 5, "output_tokens": 7},
        "output": [{"type": "function_call", "call_id": "call_1", "name": "ask_critic", "arguments": CALL_ARGS}]}},
]


@pytest.mark.parametrize("chunk", [1, 64, 100_000])
async def test_unused_events_are_passed_over_and_the_rest_is_what_the_sdk_reads(server, chunk):
    canned, url = server
    canned.body, canned.chunk = sse(DELEGATION), chunk
    c = client(url)
    skipping, reading_all = LeanStreams(c, 10, event_names(UNUSED_EVENTS)), LeanStreams(c, 10)
    try:
        sdk = await read_sdk(c)
        lean = await read_lean(skipping)
        assert [e for e in lean if e is not ALIVE] == [e for e in sdk if e["type"] not in UNUSED_EVENTS]
        assert len([e for e in lean if e is not ALIVE]) == 3 and await read_lean(reading_all) == sdk == DELEGATION
        if chunk == 1:  # reads that brought only passed-over events still show the stream is alive
            assert lean.count(ALIVE) > 10
        # what the backend makes of the stream is the same either way (an empty delta only says "alive")
        runs = []
        for streams in (skipping, reading_all):
            stream = ResponseStream(await streams.post("/responses", {"a": 1}), "conv_1")
            runs.append(([e async for e in stream if not (isinstance(e, Delta) and not e.text)], stream.run_id))
        assert runs[0] == runs[1] and runs[0][1] == "resp_2"
        # a reader that does not want the text passes the text deltas over too
        quiet = ResponseStream(
            await skipping.post("/responses", {"a": 1}, event_names(UNUSED_EVENTS | TEXT_EVENTS)), "conv_1")
        seen = [e async for e in quiet]
        assert [e for e in seen if not (isinstance(e, Delta) and not e.text)] == [
            e for e in runs[1][0] if not isinstance(e, Delta)]
        if chunk == 1:  # liveness reaches the supervisor's idle watch as empty deltas
            assert sum(1 for e in seen if isinstance(e, Delta) and not e.text) > 10
    finally:
        await skipping.close()
        await reading_all.close()
        await c.close()


async def test_the_request_carries_the_clients_key_headers_query_and_body(server):
    canned, url = server
    canned.body = sse(EVENTS)
    c = client(url)
    streams = LeanStreams(c, 10)
    try:
        await read_lean(streams)
        await read_sdk(c)
    finally:
        await streams.close()
        await c.close()
    lean, sdk = canned.seen
    assert lean.method == sdk.method == "POST" and lean.path == sdk.path == "/v1/responses"
    assert lean.query == sdk.query == {"api-version": "v9"}
    for name in ("Authorization", "X-Extra", "Content-Type", "User-Agent"):
        assert lean.headers[name] == sdk.headers[name], name
    assert lean.headers["Authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("status,code", [(400, "invalid_request_error"), (404, None), (409, "conversation_locked"),
                                         (429, "rate_limit_exceeded"), (500, "server_error")])
async def test_an_error_status_raises_what_the_sdk_raises(server, status, code):
    canned, url = server
    canned.status = status
    canned.body = json.dumps({"error": {"message": f"failed with {status}", "code": code}}).encode()
    canned.headers = {"retry-after-ms": "250"}
    c = client(url)
    streams = LeanStreams(c, 10)
    try:
        with pytest.raises(openai.APIStatusError) as lean:
            await read_lean(streams)
        with pytest.raises(openai.APIStatusError) as sdk:
            await read_sdk(c)
    finally:
        await streams.close()
        await c.close()
    assert type(lean.value) is type(sdk.value)
    assert (lean.value.status_code, lean.value.code, lean.value.body, str(lean.value)) == (
        sdk.value.status_code, sdk.value.code, sdk.value.body, str(sdk.value))
    ours, theirs = translate(lean.value), translate(sdk.value)
    assert type(ours) is type(theirs) and str(ours) == str(theirs)
    assert getattr(ours, "retry_after", None) == getattr(theirs, "retry_after", None)


async def test_an_error_event_raises_what_the_sdk_raises(server):
    canned, url = server
    canned.body = sse([EVENTS[0], {"type": "error", "error": {"message": "boom", "code": "server_error"}}])
    c = client(url)
    streams = LeanStreams(c, 10)
    try:
        with pytest.raises(openai.APIError) as lean:
            await read_lean(streams)
        with pytest.raises(openai.APIError) as sdk:
            await read_sdk(c)
    finally:
        await streams.close()
        await c.close()
    assert (type(lean.value), lean.value.code, lean.value.body, str(lean.value)) == (
        type(sdk.value), sdk.value.code, sdk.value.body, str(sdk.value))


async def test_a_body_cut_short_is_a_dropped_stream_with_the_last_sequence(server):
    canned, url = server
    canned.body = sse(EVENTS)[:-60]  # the terminal event never arrives complete
    c = client(url)
    streams = LeanStreams(c, 10)
    try:
        stream = ResponseStream(await streams.post("/responses", {"a": 1}), "conv_1")
        with pytest.raises(StreamDropped) as dropped:
            async for _ in stream:
                pass
        assert dropped.value.run_id == "resp_1" and dropped.value.last_seq == 1
    finally:
        await streams.close()
        await c.close()


async def test_nothing_listening_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = client(f"http://127.0.0.1:{port}/v1")
    streams = LeanStreams(c, 10)
    try:
        with pytest.raises(openai.APIConnectionError) as failed:
            await read_lean(streams)
    finally:
        await streams.close()
        await c.close()
    error = translate(failed.value)
    assert isinstance(error, Transient) and error.reason == "unreachable"
    assert str(error).startswith(f"cannot connect to http://127.0.0.1:{port}")


async def test_a_finished_stream_gives_its_connection_back_for_the_next_request(server):
    canned, url = server
    canned.body, canned.chunk = sse(EVENTS), 100_000
    c = client(url)
    streams = LeanStreams(c, 10)
    try:
        for _ in range(3):
            stream = ResponseStream(await streams.post("/responses", {"a": 1}), "conv_1")
            async for _ in stream:
                pass
            await stream.aclose()
        peers = {r.transport.get_extra_info("peername") for r in canned.seen if r.transport is not None}
        assert len(peers) == 1  # one connection, reused
    finally:
        await streams.close()
        await c.close()



async def test_an_sdk_without_its_error_factory_keeps_the_sdk_path(server):
    """The lean path raises the SDK's classes through one private SDK method: a version without it must not turn
    every error status into an AttributeError, so such a client is served by the SDK itself."""
    canned, url = server
    canned.body = sse(EVENTS)
    c = client(url)
    c._make_status_error_from_response = None  # type: ignore[method-assign,assignment]
    streams = LeanStreams(c, 10)
    try:
        stream = await streams.post("/responses", {"a": 1})
        events = [event async for event in stream]
    finally:
        await streams.close()
        await c.close()
    assert isinstance(stream, AsyncStream) and not streams.enabled
    assert events == EVENTS
