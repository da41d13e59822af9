"""The Chat Completions backend: `POST /chat/completions`, streamed, for any OpenAI-compatible server (OpenAI,
Azure OpenAI, Ollama, vLLM, llama.cpp, LM Studio, LiteLLM and other gateways).

thread = a thread in our own SQLite (`Store.chat_thread`), tool calls and outputs included: the provider keeps
nothing, so each run sends the thread. run = one streamed request; its input and its answer are appended to the
thread together when it ends (`Store.finish_chat_run`, idempotent on the run id), so a run that broke left nothing
behind and is safely sent again from the transcript, and a finished one is read back after a crash.

What real servers do, and what happens then: a call whose arguments are not JSON, or that names no tool we offered,
is answered with an error output the model can act on (the orchestrator's, counted against the retry budget), and
it is kept in the thread with `{}` as arguments (some servers re-parse the history); text beside tool calls is kept
with them; calls with a missing or repeated id get one of ours; `finish_reason: "stop"` with calls counts as calls;
a stream without `usage` gets an estimate (`RunState.usage_estimated`). Past `max_context_tokens` (or when the
server says the context is exceeded), the oldest turns are folded into a summary made by the agent's own model,
stored, and reused by later runs.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

import openai
from openai import AsyncStream

from bot.backends.base import (
    Delta,
    Permanent,
    RunEvent,
    RunGone,
    RunRequest,
    RunState,
    RunStatus,
    Snapshot,
    ThreadGone,
    ToolCall,
    TranscriptItem,
    Transient,
    results_as_text,
)
from bot.backends.openai_errors import close_sdk_stream, provider_errors, translate
from bot.config import AgentConfig
from bot.types import Usage
from storage.base import ChatMessage, ChatThread, Store

log = logging.getLogger("switchboard.backends.chat")

THREAD_PREFIX = "chat_"
RUN_PREFIX = "chatrun_"
CALL_PREFIX = "call_"
# Name the team member, our thread and our run to gateways' logs and the emulator (as `metadata` does on the
# Responses API, which Chat Completions only takes with `store: true`); servers ignore headers they do not know.
AGENT_HEADER = "x-switchboard-agent"
THREAD_HEADER = "x-switchboard-thread"
RUN_HEADER = "x-switchboard-run"
CANCELLED_OUTPUT = "(cancelled: no longer needed)"
CHARS_PER_TOKEN = 4  # the usual rough figure; exact counts need each model's tokenizer
MESSAGE_TOKENS = 4  # per-message overhead of the chat format
KEEP_SHARE = 0.5  # after folding, the kept newest messages take at most this share of the window
SUMMARY_SHARE = 0.5  # the text given to the summariser takes at most this share of the window
SUMMARY_TRIES = 3  # a summariser request refused for its length is sent again with half the text
INCOMPLETE_REASON = "max_output_tokens"
CONTENT_FILTERED = "content_filter"
_CONTEXT_EXCEEDED = re.compile(r"context[ _](length|size|window)|maximum context|too many tokens|prompt is too long",
                               re.IGNORECASE)
SUMMARY_INSTRUCTIONS = (
    "You keep the memory of a long conversation. Summarise the conversation below (and the earlier summary, if "
    "given) so that the assistant can continue it: keep every fact, decision, name, number, open question and "
    "commitment; drop pleasantries. Write plain prose, at most a few paragraphs."
)
TOO_LONG_TEXT = (
    "This conversation has grown too long for the {agent} assistant's model, even after summarising its oldest "
    "turns. An admin can reset the conversation to start afresh."
)


class ClientSource(Protocol):
    def for_agent(self, agent: AgentConfig) -> openai.AsyncOpenAI: ...

    async def close(self) -> None: ...


def estimate_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        chars = len(content) if isinstance(content, str) else len(json.dumps(content or ""))
        chars += len(json.dumps(message["tool_calls"])) if message.get("tool_calls") else 0
        total += math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_TOKENS
    return total


def chat_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The engine's function tools (Responses form) as Chat Completions tools; other tools have no equivalent."""
    converted = []
    for tool in tools:
        if tool.get("type") != "function":
            continue
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
        converted.append({"type": "function", "function": function})
    return converted


def pending_calls(messages: Sequence[ChatMessage]) -> list[str]:
    """Ids of the tool calls of the thread's last assistant message that have no tool message after it."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index].message
        if message.get("role") == "assistant":
            answered = {m.message.get("tool_call_id") for m in messages[index + 1 :]}
            return [c["id"] for c in message.get("tool_calls") or [] if c["id"] not in answered]
        if message.get("role") == "user":
            return []
    return []


class ChatBackend:
    name = "chat"
    supports_resume = False

    def __init__(self, clients: ClientSource, store: Store | None = None) -> None:
        self.clients = clients
        self.store = store
        self._live: dict[str, ChatStream] = {}

    def bind_store(self, store: Store) -> None:
        """Where the threads live (the engine binds its store before `open`)."""
        self.store = store

    @property
    def _store(self) -> Store:
        if self.store is None:
            raise RuntimeError("ChatBackend needs a store: call bind_store first")
        return self.store

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        await self.clients.close()

    # ---- threads: ours, in SQLite ----

    async def create_thread(self, seed: Sequence[TranscriptItem], metadata: dict[str, str]) -> str:
        thread_id = THREAD_PREFIX + uuid.uuid4().hex
        await self._store.create_chat_thread(thread_id, [{"role": i.role, "content": i.text} for i in seed])
        return thread_id

    async def delete_thread(self, thread_id: str) -> None:
        await self._store.delete_chat_thread(thread_id)

    async def delete_run(self, run_id: str, thread_id: str) -> None:
        return None  # kept in our database only, with its thread

    async def read_thread(self, thread_id: str, limit: int) -> list[TranscriptItem] | None:
        return None  # the server keeps nothing: a fork copies the local transcript

    async def answer_stuck_calls(self, thread_id: str, call_id: str) -> None:
        return None  # never stuck: the next run's input answers any call left open (`_input`)

    async def abandon(self, state: RunState) -> None:
        return None  # likewise: its calls are answered "cancelled" by the thread's next run

    async def active_runs(self, thread_id: str) -> list[str]:
        return [run_id for run_id, stream in self._live.items() if stream.thread_id == thread_id]

    async def lost_create(self, request: RunRequest) -> RunState | None:
        return None  # nothing is stored remotely: sending the request again is safe

    # ---- runs ----

    async def start(self, request: RunRequest) -> ChatStream:
        thread = await self._store.chat_thread(request.thread_id)
        if thread is None:
            raise ThreadGone(f"chat thread {request.thread_id} does not exist")
        new = _input(thread.messages, request)
        messages = await self._fit(request, thread, new, squeeze=False)
        try:
            return await self._send(request, messages, new)
        except Permanent as exc:
            if not _context_exceeded(exc):
                raise
            # Our estimate was low for this model's tokenizer (or no window is configured): fold harder, once.
            log.info("chat thread %s: the server refused the length (%s); folding", request.thread_id, exc)
        thread = await self._store.chat_thread(request.thread_id) or thread
        try:
            messages = await self._fit(request, thread, new, squeeze=True)
            return await self._send(request, messages, new)
        except Permanent as exc:
            if _context_exceeded(exc):
                raise Permanent(str(exc), "context_too_long", TOO_LONG_TEXT.format(agent=request.agent.name)) from exc
            raise

    async def submit(self, state: RunState, request: RunRequest) -> ChatStream:
        return await self.start(request)

    async def _send(self, request: RunRequest, messages: list[dict[str, Any]], new: list[dict[str, Any]]) -> ChatStream:
        body: dict[str, Any] = {
            "model": request.agent.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        tools = chat_tools(request.tools)
        if tools:
            body["tools"] = tools
            body["parallel_tool_calls"] = True
        client = self.clients.for_agent(request.agent)
        run_id = RUN_PREFIX + uuid.uuid4().hex
        headers = {AGENT_HEADER: request.agent.name, THREAD_HEADER: request.thread_id, RUN_HEADER: run_id}
        async with provider_errors():
            stream = await client.post(
                "/chat/completions", body=body, cast_to=object, stream=True, stream_cls=AsyncStream[object],
                options={"headers": headers},
            )
        run = ChatStream(self, stream, run_id, request.thread_id, new, estimate_tokens(messages))
        self._live[run.id] = run
        return run

    async def resume(self, run_id: str, thread_id: str, after_seq: int) -> ChatStream:
        raise Permanent("a chat completion cannot be resumed", reason="no_resume")

    async def retrieve(self, run_id: str, thread_id: str) -> RunState:
        recorded = await self._store.chat_run(run_id)
        if recorded is None:  # it never finished: nothing of it was kept, here or at the provider
            raise RunGone(f"chat run {run_id} did not finish")
        return state_from_json(recorded)

    async def cancel(self, run_id: str, thread_id: str) -> None:
        stream = self._live.get(run_id)
        if stream is not None:
            stream.cancelled = True
            await stream.aclose()

    # ---- the context window ----

    async def _fit(self, request: RunRequest, thread: ChatThread, new: list[dict[str, Any]], squeeze: bool
                   ) -> list[dict[str, Any]]:
        """The messages to send: the system message (instructions and the summary of folded turns), the thread
        and the new input; past the agent's `max_context_tokens` (or on `squeeze`, when the server refused the
        length) the oldest turns are folded into a stored summary first."""
        agent = request.agent
        window = agent.max_context_tokens
        messages = _assemble(agent, thread, new)
        size = estimate_tokens(messages)
        if not squeeze and (window is None or size <= window):
            return messages
        if squeeze:  # the real window is smaller than what was refused: assume half of it
            window = min(window or size, size // 2)
        assert window is not None
        budget = window * KEEP_SHARE
        budget -= estimate_tokens(_assemble(agent, ChatThread(thread.summary, 0, []), new))
        cut = _fold_point(thread.messages, budget)
        if cut == 0:
            return messages  # only the newest turn is left: nothing older to fold
        folded = thread.messages[:cut]
        summary = await self._summarise(agent, thread.summary, folded, window)
        await self._store.add_chat_summary(request.thread_id, folded[-1].id, summary)
        log.info("chat thread %s: %d messages folded into a summary", request.thread_id, cut)
        return _assemble(agent, ChatThread(summary, folded[-1].id, thread.messages[cut:]), new)

    async def _summarise(self, agent: AgentConfig, earlier: str | None, folded: Sequence[ChatMessage],
                         window: int) -> str:
        text = "\n".join(_transcript_line(m.message) for m in folded)
        limit = int(window * SUMMARY_SHARE * CHARS_PER_TOKEN)
        for attempt in range(SUMMARY_TRIES):
            content = text[-limit:]  # too long for the model: the newest part, after the earlier summary
            if earlier:
                content = f"Earlier summary:\n{earlier[: limit // 2]}\n\nConversation since:\n{text[-limit // 2:]}"
            body = {
                "model": agent.model,
                "messages": [{"role": "system", "content": SUMMARY_INSTRUCTIONS}, {"role": "user", "content": content}],
            }
            try:
                async with provider_errors():
                    answer = await self.clients.for_agent(agent).post(
                        "/chat/completions", body=body, cast_to=object,
                        options={"headers": {AGENT_HEADER: f"{agent.name}/summary"}},
                    )
                break
            except Permanent as exc:
                if not _context_exceeded(exc) or attempt == SUMMARY_TRIES - 1:
                    raise
                limit //= 2
        choices = answer.get("choices") if isinstance(answer, dict) else None
        summary = (choices[0].get("message") or {}).get("content") if choices else None
        if not isinstance(summary, str) or not summary.strip():
            raise Transient("the summary of the folded turns came back empty", reason="server_error")
        return summary.strip()


class ChatStream:
    """One streamed completion as `RunEvent`s: a first snapshot naming the run (ours: the server keeps none), the
    text deltas, then the settled state, recorded with the thread's new messages before it is yielded."""

    def __init__(self, backend: ChatBackend, stream: Any, run_id: str, thread_id: str,
                 new: list[dict[str, Any]], prompt_estimate: int) -> None:
        self._backend = backend
        self._stream = stream
        self.id = run_id
        self.thread_id = thread_id
        self._new = new
        self._prompt_estimate = prompt_estimate
        self.cancelled = False

    @property
    def run_id(self) -> str:
        return self.id

    async def aclose(self) -> None:
        self._backend._live.pop(self.id, None)
        await close_sdk_stream(self._stream)

    def __aiter__(self) -> AsyncIterator[RunEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[RunEvent]:
        yield Snapshot(RunState(self.id, self.thread_id, "in_progress"))
        parts: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        finish: str | None = None
        usage: Mapping[str, Any] | None = None
        try:
            async for chunk in self._stream:
                if not isinstance(chunk, dict):
                    continue
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if isinstance(content, str) and content:
                        parts.append(content)
                        yield Delta(content)
                    for call in delta.get("tool_calls") or []:
                        _merge_call(calls, call)
                    finish = choice.get("finish_reason") or finish
        except openai.APIError as exc:
            if self.cancelled:
                yield Snapshot(RunState(self.id, self.thread_id, "cancelled"))
                return
            if isinstance(exc, openai.APIConnectionError):
                if finish is None:
                    raise Transient(f"the chat stream broke: {exc}", reason="stream_dropped") from exc
                # broke after the answer's last chunk (before `usage` or the end marker): the answer is whole
            else:
                raise translate(exc) from exc
        if self.cancelled:
            yield Snapshot(RunState(self.id, self.thread_id, "cancelled"))
            return
        if finish is None:
            raise Transient("the chat stream ended before the answer finished", reason="stream_dropped")
        state, answer = self._settle("".join(parts), list(calls.values()), finish, usage)
        stored = [*self._new, answer] if answer is not None else []
        await self._backend._store.finish_chat_run(self.id, self.thread_id, stored, state_to_json(state))
        yield Snapshot(state)

    def _settle(self, text: str, raw_calls: list[dict[str, str]], finish: str, usage: Mapping[str, Any] | None
                ) -> tuple[RunState, dict[str, Any] | None]:
        seen: set[str] = set()
        calls: list[ToolCall] = []
        for raw in raw_calls:
            call_id = raw["id"]
            if not call_id or call_id in seen:  # some servers send none, or the same one for every call
                call_id = CALL_PREFIX + uuid.uuid4().hex[:24]
            seen.add(call_id)
            calls.append(ToolCall(call_id, raw["name"], raw["arguments"] or "{}"))
        status: RunStatus = "completed"
        error_code = error_message = incomplete = None
        if finish == "length":
            status, incomplete, calls = "incomplete", INCOMPLETE_REASON, []  # a cut call has cut arguments
        elif finish == CONTENT_FILTERED:
            status, error_code = "failed", CONTENT_FILTERED
            error_message = "the provider's content filter withheld the answer"
        elif calls:  # "tool_calls", or "stop" with calls (some servers)
            status = "requires_action"
        if usage:
            used = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                         int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0))
        else:
            spent = text + "".join(c.name + c.arguments for c in calls)
            used = Usage(self._prompt_estimate, math.ceil(len(spent) / CHARS_PER_TOKEN))
        state = RunState(
            id=self.id, thread_id=self.thread_id, status=status, text=text, tool_calls=tuple(calls),
            error_code=error_code, error_message=error_message, incomplete_reason=incomplete, usage=used,
            usage_estimated=not usage,
        )
        if status == "failed":
            return state, None
        answer: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            answer["tool_calls"] = [
                {"id": c.call_id, "type": "function",
                 "function": {"name": c.name, "arguments": _json_or_empty(c.arguments)}}
                for c in calls
            ]
        elif not text:
            answer["content"] = ""
        return state, answer


def _merge_call(calls: dict[int, dict[str, str]], call: Mapping[str, Any]) -> None:
    """Fold one streamed tool-call fragment into the call at its index."""
    index = call.get("index")
    if not isinstance(index, int):
        index = len(calls)
    entry = calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
    if call.get("id"):
        entry["id"] = str(call["id"])
    function = call.get("function") or {}
    name = function.get("name")
    if isinstance(name, str) and name and name != entry["name"]:  # some servers repeat the name in every chunk
        entry["name"] += name
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        entry["arguments"] += arguments
    elif isinstance(arguments, dict):  # some servers send the arguments as an object
        entry["arguments"] += json.dumps(arguments)


def _json_or_empty(arguments: str) -> str:
    try:
        json.loads(arguments)
    except ValueError:
        return "{}"
    return arguments


def _input(thread: Sequence[ChatMessage], request: RunRequest) -> list[dict[str, Any]]:
    """The run's new messages: outputs for the calls the thread's last answer left open (a "cancelled" one for
    each call no result answers), then results for calls the thread never saw, as text, then the user messages."""
    open_calls = pending_calls(thread)
    results = {r.call_id: r for r in request.input.results}
    new: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": call_id,
         "content": results[call_id].output if call_id in results else CANCELLED_OUTPUT}
        for call_id in open_calls
    ]
    unknown = [r for r in request.input.results if r.call_id not in open_calls]
    new += [{"role": "user", "content": text} for text in request.input.messages]
    if unknown:
        new.append({"role": "user", "content": results_as_text(unknown)})
    return new


def _assemble(agent: AgentConfig, thread: ChatThread, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    system = agent.instructions
    if thread.summary:  # one system message: some servers' chat templates refuse a second
        system += f"\n\nSummary of the earlier conversation (its oldest turns were folded into this):\n{thread.summary}"
    return [{"role": "system", "content": system}, *(m.message for m in thread.messages), *new]


def _fold_point(messages: Sequence[ChatMessage], budget: float) -> int:
    """How many of the oldest messages to fold so the rest fits `budget` tokens. The kept part starts at a user
    message, so a tool call is never parted from its outputs."""
    starts = [i for i, m in enumerate(messages) if m.message.get("role") == "user"]
    for start in starts:
        if estimate_tokens([m.message for m in messages[start:]]) <= budget:
            return start
    return starts[-1] if starts else 0


def _transcript_line(message: Mapping[str, Any]) -> str:
    role = message.get("role", "")
    content = message.get("content") or ""
    line = f"{role}: {content}" if content else f"{role}:"
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        line += f"\n  (called {function.get('name')} with {function.get('arguments')})"
    return line


def _context_exceeded(exc: Permanent) -> bool:
    return exc.reason == "context_length_exceeded" or bool(_CONTEXT_EXCEEDED.search(str(exc)))


def state_to_json(state: RunState) -> dict[str, Any]:
    return {
        "id": state.id, "thread_id": state.thread_id, "status": state.status, "text": state.text,
        "tool_calls": [[c.call_id, c.name, c.arguments] for c in state.tool_calls],
        "error_code": state.error_code, "error_message": state.error_message,
        "incomplete_reason": state.incomplete_reason,
        "usage": [state.usage.input_tokens, state.usage.output_tokens, state.usage.cached_input_tokens],
        "usage_estimated": state.usage_estimated,
    }


def state_from_json(data: Mapping[str, Any]) -> RunState:
    return RunState(
        id=data["id"], thread_id=data["thread_id"], status=data["status"], text=data.get("text") or "",
        tool_calls=tuple(ToolCall(*c) for c in data.get("tool_calls") or []),
        error_code=data.get("error_code"), error_message=data.get("error_message"),
        incomplete_reason=data.get("incomplete_reason"), usage=Usage(*(data.get("usage") or (0, 0))),
        usage_estimated=bool(data.get("usage_estimated")),
    )
