"""The emulator: state shared by every surface, the aiohttp application and `run_emulator`.

async with run_emulator(clock=ManualClock()) as emu:
    client = openai.AsyncOpenAI(base_url=emu.base_url, api_key="x")

Contract: every `/v1` request goes through one middleware that describes it (`describe`: agent, API, whether it
streams, creates a response/run or can meet a lock), binds the armed faults due at it (`Faults.bind`), applies the
request-level ones (error answer, reset, timeout, container deletion) and logs it with its outcome (status, error,
stream events sent, fault). `live_objects` and `rejections` say what a client left behind or sent wrongly.

Longer than our usual module on purpose: the shared state, the middleware that applies faults and logs every
request, and the app factory belong together.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any

from aiohttp import web

from emulator.assistants import AssistantsAPI
from emulator.caching import PromptCache
from emulator.chat import AGENT_HEADER, ChatCompletionsAPI, ChatRecord
from emulator.clock import Clock, RealClock
from emulator.control import ControlAPI
from emulator.conversations import ConversationRecord, ConversationsAPI
from emulator.errors import APIError, invalid_api_key, server_error
from emulator.faults import Bound, Faults, RequestInfo
from emulator.httputil import (
    AGENT,
    BOUND,
    DROPPED,
    ERROR,
    EVENTS,
    OBJECT_ID,
    REQUEST_ID,
    WITHHOLD,
    body_id,
    error_response,
    query_flag,
)
from emulator.models import ModelsAPI
from emulator.observe import Counters, LogEntry, RequestLog
from emulator.responses import ResponseRecord, ResponsesAPI
from emulator.scripts import Script
from emulator.wire import IdFactory, loads

logger = logging.getLogger(__name__)

DEFAULT_EXPIRY_SECONDS = 600.0  # OpenAI's requires_action window
DEFAULT_RETRY_AFTER = 1.0  # seconds announced on injected 429s unless a fault says otherwise
DEFAULT_POLL_AFTER_MS = 25  # `openai-poll-after-ms` on run retrieve (OpenAI sends larger values)
DEFAULT_WAIT_TIMEOUT = 5.0
SHUTDOWN_TIMEOUT = 0.5
CONTROL_PREFIX = "/_emulator"
# Statuses in which a response/run is still going or waiting for its client (PLATFORM_FACTS "Assistants v2 run
# lifecycle" and "Responses API"): anything else is terminal.
LIVE_STATUSES = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
_RUN_CREATES = ("/v1/threads/{thread_id}/runs", "/v1/threads/runs")
_SUBMIT = "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs"


class Emulator:
    """State and HTTP server. Read `responses`, `conversations`, `assistants`, `threads`, `runs` for assertions;
    mutate `scripts` and `faults` to steer it; `log` and `counters` say what happened."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        latency: float = 0.0,
        token_delay: float = 0.0,
        scripts: Mapping[str, Script] | None = None,
        expiry_seconds: float = DEFAULT_EXPIRY_SECONDS,
        seed: int | None = None,
        retry_after: float = DEFAULT_RETRY_AFTER,
        poll_after_ms: int = DEFAULT_POLL_AFTER_MS,
        api_key: str | None = None,
    ) -> None:
        self.clock: Clock = clock or RealClock()
        self.api_key = api_key  # when set, other bearer tokens get 401 invalid_api_key
        self.latency = latency
        self.token_delay = token_delay
        self.expiry_seconds = expiry_seconds
        self.poll_after_ms = poll_after_ms
        self.seed = seed
        self.scripts: dict[str, Script] = dict(scripts or {})
        self.ids = IdFactory(seed)
        self.log = RequestLog()
        self.prompt_cache = PromptCache()  # `cached_tokens` in usage (emulator/caching.py)
        self.counters = Counters()
        self.faults = Faults(self, retry_after=retry_after)
        self.conversations_api = ConversationsAPI(self)
        self.responses_api = ResponsesAPI(self)
        self.chat_api = ChatCompletionsAPI(self)
        self.assistants_api = AssistantsAPI(self)
        self.control_api = ControlAPI(self)
        self.models_api = ModelsAPI()
        self.host = "127.0.0.1"
        self.port = 0
        self._ticks = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._request_prefix = secrets.token_hex(4)
        self._changed: asyncio.Event | None = None
        self._released: asyncio.Event | None = None  # set when the emulator stops: `hang` faults let go
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None

    # --- state, for assertions -----------------------------------------------------------------------------------

    @property
    def responses(self) -> dict[str, ResponseRecord]:
        return self.responses_api.records

    @property
    def chat_completions(self) -> dict[str, ChatRecord]:
        return self.chat_api.records

    @property
    def conversations(self) -> dict[str, ConversationRecord]:
        return self.conversations_api.records

    @property
    def assistants(self) -> dict[str, Any]:
        return self.assistants_api.assistants

    @property
    def threads(self) -> dict[str, Any]:
        return self.assistants_api.threads

    @property
    def runs(self) -> dict[str, Any]:
        return self.assistants_api.runs

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def control_url(self) -> str:
        return f"{self.url}{CONTROL_PREFIX}"

    def overlapped(self, first_id: str, second_id: str) -> bool:
        """Whether two responses/runs were both alive at some moment (by the emulator's event order)."""
        first, second = self._lifetime(first_id), self._lifetime(second_id)
        return first[0] < second[1] and second[0] < first[1]

    def _lifetime(self, object_id: str) -> tuple[int, float]:
        record: Any = self.responses.get(object_id) or self.runs.get(object_id)
        if record is None:
            raise KeyError(object_id)
        end = record.finished_tick if record.finished_tick is not None else float("inf")
        return record.created_tick, end

    # --- plumbing shared by the surfaces -------------------------------------------------------------------------

    def tick(self) -> int:
        return next(self._ticks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("emulator task failed", exc_info=task.exception())

    def notify(self) -> None:
        """Wake `wait_until` callers: some state changed."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_until(self, predicate: Callable[[], bool], within: float = DEFAULT_WAIT_TIMEOUT) -> None:
        """Wait (real time, at most `within` s) until `predicate()` holds; re-checked on every state change and every
        logged request."""

        async def _wait() -> None:
            while not predicate():
                if self._changed is None:
                    self._changed = asyncio.Event()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), within)

    async def wait_status(self, object_id: str, *statuses: str, within: float = DEFAULT_WAIT_TIMEOUT) -> None:
        """Wait until the response or run `object_id` has one of `statuses`."""

        def reached() -> bool:
            record: Any = self.responses.get(object_id) or self.runs.get(object_id)
            return record is not None and record.status in statuses

        await self.wait_until(reached, within)

    # --- actions used by fault injection -------------------------------------------------------------------------

    def provider_cancel(self, object_id: str) -> None:
        """Cancel a response or run from the provider's side."""
        if object_id in self.responses:
            self.responses_api.finish_cancelled(self.responses[object_id], by="provider")
        elif object_id in self.runs:
            self.assistants_api.provider_cancel(object_id)
        else:
            raise KeyError(object_id)

    def expire_run(self, run_id: str) -> None:
        self.assistants_api.expire_now(run_id)

    def delete_conversation(self, conversation_id: str) -> None:
        self.conversations_api.delete_now(conversation_id)

    def delete_thread(self, thread_id: str) -> None:
        self.assistants_api.delete_thread_now(thread_id)

    def delete_response(self, response_id: str) -> None:
        """Delete a stored response behind the client's back (as its 30-day storage ending would): later
        `previous_response_id` references to it answer 404 (PLATFORM_FACTS "Responses API")."""
        self.responses_api.delete_now(response_id)

    # --- what a client left behind or sent wrongly ------------------------------------------------------------------

    def live_objects(self) -> list[str]:
        """Ids of the responses and runs not yet terminal (still running, or waiting for their client)."""
        records: list[Any] = [*self.responses.values(), *self.runs.values()]
        return [record.id for record in records if record.status in LIVE_STATUSES]

    def rejections(self, since: int = 0) -> list[LogEntry]:
        """Requests answered 400 that no injected fault answered: requests the real API would reject too."""
        return [entry for entry in self.log[since:] if entry.status == 400 and entry.fault is None]

    def reset(self) -> None:
        """Forget every object, fault, log entry and counter (scripts stay)."""
        for task in list(self._tasks):
            task.cancel()
        self._close_streams()
        self.responses.clear()
        self.chat_completions.clear()
        self.conversations.clear()
        self.assistants_api.clear()
        self.faults.reset()
        self.log.clear()
        self.counters.clear()
        self.prompt_cache.clear()
        self.notify()

    def _close_streams(self) -> None:
        for record in self.responses.values():
            if record.events is not None:
                record.events.close()
            record.done.set()
        self.assistants_api.close_streams()

    # --- HTTP ----------------------------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024 * 1024)
        router = app.router
        self.responses_api.add_routes(router)
        self.chat_api.add_routes(router)
        self.conversations_api.add_routes(router)
        self.assistants_api.add_routes(router)
        self.models_api.add_routes(router)
        self.control_api.add_routes(router, CONTROL_PREFIX)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        request_id = f"req_{self._request_prefix}{next(self._request_ids):016x}"
        request[REQUEST_ID] = request_id
        path = request.path
        if path.startswith(CONTROL_PREFIX):
            response = await self._call(request, handler)
            if not response.prepared:
                response.headers["x-request-id"] = request_id
            return response
        clock = self.clock
        t_start, tick_start = clock.now(), self.tick()
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else path
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        info = await self.describe(request, template)
        response, fault_kind = await self._answer(request, handler, info)
        if not response.prepared:
            response.headers["x-request-id"] = request_id
        dropped = bool(request.get(DROPPED))
        status = 599 if dropped or fault_kind in ("reset", "timeout", "hang") else response.status
        error = request.get(ERROR)
        self.counters.requests[(request.method, template)] += 1
        self.counters.statuses[status] += 1
        self.log.append(
            LogEntry(
                method=request.method,
                path=path,
                template=template,
                status=status,
                t_start=t_start,
                t_end=clock.now(),
                tick_start=tick_start,
                tick_end=self.tick(),
                request_id=request_id,
                agent=request.get(AGENT) or info.agent,
                object_id=request.get(OBJECT_ID),
                fault=fault_kind or ("drop_stream" if dropped else None),
                events=request.get(EVENTS),
                error_code=error[0] if error else None,
                error=error[1] if error else None,
            )
        )
        self.notify()  # a waiter may be watching the log
        return response

    async def _answer(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        info: RequestInfo,
    ) -> tuple[web.StreamResponse, str | None]:
        """Handle the request as its faults say; also returns the kind of fault that decided the answer, if any."""
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            request[BOUND] = []
            return self._error(request, invalid_api_key()), None
        bound = self.faults.bind(info) if self.faults.active else []
        request[BOUND] = bound
        kinds = {entry.fault.kind for entry in bound}
        error = self.faults.request_error(bound, info)
        if error is not None:
            return self._error(request, error), "lock" if "lock" in kinds else "http_error"
        if self.faults.random_mode is not None:
            error = self.faults.check_request(request.method, request.path)
            if error is not None:
                return self._error(request, error), "http_error"
        if "reset" in kinds:
            return self._abort(request), "reset"
        self._delete_containers(bound, info)
        if kinds & {"timeout", "hang"}:
            request[WITHHOLD] = True
        response = await self._call(request, handler)
        if "hang" in kinds:  # the request took effect; the client waits for an answer until the emulator stops
            if self._released is None:
                self._released = asyncio.Event()
            await self._released.wait()
            return self._abort(request), "hang"
        if request.get(WITHHOLD):  # the request took effect; its answer never reaches the client
            return self._abort(request), "timeout"
        return response, None

    @staticmethod
    def _error(request: web.Request, error: APIError) -> web.StreamResponse:
        request[ERROR] = (error.code, error.message)
        return error_response(error)

    def _abort(self, request: web.Request) -> web.StreamResponse:
        """Close the connection without an answer (the SDK raises APIConnectionError)."""
        request[DROPPED] = True
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=599)

    def _delete_containers(self, bound: list[Bound], info: RequestInfo) -> None:
        """Bound `delete_*` faults: the conversation/thread this request names, or the response it continues, is deleted
        just before it is handled (PLATFORM_FACTS "Conversations API": conversations can be deleted; every later
        request naming it 404s; "Responses API": stored responses are kept 30 days)."""
        for entry in bound:
            kind = entry.fault.kind
            if kind == "delete_conversation" and info.conversation_id in self.conversations:
                self.delete_conversation(info.conversation_id)
                entry.injection.target = info.conversation_id
            elif kind == "delete_thread" and info.thread_id in self.threads:
                self.delete_thread(info.thread_id)
                entry.injection.target = info.thread_id
            elif kind == "delete_previous_response" and info.previous_response_id in self.responses:
                self.delete_response(info.previous_response_id)
                entry.injection.target = info.previous_response_id

    async def describe(self, request: web.Request, template: str) -> RequestInfo:
        """Who a request is for and what it can meet, before its handler runs. The agent is the response's
        `metadata.agent` or the run's assistant; for a conversation/thread, the agent of its latest response/run.
        The body is read (aiohttp keeps it for the handler) only when a request-bound fault needs it."""
        info = RequestInfo(request.method, request.path, template)
        match = request.match_info
        post = request.method == "POST"
        wants_body = post and any(fault.request_bound for fault in self.faults.active)
        body = await self._peek_body(request) if wants_body else {}
        if template.startswith("/v1/responses"):
            info.api = "responses"
            record = self.responses.get(match.get("response_id", ""))
            if record is not None:
                info.agent = record.agent
                info.streams = request.method == "GET" and query_flag(request, "stream")
            elif template == "/v1/responses" and post:
                metadata = body.get("metadata")
                agent = metadata.get("agent") if isinstance(metadata, dict) else None
                info.agent = str(agent) if agent else ("assistant" if wants_body else None)
                info.streams, info.runs_object = bool(body.get("stream")), True
                if body.get("conversation"):
                    info.conversation_id = self._ref(body["conversation"])
                    info.lock = "conversation"
                if isinstance(body.get("previous_response_id"), str):
                    info.previous_response_id = body["previous_response_id"]
        elif template == "/v1/chat/completions":
            info.api = "chat"
            info.agent = ChatCompletionsAPI.agent_of(request, body) if wants_body else request.headers.get(AGENT_HEADER)
            info.runs_object = post
            info.streams = bool(body.get("stream")) if wants_body else False
        elif template.startswith("/v1/conversations"):
            info.api = "responses"
            conversation = self.conversations.get(match.get("conversation_id", ""))
            if conversation is not None:
                info.conversation_id, info.agent = conversation.id, conversation.agent
            else:
                info.agent = _metadata_agent(body)
        elif template.startswith("/v1/threads"):
            info.api = "assistants"
            self._describe_assistants(info, request, body)
        elif template.startswith("/v1/assistants"):
            info.api = "assistants"
            assistant = self.assistants.get(match.get("assistant_id", ""))
            info.agent = assistant.agent if assistant is not None else (body.get("name") or None)
        return info

    def _describe_assistants(self, info: RequestInfo, request: web.Request, body: dict[str, Any]) -> None:
        match, template, post = request.match_info, info.template, request.method == "POST"
        thread = self.threads.get(match.get("thread_id", ""))
        if thread is not None:
            info.thread_id, info.agent = thread.id, thread.agent
        run = self.runs.get(match.get("run_id", ""))
        if run is not None:
            info.agent = run.agent
        if post and template in _RUN_CREATES:
            assistant = self.assistants.get(str(body.get("assistant_id")))
            info.agent = assistant.agent if assistant is not None else info.agent
            info.streams, info.runs_object = bool(body.get("stream")), True
            info.lock = "run" if template == _RUN_CREATES[0] else None
        elif post and template == _SUBMIT:
            info.streams, info.runs_object = bool(body.get("stream")), True
        elif post and template == "/v1/threads/{thread_id}/messages":
            info.lock = "message"
        elif post and template == "/v1/threads":
            info.agent = _metadata_agent(body)

    @staticmethod
    def _ref(value: Any) -> str | None:
        try:
            return body_id(value, "conversation")
        except APIError:
            return None

    @staticmethod
    async def _peek_body(request: web.Request) -> dict[str, Any]:
        try:
            body = loads(await request.read())
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    async def _call(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except APIError as error:
            request[ERROR] = (error.code, error.message)
            return error_response(error)
        except web.HTTPException as exc:
            if exc.status == 404:
                message = f"Invalid URL ({request.method} {request.path})"
            else:
                message = exc.reason if exc.status != 405 else f"Method not allowed ({request.method} {request.path})"
            return error_response(APIError(exc.status, message, "invalid_request_error"))
        except Exception:
            logger.exception("emulator handler failed: %s %s", request.method, request.path)
            return error_response(server_error())

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start listening; returns once the socket is bound (port 0 picks a free port)."""
        runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        self._runner = runner
        self.host = host
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._released is not None:
            self._released.set()
        for task in list(self._tasks):
            task.cancel()
        self._close_streams()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def run_emulator(
    *,
    clock: Clock | None = None,
    latency: float = 0.0,
    token_delay: float = 0.0,
    scripts: Mapping[str, Script] | None = None,
    expiry_seconds: float = DEFAULT_EXPIRY_SECONDS,
    seed: int | None = None,
    retry_after: float = DEFAULT_RETRY_AFTER,
    poll_after_ms: int = DEFAULT_POLL_AFTER_MS,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
) -> AsyncIterator[Emulator]:
    """Run an emulator on a free loopback port for the duration of the block."""
    emulator = Emulator(
        clock=clock,
        latency=latency,
        token_delay=token_delay,
        scripts=scripts,
        expiry_seconds=expiry_seconds,
        seed=seed,
        retry_after=retry_after,
        poll_after_ms=poll_after_ms,
        api_key=api_key,
    )
    await emulator.start(host, port)
    try:
        yield emulator
    finally:
        await emulator.stop()


def _metadata_agent(body: dict[str, Any]) -> str | None:
    metadata = body.get("metadata")
    agent = metadata.get("agent") if isinstance(metadata, dict) else None
    return str(agent) if agent else None
