"""One turn: the proxy runs on the conversation's main thread; its `ask_<sub>` calls fan out, concurrently and
bounded, to sub-assistants that each run on their own thread (one per conversation and sub-assistant, kept for
follow-ups); their results go back to the proxy together. Every step is recorded, so a turn resumed after a crash
reuses finished sub-assistant results and re-attaches to runs still going.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.backends.base import (
    TERMINAL,
    Backend,
    BackendError,
    RunInput,
    RunRequest,
    RunState,
    ToolCall,
    ToolResult,
    TranscriptItem,
    results_as_text,
)
from bot.config import AgentConfig, TeamConfig
from bot.context import Message, agent_of_path, fork_note, fork_path, fork_seed, is_fork_path
from bot.handoffs import Handoffs, is_transfer, signed
from bot.supervisor import RunFailed, Scope, Supervisor
from bot.types import Delegated, HandedOff, Progress, Retrying, SubFinished, TextDelta, Usage
from storage.base import LeaseLost, RunTokens, ToolCallRecord, TranscriptEntry, TurnRecord, TurnUpdate

log = logging.getLogger("switchboard.orchestrator")
TERMINAL_RUN_STATUSES = TERMINAL | {"superseded"}

PROXY_SCOPE = "proxy"
MAIN_THREAD = "main"
TASK_DESCRIPTION = "What the sub-assistant should do, stated completely and on its own."
CONTEXT_DESCRIPTION = (
    "Everything the sub-assistant needs to do the task well: the relevant facts, constraints, decisions, earlier "
    "results and quotes from the conversation. It cannot see the conversation or other assistants' work; it sees "
    "only the task and this context, so do not summarise away details it needs."
)
FORK_CONTEXT_DESCRIPTION = (
    "Anything the sub-assistant needs beyond {what}, which it receives with the task: facts, constraints or earlier "
    "results from elsewhere. It cannot see other assistants' work."
)
FORK_WHAT = {"fork": "a copy of this conversation so far", "recent": "a copy of this conversation's latest turns"}
MAX_FORK_MESSAGES = 500  # messages read from the caller's thread for a fork (the newest)


@dataclass(slots=True)
class TurnOutcome:
    text: str
    incomplete: bool
    usage: Usage
    agent: str = ""  # who answered: the proxy, or with handoffs the assistant active at the end of the turn


@dataclass(slots=True)
class TurnContext:
    turn: TurnRecord
    emit: Callable[[Progress], Awaitable[None]]
    usage: Usage = field(default_factory=Usage)
    retries: int = 0
    fresh: bool = True  # started in this process: nothing of it can be recorded yet, so skip the lookups
    main_thread: str | None = None  # the conversation's main thread, when the caller already read it
    bad_calls: dict[str, int] = field(default_factory=dict)  # per scope: calls naming no tool or with bad arguments
    by_model: dict[str, Usage] = field(default_factory=dict)  # the provider's usage of every run, by model
    delegations: dict[str, int] = field(default_factory=dict)  # `ask_*` calls dispatched, by calling assistant
    speaker: str = ""  # the assistant on the main thread now (handoffs may change it within the turn)
    by_agent: dict[str, Usage] = field(default_factory=dict)  # the same, by assistant

    def add_usage(self, model: str, usage: Usage, agent: str = "") -> None:
        self.usage += usage
        self.by_model[model] = self.by_model.get(model, Usage()) + usage
        if agent:
            self.by_agent[agent] = self.by_agent.get(agent, Usage()) + usage


@dataclass(slots=True)
class Step:
    """One requires_action step of an agent: the calls it made fan out from here, at most `slots` at once (one
    bound per step, not per turn, so a nested step never waits for slots its parents hold)."""

    ctx: TurnContext
    scope_path: str
    thread_path: str
    caller: AgentConfig
    depth: int
    slots: asyncio.Semaphore


def delegation_tool(sub: AgentConfig) -> dict[str, object]:
    context = (FORK_CONTEXT_DESCRIPTION.format(what=FORK_WHAT[sub.context.kind]) if sub.context.copies
               else CONTEXT_DESCRIPTION)
    return {
        "type": "function",
        "name": sub.tool_name,
        "description": f"Ask the {sub.name} sub-assistant. {sub.description}".strip(),
        "parameters": {
            "type": "object",
            "properties": {
                "task": {"type": "string", "description": TASK_DESCRIPTION},
                "context": {"type": "string", "description": context},
            },
            "required": ["task", "context"],
            "additionalProperties": False,
        },
        "strict": True,
    }


def sub_input(task: str, context: str) -> str:
    return f"Task: {task}\n\nContext:\n{context}" if context.strip() else f"Task: {task}"


class Orchestrator:
    def __init__(self, team: TeamConfig, backend: Backend, supervisor: Supervisor) -> None:
        self.team = team
        self.backend = backend
        self.supervisor = supervisor
        self.store = supervisor.store
        # Held only while a sub-assistant runs; weak values, so idle conversations cost nothing here.
        self._thread_locks: weakref.WeakValueDictionary[tuple[str, int, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.handoffs = Handoffs(team, self.store) if team.uses_handoffs else None

    async def run_turn(self, ctx: TurnContext, messages: list[str]) -> TurnOutcome:
        agent = self.team.proxy
        if self.handoffs is not None:
            agent = await self.handoffs.active(ctx.turn.conversation, ctx.turn.generation)
        state = await self._run_agent(ctx, PROXY_SCOPE, agent, MAIN_THREAD, RunInput(tuple(messages)), 0)
        speaker, text = ctx.speaker or agent.name, state.text
        if self.handoffs is not None:
            await self.handoffs.record_answer(ctx.turn.id, ctx.turn.conversation, ctx.turn.generation,
                                              self.team.member(speaker) or agent)
            text = signed(speaker, text)
        return TurnOutcome(text=text, incomplete=state.status == "incomplete", usage=ctx.usage, agent=speaker)

    # ---- one agent invocation, possibly delegating ----

    async def _run_agent(
        self, ctx: TurnContext, scope_path: str, agent: AgentConfig, thread_path: str, first: RunInput, depth: int
    ) -> RunState:
        """Run one agent invocation, including its delegations, within its time limit."""
        limits = self.team.limits
        limit = limits.turn_timeout if scope_path == PROXY_SCOPE else limits.run_timeout
        try:
            async with asyncio.timeout(limit):
                return await self._run_agent_unbounded(ctx, scope_path, agent, thread_path, first, depth)
        except TimeoutError:
            await self._cancel_runs_of(ctx, scope_path)
            raise RunFailed(f"The {agent.name} assistant took longer than {limit:g} s, so I stopped it.",
                            "run_timeout") from None

    async def _run_agent_unbounded(
        self, ctx: TurnContext, scope_path: str, agent: AgentConfig, thread_path: str, first: RunInput, depth: int
    ) -> RunState:
        tools = self._tools_for(agent, depth)
        main = self.handoffs is not None and scope_path == PROXY_SCOPE  # the main thread of a team with handoffs
        run_agent, briefing = agent, ""
        if main:
            ctx.speaker = agent.name
            run_agent, tools, briefing = await self._as_speaker(ctx, agent, depth)
        finished: dict[str, ToolResult] = {}  # every result this invocation produced, for a rebuilt thread

        async def on_retry(reason: str, attempt: int) -> None:
            ctx.retries += 1
            await ctx.emit(Retrying(reason=reason, attempt=attempt, who=agent.name))

        async def on_delta(text: str) -> None:
            await ctx.emit(TextDelta(text))

        async def rebuild(request: RunRequest) -> RunRequest:
            thread_id = await self._new_thread(ctx, thread_path)
            if not request.input.results:
                return dataclasses.replace(request, thread_id=thread_id)
            # The new thread never saw this turn's input nor the calls these results answer: it gets both as
            # messages (tool outputs for calls it does not know would be refused).
            results = {**finished, **{r.call_id: r for r in request.input.results}}
            handover = RunInput((*first.messages, results_as_text(list(results.values()))))
            return dataclasses.replace(request, thread_id=thread_id, input=handover)

        text_wanted = scope_path == PROXY_SCOPE  # only the proxy's answer is shown while it is written
        scope = Scope(
            turn_id=ctx.turn.id,
            path=scope_path,
            agent=agent.name,
            rebuild_thread=rebuild,
            on_retry=on_retry,
            on_delta=on_delta if text_wanted else None,
            on_spent=lambda usage: ctx.add_usage(agent.model, usage, agent.name),
        )
        metadata = {"turn": ctx.turn.id, "scope": scope_path}
        record = None if ctx.fresh else await self.store.latest_run(ctx.turn.id, scope_path)
        # A turn resumed after a crash may have sent its next create before the crash cut the answer: the supervisor
        # looks for what that create left before sending it again.
        maybe_sent = not ctx.fresh
        if main and record is not None and record.agent != agent.name and not self._switches_on_submit(agent):
            # A transfer was recorded after this run began, and this provider cannot hand a run on: stop the old
            # assistant's run and give the thread to the active one.
            await self.supervisor.cancel_quietly(record.remote_id, record.thread_id)
            record, first = None, RunInput()
        if record is not None:
            owner = self.team.member(record.agent) if main else None
            if owner is not None and owner.name != agent.name:
                # resumed before the new assistant's first run: follow the old one; the switch happens below
                run_agent, tools, briefing = await self._as_speaker(ctx, owner, depth)
            request = RunRequest(record.thread_id, run_agent, tools, RunInput.from_json(record.input), metadata,
                                 briefing, text_wanted)
            state = await self.supervisor.follow(scope, request, record)
        else:
            thread_id = await self._thread(ctx, thread_path)
            request = RunRequest(thread_id, run_agent, tools, first, metadata, briefing, text_wanted)
            scope.create_unknown = maybe_sent
            maybe_sent = False
            state = await self.supervisor.settle(scope, request)
        ctx.add_usage(agent.model, state.usage, agent.name)
        while state.status == "requires_action":
            scope.create_unknown, maybe_sent = maybe_sent, False
            if scope_path == PROXY_SCOPE:
                await self.store.update_turn(ctx.turn.id, TurnUpdate(state="awaiting_tools"))
            try:
                results = await self._fan_out(ctx, scope_path, thread_path, agent, depth, state.tool_calls)
                if ctx.bad_calls.get(scope_path, 0) > self.team.limits.retry_budget:
                    # Each one was answered with what went wrong; a model that keeps at it will not stop alone.
                    raise RunFailed(f"The {agent.name} assistant kept calling its tools wrongly, so I stopped it.",
                                    "bad_tool_calls")
                finished.update((r.call_id, r) for r in results)
                if scope_path == PROXY_SCOPE:
                    await self.store.update_turn(ctx.turn.id, TurnUpdate(state="running"))
                prior: RunState | None = state
                counting: asyncio.Task[None] | None = None
                if main and self.handoffs is not None:
                    held = await self.handoffs.active(ctx.turn.conversation, ctx.turn.generation)
                    if held.name != request.agent.name:
                        handed_by, agent = agent, held
                        ctx.speaker = scope.agent = agent.name  # the next run is recorded as the new assistant's
                        run_agent, tools, briefing = await self._as_speaker(ctx, agent, depth)
                        if not self._switches_on_submit(agent):
                            # Assistants v2: a run keeps its assistant, so the old run stops and the new
                            # assistant gets a run of its own on the same thread (other results as text).
                            await self._abandon(ctx, scope_path, state)
                            # read its usage while the new assistant's run goes on (one more request, off the path)
                            counting = asyncio.create_task(self._count_stopped_run(ctx, state, handed_by))
                            prior = None
                            results = [r for r in results if not is_transfer(r.name)]
                # the thread the run settled on: the supervisor may have rebuilt it since `request` was made
                request = RunRequest(state.thread_id, run_agent, tools, RunInput(results=tuple(results)), metadata,
                                     briefing, text_wanted)
                try:
                    state = await self.supervisor.settle(scope, request, prior=prior)
                except BaseException:
                    if counting is not None:
                        counting.cancel()  # best effort only: the turn's own error matters
                    raise
                if counting is not None:
                    await counting
            except Exception:
                await self._abandon(ctx, scope_path, state)
                raise
            ctx.add_usage(agent.model, state.usage, agent.name)
        return state

    async def _abandon(self, ctx: TurnContext, scope_path: str, state: RunState) -> None:
        """This invocation failed while `state` waited for outputs: close its calls now, so the thread is ready for
        the next turn (best effort; a thread left stuck is still freed when the next run meets it)."""
        latest = await self.store.latest_run(ctx.turn.id, scope_path)
        if latest is not None and latest.remote_id == state.id and latest.status in TERMINAL_RUN_STATUSES:
            return  # the run took our outputs and ended since (Assistants): nothing waits any more
        try:
            async with asyncio.timeout(self.team.limits.stream_idle_timeout):
                await asyncio.shield(self.backend.abandon(state))
        except (BackendError, TimeoutError) as exc:
            log.info("could not close the calls of run %s: %s", state.id, exc)

    async def _fan_out(
        self, ctx: TurnContext, scope_path: str, thread_path: str, caller: AgentConfig, depth: int,
        calls: tuple[ToolCall, ...],
    ) -> list[ToolResult]:
        """Every call of one requires_action step, concurrently. A call that fails becomes an error result for the
        caller; if recording one fails (the database), its siblings are cancelled along with their remote runs."""
        step = Step(ctx, scope_path, thread_path, caller, depth, asyncio.Semaphore(self.team.limits.max_parallel))
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._one_call(step, call)) for call in calls]
        except BaseExceptionGroup as failed:
            for call in calls:
                await self._cancel_runs_of(ctx, f"{scope_path}/{call.call_id}")
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _cancel_runs_of(self, ctx: TurnContext, scope_path: str) -> None:
        """Cancel the live runs of a scope and of every scope below it (its delegations)."""
        for run in await self.store.active_runs(ctx.turn.id):
            if run.scope == scope_path or run.scope.startswith(scope_path + "/"):
                await self.supervisor.cancel_quietly(run.remote_id, run.thread_id)

    async def _as_speaker(
        self, ctx: TurnContext, agent: AgentConfig, depth: int
    ) -> tuple[AgentConfig, list[dict[str, object]], str]:
        """The agent as it runs on the main thread of a team with handoffs: its instructions plus the briefing
        (who said what, why it has the conversation, the state), its tools plus its `transfer_to_*` tools."""
        assert self.handoffs is not None
        conv, generation = ctx.turn.conversation, ctx.turn.generation
        entries = [e for e in await self.store.transcript(conv, generation, MAIN_THREAD) if e.turn_id != ctx.turn.id]
        briefing = await self.handoffs.briefing(conv, generation, agent, entries)
        tools = self._tools_for(agent, depth) + self.handoffs.tools(agent)
        run_agent = dataclasses.replace(agent, instructions=f"{agent.instructions}\n\n{briefing}")
        return run_agent, tools, briefing

    async def _count_stopped_run(self, ctx: TurnContext, state: RunState, agent: AgentConfig) -> None:
        """The usage of a run stopped by a handoff (Assistants v2 reports it once the run has ended, not while it
        waits for tool outputs): read it once, and count it for the assistant that ran it (best effort)."""
        if state.usage.total:
            return  # already counted when the run settled
        try:
            ended = await self.backend.retrieve(state.id, state.thread_id)
        except BackendError as exc:
            log.info("could not read the usage of run %s: %s", state.id, exc)
            return
        if ended.usage.total and ended.status in TERMINAL_RUN_STATUSES:
            used = ended.usage
            await self.store.update_run(state.id, status=ended.status, tokens=RunTokens(
                used.input_tokens, used.cached_input_tokens, used.output_tokens))
            ctx.add_usage(agent.model, used, agent.name)

    def _switches_on_submit(self, agent: AgentConfig) -> bool:
        """Whether the provider takes the next assistant's instructions, model and tools with the tool outputs
        (Responses: per-response instructions; chat: local) or runs keep their assistant (Assistants v2)."""
        return self.team.provider_of(agent).backend != "assistants"

    def _tools_for(self, agent: AgentConfig, depth: int) -> list[dict[str, object]]:
        tools: list[dict[str, object]] = [dict(t) for t in agent.tools]
        if depth < self.team.limits.max_depth:
            tools += [delegation_tool(sub) for sub in self.team.delegates_of(agent)]
        return tools

    # ---- fan-out ----

    async def _one_call(self, step: Step, call: ToolCall) -> ToolResult:
        ctx = step.ctx
        done = None if ctx.fresh else await self.store.get_tool_call(ctx.turn.id, step.scope_path, call.call_id)
        if done is not None and done.output is not None:
            return ToolResult(call.call_id, call.name, done.output)  # finished before a restart: not recomputed
        await self.store.record_tool_call(
            ToolCallRecord(ctx.turn.id, step.scope_path, call.call_id, call.name, call.arguments)
        )
        output, ok = await self._dispatch(step, call)
        await self.store.finish_tool_call(ctx.turn.id, step.scope_path, call.call_id, output, ok)
        return ToolResult(call.call_id, call.name, output)

    async def _dispatch(self, step: Step, call: ToolCall) -> tuple[str, bool]:
        ctx = step.ctx
        if self.handoffs is not None and step.scope_path == PROXY_SCOPE and is_transfer(call.name):
            turn = ctx.turn
            done = await self.handoffs.transfer(turn.conversation, turn.generation, turn.id, step.caller, call)
            if done.bad:
                self._bad_call(step)
            if done.applied:
                await ctx.emit(HandedOff(step.caller.name, done.to_agent, done.reason))
            return done.output, done.ok
        allowed = {s.tool_name: s for s in self.team.delegates_of(step.caller)}
        sub = allowed.get(call.name) if step.depth < self.team.limits.max_depth else None
        if sub is None:
            self._bad_call(step)
            return f"ERROR: there is no tool named {call.name!r}. Answer without it.", False
        try:
            args = json.loads(call.arguments or "{}")
            task = str(args["task"]).strip()
            context = str(args.get("context") or "")
        except (ValueError, KeyError, TypeError):
            self._bad_call(step)
            return f"ERROR: the arguments for {call.name} were not valid JSON with a `task` field.", False
        if not task:
            self._bad_call(step)
            return f"ERROR: {call.name} needs a non-empty task.", False
        cap = step.caller.max_delegations
        if cap is not None:  # counted before any await: sibling calls of one step cannot both take the last one
            used = ctx.delegations.get(step.caller.name, 0)
            if used >= cap:
                return (f"ERROR: the {step.caller.name} assistant may ask sub-assistants at most {cap} times per "
                        "turn, and has. Answer with what you have."), False
            ctx.delegations[step.caller.name] = used + 1

        sub_thread = sub.name if step.thread_path == MAIN_THREAD else f"{step.thread_path}/{sub.name}"
        sub_scope = f"{step.scope_path}/{call.call_id}"
        message = sub_input(task, context)
        if sub.context.copies:  # a fresh thread for this call, forked from the caller's (`_new_thread`)
            sub_thread = fork_path(sub_thread, call.call_id)
            message = f"{fork_note(step.caller.name)}\n\n{message}"
        await ctx.emit(Delegated(sub=sub.name, task=task, call_id=call.call_id))
        key = (ctx.turn.conversation, ctx.turn.generation, sub_thread)
        lock = self._thread_locks.get(key)
        if lock is None:
            lock = self._thread_locks[key] = asyncio.Lock()
        try:
            async with step.slots, lock:  # calls to the same sub-assistant share its thread: one at a time
                existing = None if ctx.fresh else await self.store.latest_run(ctx.turn.id, sub_scope)
                if existing is None:
                    await self._transcript(ctx, sub_thread, "user", message)
                state = await self._run_agent(ctx, sub_scope, sub, sub_thread, RunInput((message,)), step.depth + 1)
        except RunFailed as exc:
            log.warning("sub-assistant %s failed in turn %s: %s", sub.name, ctx.turn.id, exc)
            await ctx.emit(SubFinished(sub=sub.name, call_id=call.call_id, ok=False))
            return f"ERROR: the {sub.name} assistant could not finish this task ({exc.user_text}).", False
        except LeaseLost:
            raise  # this instance lost the conversation: the whole turn stops here
        except Exception:
            # Anything else (a provider answer we do not understand, a bug) fails this call only: its siblings go
            # on, and the caller is told plainly, as for any failed sub-assistant.
            log.exception("sub-assistant %s crashed in turn %s", sub.name, ctx.turn.id)
            await self._cancel_runs_of(ctx, sub_scope)
            await ctx.emit(SubFinished(sub=sub.name, call_id=call.call_id, ok=False))
            return f"ERROR: the {sub.name} assistant could not finish this task (an internal error).", False
        text = state.text or "(no answer)"
        if state.status == "incomplete":
            text += f"\n[cut short by the provider: {state.incomplete_reason or 'limit reached'}]"
        await self._transcript(ctx, sub_thread, "assistant", text)
        await ctx.emit(SubFinished(sub=sub.name, call_id=call.call_id, ok=True))
        return text, True

    @staticmethod
    def _bad_call(step: Step) -> None:
        step.ctx.bad_calls[step.scope_path] = step.ctx.bad_calls.get(step.scope_path, 0) + 1

    # ---- threads ----

    async def _thread(self, ctx: TurnContext, thread_path: str) -> str:
        conv, generation = ctx.turn.conversation, ctx.turn.generation
        if thread_path == MAIN_THREAD and ctx.fresh and ctx.main_thread:
            return ctx.main_thread
        if thread_path == MAIN_THREAD:
            record = await self.store.get_conversation(conv)
            existing = record.main_thread if record and record.generation == generation else None
        else:
            existing = await self.store.get_sub_thread(conv, generation, thread_path)
        return existing or await self._new_thread(ctx, thread_path)

    async def _new_thread(self, ctx: TurnContext, thread_path: str) -> str:
        """Create the remote thread, seeded with the local transcript of earlier turns (a rebuild after the
        provider lost it; empty for a new conversation), or for a forked thread with its caller's conversation so
        far (`_fork_seed`). The current turn's input travels with the run."""
        conv, generation = ctx.turn.conversation, ctx.turn.generation
        metadata = {"conversation": conv[:500], "thread": thread_path[:500]}
        who = self.team.proxy.name if thread_path == MAIN_THREAD else agent_of_path(thread_path)

        async def on_retry(reason: str, attempt: int) -> None:
            await ctx.emit(Retrying(reason=reason, attempt=attempt, who=who))

        sub = self.team.sub(who)
        if sub is not None and is_fork_path(thread_path):
            seed = await self._fork_seed(ctx, thread_path, sub, on_retry)
        else:
            entries = await self.store.transcript(conv, generation, thread_path)
            seed = [TranscriptItem(e.role, e.text) for e in entries if e.turn_id != ctx.turn.id]
        thread_id = await self.supervisor.call(lambda: self.backend.create_thread(seed, metadata), on_retry)
        if thread_path == MAIN_THREAD:
            ctx.main_thread = thread_id
            await self.store.set_main_thread(conv, generation, thread_id)
        else:
            await self.store.set_sub_thread(conv, generation, thread_path, thread_id)
        return thread_id

    async def _fork_seed(self, ctx: TurnContext, thread_path: str, sub: AgentConfig,
                         on_retry: Callable[[str, int], Awaitable[None]]) -> list[TranscriptItem]:
        """What a forked thread starts with: the caller's thread so far (this turn included), read from the provider
        where it keeps the thread, else (`chat`, or the provider lost it) from the local transcript."""
        source = thread_path.rsplit("/", 1)[0] if "/" in thread_path else MAIN_THREAD
        items: list[TranscriptItem] | None = None
        source_id = await self._thread_id_of(ctx, source)
        if source_id is not None:
            try:
                items = await self.supervisor.call(
                    lambda: self.backend.read_thread(source_id, MAX_FORK_MESSAGES), on_retry)
            except (BackendError, RunFailed) as exc:
                log.info("turn %s: could not read thread %s to fork it (%s); using the transcript", ctx.turn.id,
                         source, exc)
        if items is None:
            entries = await self.store.transcript(ctx.turn.conversation, ctx.turn.generation, source)
            items = [TranscriptItem(e.role, e.text) for e in entries[-MAX_FORK_MESSAGES:]]
        kept = fork_seed([Message(i.role, i.text) for i in items], sub.context)
        return [TranscriptItem(m.role, m.text) for m in kept]

    async def _thread_id_of(self, ctx: TurnContext, thread_path: str) -> str | None:
        conv, generation = ctx.turn.conversation, ctx.turn.generation
        if thread_path == MAIN_THREAD:
            if ctx.main_thread:
                return ctx.main_thread
            record = await self.store.get_conversation(conv)
            return record.main_thread if record and record.generation == generation else None
        return await self.store.get_sub_thread(conv, generation, thread_path)

    async def _transcript(self, ctx: TurnContext, thread_path: str, role: str, text: str) -> None:
        entry = TranscriptEntry(role=role, text=text, turn_id=ctx.turn.id)  # type: ignore[arg-type]
        await self.store.append_transcript(ctx.turn.conversation, ctx.turn.generation, thread_path, entry)

