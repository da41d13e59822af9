"""The Chat Completions API: `POST /v1/chat/completions`, streamed or not, with function tools and parallel tool
calls, answered by the same scripted assistants and fault injection as the stateful APIs.

Chat Completions keeps no state: every request carries the whole conversation in `messages`, and the script sees
it as a `Turn` (the newest user text, earlier user texts, tool outputs after the last assistant message). Object
faults map onto what a stateless server can do: `fail` is an error answer (or an `error` chunk once streaming has
begun), `incomplete` ends with `finish_reason: "length"`, `cancel`/`gone` break the stream, `stay_queued` streams
nothing. The agent is named by the `x-switchboard-agent` header (servers ignore headers they do not know), or by
`metadata.agent`, which OpenAI only accepts together with `store: true`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from emulator.errors import FAILURE_MESSAGES, APIError, invalid_request, retry_after_headers, server_error
from emulator.events import EventLog
from emulator.faults import ObjectFaults
from emulator.httputil import AGENT, OBJECT_ID, bound_faults, json_response, read_json, stream_log
from emulator.responses import ARGUMENT_CHUNK, _chunks, split_deltas
from emulator.scripts import (
    Messenger,
    Plan,
    ToolResult,
    Turn,
    messenger_target,
    messengers_of,
    script_for,
    text_params_of,
)
from emulator.wire import JSON, sse_frame, tokens

if TYPE_CHECKING:
    from emulator.server import Emulator

AGENT_HEADER = "x-switchboard-agent"
THREAD_HEADER = "x-switchboard-thread"  # the client's own thread id, kept for assertions (`ChatRecord.thread`)
RUN_HEADER = "x-switchboard-run"  # the client's own run id (`ChatRecord.client_run`), for benchmarks' accounting
DEFAULT_AGENT = "assistant"
ROLES = ("system", "developer", "user", "assistant", "tool")
# Texts of OpenAI's own 400s for malformed conversations and parameters (observed answers, quoted by client
# libraries' issue trackers: e.g. spiceai/spiceai#5231, BerriAI/litellm#23108 for the metadata rule).
METADATA_NEEDS_STORE = "The 'metadata' parameter is only allowed when 'store' is enabled."
STREAM_OPTIONS_NEED_STREAM = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
TOOL_WITHOUT_CALL = (
    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'."
)
CALLS_WITHOUT_OUTPUTS = (
    "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. "
    "The following tool_call_ids did not have response messages: {call_ids}"
)
CONTEXT_EXCEEDED = (
    "This model's maximum context length is {window} tokens. However, your messages resulted in {used} tokens. "
    "Please reduce the length of the messages."
)
FINISH_FOR_INCOMPLETE = {"content_filter": "content_filter"}  # any other incomplete reason: "length"
CLIENT_CHECK_SECONDS = 0.02  # how often a streaming answer looks whether its client is still connected


@dataclass
class ChatRecord:
    """One chat completion, for assertions (`Emulator.chat_completions`)."""

    id: str
    agent: str
    model: str
    created_at: float
    created_tick: int
    stream: bool
    messages: list[JSON]
    tools: list[str]
    thread: str | None = None
    client_run: str | None = None
    status: str = "in_progress"  # in_progress | completed | failed | dropped
    content: str | None = None
    tool_calls: list[JSON] = field(default_factory=list)
    finish_reason: str | None = None
    usage: JSON | None = None
    cached_tokens: int = 0  # of the prompt, served from the prompt cache (emulator/caching.py)
    error: JSON | None = None
    cancelled_by: str | None = None  # "provider" when a fault cut it off
    finished_at: float | None = None
    finished_tick: int | None = None

    @property
    def user_texts(self) -> list[str]:
        """The user messages it was sent (the whole conversation: Chat Completions keeps none)."""
        return [_message_text(m) for m in self.messages if m.get("role") == "user"]


def _message_text(message: JSON) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def check_messages(messages: Any) -> list[JSON]:
    """The 400s OpenAI gives for a malformed `messages` array: roles, tool messages answering no call, and calls
    left without an answer before the next message."""
    if not isinstance(messages, list) or not messages:
        raise invalid_request("Invalid 'messages': expected a non-empty array of messages.", param="messages")
    pending: list[str] = []
    known: set[str] = set()
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid_request(f"Invalid type for 'messages[{index}]': expected an object.", param="messages")
        role = message.get("role")
        if role not in ROLES:
            raise invalid_request(
                f"Invalid value for 'messages[{index}].role': {role!r}.", param=f"messages[{index}].role"
            )
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in known:
                raise invalid_request(TOOL_WITHOUT_CALL, param=f"messages.[{index}].role")
            pending = [c for c in pending if c != call_id]
            continue
        if pending:
            raise invalid_request(CALLS_WITHOUT_OUTPUTS.format(call_ids=", ".join(pending)), param="messages")
        if role == "assistant":
            for call in message.get("tool_calls") or []:
                call_id = call.get("id") if isinstance(call, dict) else None
                if not call_id or not isinstance(call.get("function"), dict):
                    raise invalid_request(
                        f"Invalid 'messages[{index}].tool_calls': each needs an id and a function.",
                        param=f"messages[{index}].tool_calls",
                    )
                pending.append(call_id)
                known.add(call_id)
    if pending:
        raise invalid_request(CALLS_WITHOUT_OUTPUTS.format(call_ids=", ".join(pending)), param="messages")
    return messages


def chat_tool_names(tools: Any) -> list[str]:
    if not isinstance(tools, list):
        return []
    names = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name"):
            names.append(str(function["name"]))
    return names


def build_chat_turn(agent: str, messages: list[JSON], tools: list[str], parallel: bool,
                    messengers: dict[str, Messenger] | None = None, text_params: dict[str, str] | None = None) -> Turn:
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    last_user = users[-1] if users else -1
    assistants = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    last_assistant = assistants[-1] if assistants else -1
    names: dict[str, tuple[int, str]] = {}
    for index, message in enumerate(messages):
        for call in message.get("tool_calls") or []:
            name = str(call["function"].get("name", ""))
            name = messenger_target(name, str(call["function"].get("arguments") or ""), messengers or {})
            names[call["id"]] = (index * 1000 + len(names), name)

    def results(start: int) -> list[ToolResult]:
        found = [
            (names[m["tool_call_id"]][0], ToolResult(m["tool_call_id"], names[m["tool_call_id"]][1], _message_text(m)))
            for m in messages[start + 1 :]
            if m.get("role") == "tool" and m.get("tool_call_id") in names
        ]
        return [result for _, result in sorted(found, key=lambda pair: pair[0])]

    texts = [_message_text(messages[i]) for i in users]
    fresh_outputs = results(last_assistant) if last_assistant > last_user else []
    return Turn(
        agent=agent,
        text=texts[-1] if texts else "",
        earlier=texts[:-1],
        tools=tools,
        tool_outputs=fresh_outputs,
        outputs_since_user=results(last_user),
        called_since_user=[
            names[call["id"]][1] for m in messages[last_user + 1 :] for call in m.get("tool_calls") or []
        ],
        parallel_tool_calls=parallel,
        messengers=messengers or {},
        text_params=text_params or {},
        api="chat",
    )


class ChatCompletionsAPI:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.records: dict[str, ChatRecord] = {}
        self.context_window: int | None = None  # prompt tokens above this: 400 context_length_exceeded
        # Habits of real OpenAI-compatible servers, to test clients against (none by default: OpenAI's own way):
        # "no_usage" never sends `usage`; "no_call_ids" streams tool calls without ids; "stop_with_calls" ends a
        # message with calls with finish_reason "stop"; "name_every_chunk" repeats the call's name in each chunk.
        self.quirks: set[str] = set()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/chat/completions", self.create)

    @staticmethod
    def agent_of(request: web.Request, body: JSON) -> str:
        header = request.headers.get(AGENT_HEADER)
        if header:
            return header
        metadata = body.get("metadata")
        agent = metadata.get("agent") if isinstance(metadata, dict) else None
        return str(agent) if agent else DEFAULT_AGENT

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        emu = self.emu
        if not body.get("model"):
            raise invalid_request("you must provide a model parameter", param="model")
        messages = check_messages(body.get("messages"))
        stream = bool(body.get("stream"))
        if body.get("metadata") is not None and body.get("store") is not True:
            raise invalid_request(METADATA_NEEDS_STORE, param="metadata")
        if body.get("stream_options") is not None and not stream:
            raise invalid_request(STREAM_OPTIONS_NEED_STREAM, param="stream_options")
        agent = self.agent_of(request, body)
        request[AGENT] = agent
        prompt_tokens = tokens("".join(_message_text(m) + json.dumps(m.get("tool_calls") or "") for m in messages))
        if self.context_window is not None and prompt_tokens > self.context_window:
            raise invalid_request(
                CONTEXT_EXCEEDED.format(window=self.context_window, used=prompt_tokens),
                param="messages",
                code="context_length_exceeded",
            )
        completion_id = emu.ids.new("chatcmpl")
        request[OBJECT_ID] = completion_id
        bound = bound_faults(request)
        faults = emu.faults.for_new_object(agent=agent, api="chat", target=completion_id, stream=stream, bound=bound)
        tools = chat_tool_names(body.get("tools"))
        parallel = body.get("parallel_tool_calls") is not False
        plan = script_for(emu.scripts, agent).plan(
            build_chat_turn(agent, messages, tools, parallel, messengers_of(body.get("tools")),
                            text_params_of(body.get("tools"))))
        record = ChatRecord(
            id=completion_id,
            agent=agent,
            model=str(body["model"]),
            created_at=emu.clock.now(),
            created_tick=emu.tick(),
            stream=stream,
            messages=messages,
            tools=tools,
            thread=request.headers.get(THREAD_HEADER),
            client_run=request.headers.get(RUN_HEADER),
            cached_tokens=emu.prompt_cache.cached(
                [_message_text(m) + json.dumps(m.get("tool_calls") or "") for m in messages]),
        )
        self.records[completion_id] = record
        emu.counters.responses["chat_created"] += 1
        emu.notify()
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and "no_usage" not in self.quirks
        if not stream:
            return await self._answer(record, plan, faults, prompt_tokens, limit)
        log = EventLog()
        drop = emu.faults.take_drop(agent=agent, api="chat", target=completion_id, bound=bound)
        if drop is None:
            drop = faults.drop_after_events
        if faults.end is not None and faults.end.kind in ("cancel", "gone", "expire"):
            drop = faults.end.after_events if drop is None else min(drop, faults.end.after_events or 0)
        task = emu.spawn(self._generate(record, plan, faults, prompt_tokens, limit, include_usage, log))
        watcher = emu.spawn(self._watch_client(request, record, task))
        try:
            return await stream_log(request, log, drop_after=drop)
        finally:
            watcher.cancel()

    async def _watch_client(self, request: web.Request, record: ChatRecord, task: asyncio.Task[None]) -> None:
        """A client that closes its connection mid-answer stops the generation, as servers do (vLLM, llama.cpp
        abort the request): the completion ends `cancelled` by the client."""
        while not task.done():
            transport = request.transport
            if transport is None or transport.is_closing():
                if record.status == "in_progress":
                    record.cancelled_by = "client"
                    self._finish(record, "cancelled")
                    task.cancel()
                return
            await asyncio.sleep(CLIENT_CHECK_SECONDS)

    # --- outcome ---------------------------------------------------------------------------------------------------

    async def _outcome(
        self, record: ChatRecord, plan: Plan, faults: ObjectFaults, limit: Any
    ) -> tuple[str | None, list[JSON], str, APIError | None]:
        """(text, tool calls, finish_reason, error) once the scripted delay has passed."""
        emu = self.emu
        fail = faults.fail
        delay = fail.after_seconds if fail is not None and fail.after_seconds is not None else plan.delay
        if delay > 0:
            await emu.clock.sleep_until(record.created_at + delay)
        code = fail.code if fail is not None else plan.fail
        if code:
            message = (fail.message if fail is not None else plan.fail_message) or FAILURE_MESSAGES.get(code, code)
            return None, [], "error", _failure(code, message, emu.faults.retry_after)
        text = plan.text
        incomplete = plan.incomplete
        if faults.incomplete is not None:
            text, incomplete = (text[: len(text) // 2] if text else None), "max_output_tokens"
        if text is not None and isinstance(limit, int) and tokens(text) > limit:
            text, incomplete = text[: limit * 4], "max_output_tokens"
        calls = [] if incomplete else [
            {"id": emu.ids.new("call"), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in plan.calls
        ]
        if incomplete:
            finish = FINISH_FOR_INCOMPLETE.get(incomplete, "length")
        else:
            finish = "tool_calls" if calls else "stop"
        return text, calls, finish, None

    def _settle(self, record: ChatRecord, text: str | None, calls: list[JSON], finish: str, prompt: int) -> None:
        record.content, record.tool_calls, record.finish_reason = text, calls, finish
        output = tokens(text or "") + sum(tokens(c["function"]["name"] + c["function"]["arguments"]) for c in calls)
        record.usage = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
                        "prompt_tokens_details": {"cached_tokens": record.cached_tokens}}
        self._finish(record, "completed")

    def _finish(self, record: ChatRecord, status: str) -> None:
        record.status = status
        record.finished_at = self.emu.clock.now()
        record.finished_tick = self.emu.tick()
        self.emu.counters.responses[f"chat_{status}"] += 1
        self.emu.notify()

    async def _answer(
        self, record: ChatRecord, plan: Plan, faults: ObjectFaults, prompt: int, limit: Any
    ) -> web.StreamResponse:
        if faults.stay_queued:
            await asyncio.Event().wait()  # never answers; the client's timeout ends it
        text, calls, finish, error = await self._outcome(record, plan, faults, limit)
        if error is not None:
            record.error = {"code": error.code, "message": error.message}
            self._finish(record, "failed")
            raise error
        self._settle(record, text, calls, finish, prompt)
        message: JSON = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
        if calls:
            message["tool_calls"] = calls
        return json_response({
            "id": record.id,
            "object": "chat.completion",
            "created": int(record.created_at),
            "model": record.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": record.usage,
            "service_tier": "default",
        })

    async def _generate(
        self, record: ChatRecord, plan: Plan, faults: ObjectFaults, prompt: int, limit: Any, include_usage: bool,
        log: EventLog,
    ) -> None:
        base = {"id": record.id, "object": "chat.completion.chunk", "created": int(record.created_at),
                "model": record.model, "service_tier": "default"}
        end = faults.end

        def chunk(delta: JSON, finish: str | None = None) -> None:
            frame: JSON = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            if include_usage:
                frame["usage"] = None
            log.append(sse_frame(None, frame))

        def ending_due() -> bool:
            return end is not None and end.kind in ("fail", "incomplete") and len(log) >= (end.after_events or 0)

        def cut_off() -> bool:
            """A cancel/gone fault is due: the server stops generating and drops the connection (the client's
            stream breaks right there: `create` aborts it after the same number of chunks)."""
            if end is not None and end.kind not in ("fail", "incomplete") and len(log) >= (end.after_events or 0):
                record.cancelled_by = "provider"
                self._finish(record, "cancelled")
                return True
            return False

        try:
            chunk({"role": "assistant", "content": "", "refusal": None})
            if cut_off():
                return
            if faults.stay_queued:
                await asyncio.Event().wait()  # the stream stays open with nothing more to say
            text, calls, finish, error = await self._outcome(record, plan, faults, limit)
            if error is None and text is not None:
                for piece in split_deltas(text):
                    if cut_off():
                        return
                    if ending_due():
                        break
                    if self.emu.token_delay > 0:
                        await asyncio.sleep(self.emu.token_delay)
                    chunk({"content": piece})
            if ending_due():
                assert end is not None
                if end.kind == "fail":
                    error = _failure(end.code, end.message or FAILURE_MESSAGES.get(end.code, end.code), 0)
                else:
                    calls, finish = [], "length"
            if error is not None:
                log.append(sse_frame(None, {"error": error.body()["error"]}))
                record.error = {"code": error.code, "message": error.message}
                self._finish(record, "failed")
                return
            quirks = self.quirks
            for index, call in enumerate(calls):
                function = call["function"]
                pieces = _chunks(function["arguments"], ARGUMENT_CHUNK)
                head: JSON = {"index": index, "type": "function",
                              "function": {"name": function["name"], "arguments": ""}}
                if "no_call_ids" not in quirks:
                    head["id"] = call["id"]
                chunk({"tool_calls": [head]})
                for piece in pieces:
                    fragment: JSON = {"arguments": piece}
                    if "name_every_chunk" in quirks:
                        fragment["name"] = function["name"]
                    chunk({"tool_calls": [{"index": index, "function": fragment}]})
                if cut_off():
                    return
            self._settle(record, text, calls, finish, prompt)
            chunk({}, "stop" if finish == "tool_calls" and "stop_with_calls" in quirks else finish)
            if include_usage:
                log.append(sse_frame(None, {**base, "choices": [], "usage": record.usage}))
            log.append(sse_frame(None, "[DONE]"))
        finally:
            log.close()


def _failure(code: str, message: str, retry_after: float) -> APIError:
    """A failed generation as Chat Completions reports it: an HTTP error before the answer began."""
    if code == "rate_limit_exceeded":
        return APIError(429, message, "requests", None, code, retry_after_headers(retry_after))
    if code == "invalid_prompt":
        return invalid_request(message, code=code)
    error = server_error()
    error.message = message
    error.code = code
    return error

