"""The Responses backend (the default): a thread is a chain of stored responses or a Conversation; a run is a
background response created with `stream=True, store=True`, which keeps running if our stream drops and is resumed
by sequence number. A response that completes with function calls is reported as `requires_action`; its outputs go
back in the thread's next response.

Chains (`[openai] threads = "chains"`, the default, for every new empty thread; ids `chain_...`, kept in
`Store.chain`): a run names the thread's head, its last completed response, as `previous_response_id`, so nothing
is created before a thread's first run. A settled response becomes the head only if it continues the current one
(compare-and-set, done before its state is handed on, so the next run always sees it); calls given up on are
answered "cancelled" by the next run, there being no items to write. What chains give up: nothing lists responses,
so a create whose answer was lost is sent again and its work may be done twice (the user still gets one answer).

Conversations (`threads = "conversations"`, and every thread seeded with history: rebuilt, forked, migrated): a
create whose answer never came may still have run (the API has no idempotency key and cannot list a conversation's
responses): `lost_create` reads the conversation's tail, and when this request's input sits there followed by
output, adopts that output as a run with an id of our own (`adopted:<first item id>`), so the input is not sent
twice and the orphan's function calls get their outputs.

Creates and resumes (the streamed requests of every run) go through `bot.backends.sse`: aiohttp and a small event
parser, with the SDK's URL, headers and error classes, at about half the SDK's CPU per response. Other requests go
through the `openai` SDK's generic `post`/`get` with raw JSON (`cast_to=object`), without a typed model per
response. The emulator's conformance tests keep the shapes honest.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

import openai

from bot.backends.base import (
    Delta,
    OutputsRejected,
    Permanent,
    RunEvent,
    RunGone,
    RunRequest,
    RunState,
    RunStatus,
    Snapshot,
    StreamDropped,
    ThreadGone,
    ToolCall,
    TranscriptItem,
    results_as_text,
)
from bot.backends.openai_errors import (
    close_sdk_stream,
    get_json,
    list_newest,
    post_json,
    provider_errors,
    stream_error,
    translate,
)
from bot.backends.sse import ALIVE, MAX_CONNECTIONS, LeanStreams, event_names
from bot.types import Usage
from storage.base import ChainRecord, Store

log = logging.getLogger("switchboard.backends.responses")

MAX_ITEMS_PER_CALL = 20  # conversations.create and items.create take at most 20 items
TAIL_ITEMS = 100  # conversation items read to find function calls left without an output (the list's maximum)
TERMINAL_EVENTS = {"response.completed", "response.failed", "response.incomplete", "response.cancelled"}
CANCELLED_OUTPUT = "(cancelled: no longer needed)"
CHAIN_KEY = "chain"  # the metadata key naming a chained response's thread
CHAIN_PREFIX = "chain_"  # our id of a thread kept as a chain of responses (the provider never sees it)
#: statuses whose output a later `previous_response_id` sees (failed and cancelled ones leave none behind)
CHAINABLE = frozenset({"completed", "incomplete"})
ADOPTED = "adopted:"  # prefix of the id we give a response found only through the items it left in the conversation
#: Item-level stream events `ResponseStream` never reads (it reads text deltas, `error` and the lifecycle events that
#: carry the whole response): passed over unparsed. The big ones repeat a call's arguments or an item in full.
UNUSED_EVENTS = frozenset({
    "response.output_item.added", "response.output_item.done",
    "response.content_part.added", "response.content_part.done",
    "response.output_text.done", "response.output_text.annotation.added",
    "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "response.refusal.delta", "response.refusal.done",
    "response.reasoning_summary_part.added", "response.reasoning_summary_part.done",
    "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
    "response.reasoning_text.delta", "response.reasoning_text.done",
})
#: passed over too when nobody reads the run's text as it is written (`RunRequest.text_wanted`)
TEXT_EVENTS = frozenset({"response.output_text.delta"})


class ResponsesBackend:
    name = "responses"
    supports_resume = True

    def __init__(self, client: openai.AsyncOpenAI, chains: bool = False) -> None:
        self.client = client
        self.chains = chains  # new empty threads are chains of responses, not conversations
        self.streams = LeanStreams(client, MAX_CONNECTIONS, event_names(UNUSED_EVENTS))  # creates, resumes: hot path
        self._quiet = event_names(UNUSED_EVENTS | TEXT_EVENTS)  # what a reader that does not want the text skips
        self._store: Store | None = None

    def bind_store(self, store: Store) -> None:
        self._store = store

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("ResponsesBackend keeps chains in a store: call bind_store first")
        return self._store

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        await self.streams.close()
        await self.client.close()

    # ---- threads ----

    async def create_thread(self, seed: Sequence[TranscriptItem], metadata: dict[str, str]) -> str:
        if self.chains and not seed:
            thread_id = CHAIN_PREFIX + uuid.uuid4().hex
            await self.store.create_chain(thread_id)
            return thread_id
        items = [_message(item.role, item.text) for item in seed]
        body: dict[str, Any] = {"items": items[:MAX_ITEMS_PER_CALL]}
        if metadata:
            body["metadata"] = metadata
        async with provider_errors():
            conversation = await post_json(self.client, "/conversations", body)
            for start in range(MAX_ITEMS_PER_CALL, len(items), MAX_ITEMS_PER_CALL):
                await post_json(
                    self.client, f"/conversations/{conversation['id']}/items",
                    {"items": items[start : start + MAX_ITEMS_PER_CALL]},
                )
        return str(conversation["id"])

    async def delete_thread(self, thread_id: str) -> None:
        if is_chain(thread_id):
            await self.store.delete_chain(thread_id)  # its responses go with `delete_run`, or expire
            return
        async with provider_errors():
            await self.client.conversations.delete(thread_id)

    async def delete_run(self, run_id: str, thread_id: str) -> None:
        if run_id.startswith(ADOPTED):
            return  # ours, not the provider's: its items went with the conversation
        try:
            async with provider_errors(not_found="run"):
                await self.client.responses.delete(run_id)
        except RunGone:
            pass  # already gone (never stored, or deleted before)

    async def answer_stuck_calls(self, thread_id: str, call_id: str) -> None:
        if is_chain(thread_id):
            # Every call of the head waits for an output; one outside it cannot be answered (the caller rebuilds).
            chain = await self._chain(thread_id)
            calls: list[str] = []
            if chain.head is not None:  # read, not `retrieve`: the head is the head already, nothing to advance
                async with provider_errors(not_found="run"):
                    head = await get_json(self.client, f"/responses/{chain.head}")
                calls = [c.call_id for c in to_state(head, thread_id).tool_calls]
            if call_id not in calls:
                raise Permanent(f"call {call_id} is not one of the head's of chain {thread_id}", "stuck_call_unknown")
            await self.store.cancel_chain_calls(thread_id, calls)
            return
        # The provider names one unanswered call per rejected request: find them all, so one write frees the
        # conversation instead of one rejected request per call.
        await self._close_calls(thread_id, [call_id, *unanswered_calls(await self._tail(thread_id))])

    async def abandon(self, state: RunState) -> None:
        if is_chain(state.thread_id):
            chain = await self.store.chain(state.thread_id)
            if chain is not None and chain.head == state.id:  # else no run will chain from it
                await self.store.cancel_chain_calls(state.thread_id, [c.call_id for c in state.tool_calls])
            return
        await self._close_calls(state.thread_id, [call.call_id for call in state.tool_calls])

    async def _close_calls(self, thread_id: str, call_ids: Sequence[str]) -> None:
        items = [
            {"type": "function_call_output", "call_id": call_id, "output": CANCELLED_OUTPUT}
            for call_id in dict.fromkeys(c for c in call_ids if c)
        ]
        async with provider_errors():
            for start in range(0, len(items), MAX_ITEMS_PER_CALL):
                chunk = items[start : start + MAX_ITEMS_PER_CALL]
                await post_json(self.client, f"/conversations/{thread_id}/items", {"items": chunk})

    async def active_runs(self, thread_id: str) -> list[str]:
        return []  # the Responses API cannot list a conversation's responses

    async def lost_create(self, request: RunRequest) -> RunState | None:
        if is_chain(request.thread_id):
            return None  # nothing lists a chain's responses: the create is sent again
        # Input and output items reach the conversation together, when the response completes (PLATFORM_FACTS,
        # Conversations): our input at the tail, followed by output, means the lost create ran to its end.
        items = await self._tail(request.thread_id)
        for sent in (_input_items(request), _text_input_items(request)):
            output = output_after(items, sent)
            if output:
                return items_to_state(output, request.thread_id)
        return None

    async def read_thread(self, thread_id: str, limit: int) -> list[TranscriptItem] | None:
        if is_chain(thread_id):
            return None  # walking the chain costs a request per response: the local transcript holds the same
        items = await list_newest(self.client, f"/conversations/{thread_id}/items", limit, TAIL_ITEMS)
        return [
            TranscriptItem(item["role"], _key(item)[1]) for item in items
            if item.get("type") == "message" and item.get("role") in ("user", "assistant")
        ]

    async def _chain(self, thread_id: str) -> ChainRecord:
        chain = await self.store.chain(thread_id)
        if chain is None:
            raise ThreadGone(f"chain {thread_id} is not in the store")
        return chain

    async def _advance(self, response: dict[str, Any], thread_id: str) -> None:
        """Make a settled response the head of its chain, if it continues the current head."""
        if response.get("status") not in CHAINABLE:
            return
        previous = response.get("previous_response_id")
        if not await self.store.advance_chain(thread_id, previous, str(response["id"])):
            log.info("response %s (after %s) does not continue chain %s: left out of its memory",
                     response["id"], previous, thread_id)

    async def _tail(self, thread_id: str) -> list[dict[str, Any]]:
        """The conversation's last items, oldest first."""
        params = {"order": "desc", "limit": TAIL_ITEMS}
        async with provider_errors():
            page = await get_json(self.client, f"/conversations/{thread_id}/items", params)
        return list(reversed(page.get("data") or []))

    # ---- runs ----

    async def start(self, request: RunRequest) -> ResponseStream:
        try:
            return await self._create(request, _input_items(request))
        except OutputsRejected:
            if not request.input.results:
                raise
            # The calls these results answer are not in the conversation (the run that made them never completed):
            # hand the results over as text instead, so the finished work is not lost.
            return await self._create(request, _text_input_items(request))

    async def submit(self, state: RunState, request: RunRequest) -> ResponseStream:
        return await self.start(request)

    async def _create(self, request: RunRequest, items: list[dict[str, Any]]) -> ResponseStream:
        context: dict[str, Any] = {"conversation": request.thread_id}
        metadata = {"agent": request.agent.name, **request.metadata}
        if is_chain(request.thread_id):
            chain = await self._chain(request.thread_id)
            answered = {i["call_id"] for i in items if i.get("type") == "function_call_output"}
            items = [
                {"type": "function_call_output", "call_id": call_id, "output": CANCELLED_OUTPUT}
                for call_id in chain.cancelled if call_id not in answered
            ] + items
            context = {"previous_response_id": chain.head} if chain.head else {}
            metadata[CHAIN_KEY] = request.thread_id  # which thread a response is of, for whoever reads the logs
        kwargs: dict[str, Any] = {
            "model": request.agent.model,
            "instructions": request.agent.instructions,
            "input": items,
            **context,
            "background": True,
            "store": True,
            "stream": True,
            "metadata": metadata,
        }
        if request.agent.max_output_tokens:
            kwargs["max_output_tokens"] = request.agent.max_output_tokens
        if request.tools:
            kwargs["tools"] = request.tools
            kwargs["parallel_tool_calls"] = True
        async with provider_errors():
            stream = await self.streams.post("/responses", kwargs, None if request.text_wanted else self._quiet)
        return ResponseStream(stream, request.thread_id, on_settled=self._advancer(request.thread_id))

    def _advancer(self, thread_id: str) -> Callable[[dict[str, Any]], Awaitable[None]] | None:
        """What a stream of a run on `thread_id` does with the settled response: on a chain, `_advance`."""
        if not is_chain(thread_id):
            return None

        async def advance(response: dict[str, Any]) -> None:
            await self._advance(response, thread_id)

        return advance

    async def resume(self, run_id: str, thread_id: str, after_seq: int) -> ResponseStream:
        if run_id.startswith(ADOPTED):
            raise Permanent("an adopted response has no stream", "no_stream")
        params = {"stream": "true", "starting_after": after_seq}
        async with provider_errors(not_found="run"):
            stream = await self.streams.get(f"/responses/{run_id}", params)
        return ResponseStream(stream, thread_id, run_id=run_id, last_seq=after_seq,
                              on_settled=self._advancer(thread_id))

    async def retrieve(self, run_id: str, thread_id: str) -> RunState:
        if run_id.startswith(ADOPTED):
            return await self._retrieve_adopted(run_id, thread_id)
        async with provider_errors(not_found="run"):
            response = await get_json(self.client, f"/responses/{run_id}")
        if is_chain(thread_id):
            await self._advance(response, thread_id)
        return to_state(response, thread_id)

    async def cancel(self, run_id: str, thread_id: str) -> None:
        if run_id.startswith(ADOPTED):
            return  # it had completed when we found it
        async with provider_errors(not_found="run"):
            await self.client.responses.cancel(run_id)

    async def _retrieve_adopted(self, run_id: str, thread_id: str) -> RunState:
        items = await self._tail(thread_id)
        first = next((i for i, item in enumerate(items) if item.get("id") == run_id[len(ADOPTED):]), None)
        if first is None:
            raise RunGone(f"the items of {run_id} are no longer at the conversation's tail")
        end = next((i for i in range(first, len(items)) if _is_input(items[i])), len(items))
        return items_to_state(items[first:end], thread_id)


class ResponseStream:
    """Adapts the SDK's event stream to `RunEvent`s; a broken or truncated stream raises `StreamDropped`."""

    def __init__(self, stream: Any, thread_id: str, run_id: str | None = None, last_seq: int | None = None,
                 on_settled: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> None:
        self._stream = stream
        self.thread_id = thread_id
        self.run_id = run_id
        self.last_seq = last_seq
        self._on_settled = on_settled  # awaited with the settled response before its state is handed on

    async def aclose(self) -> None:
        await close_sdk_stream(self._stream)

    def __aiter__(self) -> AsyncIterator[RunEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[RunEvent]:
        settled = False
        error_event: dict[str, Any] | None = None  # an `error` event is followed by response.failed: wait for it
        try:
            async for event in self._stream:
                seq = event.get("sequence_number")
                if seq is not None:
                    self.last_seq = seq
                kind = event.get("type", "")
                if kind == "response.output_text.delta":
                    yield Delta(event.get("delta", ""), seq)
                elif event is ALIVE:  # events passed over unparsed arrived
                    yield Delta("")
                elif kind == "error":
                    error_event = event
                elif kind.startswith("response.") and event.get("response") is not None:
                    state = to_state(event["response"], self.thread_id, seq)
                    self.run_id = state.id
                    settled = kind in TERMINAL_EVENTS or state.settled
                    if settled and self._on_settled is not None:
                        await self._on_settled(event["response"])
                    yield Snapshot(state)
                    if settled:
                        return
        except openai.APIError as exc:
            if isinstance(exc, openai.APIConnectionError):
                raise StreamDropped(str(exc), self.run_id, self.last_seq) from exc
            raise translate(exc) from exc
        if not settled and error_event is not None:
            raise translate(stream_error(error_event))
        if not settled:
            raise StreamDropped("the event stream ended before the response finished", self.run_id, self.last_seq)


def is_chain(thread_id: str) -> bool:
    return thread_id.startswith(CHAIN_PREFIX)


def unanswered_calls(items: Sequence[dict[str, Any]]) -> list[str]:
    """Call ids of the function calls among `items` that have no output among them."""
    answered = {i.get("call_id") for i in items if i.get("type") == "function_call_output"}
    return [i["call_id"] for i in items if i.get("type") == "function_call" and i.get("call_id") not in answered]


def output_after(items: Sequence[dict[str, Any]], sent: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items after `sent` when the conversation `items` (oldest first) end with `sent` followed only by output;
    else empty. `sent` is what we give a create: user messages and function call outputs."""
    last_input = max((i for i, item in enumerate(items) if _is_input(item)), default=-1)
    start = last_input + 1 - len(sent)
    if not sent or start < 0:
        return []
    if any(_key(seen) != _key(mine) for seen, mine in zip(items[start : last_input + 1], sent, strict=True)):
        return []
    return list(items[last_input + 1 :])


def items_to_state(output: Sequence[dict[str, Any]], thread_id: str) -> RunState:
    """A completed response rebuilt from the output items it left in its conversation (usage is not known)."""
    return to_state({"id": ADOPTED + str(output[0].get("id")), "status": "completed", "output": output}, thread_id)


def _is_input(item: dict[str, Any]) -> bool:
    return item.get("type") == "function_call_output" or (
        item.get("type") == "message" and item.get("role") in ("user", "system", "developer")
    )


def _key(item: dict[str, Any]) -> tuple[str, str]:
    if item.get("type") == "function_call_output":
        return ("output", str(item.get("call_id")))
    content = item.get("content")
    if isinstance(content, list):
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return (f"message:{item.get('role')}", str(content))


def _message(role: str, text: str) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": text}


def _input_items(request: RunRequest) -> list[dict[str, Any]]:
    items = [
        {"type": "function_call_output", "call_id": r.call_id, "output": r.output} for r in request.input.results
    ]
    items += [_message("user", m) for m in request.input.messages]
    return items


def _text_input_items(request: RunRequest) -> list[dict[str, Any]]:
    """The input for a conversation that never saw the calls that `request`'s results answer."""
    items = [_message("user", m) for m in request.input.messages]
    if request.input.results:
        items.append(_message("user", results_as_text(request.input.results)))
    return items


def to_state(response: dict[str, Any], thread_id: str, seq: int | None = None) -> RunState:
    calls: list[ToolCall] = []
    texts: list[str] = []
    for item in response.get("output") or []:
        if item.get("type") == "function_call":
            calls.append(ToolCall(item["call_id"], item["name"], item.get("arguments") or "{}"))
        elif item.get("type") == "message":
            texts += [p.get("text", "") for p in item.get("content") or [] if p.get("type") == "output_text"]
    status = cast(RunStatus, response.get("status") or "queued")
    if status == "completed" and calls:
        status = "requires_action"
    raw_usage = response.get("usage") or {}
    error = response.get("error") or {}
    incomplete = response.get("incomplete_details") or {}
    return RunState(
        id=response["id"],
        thread_id=thread_id,
        status=status,
        text="".join(texts),
        tool_calls=tuple(calls),
        error_code=error.get("code"),
        error_message=error.get("message"),
        incomplete_reason=incomplete.get("reason"),
        usage=Usage(raw_usage.get("input_tokens") or 0, raw_usage.get("output_tokens") or 0,
                    (raw_usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
        last_seq=seq,
    )
