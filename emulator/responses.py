"""The Responses API: create (plain, streamed, background), retrieve (and resume a stream), cancel, delete and
input_items, with `previous_response_id` or `conversation` context.

Every response is produced by one generation task that walks the script's `Plan`, emitting stream events with
consecutive sequence numbers (kept in an `EventLog` when the response was created with ``stream=true`` so a
client can resume with ``starting_after``). Delays run on the emulator clock; streamed deltas are spaced by
``token_delay`` real seconds.

Faults that end a response (`Faults.for_new_object`): `fail` / `incomplete` at its outcome, or any ending kind right
after N events (`ObjectFaults.end`), decided inside the generation so where it stops is deterministic.

Longer than our usual module on purpose: it is one API (the Responses endpoints and their generation task), modelled
as one unit.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from emulator.errors import (
    CONVERSATION_LOCKED,
    FAILURE_MESSAGES,
    SYNC_RESPONSE_CANCEL,
    invalid_request,
    not_found,
)
from emulator.events import EventLog
from emulator.faults import Fault, ObjectFaults
from emulator.httputil import (
    AGENT,
    OBJECT_ID,
    body_id,
    bound_faults,
    json_response,
    query_flag,
    query_int,
    read_json,
    stream_log,
)
from emulator.items import (
    build_turn,
    check_duplicates,
    check_tool_calls,
    function_tool_names,
    item_text,
    message_text,
    normalise_input,
)
from emulator.scripts import Plan, messengers_of, script_for, text_params_of
from emulator.wire import JSON, list_page, page_params, sse_frame, tokens

if TYPE_CHECKING:
    from emulator.conversations import ConversationRecord
    from emulator.server import Emulator

DEFAULT_MODEL = "gpt-5-emulated"
DEFAULT_AGENT = "assistant"  # agent name when a request names none
INCOMPLETE_REASON = "max_output_tokens"  # PLATFORM_FACTS "Responses API": an `incomplete_details.reason`
TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})
MAX_DELTAS = 48  # a reply is streamed as at most this many text deltas
ARGUMENT_CHUNK = 24  # characters per function_call_arguments.delta
_WORDS = re.compile(r"\S+\s*|\s+")


class _Stopped(Exception):
    """Raised inside a generation once its response reached a terminal state from within (cancel after N events)."""


def split_deltas(text: str) -> list[str]:
    """Word-sized deltas whose concatenation is `text` (grouped so there are at most MAX_DELTAS)."""
    words = _WORDS.findall(text) or [""]
    if len(words) <= MAX_DELTAS:
        return words
    size = -(-len(words) // MAX_DELTAS)
    return ["".join(words[index : index + size]) for index in range(0, len(words), size)]


def _chunks(text: str, size: int) -> list[str]:
    return [text[index : index + size] for index in range(0, len(text), size)] or [""]


@dataclass
class ResponseRecord:
    """A response and its lifetime. `created_at`/`finished_at` are emulator-clock times; `created_tick` and
    `finished_tick` order every state change in the emulator, so tests can tell whether two responses overlapped."""

    id: str
    agent: str
    model: str
    created_at: float
    created_tick: int
    background: bool
    stream: bool
    store: bool
    params: JSON
    input_items: list[JSON]
    previous_response_id: str | None = None
    conversation_id: str | None = None
    status: str = "in_progress"
    output: list[JSON] = field(default_factory=list)
    error: JSON | None = None
    incomplete_details: JSON | None = None
    usage: JSON | None = None
    completed_at: float | None = None
    finished_at: float | None = None
    finished_tick: int | None = None
    cancelled_by: str | None = None
    input_tokens: int = 0
    cached_tokens: int = 0  # of `input_tokens`, served from the prompt cache (emulator/caching.py)
    events: EventLog | None = None
    sequence: int = 0
    user_texts: list[str] = field(default_factory=list)  # the user messages it saw: its context, then its input
    seen_texts: list[str] = field(default_factory=list)  # every message it saw (any role), in order
    end_at: int | None = None  # ObjectFaults.end: stop right after this many events...
    end_fault: Fault | None = None  # ...in the way this fault says
    drop_after_events: int | None = None
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_json(self) -> JSON:
        params = self.params
        return {
            "id": self.id,
            "object": "response",
            "created_at": int(self.created_at),
            "status": self.status,
            "background": self.background,
            "completed_at": int(self.completed_at) if self.completed_at is not None else None,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "instructions": params.get("instructions"),
            "max_output_tokens": params.get("max_output_tokens"),
            "max_tool_calls": params.get("max_tool_calls"),
            "model": self.model,
            "output": self.output,
            "parallel_tool_calls": params.get("parallel_tool_calls", True) is not False,
            "previous_response_id": self.previous_response_id,
            "conversation": {"id": self.conversation_id} if self.conversation_id else None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": self.store,
            "temperature": params.get("temperature", 1.0),
            "text": params.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": params.get("tool_choice") or "auto",
            "tools": params.get("tools") or [],
            "top_logprobs": params.get("top_logprobs") or 0,
            "top_p": params.get("top_p", 1.0),
            "truncation": params.get("truncation") or "disabled",
            "metadata": params.get("metadata") or {},
            # The description types these as non-null: leave them out until they have a value.
            **({"usage": self.usage} if self.usage is not None else {}),
            **({"user": params["user"]} if params.get("user") else {}),
        }


_ECHOED_PARAMS = (
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "parallel_tool_calls",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "truncation",
    "user",
    "metadata",
)


def _usage(input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> JSON:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _echo_tools(tools: Any) -> list[JSON]:
    if not isinstance(tools, list):
        return []
    echoed = []
    for tool in tools:
        if isinstance(tool, dict):
            tool = dict(tool)
            if tool.get("type") == "function":
                tool.setdefault("description", None)
                tool.setdefault("parameters", None)
                tool.setdefault("strict", True)
            echoed.append(tool)
    return echoed


class ResponsesAPI:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.records: dict[str, ResponseRecord] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/responses", self.create)
        router.add_get("/v1/responses/{response_id}", self.retrieve)
        router.add_delete("/v1/responses/{response_id}", self.delete)
        router.add_post("/v1/responses/{response_id}/cancel", self.cancel)
        router.add_get("/v1/responses/{response_id}/input_items", self.input_items)

    # --- lookups -------------------------------------------------------------------------------------------------

    def get(self, response_id: str, *, param: str | None = None) -> ResponseRecord:
        record = self.records.get(response_id)
        if record is None or not record.store:
            raise not_found(f"Response with id '{response_id}' not found.", param=param)
        return record

    def _lookup(self, request: web.Request) -> ResponseRecord:
        response_id = request.match_info["response_id"]
        request[OBJECT_ID] = response_id
        record = self.get(response_id)
        request[AGENT] = record.agent
        return record

    def _chain(self, record: ResponseRecord) -> list[JSON]:
        """The items a follow-up with previous_response_id=record sees: every input and output up the chain."""
        links: list[ResponseRecord] = []
        current: ResponseRecord | None = record
        while current is not None:
            links.append(current)
            previous = current.previous_response_id
            current = self.records.get(previous) if previous else None
        items: list[JSON] = []
        for link in reversed(links):
            if link.conversation_id:
                conversation = self.emu.conversations_api.records.get(link.conversation_id)
                items.extend(conversation.items if conversation else [])
                continue
            items.extend(link.input_items)
            if link.status in ("completed", "incomplete"):  # a failed/cancelled response leaves no output behind
                items.extend(link.output)
        return items

    def _context(self, conversation_ref: Any, previous_id: Any) -> tuple[ConversationRecord | None, list[JSON]]:
        """The conversation (locked-checked) and the items the new response sees before its own input."""
        if conversation_ref:
            conversation_id = body_id(conversation_ref, "conversation")
            conversation = self.emu.conversations_api.get(conversation_id, param="conversation")
            if conversation.active_response is not None:
                raise invalid_request(CONVERSATION_LOCKED, param="conversation", code="conversation_locked")
            return conversation, conversation.items
        if previous_id:
            previous = self.get(str(previous_id), param="previous_response_id")
            if not previous.terminal:
                raise invalid_request(
                    f"Previous response with id '{previous_id}' is still in progress.", param="previous_response_id"
                )
            return None, self._chain(previous)
        return None, []

    # --- create --------------------------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        emu = self.emu
        stream = bool(body.get("stream"))
        background = bool(body.get("background"))
        store = body.get("store") is not False
        if background and not store:
            raise invalid_request("Background mode requires 'store' to be true.", param="background")
        previous_id = body.get("previous_response_id")
        conversation_ref = body.get("conversation")
        if previous_id and conversation_ref:
            raise invalid_request(
                "Mutually exclusive parameters: Ensure you are only providing one of: 'previous_response_id' or "
                "'conversation'.",
                param="conversation",
            )
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise invalid_request("Invalid 'metadata': expected an object.", param="metadata")
        agent = str(metadata.get("agent") or DEFAULT_AGENT)
        request[AGENT] = agent
        new_items = normalise_input(body.get("input", []), emu.ids.new)
        conversation, context = self._context(conversation_ref, previous_id)
        check_duplicates(context, new_items)
        check_tool_calls(context, new_items)

        response_id = emu.ids.new("resp")
        request[OBJECT_ID] = response_id
        bound = bound_faults(request)
        faults = emu.faults.for_new_object(agent=agent, api="responses", target=response_id, stream=stream, bound=bound)
        if conversation is not None and faults.delete_container:
            emu.conversations_api.delete_now(conversation.id)
            conversation = emu.conversations_api.get(conversation.id, param="conversation")

        params = {key: body[key] for key in _ECHOED_PARAMS if key in body}
        params["tools"] = _echo_tools(body.get("tools"))
        turn = build_turn(
            agent=agent,
            context=context,
            new=new_items,
            tools=function_tool_names(body.get("tools")),
            parallel_tool_calls=body.get("parallel_tool_calls") is not False,
            messengers=messengers_of(body.get("tools")),
            text_params=text_params_of(body.get("tools")),
        )
        plan = script_for(emu.scripts, agent).plan(turn)
        record = ResponseRecord(
            id=response_id,
            agent=agent,
            model=str(body.get("model") or DEFAULT_MODEL),
            created_at=emu.clock.now(),
            created_tick=emu.tick(),
            background=background,
            stream=stream,
            store=store,
            params=params,
            input_items=new_items,
            previous_response_id=str(previous_id) if previous_id else None,
            conversation_id=conversation.id if conversation else None,
            status="queued" if background else "in_progress",
            events=EventLog() if stream else None,
            user_texts=[
                message_text(item)
                for item in (*context, *new_items)
                if item.get("type") == "message" and item.get("role") == "user"
            ],
            drop_after_events=faults.drop_after_events,
        )
        if faults.end is not None:
            record.end_at, record.end_fault = faults.end.after_events, faults.end
        instructions = params.get("instructions")
        pieces = [instructions if isinstance(instructions, str) else ""]
        pieces += [item_text(item) for item in (*context, *new_items)]
        record.input_tokens = tokens("".join(pieces))
        record.cached_tokens = emu.prompt_cache.cached(pieces)
        record.seen_texts = [message_text(i) for i in (*context, *new_items) if i.get("type") == "message"]
        if conversation is not None:
            conversation.active_response = response_id
            conversation.agent = agent
        self.records[response_id] = record
        emu.counters.responses["created"] += 1
        record.task = emu.spawn(self._generate(record, plan, faults))
        self._arm_cancel(record, faults)
        emu.notify()

        if stream:
            drop = emu.faults.take_drop(agent=agent, api="responses", target=response_id, bound=bound)
            if drop is None:
                drop, record.drop_after_events = record.drop_after_events, None
            assert record.events is not None
            return await stream_log(request, record.events, drop_after=drop)
        if background:
            return json_response(record.to_json())
        await record.done.wait()
        return json_response(record.to_json())

    def _arm_cancel(self, record: ResponseRecord, faults: ObjectFaults) -> None:
        fault = faults.cancel
        if fault is None:
            return
        delay = fault.after_seconds or 0.0

        async def cancel_later() -> None:
            await self.emu.clock.sleep_until(record.created_at + delay)
            self.finish_cancelled(record, by="provider")

        self.emu.spawn(cancel_later())

    # --- generation ----------------------------------------------------------------------------------------------

    def _emit(self, record: ResponseRecord, event_type: str, **fields: Any) -> None:
        if record.terminal:
            raise _Stopped
        self._append(record, event_type, **fields)
        if record.end_at is not None and record.sequence >= record.end_at:
            self._end(record)
            raise _Stopped

    def _append(self, record: ResponseRecord, event_type: str, **fields: Any) -> None:
        """One stream event; every event carries its `sequence_number` (PLATFORM_FACTS "Responses API")."""
        sequence = record.sequence
        record.sequence += 1
        if record.events is not None:
            if "response" in fields:
                fields["response"] = record.to_json()
            record.events.append(sse_frame(event_type, {"type": event_type, "sequence_number": sequence, **fields}))

    def _end(self, record: ResponseRecord) -> None:
        """An `ObjectFaults.end` fault is due: the response ends now, the way the fault says."""
        fault = record.end_fault
        assert fault is not None
        if fault.kind == "fail":
            message = fault.message or FAILURE_MESSAGES.get(fault.code, fault.code)
            self._append(record, "error", code=fault.code, message=message, param=None)
            self._finish(record, "failed", error={"code": fault.code, "message": message})
        elif fault.kind == "incomplete":
            self._finish(record, "incomplete", incomplete_details={"reason": INCOMPLETE_REASON})
        else:  # cancel; gone: cancelled and deleted, so every later request naming it gets 404
            self.finish_cancelled(record, by="provider")
            if fault.kind == "gone":
                record.store = False

    async def _generate(self, record: ResponseRecord, plan: Plan, faults: ObjectFaults) -> None:
        try:
            await self._run_plan(record, plan, faults)
        except _Stopped:
            pass

    async def _run_plan(self, record: ResponseRecord, plan: Plan, faults: ObjectFaults) -> None:
        emu = self.emu
        self._emit(record, "response.created", response=True)
        if record.background:
            self._emit(record, "response.queued", response=True)
        if faults.stay_queued:
            return
        await asyncio.sleep(0)
        if record.terminal:
            return
        record.status = "in_progress"
        emu.notify()
        self._emit(record, "response.in_progress", response=True)
        fail = faults.fail
        delay = fail.after_seconds if fail is not None and fail.after_seconds is not None else plan.delay
        if delay > 0:
            await emu.clock.sleep_until(record.created_at + delay)
        if fail is not None or plan.fail:
            code = fail.code if fail is not None else str(plan.fail)
            message = (fail.message if fail is not None else plan.fail_message) or FAILURE_MESSAGES.get(code, code)
            self._emit(record, "error", code=code, message=message, param=None)
            self._finish(record, "failed", error={"code": code, "message": message})
            return
        text = plan.text
        max_tokens = record.params.get("max_output_tokens")
        incomplete = plan.incomplete
        if faults.incomplete is not None:  # the token limit hit half way: half the text, none of the calls
            text, incomplete = (text[: len(text) // 2] if text else None), INCOMPLETE_REASON
        if text is not None and isinstance(max_tokens, int) and tokens(text) > max_tokens:
            text, incomplete = text[: max_tokens * 4], "max_output_tokens"
        output_tokens = 0
        if text is not None:
            await self._stream_message(record, text, incomplete=incomplete is not None)
            output_tokens += tokens(text)
        for call in [] if incomplete else plan.calls:
            self._add_call(record, call.name, call.arguments)
            output_tokens += tokens(call.name + call.arguments)
        record.usage = _usage(record.input_tokens, output_tokens, record.cached_tokens)
        if incomplete:
            self._finish(record, "incomplete", incomplete_details={"reason": incomplete})
        else:
            self._finish(record, "completed")

    async def _stream_message(self, record: ResponseRecord, text: str, *, incomplete: bool) -> None:
        index = len(record.output)
        item: JSON = {
            "id": self.emu.ids.new("msg"),
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        record.output.append(item)
        item_id = item["id"]
        self._emit(record, "response.output_item.added", output_index=index, item=item)
        part: JSON = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self._emit(
            record, "response.content_part.added", item_id=item_id, output_index=index, content_index=0, part=part
        )
        delay = self.emu.token_delay
        for delta in split_deltas(text):
            if delay > 0:
                await asyncio.sleep(delay)
            self._emit(
                record,
                "response.output_text.delta",
                item_id=item_id,
                output_index=index,
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        self._emit(
            record,
            "response.output_text.done",
            item_id=item_id,
            output_index=index,
            content_index=0,
            text=text,
            logprobs=[],
        )
        self._emit(
            record, "response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part
        )
        item["content"] = [part]
        item["status"] = "incomplete" if incomplete else "completed"
        self._emit(record, "response.output_item.done", output_index=index, item=item)

    def _add_call(self, record: ResponseRecord, name: str, arguments: str) -> None:
        index = len(record.output)
        item: JSON = {
            "id": self.emu.ids.new("fc"),
            "type": "function_call",
            "status": "in_progress",
            "call_id": self.emu.ids.new("call"),
            "name": name,
            "arguments": "",
        }
        record.output.append(item)
        item_id = item["id"]
        self._emit(record, "response.output_item.added", output_index=index, item=item)
        for delta in _chunks(arguments, ARGUMENT_CHUNK):
            self._emit(
                record, "response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=delta
            )
        self._emit(
            record,
            "response.function_call_arguments.done",
            item_id=item_id,
            output_index=index,
            name=name,
            arguments=arguments,
        )
        item["arguments"] = arguments
        item["status"] = "completed"
        self._emit(record, "response.output_item.done", output_index=index, item=item)

    # --- endings -------------------------------------------------------------------------------------------------

    def _finish(self, record: ResponseRecord, status: str, **fields: Any) -> None:
        emu = self.emu
        record.status = status
        record.error = fields.get("error")
        record.incomplete_details = fields.get("incomplete_details")
        record.finished_at = emu.clock.now()
        record.finished_tick = emu.tick()
        if status == "completed":
            record.completed_at = record.finished_at
        if record.usage is None and status != "cancelled":
            record.usage = _usage(record.input_tokens, 0, record.cached_tokens)
        if record.conversation_id:
            conversation = emu.conversations_api.records.get(record.conversation_id)
            if conversation is not None:
                if status in ("completed", "incomplete") and not conversation.deleted:
                    conversation.items.extend([*record.input_items, *record.output])
                if conversation.active_response == record.id:
                    conversation.active_response = None
        terminal_event = {"completed": "response.completed", "failed": "response.failed"}.get(status)
        if status == "incomplete":
            terminal_event = "response.incomplete"
        if terminal_event is not None and record.events is not None:
            record.events.append(
                sse_frame(
                    terminal_event,
                    {"type": terminal_event, "sequence_number": record.sequence, "response": record.to_json()},
                )
            )
            record.sequence += 1
        if record.events is not None:
            record.events.close()
        emu.counters.responses[status] += 1
        record.done.set()
        emu.notify()

    def finish_cancelled(self, record: ResponseRecord, *, by: str) -> None:
        """Cancel now (client or provider side). A no-op on a response that already ended."""
        if record.terminal:
            return
        record.cancelled_by = by
        self._finish(record, "cancelled")
        task = record.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    # --- other endpoints -----------------------------------------------------------------------------------------

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        record = self._lookup(request)
        if not query_flag(request, "stream"):
            return json_response(record.to_json())
        if record.events is None:
            raise invalid_request(
                f"Response '{record.id}' was not created with 'stream=true', so it cannot be streamed.", param="stream"
            )
        starting_after = query_int(request, "starting_after")
        start = 0 if starting_after is None else starting_after + 1
        if start < 0:
            raise invalid_request("Invalid 'starting_after': must be >= 0.", param="starting_after")
        drop = self.emu.faults.take_drop(
            agent=record.agent, api="responses", target=record.id, bound=bound_faults(request)
        )
        return await stream_log(request, record.events, start=start, drop_after=drop)

    async def cancel(self, request: web.Request) -> web.Response:
        record = self._lookup(request)
        if not record.background:
            raise invalid_request(SYNC_RESPONSE_CANCEL)
        self.finish_cancelled(record, by="client")
        return json_response(record.to_json())

    def delete_now(self, response_id: str) -> None:
        """Delete a stored response: it is cancelled if still running, and later lookups answer 404."""
        record = self.records[response_id]
        self.finish_cancelled(record, by="client")
        record.store = False

    async def delete(self, request: web.Request) -> web.Response:
        record = self._lookup(request)
        self.delete_now(record.id)
        return json_response({"id": record.id, "object": "response.deleted", "deleted": True})

    async def input_items(self, request: web.Request) -> web.Response:
        record = self._lookup(request)
        limit, order, after, before = page_params(request.query)
        return json_response(list_page(record.input_items, limit=limit, order=order, after=after, before=before))
