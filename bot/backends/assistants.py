"""The Assistants v2 backend (`backend = "assistants"`): threads and runs, for Assistants-compatible servers.

OpenAI itself retired this API on 2026-08-26; Azure's classic agents and self-hosted servers still speak it.

Mapping onto `bot.backends.base`: thread = thread; run = run; agent = an assistant object created from the team
file. A run in `requires_action` is reported as such; its outputs go back with ONE `submit_tool_outputs` call on the
same run. Statuses, `last_error.code` and `incomplete_details.reason` map one to one onto `RunState`.

What this file adds to make the supervisor's recovery table hold on threads and runs:

* **Atomic input.** A run's new user messages (and, for a run that replaces an expired or cancelled one, the
  results of the tools the old run called, as one "Results of the tools you called..." message) travel as the run's
  `additional_messages`: they land together with the run or not at all, so nothing is ever posted into a locked
  thread. A locked thread answers `Thread thread_X already has an active run run_Y.` (or, for a message,
  `Can't add messages to thread_X while a run run_Y is active.`): both become `ThreadLocked(holder=run_Y)`.
* **No double posting.** Every message we add carries `metadata.switchboard_input = "<key>.<n>"`, where the key is
  a hash of (turn, scope, input), and every run `metadata.input = <key>`. When the supervisor starts a run again with
  the same input (after a provider cancel, a failure, a lost stream, a restart), the messages already on the thread
  are not added again, and a run of ours with that input that is still alive (or already finished: a create whose
  answer was lost) is adopted instead of creating a duplicate.
* **Expiry.** The proxy's run waits for sub-assistants in `requires_action` and expires after about 10 minutes.
  The submit is then refused (`OutputsRejected`) and the supervisor starts a new run with the results, which this
  backend posts as one "Results of the tools you called..." message with the run. After a restart, a run found
  expired while waiting is reported as `requires_action` with its calls (read from its run steps), so finished
  results are reused by call id rather than recomputed; the same refused submit then leads to the new run.
* **No stream resume** (`supports_resume = False`): a dropped stream raises `StreamDropped(run_id)` and the
  supervisor polls `retrieve`, which passes the server's `openai-poll-after-ms` on as `RunState.poll_after`.
* **Assistants from the team file.** `open()` (and `switchboard sync`) creates or updates one assistant per team
  member, matched by the id cached in the store's `agents` table, else by name + `metadata.switchboard_agent`, and
  rewritten only when the content hash in its metadata differs. Runs use the assistant's instructions and tools; a
  run passes `tools` only when the caller's tools differ (e.g. delegation cut off by `limits.max_depth`).

Requests go through the SDK's generic `post`/`get` with raw JSON, like the Responses backend (same HTTP client,
errors and SSE parsing, no typed model per event). That also keeps the SDK's deprecated `client.beta.threads`
namespace, and the DeprecationWarning it emits on every call, out of the hot path; `quiet_deprecation()` silences
that warning once, process-wide, with a single INFO line, for any code that still uses the namespace.

Longer than our usual module on purpose: it is one provider API mapped onto `bot.backends.base` (sync, dedup by
input key, adoption, polling, streams), each part leaning on the others' metadata conventions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import httpx2
import openai
from openai import AsyncStream

from bot.backends.base import (
    BackendError,
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
    Transient,
    results_as_text,
)
from bot.backends.openai_errors import (
    NotFoundMeans,
    close_sdk_stream,
    get_json,
    list_newest,
    post_json,
    provider_errors,
    stream_error,
    translate,
)
from bot.config import AgentConfig, TeamConfig
from bot.types import Usage
from storage.base import Store

log = logging.getLogger("switchboard.backends.assistants")

NAME = "assistants"
BETA_HEADERS = {"OpenAI-Beta": "assistants=v2"}
POLL_AFTER_HEADER = "openai-poll-after-ms"
MAX_POLL_AFTER = 60.0  # seconds: a larger hint is taken as this
TAG_KEY = "switchboard_input"  # message metadata: "<input key>.<n>"
RUN_INPUT_KEY = "input"  # run metadata: "<input key>"
AGENT_KEY = "switchboard_agent"  # assistant metadata: the team member's name
HASH_KEY = "switchboard_hash"  # assistant metadata: hash of what we last wrote
MAX_SEED_MESSAGES = 32  # threads.create takes at most 32 messages; older history is folded into the first
MAX_MESSAGE_CHARS = 256_000
RECENT_MESSAGES = 50  # how far back to look for messages of an input we may have posted before
RECENT_RUNS = 20
ALIVE = frozenset({"queued", "in_progress", "requires_action"})
ADOPTABLE = ALIVE | {"completed", "incomplete"}
TEXT_STATUSES = frozenset({"completed", "incomplete"})
# The SDK marks `client.beta.threads.*` "The Assistants API is deprecated in favor of the Responses API" and
# `client.beta.assistants.*` just "deprecated" (warnings' `message` is a regex matched at the start).
DEPRECATION_TEXT = r"The Assistants API is deprecated|deprecated$"

_deprecation_quieted = False


def quiet_deprecation() -> None:
    """Handle the SDK's per-call DeprecationWarning for `client.beta.*` once, quietly, for the whole process."""
    global _deprecation_quieted
    if _deprecation_quieted:
        return
    _deprecation_quieted = True
    warnings.filterwarnings("ignore", message=DEPRECATION_TEXT, category=DeprecationWarning)
    log.info(
        "assistants backend: using the Assistants v2 API (OpenAI retired it on 2026-08-26; compatible servers "
        "keep it); the SDK's DeprecationWarning for it is silenced"
    )


# ---- assistants from the team file ----


@dataclass(frozen=True, slots=True)
class SyncChange:
    name: str
    action: Literal["created", "updated", "unchanged"]
    assistant_id: str


@dataclass(frozen=True, slots=True)
class _Synced:
    assistant_id: str
    tools: list[dict[str, Any]]


def assistants_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses-style tool (`{type: function, name, parameters, ...}`) in the Assistants shape
    (`{type: function, function: {name, parameters, ...}}`); other tools pass through unchanged."""
    if tool.get("type") != "function" or "function" in tool:
        return dict(tool)
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def assistant_spec(team: TeamConfig, agent: AgentConfig) -> dict[str, Any]:
    """What the assistant object of `agent` should contain: its tools as offered at its usual depth (0 for the
    proxy, 1 for a sub-assistant), exactly as the orchestrator builds them."""
    from bot.orchestrator import delegation_tool  # the orchestrator sits above the backends; import on use

    depth = 0 if agent.name == team.proxy.name else 1
    tools: list[dict[str, Any]] = [dict(t) for t in agent.tools]
    if depth < team.limits.max_depth:
        tools += [delegation_tool(sub) for sub in team.delegates_of(agent)]
    return {
        "name": agent.name,
        "model": agent.model,
        "instructions": agent.instructions,
        "description": agent.description[:512] or None,
        "tools": [assistants_tool(t) for t in tools],
    }


def spec_hash(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


# ---- the backend ----


class AssistantsBackend:
    name = NAME
    supports_resume = False

    def __init__(
        self, client: openai.AsyncOpenAI, team: TeamConfig, store: Store | None = None, members: set[str] | None = None
    ) -> None:
        self._root = client
        self._members = members  # the team members whose assistants live on this provider (None: all)
        self.client = client.with_options(default_headers=BETA_HEADERS)
        self.team = team
        self.store = store
        self._agents: dict[str, _Synced] = {}
        self._sync_lock = asyncio.Lock()
        self._fresh_threads: set[str] = set()  # created by us, no run attempted yet: nothing of ours on them
        self._given_up: set[str] = set()  # runs we asked to cancel: never adopted again, even if still alive

    def bind_store(self, store: Store) -> None:
        """Where the assistant ids are cached (the engine binds its store before `open`)."""
        self.store = store

    async def open(self) -> None:
        quiet_deprecation()
        try:
            await self.sync()
        except BackendError as exc:  # the provider may be down right now: the first run syncs again
            log.warning("assistants not synced at start (%s); retrying on the first run", exc)

    async def close(self) -> None:
        await self._root.close()

    # ---- assistants ----

    async def sync(self) -> list[SyncChange]:
        """Create or update one assistant per team member; unchanged ones (same content hash) are not rewritten."""
        async with self._sync_lock:
            members = [a for a in self.team.members if self._members is None or a.name in self._members]
            cached: dict[str, tuple[str, str] | None] = {}
            for agent in members:
                cached[agent.name] = await self.store.get_agent(NAME, agent.name) if self.store else None
            found = await asyncio.gather(*(self._retrieve_assistant(c[0]) for c in cached.values() if c))
            remote = {a["id"]: a for a in found if a is not None}
            listing: list[dict[str, Any]] | None = None
            changes: list[SyncChange] = []
            for agent in members:
                spec = assistant_spec(self.team, agent)
                digest = spec_hash(spec)
                entry = cached[agent.name]
                current = remote.get(entry[0]) if entry else None
                if current is None:
                    if listing is None:
                        listing = await self._list_assistants()
                    current = _match(listing, agent.name, digest)
                body = {**spec, "metadata": {AGENT_KEY: agent.name, HASH_KEY: digest}}
                async with provider_errors():
                    if current is None:
                        current = await post_json(self.client, "/assistants", body)
                        action: Literal["created", "updated", "unchanged"] = "created"
                    elif (current.get("metadata") or {}).get(HASH_KEY) != digest:
                        current = await post_json(self.client, f"/assistants/{current['id']}", body)
                        action = "updated"
                    else:
                        action = "unchanged"
                assistant_id = str(current["id"])
                if self.store is not None and entry != (assistant_id, digest):
                    await self.store.set_agent(NAME, agent.name, assistant_id, digest)
                self._agents[agent.name] = _Synced(assistant_id, spec["tools"])
                changes.append(SyncChange(agent.name, action, assistant_id))
                if action != "unchanged":
                    log.info("assistant %s %s (%s)", agent.name, action, assistant_id)
            return changes

    async def _retrieve_assistant(self, assistant_id: str) -> dict[str, Any] | None:
        try:
            async with provider_errors():
                return await get_json(self.client, f"/assistants/{assistant_id}")
        except ThreadGone:  # a 404: deleted on the server; match by name instead
            return None

    async def _list_assistants(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100, "order": "desc"}
        async with provider_errors():
            while True:
                page = await get_json(self.client, "/assistants", params)
                found += page.get("data") or []
                if not page.get("has_more") or not page.get("data"):
                    return found
                params = {**params, "after": page["data"][-1]["id"]}

    async def _assistant(self, agent: AgentConfig) -> _Synced:
        synced = self._agents.get(agent.name)
        if synced is None:
            await self.sync()
            synced = self._agents.get(agent.name)
            if synced is None:
                raise Permanent(f"{agent.name} is not on the team", reason="unknown_agent")
        return synced

    # ---- threads ----

    async def create_thread(self, seed: Sequence[TranscriptItem], metadata: dict[str, str]) -> str:
        messages = _seed_messages(seed)
        body: dict[str, Any] = {"messages": messages}
        if metadata:
            body["metadata"] = metadata
        async with provider_errors():
            thread = await post_json(self.client, "/threads", body)
        thread_id = str(thread["id"])
        self._fresh_threads.add(thread_id)
        return thread_id

    async def delete_thread(self, thread_id: str) -> None:
        self._fresh_threads.discard(thread_id)
        async with provider_errors():
            await self.client.delete(f"/threads/{thread_id}", cast_to=object)

    async def delete_run(self, run_id: str, thread_id: str) -> None:
        return None  # a run and its steps are deleted with their thread

    async def answer_stuck_calls(self, thread_id: str, call_id: str) -> None:
        return None  # threads have no stuck-call state: a run waiting for outputs holds the lock until it ends

    async def abandon(self, state: RunState) -> None:
        await self.cancel(state.id, state.thread_id)  # else it holds the thread until it expires (10 minutes)

    async def active_runs(self, thread_id: str) -> list[str]:
        return [run["id"] for run in await self._recent_runs(thread_id) if run.get("status") in ALIVE | {"cancelling"}]

    async def read_thread(self, thread_id: str, limit: int) -> list[TranscriptItem] | None:
        messages = await list_newest(self.client, f"/threads/{thread_id}/messages", limit, RECENT_MESSAGES * 2)
        return [TranscriptItem(m["role"], message_text(m)) for m in messages if m.get("role") in ("user", "assistant")]

    async def lost_create(self, request: RunRequest) -> RunState | None:
        return None  # `start` finds a lost run by its input key among the thread's runs, and follows it

    # ---- runs ----

    async def start(self, request: RunRequest) -> ThreadRunStream | AdoptedStream:
        synced = await self._assistant(request.agent)
        thread_id = request.thread_id
        key = input_key(request)
        messages = _input_messages(request, key)
        if messages and thread_id not in self._fresh_threads:
            posted = {tag for tag in await self._posted_tags(thread_id) if tag.partition(".")[0] == key}
            if posted:  # this input reached the thread before: a recreation, or a restart
                adopted = await self._adopt(thread_id, key)
                if adopted is not None:
                    return adopted
                messages = [m for m in messages if m["metadata"][TAG_KEY] not in posted]
        self._fresh_threads.discard(thread_id)
        body: dict[str, Any] = {
            "assistant_id": synced.assistant_id,
            "stream": True,
            "metadata": {"agent": request.agent.name, **request.metadata, RUN_INPUT_KEY: key},
        }
        if messages:
            body["additional_messages"] = messages
        if request.agent.max_output_tokens:
            body["max_completion_tokens"] = request.agent.max_output_tokens
        if request.briefing:
            body["additional_instructions"] = request.briefing
        tools = [assistants_tool(t) for t in request.tools]
        if tools != synced.tools:
            body["tools"] = tools
        try:
            async with provider_errors():
                stream = await self.client.post(
                    f"/threads/{thread_id}/runs", body=body, cast_to=object, stream=True,
                    stream_cls=AsyncStream[object],
                )
        except ThreadGone as exc:
            if "assistant" not in str(exc).lower():
                raise
            # The assistant was deleted on the server, not the thread: make it again and retry.
            self._agents.clear()
            raise Transient(str(exc), reason="assistant_gone", retry_after=0.0) from exc
        return ThreadRunStream(stream, thread_id)

    async def submit(self, state: RunState, request: RunRequest) -> ThreadRunStream:
        outputs = [{"tool_call_id": r.call_id, "output": r.output} for r in request.input.results]
        path = f"/threads/{request.thread_id}/runs/{state.id}/submit_tool_outputs"
        try:
            async with _errors("run"):
                stream = await self.client.post(
                    path, body={"tool_outputs": outputs, "stream": True}, cast_to=object, stream=True,
                    stream_cls=AsyncStream[object],
                )
        except RunGone as exc:
            raise OutputsRejected(str(exc)) from exc
        except Permanent as exc:
            if "tool" in str(exc).lower():  # outputs that do not match the run's calls: start over with them
                raise OutputsRejected(str(exc)) from exc
            raise
        return ThreadRunStream(stream, request.thread_id, run_id=state.id)

    async def resume(self, run_id: str, thread_id: str, after_seq: int) -> ThreadRunStream:
        raise Permanent("Assistants run streams cannot be resumed; poll the run instead", reason="unsupported")

    async def retrieve(self, run_id: str, thread_id: str) -> RunState:
        async with _errors("run"):
            response = await self.client.get(f"/threads/{thread_id}/runs/{run_id}", cast_to=httpx2.Response)
            run = response.json()
            text = await self._run_text(thread_id, run_id) if run.get("status") in TEXT_STATUSES else ""
            poll_after = _poll_after(response.headers.get(POLL_AFTER_HEADER))
            if run.get("status") == "expired":
                calls = await self._unanswered_calls(thread_id, run_id)
                if calls:
                    return expired_waiting(run, thread_id, calls, poll_after)
        return to_state(run, thread_id, text, poll_after=poll_after)

    async def cancel(self, run_id: str, thread_id: str) -> None:
        self._given_up.add(run_id)
        try:
            async with _errors("run"):
                await post_json(self.client, f"/threads/{thread_id}/runs/{run_id}/cancel")
        except (RunGone, ThreadGone):
            return
        except Permanent as exc:
            if "cannot cancel" in str(exc).lower():  # already finished: nothing to stop
                return
            raise

    # ---- helpers ----

    async def _posted_tags(self, thread_id: str) -> set[str]:
        """The input tags on the thread's most recent messages (a 404 here means the thread is gone)."""
        params = {"limit": RECENT_MESSAGES, "order": "desc"}
        async with provider_errors():
            page = await get_json(self.client, f"/threads/{thread_id}/messages", params)
        return {str(m["metadata"][TAG_KEY]) for m in page.get("data") or [] if TAG_KEY in (m.get("metadata") or {})}

    async def _recent_runs(self, thread_id: str) -> list[dict[str, Any]]:
        params = {"limit": RECENT_RUNS, "order": "desc"}
        async with provider_errors():
            page = await get_json(self.client, f"/threads/{thread_id}/runs", params)
        return list(page.get("data") or [])

    async def _adopt(self, thread_id: str, key: str) -> AdoptedStream | None:
        """Our input is already on the thread: if the run made for it is alive or finished, keep that run rather
        than start a duplicate (a create whose answer was lost, or a restart before the run was recorded)."""
        for run in await self._recent_runs(thread_id):
            if (run.get("metadata") or {}).get(RUN_INPUT_KEY) != key:
                continue
            if run.get("status") not in ADOPTABLE or run["id"] in self._given_up:
                # it ended badly, or we gave up on it: make a new run (if it still holds the thread, the lock
                # error names it and the supervisor cancels it as a stale run of ours)
                return None
            log.info("adopting run %s on %s instead of creating a duplicate", run["id"], thread_id)
            text = await self._run_text(thread_id, run["id"]) if run.get("status") in TEXT_STATUSES else ""
            return AdoptedStream(to_state(run, thread_id, text))
        return None

    async def _unanswered_calls(self, thread_id: str, run_id: str) -> tuple[ToolCall, ...]:
        """The function calls of the run's last step if it never got their outputs (the run expired waiting)."""
        params = {"order": "desc", "limit": 1}
        async with provider_errors():
            page = await get_json(self.client, f"/threads/{thread_id}/runs/{run_id}/steps", params)
        steps = page.get("data") or []
        if not steps or (steps[0].get("step_details") or {}).get("type") != "tool_calls":
            return ()
        calls = steps[0]["step_details"].get("tool_calls") or []
        if not calls or any(c.get("type") != "function" or c["function"].get("output") is not None for c in calls):
            return ()
        return tuple(ToolCall(c["id"], c["function"]["name"], c["function"].get("arguments") or "{}") for c in calls)

    async def _run_text(self, thread_id: str, run_id: str) -> str:
        params = {"run_id": run_id, "order": "asc", "limit": 100}
        async with provider_errors():
            page = await get_json(self.client, f"/threads/{thread_id}/messages", params)
        texts = [message_text(m) for m in page.get("data") or [] if m.get("role") == "assistant"]
        return "\n\n".join(t for t in texts if t)


# ---- streams ----


class ThreadRunStream:
    """Adapts an Assistants SSE stream to `RunEvent`s. The text of the run's messages is collected so the settled
    snapshot carries it (run objects have no text). A broken or truncated stream raises `StreamDropped`."""

    def __init__(self, stream: Any, thread_id: str, run_id: str | None = None) -> None:
        self._stream = stream
        self.thread_id = thread_id
        self.run_id = run_id
        self._texts: dict[str, str] = {}

    async def aclose(self) -> None:
        await close_sdk_stream(self._stream)

    def __aiter__(self) -> AsyncIterator[RunEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[RunEvent]:
        settled = False
        try:
            async for item in self._stream:
                event = item.get("event") if isinstance(item, dict) else None
                data = item.get("data") if event else item
                if not isinstance(data, dict):
                    continue
                if event is None or event == "error":
                    if "message" in data or "error" in data:
                        raise translate(stream_error(data))
                    continue
                if event == "thread.message.delta":
                    text = _delta_text(data)
                    if text:
                        self._texts[data.get("id", "")] = self._texts.get(data.get("id", ""), "") + text
                        yield Delta(text)
                elif event in ("thread.message.completed", "thread.message.incomplete"):
                    self._texts[data.get("id", "")] = message_text(data)
                elif event.startswith("thread.run.") and not event.startswith("thread.run.step"):
                    state = to_state(data, self.thread_id, "\n\n".join(t for t in self._texts.values() if t))
                    self.run_id = state.id
                    settled = state.settled
                    yield Snapshot(state)
                    if settled:
                        return
        except openai.APIError as exc:
            if isinstance(exc, openai.APIConnectionError):
                raise StreamDropped(str(exc), self.run_id) from exc
            raise translate(exc) from exc
        if not settled:
            raise StreamDropped("the event stream ended before the run settled", self.run_id)


class AdoptedStream:
    """An existing run taken over instead of created: its current state, then (if it is still working) a drop, so
    the supervisor records it and polls it to the end."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.run_id: str | None = state.id
        self.thread_id = state.thread_id

    async def aclose(self) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[RunEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[RunEvent]:
        yield Snapshot(self.state)
        if not self.state.settled:
            raise StreamDropped("adopted a run that is still working", self.state.id)


# ---- shapes ----


def to_state(run: Mapping[str, Any], thread_id: str, text: str = "", poll_after: float | None = None) -> RunState:
    status = cast(RunStatus, run.get("status") or "queued")
    calls: tuple[ToolCall, ...] = ()
    if status == "requires_action":
        required = (run.get("required_action") or {}).get("submit_tool_outputs") or {}
        calls = tuple(
            ToolCall(c["id"], c["function"]["name"], c["function"].get("arguments") or "{}")
            for c in required.get("tool_calls") or []
        )
    error = run.get("last_error") or {}
    incomplete = run.get("incomplete_details") or {}
    usage = run.get("usage") or {}
    return RunState(
        id=str(run["id"]),
        thread_id=str(run.get("thread_id") or thread_id),
        status=status,
        text=text,
        tool_calls=calls,
        error_code=error.get("code"),
        error_message=error.get("message"),
        incomplete_reason=incomplete.get("reason"),
        # OpenAI's runs report no cached figure; a compatible server may, as Chat Completions does
        usage=Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0,
                    (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
        poll_after=poll_after,
    )


def expired_waiting(
    run: Mapping[str, Any], thread_id: str, calls: tuple[ToolCall, ...], poll_after: float | None = None
) -> RunState:
    """A run that expired waiting for tool outputs, seen by someone who was not there when it asked (a restart):
    reported as still requiring them, so the orchestrator gathers the results (reusing finished ones by call id);
    the submit is then refused (`OutputsRejected`) and a new run on the thread receives the results."""
    state = to_state(run, thread_id, poll_after=poll_after)
    return dataclasses.replace(
        state, status="requires_action", tool_calls=calls, error_message="expired while waiting for tool outputs"
    )


def message_text(message: Mapping[str, Any]) -> str:
    parts = message.get("content") or []
    if isinstance(parts, str):
        return parts
    return "".join(
        (p.get("text") or {}).get("value", "") if isinstance(p.get("text"), dict) else str(p.get("text") or "")
        for p in parts
        if isinstance(p, dict) and p.get("type") == "text"
    )


def _delta_text(data: Mapping[str, Any]) -> str:
    return message_text(data.get("delta") or {})


def input_key(request: RunRequest) -> str:
    """Names one run input of one agent invocation: the same turn, scope and input give the same key."""
    material = json.dumps(
        [request.thread_id, dict(request.metadata), request.input.to_json()],
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def _input_messages(request: RunRequest, key: str) -> list[dict[str, Any]]:
    texts: list[str] = []
    if request.input.results:
        texts.append(results_as_text(request.input.results))
    texts += list(request.input.messages)
    return [
        {"role": "user", "content": text[:MAX_MESSAGE_CHARS], "metadata": {TAG_KEY: f"{key}.{i}"}}
        for i, text in enumerate(texts)
    ]


def _seed_messages(seed: Sequence[TranscriptItem]) -> list[dict[str, Any]]:
    """The transcript as thread messages; beyond what one create takes, the oldest part is folded into one."""
    items = [item for item in seed if item.text.strip()]
    messages = [{"role": item.role, "content": item.text[:MAX_MESSAGE_CHARS]} for item in items]
    if len(messages) <= MAX_SEED_MESSAGES:
        return messages
    keep = MAX_SEED_MESSAGES - 1
    older = items[: len(items) - keep]
    folded = "Earlier in this conversation:\n" + "\n".join(f"{i.role}: {i.text}" for i in older)
    return [{"role": "user", "content": folded[-MAX_MESSAGE_CHARS:]}, *messages[-keep:]]


def _match(listing: list[dict[str, Any]], name: str, digest: str) -> dict[str, Any] | None:
    """An assistant made by Switchboard for the team member `name` (same content first, else the newest)."""
    ours = [a for a in listing if a.get("name") == name and (a.get("metadata") or {}).get(AGENT_KEY) == name]
    same = [a for a in ours if (a.get("metadata") or {}).get(HASH_KEY) == digest]
    pool = same or ours
    return max(pool, key=lambda a: a.get("created_at") or 0) if pool else None


def _poll_after(value: str | None) -> float | None:
    """`openai-poll-after-ms` in seconds (at most a minute); None (use our own interval) when absent or unusable."""
    try:
        seconds = float(value) / 1000.0 if value else 0.0
    except ValueError:
        return None
    return min(seconds, MAX_POLL_AFTER) if 0 < seconds < float("inf") else None


@asynccontextmanager
async def _errors(not_found: NotFoundMeans) -> AsyncIterator[None]:
    """`provider_errors` that tells a missing thread (ThreadGone) from a missing run (RunGone)."""
    try:
        async with provider_errors(not_found):
            yield
    except RunGone as gone:
        if "no thread found" in str(gone).lower():
            raise ThreadGone(str(gone)) from gone
        raise
