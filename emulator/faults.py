"""Fault injection: one-shot (or counted) faults and a seeded random mode, shared by every surface.

Contract. A fault is consumed where it applies, and every fault that fires is recorded in `Faults.injected`:
- request faults (`http_error`, `reset`, `timeout`, `hang`, `lock`) when a matching `/v1` request arrives, before its
  handler;
- object faults (`fail`, `cancel`, `incomplete`, `gone`, `stay_queued`, `expire`, `delete_conversation`,
  `delete_thread`) when a new response or run is created for a matching agent;
- `drop_stream` when a matching stream connection starts (create, resume or submit_tool_outputs).

Any fault can instead be *bound to a request*: give it `method`, `path` (a glob), `template` (the route, e.g.
``/v1/threads/{thread_id}/runs``) and/or `nth`. Then it fires at the `nth` request (default: the first) matching
those and its `agent`/`api`, counted from the moment it was armed, among the requests it can apply to (a `lock` only
counts requests that can meet a lock, a `drop_stream` only streamed requests, an object fault only requests that
create a response/run or submit tool outputs to one). This makes "exactly one fault at request #i" deterministic:
`benchmarks/fault_matrix.py` replays a recorded turn with one bound fault per request of it.

Every rule here imitates what the real APIs do; the comments cite `../shared/PLATFORM_FACTS.md` (section "OpenAI")
or the pinned OpenAPI description (`../shared/reference/openai-openapi.json`).

Longer than our usual module on purpose: it is the one fault vocabulary every emulator surface consumes (arming,
matching the n-th request, random mode, reporting), each kind citing the doc it imitates.
"""

from __future__ import annotations

import fnmatch
import itertools
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from emulator.errors import (
    CONVERSATION_LOCKED,
    FAILURE_CODES,
    THREAD_LOCKED_MESSAGE,
    THREAD_LOCKED_RUN,
    APIError,
    http_fault,
    invalid_request,
)

if TYPE_CHECKING:
    from emulator.server import Emulator

Api = Literal["responses", "assistants", "chat"]
LockKind = Literal["conversation", "run", "message"]

# Faults on the HTTP exchange itself. PLATFORM_FACTS "openai 3.x Python SDK": the SDK retries connection errors,
# timeouts, 429 and >= 500, and "sends NO idempotency key: a retried POST /responses can create a duplicate" - so a
# request that timed out may well have taken effect (`timeout`), unlike one whose connection was reset (`reset`).
REQUEST_KINDS = frozenset({"http_error", "reset", "timeout", "hang", "lock"})
# Faults that end a response/run in a given way. PLATFORM_FACTS "Assistants v2 run lifecycle" / "Responses API":
# runs end completed | failed | cancelled | incomplete | expired; responses completed | failed | cancelled | incomplete.
ENDING_KINDS = frozenset({"fail", "cancel", "incomplete", "gone", "expire"})
OBJECT_KINDS = ENDING_KINDS | {"stay_queued"}
# Faults that delete what a request builds on: its conversation or thread, or the stored response it continues
# (`previous_response_id`; PLATFORM_FACTS "Responses API": a stored response is kept for 30 days).
CONTAINER_KINDS = frozenset({"delete_conversation", "delete_thread", "delete_previous_response"})
FAULT_KINDS = (
    "http_error",
    "reset",
    "timeout",
    "hang",
    "lock",
    "fail",
    "cancel",
    "incomplete",
    "gone",
    "drop_stream",
    "stay_queued",
    "expire",
    "delete_conversation",
    "delete_thread",
    "delete_previous_response",
)
# Kinds the random mode can mix; `server_error` etc. are `fail` with that code, `http_429`/`http_500` HTTP faults.
RANDOM_KINDS = (
    "http_429",
    "http_500",
    "server_error",
    "rate_limit_exceeded",
    "invalid_prompt",
    "cancel",
    "drop_stream",
    "stay_queued",
    "expire",
)
DEFAULT_RANDOM_KINDS = ("http_429", "http_500", "server_error", "rate_limit_exceeded", "cancel", "drop_stream")
RANDOM_MAX_EVENTS = 6  # random cancel/drop faults trigger after 1..this many stream events


class At(TypedDict, total=False):
    """Binds a fault to a request: the `nth` one (from 1) matching `method`, `path` (glob) and `template`."""

    method: str
    path: str
    template: str
    nth: int


@dataclass
class RequestInfo:
    """What the emulator knows of a `/v1` request before its handler runs, to bind faults to it."""

    method: str
    path: str
    template: str
    agent: str | None = None
    api: Api | None = None
    streams: bool = False  # the answer is an SSE stream
    runs_object: bool = False  # creates a response/run, or submits tool outputs to a run (its next phase)
    conversation_id: str | None = None  # the conversation the request reads or writes
    thread_id: str | None = None  # the thread the request reads or writes
    lock: LockKind | None = None  # the lock error this request can meet
    previous_response_id: str | None = None  # the stored response a create continues


@dataclass
class Fault:
    """One armed fault. `count` None means it never wears out; `agent`/`api` None match everything.

    `after_events` on `fail`/`cancel`/`incomplete`/`gone`/`expire` ends the object right after that many stream
    events (of the phase the bound request started); on `drop_stream` it is how many events get through."""

    kind: str
    agent: str | None = None
    api: Api | None = None
    method: str | None = None
    path: str | None = None
    template: str | None = None
    nth: int | None = None
    status: int = 500
    code: str = "server_error"
    message: str | None = None
    after_seconds: float | None = None
    after_events: int | None = None
    retry_after: float | None = None
    count: int | None = 1
    id: int = 0
    fired: int = 0
    seen: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if self.kind == "fail" and self.code not in FAILURE_CODES:
            raise ValueError(f"unknown failure code {self.code!r}; expected one of {', '.join(FAILURE_CODES)}")
        if self.kind in ("drop_stream", "gone") and self.after_events is None:
            raise ValueError(f"{self.kind} needs after_events")
        if self.after_events is not None and self.after_events < 0:
            raise ValueError("after_events must be >= 0")
        if self.nth is not None and self.nth < 1:
            raise ValueError("nth counts from 1")

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count

    @property
    def request_bound(self) -> bool:
        """Fires at a request (see the module docstring) rather than at the next new object of its agent."""
        selectors = (self.method, self.path, self.template, self.nth)
        return self.kind in REQUEST_KINDS or any(value is not None for value in selectors)

    def targets(self, agent: str | None, api: Api | None) -> bool:
        return (self.agent is None or self.agent == agent) and (self.api is None or self.api == api)

    def matches_request(self, method: str, path: str, template: str | None = None) -> bool:
        if self.method not in (None, "*") and self.method.upper() != method.upper():
            return False
        if self.template is not None and self.template != template:
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def applies_to(self, info: RequestInfo) -> bool:
        """Whether this kind of fault can happen to this request at all (only those count towards `nth`)."""
        kind = self.kind
        if kind in ("http_error", "reset", "timeout", "hang"):
            return True
        if kind == "lock":
            return info.lock is not None
        if kind == "delete_conversation":
            return info.conversation_id is not None
        if kind == "delete_thread":
            return info.thread_id is not None
        if kind == "delete_previous_response":
            return info.previous_response_id is not None
        if kind == "drop_stream":
            return info.streams
        if kind == "expire":
            return info.runs_object and info.api == "assistants"
        return info.runs_object

    def detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {}
        if self.kind == "http_error":
            detail["status"] = self.status
        if self.kind == "fail":
            detail["code"] = self.code
        for name in ("after_seconds", "after_events", "nth", "template"):
            value = getattr(self, name)
            if value is not None:
                detail[name] = value
        return detail

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Injection:
    kind: str
    fault_id: int | None
    random: bool
    agent: str | None = None
    target: str | None = None
    method: str | None = None
    path: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    tick: int = 0  # when it fired, in the emulator's global event order (see `Emulator.tick`)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Bound:
    """A fault that fired at one request, and its record (a handler fills in the object it hit)."""

    fault: Fault
    injection: Injection


@dataclass
class ObjectFaults:
    """The faults that apply to one new response or run (or to the phase a submit_tool_outputs starts)."""

    fail: Fault | None = None  # fails at its outcome (after the scripted delay, or `after_seconds`)
    cancel: Fault | None = None  # provider-side cancel `after_seconds` after creation
    incomplete: Fault | None = None  # ends incomplete at its outcome, with half of its text
    end: Fault | None = None  # ends (fail, cancel, incomplete, gone, expire) right after `after_events` events
    stay_queued: bool = False
    expire: Fault | None = None  # (runs) expires once it requires action, or `after_seconds` after creation
    delete_container: bool = False
    drop_after_events: int | None = None

    def add(self, fault: Fault) -> None:
        kind = fault.kind
        if kind == "stay_queued":
            self.stay_queued = True
        elif kind in CONTAINER_KINDS:
            self.delete_container = True
        elif kind == "drop_stream":
            self.drop_after_events = fault.after_events
        elif kind in ENDING_KINDS and fault.after_events is not None:
            self.end = fault
        elif kind == "fail":
            self.fail = fault
        elif kind == "cancel":
            self.cancel = fault
        elif kind == "incomplete":
            self.incomplete = fault
        elif kind == "expire":
            self.expire = fault


@dataclass
class RandomMode:
    rate: float
    seed: int
    kinds: tuple[str, ...]
    rng: random.Random


class Faults:
    def __init__(self, emulator: Emulator, *, retry_after: float = 1.0) -> None:
        self._emu = emulator
        self.retry_after = retry_after
        self.active: list[Fault] = []
        self.injected: list[Injection] = []
        self.random_mode: RandomMode | None = None
        self._ids = itertools.count(1)

    # --- arming ------------------------------------------------------------------------------------------------

    def add(self, fault: Fault) -> Fault:
        fault.id = next(self._ids)
        self.active.append(fault)
        return fault

    def http_error(
        self,
        status: int = 500,
        *,
        agent: str | None = None,
        count: int | None = 1,
        retry_after: float | None = None,
        **at: Unpack[At],
    ) -> Fault:
        """Answer the next `count` matching requests (`path` is a glob, e.g. ``/v1/responses*``) with `status`.
        429 carries Retry-After (PLATFORM_FACTS "openai 3.x Python SDK": honoured up to 120 s; OpenAPI
        `TooManyRequests`); >= 500 is the SDK's InternalServerError, retried like a 429."""
        return self.add(Fault("http_error", agent=agent, status=status, count=count, retry_after=retry_after, **at))

    def connection_reset(self, *, agent: str | None = None, count: int | None = 1, **at: Unpack[At]) -> Fault:
        """Close the connection of the next matching request before it is processed (connection refused/reset:
        the SDK raises APIConnectionError; nothing happened on the provider's side)."""
        return self.add(Fault("reset", agent=agent, count=count, **at))

    def timeout(self, *, agent: str | None = None, count: int | None = 1, **at: Unpack[At]) -> Fault:
        """Process the next matching request but never answer it: the connection closes without a response, as
        when the client's timeout fires. The request took effect (a response or run may now exist that the client
        does not know of: PLATFORM_FACTS "openai 3.x Python SDK", no idempotency key)."""
        return self.add(Fault("timeout", agent=agent, count=count, **at))

    def hang(self, *, agent: str | None = None, count: int | None = 1, **at: Unpack[At]) -> Fault:
        """Process the next matching request and hold its connection open without an answer until the emulator
        stops: the client waits for its own timeout (PLATFORM_FACTS "openai 3.x Python SDK": 600 s by default).
        `benchmarks/fault_matrix.py --kill` kills the client process there."""
        return self.add(Fault("hang", agent=agent, count=count, **at))

    def lock(self, *, agent: str | None = None, count: int | None = 1, **at: Unpack[At]) -> Fault:
        """Refuse the next request that can meet a lock with the platform's exact lock error, as if another run
        held the conversation/thread until just after (PLATFORM_FACTS "Conversations API": 400 `conversation_locked`;
        "Assistants v2 run lifecycle": `Thread thread_X already has an active run run_Y.` /
        `Can't add messages to thread_X while a run run_Y is active.`)."""
        return self.add(Fault("lock", agent=agent, count=count, **at))

    def fail(
        self,
        code: str = "server_error",
        *,
        agent: str | None = None,
        api: Api | None = None,
        message: str | None = None,
        after_seconds: float | None = None,
        after_events: int | None = None,
        count: int | None = 1,
        **at: Unpack[At],
    ) -> Fault:
        """The next response/run (for `agent`) fails with `code` (after `after_seconds` on the emulator clock, or
        right after `after_events` stream events). Codes: PLATFORM_FACTS `error.code` / `last_error.code`."""
        return self.add(
            Fault(
                "fail",
                agent=agent,
                api=api,
                code=code,
                message=message,
                after_seconds=after_seconds,
                after_events=after_events,
                count=count,
                **at,
            )
        )

    def cancel(
        self,
        target_id: str | None = None,
        *,
        agent: str | None = None,
        api: Api | None = None,
        after_seconds: float | None = None,
        after_events: int | None = None,
        count: int | None = 1,
        **at: Unpack[At],
    ) -> Fault | None:
        """Provider-side cancel: now (`target_id`), or of the next response/run after a delay or N events."""
        if target_id is not None:
            self._emu.provider_cancel(target_id)
            self._record(Injection("cancel", None, False, target=target_id))
            return None
        return self.add(
            Fault(
                "cancel",
                agent=agent,
                api=api,
                after_seconds=after_seconds,
                after_events=after_events,
                count=count,
                **at,
            )
        )

    def incomplete(
        self,
        *,
        agent: str | None = None,
        api: Api | None = None,
        after_events: int | None = None,
        count: int | None = 1,
        **at: Unpack[At],
    ) -> Fault:
        """The next response/run ends `incomplete` (token limit) with half of its text and none of its calls, or
        right after `after_events` events. Reasons: PLATFORM_FACTS `incomplete_details.reason`."""
        return self.add(Fault("incomplete", agent=agent, api=api, after_events=after_events, count=count, **at))

    def gone(
        self,
        after_events: int,
        *,
        agent: str | None = None,
        api: Api | None = None,
        count: int | None = 1,
        **at: Unpack[At],
    ) -> Fault:
        """The next response/run stops after `after_events` events and vanishes: every later request naming it
        gets 404 (`Response with id '...' not found.` / `No run found with id '...'.`)."""
        return self.add(Fault("gone", agent=agent, api=api, after_events=after_events, count=count, **at))

    def drop_stream(
        self,
        after_events: int,
        *,
        agent: str | None = None,
        api: Api | None = None,
        count: int | None = 1,
        **at: Unpack[At],
    ) -> Fault:
        """Close the next matching stream connection after `after_events` events: 0 breaks it before the first
        event, the stream's event count right after its terminal event (before the end of the body / `[DONE]`).
        The object carries on (PLATFORM_FACTS "Responses API": a dropped stream resumes with `starting_after`)."""
        return self.add(Fault("drop_stream", agent=agent, api=api, after_events=after_events, count=count, **at))

    def stay_queued(
        self, *, agent: str | None = None, api: Api | None = None, count: int | None = 1, **at: Unpack[At]
    ) -> Fault:
        """The next response/run never leaves `queued` (until cancelled or expired). PLATFORM_FACTS "Responses
        API": a reported bug leaves background responses stuck in `queued` for 10+ minutes."""
        return self.add(Fault("stay_queued", agent=agent, api=api, count=count, **at))

    def expire(
        self,
        run_id: str | None = None,
        *,
        agent: str | None = None,
        after_seconds: float | None = None,
        after_events: int | None = None,
        count: int | None = 1,
        **at: Unpack[At],
    ) -> Fault | None:
        """Expire a run now (`run_id`), or the next run for `agent` once it waits for tool outputs (or after
        `after_seconds` on the emulator clock, or right after `after_events` events). PLATFORM_FACTS "Assistants v2
        run lifecycle": a run not given its outputs before `expires_at` becomes `expired`."""
        if run_id is not None:
            self._emu.expire_run(run_id)
            self._record(Injection("expire", None, False, target=run_id))
            return None
        return self.add(
            Fault(
                "expire",
                agent=agent,
                api="assistants",
                after_seconds=after_seconds,
                after_events=after_events,
                count=count,
                **at,
            )
        )

    def delete_conversation(
        self,
        conversation_id: str | None = None,
        *,
        agent: str | None = None,
        count: int | None = 1,
        **at: Unpack[At],
    ) -> Fault | None:
        """Delete a conversation behind the client's back: now, the one the next response for `agent` uses, or
        (bound to a request) the one that request names, just before it is handled."""
        if conversation_id is not None:
            self._emu.delete_conversation(conversation_id)
            self._record(Injection("delete_conversation", None, False, target=conversation_id))
            return None
        return self.add(Fault("delete_conversation", agent=agent, api="responses", count=count, **at))

    def delete_thread(
        self, thread_id: str | None = None, *, agent: str | None = None, count: int | None = 1, **at: Unpack[At]
    ) -> Fault | None:
        """Delete a thread behind the client's back: now, the one the next run for `agent` uses, or (bound to a
        request) the one that request names, just before it is handled."""
        if thread_id is not None:
            self._emu.delete_thread(thread_id)
            self._record(Injection("delete_thread", None, False, target=thread_id))
            return None
        return self.add(Fault("delete_thread", agent=agent, api="assistants", count=count, **at))

    def delete_previous_response(
        self, response_id: str | None = None, *, agent: str | None = None, count: int | None = 1, **at: Unpack[At]
    ) -> Fault | None:
        """Delete a stored response behind the client's back (as the end of its 30 days of storage would): now, or
        the one the next create for `agent` that continues one (`previous_response_id`) names, just before it is
        handled."""
        if response_id is not None:
            self._emu.delete_response(response_id)
            self._record(Injection("delete_previous_response", None, False, target=response_id))
            return None
        selectors: dict[str, Any] = {"method": "POST", "template": "/v1/responses", **at}
        return self.add(Fault("delete_previous_response", agent=agent, api="responses", count=count, **selectors))

    def random(self, rate: float, seed: int, kinds: Sequence[str] | None = None) -> None:
        """Inject a fault into a fraction `rate` of requests/new objects, chosen reproducibly from `seed`."""
        chosen = tuple(kinds) if kinds else DEFAULT_RANDOM_KINDS
        unknown = [kind for kind in chosen if kind not in RANDOM_KINDS]
        if unknown or not 0 <= rate <= 1:
            raise ValueError(f"rate must be in [0, 1] and kinds among {', '.join(RANDOM_KINDS)}")
        self.random_mode = RandomMode(rate, seed, chosen, random.Random(seed))

    def stop_random(self) -> None:
        self.random_mode = None

    def remove(self, fault_id: int) -> bool:
        before = len(self.active)
        self.active = [fault for fault in self.active if fault.id != fault_id]
        return len(self.active) != before

    def clear(self) -> None:
        """Disarm everything (the record of what was injected stays until `reset`)."""
        self.active.clear()
        self.random_mode = None

    def reset(self) -> None:
        self.clear()
        self.injected.clear()

    # --- consumption (used by the server and the surfaces) -----------------------------------------------------

    def _record(self, injection: Injection) -> None:
        injection.tick = self._emu.tick()
        self.injected.append(injection)
        self._emu.counters.faults[injection.kind] += 1
        self._emu.notify()

    def _fire(self, fault: Fault) -> None:
        fault.fired += 1
        if fault.exhausted:
            self.active = [other for other in self.active if other is not fault]

    def _take(self, kind: str, agent: str | None, api: Api | None) -> Fault | None:
        for fault in self.active:
            if fault.kind == kind and not fault.request_bound and fault.targets(agent, api):
                self._fire(fault)
                return fault
        return None

    def _roll(self, applicable: Iterable[str]) -> str | None:
        mode = self.random_mode
        if mode is None:
            return None
        hit = mode.rng.random() < mode.rate
        options = [kind for kind in mode.kinds if kind in set(applicable)]
        if not hit or not options:
            return None
        return mode.rng.choice(options)

    def bind(self, info: RequestInfo) -> list[Bound]:
        """The request-bound faults that fire at this request (counted towards their `nth` if not yet due)."""
        bound: list[Bound] = []
        for fault in list(self.active):
            if not fault.request_bound or not fault.targets(info.agent, info.api):
                continue
            if not fault.matches_request(info.method, info.path, info.template) or not fault.applies_to(info):
                continue
            fault.seen += 1
            if fault.nth is not None and fault.seen < fault.nth:
                continue
            self._fire(fault)
            injection = Injection(fault.kind, fault.id, False, info.agent, None, info.method, info.path, fault.detail())
            self._record(injection)
            bound.append(Bound(fault, injection))
        return bound

    def request_error(self, bound: Sequence[Bound], info: RequestInfo) -> APIError | None:
        """The error answer a bound `http_error` or `lock` fault gives this request, if any."""
        for entry in bound:
            fault = entry.fault
            if fault.kind == "http_error":
                return http_fault(fault.status, self._retry_after(fault))
            if fault.kind == "lock":
                return self._lock_error(info, entry.injection)
        return None

    def _lock_error(self, info: RequestInfo, injection: Injection) -> APIError:
        # PLATFORM_FACTS "Conversations API": two responses on one conversation: 400 invalid_request_error, code
        # `conversation_locked`, param `conversation` (the holder is never named). "Assistants v2 run lifecycle":
        # the two thread-lock texts, naming the run that holds the thread (here one that ended right after).
        if info.lock == "conversation":
            return invalid_request(CONVERSATION_LOCKED, param="conversation", code="conversation_locked")
        holder = self._emu.ids.new("run")
        injection.detail["holder"] = holder
        template = THREAD_LOCKED_RUN if info.lock == "run" else THREAD_LOCKED_MESSAGE
        return invalid_request(template.format(thread_id=info.thread_id, run_id=holder))

    def check_request(self, method: str, path: str) -> APIError | None:
        """A random-mode HTTP error for this request, if the roll says so (armed faults go through `bind`)."""
        kind = self._roll(("http_429", "http_500"))
        if kind is None:
            return None
        status = 429 if kind == "http_429" else 500
        self._record(Injection("http_error", None, True, method=method, path=path, detail={"status": status}))
        return http_fault(status, self.retry_after)

    def _retry_after(self, fault: Fault) -> float:
        return fault.retry_after if fault.retry_after is not None else self.retry_after

    def for_new_object(
        self, *, agent: str, api: Api, target: str, stream: bool, bound: Sequence[Bound] = ()
    ) -> ObjectFaults:
        """Consume the faults that apply to a new response/run and say what to do."""
        result = self.for_phase(bound, target)
        for kind in ("fail", "cancel", "incomplete", "stay_queued"):
            fault = self._take(kind, agent, api)
            if fault is not None:
                result.add(fault)
                self._record(Injection(kind, fault.id, False, agent, target, detail=fault.detail()))
        if api == "assistants":
            expire = self._take("expire", agent, api)
            if expire is not None:
                result.add(expire)
                self._record(Injection("expire", expire.id, False, agent, target, detail=expire.detail()))
        container_kind = "delete_conversation" if api == "responses" else "delete_thread"
        container = self._take(container_kind, agent, api) if api != "chat" else None  # chat keeps no container
        if container is not None:
            result.add(container)
            self._record(Injection(container_kind, container.id, False, agent, target))
        self._random_object_fault(result, agent=agent, api=api, target=target, stream=stream)
        return result

    def for_phase(self, bound: Sequence[Bound], target: str) -> ObjectFaults:
        """The object faults bound to the request that creates `target` or starts its next phase."""
        result = ObjectFaults()
        for entry in bound:
            if entry.fault.kind in OBJECT_KINDS:
                result.add(entry.fault)
                entry.injection.target = target
        return result

    def _random_object_fault(self, result: ObjectFaults, *, agent: str, api: Api, target: str, stream: bool) -> None:
        applicable = ["server_error", "rate_limit_exceeded", "invalid_prompt", "cancel", "stay_queued"]
        if stream:
            applicable.append("drop_stream")
        if api == "assistants":
            applicable.append("expire")
        kind = self._roll(applicable)
        if kind is None:
            return
        mode = self.random_mode
        assert mode is not None
        events = mode.rng.randint(1, RANDOM_MAX_EVENTS)
        if result != ObjectFaults():  # an armed fault already hit this object: the random one stands down
            return
        detail: dict[str, Any] = {}
        if kind in FAILURE_CODES:
            result.add(Fault("fail", code=kind))
            detail = {"code": kind}
        elif kind == "cancel":
            result.add(Fault("cancel", after_events=events))
            detail = {"after_events": events}
        elif kind == "drop_stream":
            result.add(Fault("drop_stream", after_events=events))
            detail = {"after_events": events}
        elif kind == "stay_queued":
            result.add(Fault("stay_queued"))
        elif kind == "expire":
            result.add(Fault("expire", api="assistants"))
        self._record(Injection(kind if kind not in FAILURE_CODES else "fail", None, True, agent, target, detail=detail))

    def take_drop(self, *, agent: str | None, api: Api, target: str, bound: Sequence[Bound] = ()) -> int | None:
        """The event count after which the stream starting now must be dropped, if a drop fault applies."""
        for entry in bound:
            if entry.fault.kind == "drop_stream":
                entry.injection.target = target
                return entry.fault.after_events
        fault = self._take("drop_stream", agent, api)
        if fault is None:
            return None
        self._record(
            Injection("drop_stream", fault.id, False, agent, target, detail={"after_events": fault.after_events})
        )
        return fault.after_events

    # --- HTTP control form -------------------------------------------------------------------------------------

    def add_from_json(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Arm (or apply now) a fault described as JSON, as the control endpoint receives it."""
        data = dict(data)
        kind = data.pop("kind", None)
        target = data.pop("target_id", None) or data.pop("id", None)
        try:
            if target is not None:
                immediate: dict[str, Callable[[str], Fault | None]] = {
                    "cancel": self.cancel,
                    "expire": self.expire,
                    "delete_conversation": self.delete_conversation,
                    "delete_thread": self.delete_thread,
                    "delete_previous_response": self.delete_previous_response,
                }
                if kind not in immediate:
                    raise invalid_request(f"'target_id' is not supported for fault kind {kind!r}.", param="kind")
                immediate[kind](target)
                return {"applied": kind, "target_id": target}
            for internal in ("fired", "seen"):
                data.pop(internal, None)
            fault = self.add(Fault(kind=str(kind), **data))
        except TypeError as exc:
            raise invalid_request(f"Invalid fault: {exc}.") from None
        except ValueError as exc:
            raise invalid_request(str(exc), param="kind") from None
        return fault.to_json()

    def to_json(self) -> dict[str, Any]:
        mode = self.random_mode
        return {
            "active": [fault.to_json() for fault in self.active],
            "random": None if mode is None else {"rate": mode.rate, "seed": mode.seed, "kinds": list(mode.kinds)},
            "injected": [injection.to_json() for injection in self.injected],
        }
