"""Assistants v2 runs and run steps: the run state machine, its stream events, expiry and the thread lock.

    queued -> in_progress -> requires_action -(submit_tool_outputs)-> queued -> in_progress -> completed
                          \\-> completed | incomplete | failed
    any non-terminal -(cancel)-> cancelling -> cancelled;  not finished by expires_at -> expired

`expires_at` is `created_at + expiry_seconds` on the emulator clock (600 s like OpenAI, unless configured). While a
run is not terminal its thread is locked. Every run keeps one `EventLog`; ``thread.run.requires_action`` is a
boundary, so ``runs.create(stream=True)`` ends there and ``submit_tool_outputs(stream=True)`` picks up after it.

Faults apply per phase: the first phase takes the faults of the new run (`Faults.for_new_object`), each phase a
submit_tool_outputs starts takes only the faults bound to that request (`Faults.for_phase`). A `gone` run ends and
then answers 404 on every path naming it.

Longer than our usual module on purpose: it is one state machine (an Assistants run, its events, expiry and the
thread lock).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from emulator.errors import (
    FAILURE_MESSAGES,
    RUN_CANNOT_CANCEL,
    RUN_NO_TOOL_OUTPUTS,
    THREAD_LOCKED_RUN,
    invalid_request,
    not_found,
)
from emulator.events import EventLog
from emulator.faults import Fault, ObjectFaults
from emulator.httputil import AGENT, OBJECT_ID, bound_faults, json_response, read_json, stream_log
from emulator.items import function_tool_names
from emulator.responses import split_deltas
from emulator.scripts import Plan, ToolResult, Turn, script_for
from emulator.wire import JSON, list_page, page_params, sse_frame, tokens

if TYPE_CHECKING:
    from emulator.assistants import AssistantsAPI, ThreadRecord
    from emulator.server import Emulator

RUN_TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
RUN_INCOMPLETE_REASONS = ("max_completion_tokens", "max_prompt_tokens")  # PLATFORM_FACTS incomplete_details
POLL_AFTER_HEADER = "openai-poll-after-ms"
_STEP_END_STATUS = {"cancelled": "cancelled", "failed": "failed", "expired": "expired"}


class _Stopped(Exception):
    """The run reached a terminal (or cancelling) state from inside its own task."""


def _ts(value: float | None) -> int | None:
    return int(value) if value is not None else None


def _usage(prompt: int, completion: int) -> JSON:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass
class PendingCall:
    call_id: str
    name: str
    arguments: str


@dataclass
class StepRecord:
    id: str
    run_id: str
    thread_id: str
    assistant_id: str
    created_at: float
    type: str
    details: JSON
    status: str = "in_progress"
    completed_at: float | None = None
    cancelled_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    usage: JSON | None = None

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "thread.run.step",
            "created_at": int(self.created_at),
            "assistant_id": self.assistant_id,
            "thread_id": self.thread_id,
            "run_id": self.run_id,
            "type": self.type,
            "status": self.status,
            "step_details": self.details,
            "last_error": None,
            "expired_at": _ts(self.expired_at),
            "cancelled_at": _ts(self.cancelled_at),
            "failed_at": _ts(self.failed_at),
            "completed_at": _ts(self.completed_at),
            "metadata": {},
            "usage": self.usage,
        }


@dataclass
class RunRecord:
    """A run and its lifetime (`created_at`/`finished_at` on the emulator clock, ticks for ordering)."""

    id: str
    thread_id: str
    assistant_id: str
    agent: str
    created_at: float
    created_tick: int
    model: str
    instructions: str
    tools: list[JSON]
    metadata: dict[str, str]
    parallel_tool_calls: bool
    expires_at: float | None
    faults: ObjectFaults
    status: str = "queued"
    started_at: float | None = None
    cancelled_at: float | None = None
    failed_at: float | None = None
    completed_at: float | None = None
    finished_at: float | None = None
    finished_tick: int | None = None
    last_error: JSON | None = None
    incomplete_details: JSON | None = None
    pending: list[PendingCall] = field(default_factory=list)
    rounds: list[ToolResult] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    events: EventLog = field(default_factory=EventLog)
    event_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage: JSON | None = None
    cancelled_by: str | None = None
    user_texts: list[str] = field(default_factory=list)  # the thread's user messages when the run was created
    seen_texts: list[str] = field(default_factory=list)  # every message of its thread when it last planned
    end_at: int | None = None  # ObjectFaults.end: stop once `event_count` reaches this...
    end_fault: Fault | None = None  # ...in the way this fault says
    gone: bool = False  # vanished: every request naming it gets 404
    drop_after_events: int | None = None
    task: asyncio.Task[None] | None = None
    timers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in RUN_TERMINAL

    def to_json(self) -> JSON:
        required_action = None
        if self.status == "requires_action":
            calls = [
                {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in self.pending
            ]
            required_action = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}}
        return {
            "id": self.id,
            "object": "thread.run",
            "created_at": int(self.created_at),
            "thread_id": self.thread_id,
            "assistant_id": self.assistant_id,
            "status": self.status,
            "required_action": required_action,
            "last_error": self.last_error,
            "expires_at": _ts(self.expires_at),
            "started_at": _ts(self.started_at),
            "cancelled_at": _ts(self.cancelled_at),
            "failed_at": _ts(self.failed_at),
            "completed_at": _ts(self.completed_at),
            "incomplete_details": self.incomplete_details,
            "model": self.model,
            "instructions": self.instructions,
            "tools": self.tools,
            "metadata": self.metadata,
            "usage": self.usage,
            "temperature": 1.0,
            "top_p": 1.0,
            "max_prompt_tokens": None,
            "max_completion_tokens": None,
            "truncation_strategy": {"type": "auto", "last_messages": None},
            "tool_choice": "auto",
            "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": "auto",
        }


class RunsAPI:
    def __init__(self, emulator: Emulator, assistants: AssistantsAPI) -> None:
        self.emu = emulator
        self.api = assistants
        self.records: dict[str, RunRecord] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/threads/runs", self.create_thread_and_run)
        router.add_post("/v1/threads/{thread_id}/runs", self.create)
        router.add_get("/v1/threads/{thread_id}/runs", self.list_runs)
        router.add_get("/v1/threads/{thread_id}/runs/{run_id}", self.retrieve)
        router.add_post("/v1/threads/{thread_id}/runs/{run_id}", self.update)
        router.add_post("/v1/threads/{thread_id}/runs/{run_id}/cancel", self.cancel)
        router.add_post("/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", self.submit_tool_outputs)
        router.add_get("/v1/threads/{thread_id}/runs/{run_id}/steps", self.list_steps)
        router.add_get("/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}", self.retrieve_step)

    def close_streams(self) -> None:
        for run in self.records.values():
            run.events.close()

    # --- lookups -------------------------------------------------------------------------------------------------

    def _run_of(self, request: web.Request) -> tuple[ThreadRecord, RunRecord]:
        thread = self.api.thread_of(request)
        run_id = request.match_info["run_id"]
        request[OBJECT_ID] = run_id
        run = self.records.get(run_id)
        if run is None or run.thread_id != thread.id or run.gone:
            raise not_found(f"No run found with id '{run_id}'.")
        request[AGENT] = run.agent
        return thread, run

    def _get(self, run_id: str) -> RunRecord:
        run = self.records.get(run_id)
        if run is None:
            raise KeyError(run_id)
        return run

    # --- creating ------------------------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        thread = self.api.thread_of(request)
        return await self._start(request, thread, await read_json(request))

    async def create_thread_and_run(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        self.api.get_assistant(str(body.get("assistant_id")), param="assistant_id")
        thread = self.api.new_thread(body.get("thread") or {})
        return await self._start(request, thread, body)

    async def _start(self, request: web.Request, thread: ThreadRecord, body: JSON) -> web.StreamResponse:
        emu = self.emu
        if not body.get("assistant_id"):
            raise invalid_request("Missing required parameter: 'assistant_id'.", param="assistant_id")
        assistant = self.api.get_assistant(str(body["assistant_id"]), param="assistant_id")
        request[AGENT] = assistant.agent
        if thread.active_run is not None:
            raise invalid_request(THREAD_LOCKED_RUN.format(thread_id=thread.id, run_id=thread.active_run))
        stream = bool(body.get("stream"))
        run_id = emu.ids.new("run")
        faults = emu.faults.for_new_object(
            agent=assistant.agent, api="assistants", target=run_id, stream=stream, bound=bound_faults(request)
        )
        if faults.delete_container:
            self.api.delete_thread_now(thread.id)
            self.api.get_thread(thread.id)
        for message in body.get("additional_messages") or []:
            self.api.add_message(thread, message)
        instructions = body.get("instructions")
        if instructions is None:
            instructions = assistant.instructions or ""
        if body.get("additional_instructions"):
            instructions = f"{instructions}\n{body['additional_instructions']}".strip()
        now = emu.clock.now()
        tools = body.get("tools")
        run = RunRecord(
            id=run_id,
            thread_id=thread.id,
            assistant_id=assistant.id,
            agent=assistant.agent,
            created_at=now,
            created_tick=emu.tick(),
            model=str(body.get("model") or assistant.model),
            instructions=instructions,
            tools=list(tools) if tools is not None else list(assistant.tools),
            metadata=dict(body.get("metadata") or {}),
            parallel_tool_calls=body.get("parallel_tool_calls") is not False,
            expires_at=now + emu.expiry_seconds,
            faults=faults,
            user_texts=[message.text for message in thread.messages if message.role == "user"],
            drop_after_events=faults.drop_after_events,
        )
        self._arm_end(run, faults)
        request[OBJECT_ID] = run.id
        thread.active_run = run.id
        thread.agent = assistant.agent
        thread.runs.append(run.id)
        self.records[run.id] = run
        emu.counters.runs["created"] += 1
        plan = self._plan(run, thread, [])
        run.task = emu.spawn(self._drive(run, plan, faults, phase_start=now, first=True))
        self._arm_timers(run)
        emu.notify()
        if stream:
            return await self._stream(request, run, 0)
        return json_response(run.to_json())

    def _arm_timers(self, run: RunRecord) -> None:
        faults = run.faults
        expire_fault = faults.expire
        deadline = run.expires_at
        if expire_fault is not None and expire_fault.after_seconds is not None:
            deadline = run.created_at + expire_fault.after_seconds
        if deadline is not None:
            run.timers.append(self.emu.spawn(self._expire_at(run, deadline)))
        cancel = faults.cancel
        if cancel is not None:
            run.timers.append(self.emu.spawn(self._cancel_at(run, run.created_at + (cancel.after_seconds or 0))))

    @staticmethod
    def _arm_end(run: RunRecord, faults: ObjectFaults) -> None:
        """An ending fault counts the events of the phase it was bound to, from now."""
        if faults.end is not None and faults.end.after_events is not None:
            run.end_at, run.end_fault = run.event_count + faults.end.after_events, faults.end

    async def _expire_at(self, run: RunRecord, deadline: float) -> None:
        await self.emu.clock.sleep_until(deadline)
        self.expire(run)

    async def _cancel_at(self, run: RunRecord, deadline: float) -> None:
        await self.emu.clock.sleep_until(deadline)
        self.request_cancel(run, by="provider")

    def _plan(self, run: RunRecord, thread: ThreadRecord, outputs: list[ToolResult]) -> Plan:
        texts = [message.text for message in thread.messages if message.role == "user"]
        turn = Turn(
            agent=run.agent,
            text=texts[-1] if texts else "",
            earlier=texts[:-1],
            tools=function_tool_names(run.tools),
            tool_outputs=outputs,
            outputs_since_user=list(run.rounds),
            called_since_user=self._called_earlier(run, thread, len(texts))
            + [result.name for result in run.rounds] + [call.name for call in run.pending],
            parallel_tool_calls=run.parallel_tool_calls,
            api="assistants",
        )
        run.prompt_tokens += tokens(run.instructions + "".join(message.text for message in thread.messages))
        run.seen_texts = [message.text for message in thread.messages]
        return script_for(self.emu.scripts, run.agent).plan(turn)

    def _called_earlier(self, run: RunRecord, thread: ThreadRecord, users: int) -> list[str]:
        """Tools called by earlier runs on the thread since its last user message (a handoff gives the thread to
        another assistant's run mid-turn; that run sees what was already called, as a Responses turn would)."""
        called: list[str] = []
        for run_id in thread.runs:
            other = self.emu.runs.get(run_id)
            if other is None or other is run or len(other.user_texts) != users:
                continue
            for step in other.steps:  # a run cancelled mid-call keeps its calls only in its steps
                called += [c["function"]["name"] for c in (step.details or {}).get("tool_calls", [])
                           if c.get("type") == "function"]
        return called

    # --- the state machine ---------------------------------------------------------------------------------------

    def _emit(self, run: RunRecord, event: str, data: JSON, *, boundary: bool = False) -> None:
        if run.terminal or run.status == "cancelling":
            raise _Stopped
        run.events.append(sse_frame(event, data), boundary=boundary)
        run.event_count += 1
        if run.end_at is not None and run.event_count >= run.end_at:
            run.end_at = None
            self._end(run)
            raise _Stopped

    def _end(self, run: RunRecord) -> None:
        """An `ObjectFaults.end` fault is due: the run ends now, the way the fault says (PLATFORM_FACTS "Assistants
        v2 run lifecycle": cancel goes through `cancelling`; `last_error.code`; `incomplete_details.reason`)."""
        fault = run.end_fault
        assert fault is not None
        if fault.kind == "fail":
            message = fault.message or FAILURE_MESSAGES.get(fault.code, fault.code)
            self.finish(run, "failed", last_error={"code": fault.code, "message": message})
        elif fault.kind == "incomplete":
            self.finish(run, "incomplete", incomplete_details={"reason": RUN_INCOMPLETE_REASONS[0]})
        elif fault.kind == "expire":
            self.expire(run)
        elif fault.kind == "gone":
            run.gone = True
            self.finish(run, "cancelled")
        else:
            self.request_cancel(run, by="provider")

    def _set_status(self, run: RunRecord, status: str, **extra: Any) -> None:
        run.status = status
        for name, value in extra.items():
            setattr(run, name, value)
        self.emu.notify()
        self._emit(run, f"thread.run.{status}", run.to_json(), boundary=status == "requires_action")

    async def _drive(
        self, run: RunRecord, plan: Plan, faults: ObjectFaults, *, phase_start: float, first: bool
    ) -> None:
        try:
            await self._run_phase(run, plan, faults, phase_start=phase_start, first=first)
        except _Stopped:
            pass

    async def _run_phase(
        self, run: RunRecord, plan: Plan, faults: ObjectFaults, *, phase_start: float, first: bool
    ) -> None:
        emu = self.emu
        if first:
            self._emit(run, "thread.run.created", run.to_json())
            self._emit(run, "thread.run.queued", run.to_json())
        if faults.stay_queued:
            return
        await asyncio.sleep(0)
        if run.status != "queued":
            return
        self._set_status(run, "in_progress", started_at=run.started_at or emu.clock.now())
        fail = faults.fail
        delay = fail.after_seconds if fail is not None and fail.after_seconds is not None else plan.delay
        if delay > 0:
            await emu.clock.sleep_until(phase_start + delay)
        if fail is not None or plan.fail:
            code = fail.code if fail is not None else str(plan.fail)
            message = (fail.message if fail is not None else plan.fail_message) or FAILURE_MESSAGES.get(code, code)
            self.finish(run, "failed", last_error={"code": code, "message": message})
            return
        if faults.incomplete is not None:  # the token limit hit half way: half the text, none of the calls
            text = plan.text or ""
            await self._write_message(run, text[: len(text) // 2], incomplete=RUN_INCOMPLETE_REASONS[0])
            return
        if plan.calls and not plan.incomplete:
            self._request_tools(run, plan, faults)
            return
        await self._write_message(run, plan.text or "", incomplete=plan.incomplete)

    def _request_tools(self, run: RunRecord, plan: Plan, faults: ObjectFaults) -> None:
        run.pending = [PendingCall(self.emu.ids.new("call"), call.name, call.arguments) for call in plan.calls]
        details = {
            "type": "tool_calls",
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments, "output": None},
                }
                for call in run.pending
            ],
        }
        step = self._new_step(run, "tool_calls", details)
        self._emit(run, "thread.run.step.created", step.to_json())
        self._emit(run, "thread.run.step.in_progress", step.to_json())
        run.completion_tokens += sum(tokens(call.name + call.arguments) for call in run.pending)
        self._set_status(run, "requires_action")
        run.end_at = None  # an ending fault applies to the phase it was bound to
        expire = faults.expire
        if expire is not None and expire.after_seconds is None:
            self.expire(run)

    def _new_step(self, run: RunRecord, kind: str, details: JSON) -> StepRecord:
        step = StepRecord(
            id=self.emu.ids.new("step"),
            run_id=run.id,
            thread_id=run.thread_id,
            assistant_id=run.assistant_id,
            created_at=self.emu.clock.now(),
            type=kind,
            details=details,
        )
        run.steps.append(step)
        return step

    async def _write_message(self, run: RunRecord, text: str, *, incomplete: str | None) -> None:
        emu = self.emu
        message = self.api.start_assistant_message(run.thread_id, run.assistant_id, run.id)
        details = {"type": "message_creation", "message_creation": {"message_id": message.id}}
        step = self._new_step(run, "message_creation", details)
        self._emit(run, "thread.run.step.created", step.to_json())
        self._emit(run, "thread.run.step.in_progress", step.to_json())
        self._emit(run, "thread.message.created", message.to_json())
        self._emit(run, "thread.message.in_progress", message.to_json())
        for delta in split_deltas(text) if text else []:
            if emu.token_delay > 0:
                await asyncio.sleep(emu.token_delay)
            message.text += delta
            self._emit(
                run,
                "thread.message.delta",
                {
                    "id": message.id,
                    "object": "thread.message.delta",
                    "delta": {"content": [{"index": 0, "type": "text", "text": {"value": delta, "annotations": []}}]},
                },
            )
        now = emu.clock.now()
        run.completion_tokens += tokens(text)
        if incomplete:
            message.status, message.incomplete_at, message.incomplete_reason = "incomplete", now, "max_tokens"
            self._emit(run, "thread.message.incomplete", message.to_json())
        else:
            message.status, message.completed_at = "completed", now
            self._emit(run, "thread.message.completed", message.to_json())
        step.status, step.completed_at = "completed", now
        step.usage = _usage(0, tokens(text))
        self._emit(run, "thread.run.step.completed", step.to_json())
        if incomplete:
            reason = incomplete if incomplete in RUN_INCOMPLETE_REASONS else RUN_INCOMPLETE_REASONS[0]
            self.finish(run, "incomplete", incomplete_details={"reason": reason})
        else:
            self.finish(run, "completed", completed_at=now)

    # --- endings -------------------------------------------------------------------------------------------------

    def finish(self, run: RunRecord, status: str, **fields: Any) -> None:
        """Move `run` to a terminal status, unlock its thread and end its streams."""
        if run.terminal:
            return
        emu = self.emu
        now = emu.clock.now()
        run.status = status
        for name, value in fields.items():
            setattr(run, name, value)
        if status == "failed":
            run.failed_at = now
        elif status == "cancelled":
            run.cancelled_at = now
        if status != "expired":
            run.expires_at = None
        run.pending = []
        run.usage = _usage(run.prompt_tokens, run.completion_tokens)
        run.finished_at, run.finished_tick = now, emu.tick()
        for step in run.steps:
            if step.status == "in_progress" and status in _STEP_END_STATUS:
                step.status = _STEP_END_STATUS[status]
                setattr(step, f"{step.status}_at", now)
        thread = self.api.threads.get(run.thread_id)
        if thread is not None and thread.active_run == run.id:
            thread.active_run = None
        run.events.append(sse_frame(f"thread.run.{status}", run.to_json()), boundary=True)
        run.events.close()
        for timer in run.timers:
            if timer is not asyncio.current_task():
                timer.cancel()
        task = run.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        emu.counters.runs[status] += 1
        emu.notify()

    def request_cancel(self, run: RunRecord, *, by: str) -> None:
        """cancelling now, cancelled on the next loop turn (as on OpenAI, the two are separate states)."""
        if run.terminal or run.status == "cancelling":
            return
        run.cancelled_by = by
        run.status = "cancelling"
        run.events.append(sse_frame("thread.run.cancelling", run.to_json()))
        task = run.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self.emu.notify()

        async def settle() -> None:
            await asyncio.sleep(0)
            self.finish(run, "cancelled")

        self.emu.spawn(settle())

    def expire(self, run: RunRecord) -> None:
        if not run.terminal:
            self.finish(run, "expired")

    def provider_cancel(self, run_id: str) -> None:
        self.request_cancel(self._get(run_id), by="provider")

    def expire_now(self, run_id: str) -> None:
        self.expire(self._get(run_id))

    # --- endpoints -----------------------------------------------------------------------------------------------

    async def _stream(self, request: web.Request, run: RunRecord, start: int) -> web.StreamResponse:
        drop = self.emu.faults.take_drop(agent=run.agent, api="assistants", target=run.id, bound=bound_faults(request))
        if drop is None:
            drop, run.drop_after_events = run.drop_after_events, None
        return await stream_log(
            request, run.events, start=start, stop_at_boundary=True, drop_after=drop, done_marker=True
        )

    async def retrieve(self, request: web.Request) -> web.Response:
        _, run = self._run_of(request)
        if not run.terminal and run.expires_at is not None and self.emu.clock.now() >= run.expires_at:
            self.expire(run)
        return json_response(run.to_json(), headers={POLL_AFTER_HEADER: str(self.emu.poll_after_ms)})

    async def update(self, request: web.Request) -> web.Response:
        _, run = self._run_of(request)
        body = await read_json(request)
        if "metadata" in body:
            run.metadata = dict(body["metadata"] or {})
        return json_response(run.to_json())

    async def list_runs(self, request: web.Request) -> web.Response:
        thread = self.api.thread_of(request)
        limit, order, after, before = page_params(request.query)
        items = [self.records[run_id].to_json() for run_id in thread.runs if run_id in self.records]
        return json_response(list_page(items, limit=limit, order=order, after=after, before=before))

    async def cancel(self, request: web.Request) -> web.Response:
        _, run = self._run_of(request)
        if run.terminal:
            raise invalid_request(RUN_CANNOT_CANCEL.format(status=run.status))
        self.request_cancel(run, by="client")
        return json_response(run.to_json())

    async def submit_tool_outputs(self, request: web.Request) -> web.StreamResponse:
        thread, run = self._run_of(request)
        body = await read_json(request)
        if run.status != "requires_action":
            raise invalid_request(RUN_NO_TOOL_OUTPUTS.format(status=run.status))
        outputs = body.get("tool_outputs")
        if not isinstance(outputs, list):
            raise invalid_request("Missing required parameter: 'tool_outputs'.", param="tool_outputs")
        given = {str(output.get("tool_call_id")): str(output.get("output") or "") for output in outputs}
        expected = [call.call_id for call in run.pending]
        unknown = sorted(set(given) - set(expected))
        if unknown:
            raise invalid_request(f"Invalid tool_call_id: {unknown[0]}.", param="tool_outputs")
        if set(given) != set(expected):
            raise invalid_request(
                f"Expected tool outputs for call_ids {expected}, got {sorted(given)}.", param="tool_outputs"
            )
        start = len(run.events)
        results = [ToolResult(call.call_id, call.name, given[call.call_id]) for call in run.pending]
        step = run.steps[-1]
        for tool_call in step.details["tool_calls"]:
            tool_call["function"]["output"] = given[tool_call["id"]]
        step.status, step.completed_at = "completed", self.emu.clock.now()
        step.usage = _usage(0, 0)
        self._emit(run, "thread.run.step.completed", step.to_json())
        run.rounds.extend(results)
        run.pending = []
        self._set_status(run, "queued")
        phase = self.emu.faults.for_phase(bound_faults(request), run.id)
        self._arm_end(run, phase)
        plan = self._plan(run, thread, results)
        run.task = self.emu.spawn(self._drive(run, plan, phase, phase_start=self.emu.clock.now(), first=False))
        if body.get("stream"):
            return await self._stream(request, run, start)
        return json_response(run.to_json())

    async def list_steps(self, request: web.Request) -> web.Response:
        _, run = self._run_of(request)
        limit, order, after, before = page_params(request.query)
        items = [step.to_json() for step in run.steps]
        return json_response(list_page(items, limit=limit, order=order, after=after, before=before))

    async def retrieve_step(self, request: web.Request) -> web.Response:
        _, run = self._run_of(request)
        step_id = request.match_info["step_id"]
        for step in run.steps:
            if step.id == step_id:
                return json_response(step.to_json())
        raise not_found(f"No run step found with id '{step_id}'.")
