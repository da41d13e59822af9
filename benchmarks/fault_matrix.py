"""The deterministic provider fault matrix (issue 12, section 1): every fault point of a turn x every fault kind.

    python -m benchmarks.fault_matrix                                   # every backend, every reference turn
    python -m benchmarks.fault_matrix --backend assistants --turn delegation --kinds http,break
    python -m benchmarks.fault_matrix --double 2000 --seed 1 --json matrix.json
    python -m benchmarks.fault_matrix --backend responses --turn delegation --recovery

Method. A *reference turn* runs against the emulator (in process, on 127.0.0.1, manual clock) without faults, and
the provider requests it makes are recorded in order: method, route, agent, and for a stream how many events it
delivered. Each request is a *fault point*, named ``METHOD route [agent] #n``: the n-th request of that route for
that agent (``[-]``: a request the emulator cannot attribute to an agent, counted among all of its route). The turn
is then replayed once per (point, kind) with exactly that one fault bound to that request (`Fault.nth`, see
`emulator/faults.py`), so a cell always hits the same request. Requests made while the bot starts (the
Assistants backend's assistant sync) are not points.

Reference turns: `plain` (an answer), `delegation` (one sub-assistant), `parallel` (three at once), `nested` (the
proxy asks the critic, who asks the planner), `follow_up` (a delegation, then a second one on the same threads;
points span both turns), each on the `responses`, the `assistants` and the `chat` backend (on `chat` a cancel is a
stream the server breaks off, `queued` a silent stream, and there are no containers, locks or polls), and on
`chains` (`responses` with `[openai] threads = "chains"`: no locks; `deleted` is the stored response a create
continues).

Fault kinds, as the real APIs produce them (`../shared/PLATFORM_FACTS.md`, OpenAI section):
* http: connection reset before the request is handled, a timeout (handled, never answered), 500, 502, 503, 429
  with Retry-After; `lock`: the exact lock error of that request; `deleted`: its conversation/thread is deleted just
  before it arrives;
* break@k: the stream breaks after k events, for every k from 0 (before the first) to the stream's length (right
  after its terminal event);
* outcome: the response/run the request creates (or continues) fails (server_error, rate_limit_exceeded,
  invalid_prompt), is cancelled by the provider, ends incomplete, stays queued, expires (Assistants);
* poll: the stream breaks after its first event(s) and the run, when the client resumes or polls, is gone (404),
  still queued, cancelled, failed (server_error, invalid_prompt), incomplete or expired.

Expected outcome of every run (the checker): each message is answered exactly once (one delivery); a transient fault
never becomes a user-visible failure (nor a sub-assistant's part replaced by an error); a permanent fault
(`invalid_prompt`) becomes the plain failure text on the proxy, an explained gap in the answer on a sub-assistant,
never the internal-error text; no response/run is left active at the provider; no request is sent that the real API
rejects (every 400 the emulator gave that no injected fault caused; a tool-output submit refused because the
injected fault itself had just ended that run is listed apart, the client could not have known); the proxy's last
request of each turn carries that turn's user message (in its conversation or its input); and (beyond the brief of
issue 12, switch it off with `CHECK_DUPLICATE_INPUT`) the last request of every agent in a turn saw each user message
once: a message seen twice means a create the provider had already taken was sent again (the SDK sends no
idempotency key), and the model answers a conversation that says everything twice. A run left waiting on a thread
that was deleted is reported apart: no client can reach it (every run path names its thread).

Double faults (`--double N`): N runs per backend, each with two (point, kind) cells of one reference turn drawn
from `--seed`; the same checker, with the expectation set by the faults that took effect.

Faults on recovery requests (`--recovery`): a single fault makes the engine send requests the reference turn never
sends (a lookup of a lost create, a resend, a poll, a retrieve before resending tool outputs, a rebuilt thread).
Every request a passing single-fault run made beyond the reference's (per method, route and agent: the ones past
the reference's count) becomes a point for a second fault (reset, 500, 429), on top of the first; same checker.

Process kills (`--kill`): one more kind per point, `kill`. The bot runs in its own process (this module with
`--worker`); the request at the point takes effect but is never answered (`hang`), the process is killed with SIGKILL
right then and started again on the same database, and must finish the turn from its records: the same checker
(replies are kept by the crash soak's console scrollback, which `find_delivery` asks, as a platform's history).

Exit status 1 when any cell fails.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import contextvars
import dataclasses
import json
import logging
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import AgentConfig, Limits, TeamConfig
from bot.engine import INTERNAL_ERROR_TEXT, Bot
from bot.types import Inbound, Progress, Reply, TurnRef
from emulator import Emulator, Fault, ManualClock, run_emulator
from emulator.faults import ENDING_KINDS, Injection

BACKENDS = ("responses", "chains", "assistants", "chat")
#: "chains": the `responses` backend with `[openai] threads = "chains"` (threads are chains of stored responses)
CHAINS = "chains"
SUBS = ("researcher", "critic", "planner")
PROXY = "proxy"
RETRY_AFTER = 0.01  # seconds announced by injected 429s (Retry-After / retry-after-ms)
DELIVERY_DEADLINE = 20.0  # seconds a message may take to be answered before the run counts it as stranded
CONVERSATION = "console:matrix:c1"
PERMANENT_CODES = frozenset({"invalid_prompt"})
CHECK_DUPLICATE_INPUT = True  # see the module docstring
SUB_ERROR = re.compile(r"ERROR: the \w+ assistant could not finish")
POINT_WIDTH = 84  # the point column of the printed matrix
_IDS = re.compile(r"\b(resp|run|call|thread|conv|msg|fc|step|asst|req)_[0-9a-f]{8,}\b")


def matrix_limits(max_depth: int = 1) -> Limits:
    """The shipped recovery logic with short clocks (the same decisions, taken in milliseconds)."""
    return Limits(
        max_parallel=4,
        max_depth=max_depth,
        retry_budget=6,
        run_timeout=15,
        turn_timeout=18,
        queued_timeout=0.3,
        lock_wait=2.0,
        backoff_base=0.01,
        backoff_max=0.05,
        poll_interval=0.02,
        stream_idle_timeout=1.0,
    )


# ---- reference turns ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnSpec:
    """A reference turn: the messages sent one after the other (each answered before the next), and the team."""

    name: str
    texts: tuple[str, ...]
    nested: bool = False  # the proxy may only ask the critic, the critic may ask the planner (depth 2)

    def team(self, backend: str, base_url: str, db_path: str) -> TeamConfig:
        subs = tuple(
            AgentConfig(
                name=name, instructions=f"You are the {name}.", model="emu-1", description=f"The {name}.",
                delegates=("planner",) if self.nested and name == "critic" else (),
            )
            for name in SUBS
        )
        proxy = AgentConfig(
            name=PROXY, instructions="You are the front desk.", model="emu-1",
            delegates=("critic",) if self.nested else (),
        )
        return TeamConfig(
            proxy=proxy,
            subs=subs,
            backend="responses" if backend == CHAINS else backend,  # type: ignore[arg-type]
            response_threads="chains" if backend == CHAINS else "conversations",
            limits=matrix_limits(max_depth=2 if self.nested else 1),
            db_path=db_path,
            base_url=base_url,
            api_key="matrix-key",
        )


TURNS = {
    spec.name: spec
    for spec in (
        TurnSpec("plain", ("hello there",)),
        TurnSpec("delegation", ("ask the critic about plan A",)),
        TurnSpec("parallel", ("ask the team about plan A",)),
        TurnSpec("nested", ("ask the critic to check plan A with the planner",), nested=True),
        TurnSpec("follow_up", ("ask the critic about plan A", "and what does the critic think of plan B")),
    )
}


# ---- fault points ------------------------------------------------------------------------------------------------

RUN_ROUTES = frozenset(
    {
        ("POST", "/v1/responses"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/threads/{thread_id}/runs"),
        ("POST", "/v1/threads/runs"),
        ("POST", "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs"),
    }
)
LOCK_ROUTES = frozenset(
    {
        ("POST", "/v1/responses"),
        ("POST", "/v1/threads/{thread_id}/runs"),
        ("POST", "/v1/threads/{thread_id}/messages"),
    }
)
SUBMIT_ROUTE = "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs"


@dataclass(frozen=True)
class Point:
    """One provider request of a reference turn."""

    method: str
    template: str
    agent: str | None
    nth: int  # among the requests of (method, template, agent); of (method, template) when agent is None
    turn: int  # the message whose turn made it (0-based)
    events: int | None  # stream events the reference stream delivered; None: not a stream
    waits_for_tools: bool = False  # (runs) the run stopped for tool outputs after this request
    continues: bool = False  # (responses) it named a stored response as `previous_response_id`

    @property
    def key(self) -> str:
        return f"{self.method} {self.template} [{self.agent or '-'}] #{self.nth}"

    @property
    def slug(self) -> str:
        """The key without spaces or placeholders, for test ids: ``POST:threads/runs/submit_tool_outputs[proxy]1``."""
        route = re.sub(r"/\{\w+\}", "", self.template.removeprefix("/v1/"))
        return f"{self.method}:{route}[{self.agent or '-'}]{self.nth}"

    @property
    def streams(self) -> bool:
        return self.events is not None

    @property
    def runs_object(self) -> bool:
        return (self.method, self.template) in RUN_ROUTES

    @property
    def can_lock(self) -> bool:
        return (self.method, self.template) in LOCK_ROUTES

    @property
    def has_container(self) -> bool:
        route = (self.method, self.template)
        named = "{conversation_id}" in self.template or "{thread_id}" in self.template
        return named or route == ("POST", "/v1/responses")

    def selectors(self) -> dict[str, Any]:
        return {"method": self.method, "template": self.template, "agent": self.agent, "nth": self.nth}

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, **dataclasses.asdict(self)}


@dataclass
class Reference:
    backend: str
    turn: TurnSpec
    points: list[Point]
    replies: list[str]
    seconds: float


def points_of(entries: Sequence[Any], boundaries: Sequence[int], continuing: Iterable[str] = ()) -> list[Point]:
    """Name every request of a recorded window, in the order the requests arrived; `continuing`: the responses
    created with a `previous_response_id`."""
    continuing = set(continuing)
    ordered = sorted(entries, key=lambda entry: entry.tick_start)
    counts: Counter[tuple[str, str, str | None]] = Counter()
    points = []
    for index, entry in enumerate(ordered):
        key = (entry.method, entry.template, entry.agent)
        counts[key] += 1
        nth = counts[key] if entry.agent is not None else sum(
            1 for other in ordered[: index + 1] if (other.method, other.template) == (entry.method, entry.template)
        )
        waits = entry.object_id is not None and any(
            later.template == SUBMIT_ROUTE and later.object_id == entry.object_id for later in ordered[index + 1 :]
        )
        turn = max(0, bisect.bisect_right(boundaries, entry.tick_start) - 1)
        continues = entry.object_id in continuing
        points.append(Point(entry.method, entry.template, entry.agent, nth, turn, entry.events, waits, continues))
    return points


# ---- fault kinds -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One way a point can fail: the emulator faults (Fault fields, without the request selectors) it takes."""

    name: str
    family: str  # http | lock | deleted | break | outcome | poll
    faults: tuple[dict[str, Any], ...]

    @property
    def permanent(self) -> bool:
        return any(fault.get("code") in PERMANENT_CODES for fault in self.faults)


FAMILIES = ("http", "lock", "deleted", "break", "outcome", "poll", "kill")
HTTP_KINDS = (
    Kind("reset", "http", ({"kind": "reset"},)),
    Kind("timeout", "http", ({"kind": "timeout"},)),
    Kind("http_500", "http", ({"kind": "http_error", "status": 500},)),
    Kind("http_502", "http", ({"kind": "http_error", "status": 502},)),
    Kind("http_503", "http", ({"kind": "http_error", "status": 503},)),
    Kind("http_429", "http", ({"kind": "http_error", "status": 429, "retry_after": RETRY_AFTER},)),
)
FAIL_CODES = ("server_error", "rate_limit_exceeded", "invalid_prompt")
POLL_FAIL_CODES = ("server_error", "invalid_prompt")


KILL = Kind("kill", "kill", ({"kind": "hang"},))  # run by `observe_killed`, only with --kill


def kinds_for(point: Point, backend: str, kill: bool = False) -> list[Kind]:
    """Every kind that can happen at this point, in table order."""
    kinds = [*HTTP_KINDS, KILL] if kill else list(HTTP_KINDS)
    if backend == CHAINS:
        # No lock: a chained create meets none (its previous response has always ended). What it builds on is the
        # response it continues, deleted just before it arrives (as that response's 30 days of storage ending).
        if point.continues:
            kinds.append(Kind("deleted", "deleted", ({"kind": "delete_previous_response"},)))
    elif point.can_lock:
        kinds.append(Kind("lock", "lock", ({"kind": "lock"},)))
    if point.has_container and backend != CHAINS:
        deletion = "delete_conversation" if backend == "responses" else "delete_thread"
        kinds.append(Kind("deleted", "deleted", ({"kind": deletion},)))
    if point.events is not None:
        kinds += [
            Kind(f"break@{k}", "break", ({"kind": "drop_stream", "after_events": k},)) for k in range(point.events + 1)
        ]
    if point.runs_object:
        kinds += _outcome_kinds(point, backend)
        if point.streams and backend != "chat":  # a chat completion is never polled: its request is sent again
            kinds += _poll_kinds(backend)
    return kinds


def _outcome_kinds(point: Point, backend: str) -> list[Kind]:
    kinds = [Kind(f"failed:{code}", "outcome", ({"kind": "fail", "code": code},)) for code in FAIL_CODES]
    kinds += [
        Kind("cancelled", "outcome", ({"kind": "cancel", "after_events": 2},)),
        Kind("incomplete", "outcome", ({"kind": "incomplete"},)),
        Kind("queued", "outcome", ({"kind": "stay_queued"},)),
    ]
    if backend == "assistants":  # expires while it waits for tool outputs, else while it works
        expire: dict[str, Any] = {"kind": "expire"} if point.waits_for_tools else {"kind": "expire", "after_events": 2}
        kinds.append(Kind("expired", "outcome", (expire,)))
    return kinds


def _poll_kinds(backend: str) -> list[Kind]:
    drop = {"kind": "drop_stream", "after_events": 1}
    kinds = [
        Kind("poll:gone", "poll", ({"kind": "gone", "after_events": 1}, drop)),
        Kind("poll:queued", "poll", ({"kind": "stay_queued"}, {"kind": "drop_stream", "after_events": 2})),
        Kind("poll:cancelled", "poll", ({"kind": "cancel", "after_events": 1}, drop)),
    ]
    kinds += [
        Kind(f"poll:failed:{code}", "poll", ({"kind": "fail", "code": code, "after_events": 1}, drop))
        for code in POLL_FAIL_CODES
    ]
    kinds.append(Kind("poll:incomplete", "poll", ({"kind": "incomplete", "after_events": 1}, drop)))
    if backend == "assistants":
        kinds.append(Kind("poll:expired", "poll", ({"kind": "expire", "after_events": 1}, drop)))
    return kinds


def select_kinds(kinds: Iterable[Kind], wanted: Sequence[str] | None) -> list[Kind]:
    """Kinds named in `wanted` (names, families, or ``break@first``/``break@last``); None keeps all."""
    kinds = list(kinds)
    if not wanted:
        return kinds
    breaks = [kind for kind in kinds if kind.family == "break"]
    chosen = []
    for kind in kinds:
        aliases = {kind.name, kind.family}
        if breaks and kind is breaks[0]:
            aliases.add("break@first")
        if breaks and kind is breaks[-1]:
            aliases.add("break@last")
        if len(breaks) > 2 and kind is breaks[len(breaks) // 2]:
            aliases.add("break@mid")
        if aliases & set(wanted):
            chosen.append(kind)
    return chosen


# ---- one run -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """What one run injects: one (point, kind) pair, or two for a double fault."""

    backend: str
    turn: TurnSpec
    hits: tuple[tuple[Point, Kind], ...]

    @property
    def label(self) -> str:
        return " + ".join(f"{point.key} x {kind.name}" for point, kind in self.hits)

    @property
    def slug(self) -> str:
        """``backend/turn/point/kind`` (``+`` between the two of a double fault): the CI test's id."""
        hits = "+".join(f"{point.slug}/{kind.name}" for point, kind in self.hits)
        return f"{self.backend}/{self.turn.name}/{hits}"

    def faults(self) -> list[Fault]:
        return [Fault(**{**spec, **point.selectors()}) for point, kind in self.hits for spec in kind.faults]


class Surface:
    """A console-like surface that keeps every delivery (and finds them again, as a platform would)."""

    platform = "console"

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, Reply]] = []
        self._changed = asyncio.Condition()

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        return None

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        async with self._changed:
            self.deliveries.append((turn.id, reply))
            self._changed.notify_all()
        return f"matrix:{len(self.deliveries)}"

    async def find_delivery(self, turn: TurnRef) -> str | None:
        found = [index for index, (turn_id, _) in enumerate(self.deliveries) if turn_id == turn.id]
        return f"matrix:{found[0] + 1}" if found else None

    async def wait_for(self, count: int, within: float) -> bool:
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: len(self.deliveries) >= count)
        except TimeoutError:
            return False
        return True


_case_lines: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("fault_matrix_case", default=None)


class EngineLog(logging.Handler):
    """Keeps the engine's warnings and errors with the run that caused them (runs share a process and a loop: the
    engine's tasks inherit the run's context)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        lines = _case_lines.get()
        if lines is None:
            return
        line = f"{record.levelname.lower()} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            line += f" [{describe_exception(record.exc_info[1])}]"
        lines.append(line)


def describe_exception(exc: BaseException) -> str:
    """The exception type and the innermost frame of our own code it went through."""
    frame = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if "/bot/" in filename or "/storage/" in filename:
            frame = f"{Path(filename).name}:{tb.tb_lineno} in {tb.tb_frame.f_code.co_name}"
        tb = tb.tb_next
    return f"{type(exc).__name__}: {str(exc)[:160]}" + (f" @ {frame}" if frame else "")


@dataclass
class Observation:
    """What one run did, as the surface, the emulator and the engine's log saw it."""

    replies: list[tuple[str, str, str]] = field(default_factory=list)  # (turn id, kind, text), in delivery order
    stranded: int | None = None  # the message that got no reply in time
    failures: list[str] = field(default_factory=list)  # what went wrong with the run itself (a process start)
    boundaries: list[int] = field(default_factory=list)  # emulator tick at which each message was sent
    window: list[Any] = field(default_factory=list)  # the log entries of the turn(s)
    continuing: set[str] = field(default_factory=set)  # responses created with a `previous_response_id`
    live: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)  # live runs on a deleted thread
    rejected: list[Any] = field(default_factory=list)
    injected: list[Injection] = field(default_factory=list)
    proxy_inputs: list[list[str] | None] = field(default_factory=list)  # per message: what the last proxy run saw
    duplicate_inputs: list[tuple[int, str, str]] = field(default_factory=list)  # (message, agent, text seen twice)
    duplicate_outputs: list[str] = field(default_factory=list)  # call ids answered twice in one conversation
    ended_by_fault: set[str] = field(default_factory=set)  # responses/runs a fault ended (none end so unprovoked)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (created tick, agent) of runs failed permanently
    engine_log: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def observe(spec: TurnSpec, backend: str, faults: Sequence[Fault]) -> Observation:
    """Run the turn's messages on a fresh emulator and bot with `faults` armed once the bot has started."""
    obs = Observation()
    lines: list[str] = []
    token = _case_lines.set(lines)
    started = time.perf_counter()
    try:
        async with run_emulator(clock=ManualClock(), retry_after=RETRY_AFTER) as emu:
            with tempfile.TemporaryDirectory(prefix="fm-") as folder:
                await _drive(spec, backend, faults, emu, str(Path(folder) / "db"), obs)
            _collect(emu, obs)
    finally:
        _case_lines.reset(token)
    obs.engine_log = lines
    obs.seconds = time.perf_counter() - started
    return obs


async def _drive(
    spec: TurnSpec, backend: str, faults: Sequence[Fault], emu: Emulator, db_path: str, obs: Observation
) -> None:
    bot = Bot.from_config(spec.team(backend, emu.base_url, db_path))
    surface = Surface()
    bot.add_surface(surface)
    await bot.start()
    try:
        start = len(emu.log)
        for fault in faults:
            emu.faults.add(fault)
        for index, text in enumerate(spec.texts):
            obs.boundaries.append(emu.tick())
            await bot.accept(Inbound("console", f"matrix-{index}", CONVERSATION, "console:matrix", "u1", text))
            if not await surface.wait_for(index + 1, DELIVERY_DEADLINE):
                obs.stranded = index
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DELIVERY_DEADLINE):
                    await bot.idle()
    finally:
        await bot.stop(grace=2.0)
    obs.window = list(emu.log[start:])  # and whatever the stop still sent
    obs.replies = [(turn_id, reply.kind, reply.text) for turn_id, reply in surface.deliveries]


def _collect(emu: Emulator, obs: Observation) -> None:
    records: list[Any] = [*emu.responses.values(), *emu.runs.values(), *emu.chat_completions.values()]
    by_id = {record.id: record for record in records}
    obs.continuing = {record.id for record in emu.responses.values() if record.previous_response_id}
    for key in emu.live_objects():
        record = by_id[key]
        thread = emu.threads.get(getattr(record, "thread_id", ""))
        gone = thread is not None and thread.deleted
        (obs.unreachable if gone else obs.live).append(f"{key} ({record.agent}, {record.status})")
    obs.injected = list(emu.faults.injected)
    known = _known_to_client(emu)
    # The scripts never fail, cancel, cut short or expire on their own: any such ending is an injected fault's.
    for record in records:
        error = getattr(record, "error", None) or getattr(record, "last_error", None) or {}
        if record.status in ("failed", "expired", "incomplete") or record.cancelled_by == "provider":
            obs.ended_by_fault.add(record.id)
        if record.status == "failed" and error.get("code") in PERMANENT_CODES and record.id in known:
            obs.refused.append((record.created_tick, record.agent))
    first_tick = obs.boundaries[0] if obs.boundaries else 0
    obs.rejected = [entry for entry in emu.rejections() if entry.tick_start > first_tick]
    edges = [*obs.boundaries, float("inf")]
    for index in range(len(obs.boundaries)):
        last: dict[str, Any] = {}  # agent -> its last response/run of this turn
        for record in sorted(records, key=lambda record: record.created_tick):
            if edges[index] < record.created_tick < edges[index + 1]:
                last[record.agent] = record
        obs.proxy_inputs.append(list(last[PROXY].user_texts) if PROXY in last else None)
        for agent, record in last.items():
            obs.duplicate_inputs += [
                (index, agent, text) for text, seen in Counter(record.user_texts).items() if seen > 1
            ]
    # The emulator takes a second output for a call (what the real API does there is not documented), so a resent
    # submit shows only here.
    for conversation in emu.conversations.values():
        outputs = Counter(i.get("call_id") for i in conversation.items if i.get("type") == "function_call_output")
        obs.duplicate_outputs += [str(call_id) for call_id, seen in outputs.items() if seen > 1]


# ---- a process kill at a point (--kill) ---------------------------------------------------------------------------


class BotProcess:
    """The bot in its own process (`--worker`), started again after each SIGKILL on the same database."""

    def __init__(self, args: list[str], log_lines: list[str]) -> None:
        self.args = args
        self.log_lines = log_lines  # its warnings and errors, over every life
        self.proc: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []

    async def start(self, within: float = DELIVERY_DEADLINE) -> None:
        self._ready = asyncio.Event()
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(self.proc.stdout, ready=True)),
            asyncio.create_task(self._read(self.proc.stderr, ready=False)),
        ]
        ended = asyncio.ensure_future(self.proc.wait())
        try:
            async with asyncio.timeout(within):
                await asyncio.wait([ended, asyncio.ensure_future(self._ready.wait())], return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        if not self._ready.is_set():
            await self.kill()
            tail = " | ".join(self.log_lines[-3:])
            raise RuntimeError(f"the bot process did not start (exit status {self.proc.returncode}): {tail}")

    async def _read(self, stream: asyncio.StreamReader, ready: bool) -> None:
        while line := (await stream.readline()).decode().rstrip():
            if ready and line == "ready":
                self._ready.set()
            elif not ready:
                self.log_lines.append(line)

    async def send(self, event_id: str, text: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"event_id": event_id, "text": text}) + "\n").encode())
        await self.proc.stdin.drain()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()  # SIGKILL
            await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def stop(self, within: float = 10.0) -> None:
        """End of input: the worker lets its work finish and stops (killed if it does not within `within` s)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            async with asyncio.timeout(within):
                await self.proc.wait()
        except TimeoutError:
            self.log_lines.append("error fault_matrix: the worker did not stop; killed")
        await self.kill()


async def observe_killed(spec: TurnSpec, backend: str, faults: Sequence[Fault]) -> Observation:
    """Like `observe`, with the bot in its own process: killed when a `hang` fault holds its request, restarted."""
    from benchmarks.crash_soak import ConsoleScrollback, serve_console

    obs = Observation()
    started = time.perf_counter()
    async with run_emulator(clock=ManualClock(), retry_after=RETRY_AFTER) as emu:

        class Scrollback(ConsoleScrollback):
            async def deliver(self, request: Any) -> Any:
                answer = await super().deliver(request)
                emu.notify()  # wakes `emu.wait_until` below
                return answer

        scrollback = Scrollback()
        async with serve_console(scrollback) as console_url:
            with tempfile.TemporaryDirectory(prefix="fm-") as folder:
                args = [sys.executable, "-m", "benchmarks.fault_matrix", "--worker", spec.name, backend,
                        emu.base_url, str(Path(folder) / "db"), console_url]
                bot = BotProcess(args, obs.engine_log)
                try:
                    await bot.start()
                    for fault in faults:
                        emu.faults.add(fault)
                    await _send_all(spec, emu, bot, scrollback, obs)
                except RuntimeError as exc:  # a start or restart that failed: the turn is stranded
                    obs.failures.append(str(exc))
                finally:
                    await bot.stop()
        obs.replies = [(posted.turn_id, posted.kind, posted.text) for posted in scrollback.posted]
        _collect(emu, obs)
    obs.engine_log = [line for line in obs.engine_log if line.startswith(("WARNING", "ERROR", "CRITICAL", "error"))]
    obs.seconds = time.perf_counter() - started
    return obs


async def _send_all(spec: TurnSpec, emu: Emulator, bot: BotProcess, scrollback: Any, obs: Observation) -> None:
    def hung() -> bool:
        return any(injection.kind == "hang" for injection in emu.faults.injected)

    killed = False
    for index, text in enumerate(spec.texts):
        obs.boundaries.append(emu.tick())
        await bot.send(f"matrix-{index}", text)

        def answered(count: int = index + 1) -> bool:
            return len(scrollback.posted) >= count

        try:
            await emu.wait_until(lambda done=killed: answered() or (hung() and not done), DELIVERY_DEADLINE)
            if hung() and not killed and not answered():
                await bot.kill()
                killed = True
                await bot.start()
                await emu.wait_until(answered, DELIVERY_DEADLINE)
        except TimeoutError:
            obs.stranded = index
            return


async def worker(turn: str, backend: str, base_url: str, db_path: str, console_url: str) -> None:
    """The bot process of `observe_killed`: messages as JSON lines on stdin, replies to the parent's scrollback."""
    import aiohttp

    from benchmarks.crash_soak_worker import ConsoleWebhook

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    bot = Bot.from_config(TURNS[turn].team(backend, base_url, db_path))
    async with aiohttp.ClientSession() as session:
        bot.add_surface(ConsoleWebhook(console_url, session))
        await bot.start()
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            data = json.loads(line)
            await bot.accept(Inbound("console", data["event_id"], CONVERSATION, "console:matrix", "u1", data["text"]))
        await bot.idle()
        await bot.stop()


def _known_to_client(emu: Emulator) -> set[str]:
    """Responses/runs whose id the client learnt: its create answered (a stream: at least one event), or a later
    request named it. A create that timed out or broke before its first event leaves an orphan nobody knows of."""
    known: set[str] = set()
    for entry in emu.log:
        if entry.object_id is None:
            continue
        creating = entry.method == "POST" and (entry.method, entry.template) in RUN_ROUTES
        lost = entry.fault in ("timeout", "hang", "reset") or (entry.fault == "drop_stream" and entry.events == 0)
        if not creating or entry.template == SUBMIT_ROUTE or not lost:
            known.add(entry.object_id)
    return known


# ---- the checker -------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    cell: Cell
    problems: list[str]
    excused: list[str]  # 400s the client could not have avoided, runs no client can reach (module docstring)
    replies: list[tuple[str, str]]
    took_effect: list[str]
    engine_log: list[str]
    seconds: float
    differs: bool = False  # an answer that is not the reference answer (informative only)
    requests: list[Point] = field(default_factory=list)  # every provider request of the run, named as points

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.cell.backend,
            "turn": self.cell.turn.name,
            "cell": self.cell.label,
            "id": self.cell.slug,
            "points": [point.key for point, _ in self.cell.hits],
            "kinds": [kind.name for _, kind in self.cell.hits],
            "passed": self.passed,
            "problems": self.problems,
            "excused_rejections": self.excused,
            "replies": [{"kind": kind, "text": text} for kind, text in self.replies],
            "faults_that_took_effect": self.took_effect,
            "engine_log": self.engine_log[:20],
            "differs_from_reference": self.differs,
            "seconds": round(self.seconds, 3),
        }


def judge(cell: Cell, obs: Observation, reference: Reference | None = None) -> Verdict:
    spec = cell.turn
    problems: list[str] = []
    permanent = _permanent_hits(obs)
    replies = obs.replies
    problems += obs.failures
    if obs.stranded is not None:
        problems.append(f"message {obs.stranded + 1}: no reply within {DELIVERY_DEADLINE:g} s")
    if len(replies) > len(spec.texts) or len({turn_id for turn_id, _, _ in replies}) != len(replies):
        problems.append(f"{len(replies)} deliveries for {len(spec.texts)} messages (a reply delivered twice)")
    for index, text in enumerate(spec.texts):
        if index < len(replies):
            problems += _judge_reply(index, replies[index][1], replies[index][2], permanent.get(index, set()))
        seen = obs.proxy_inputs[index] if index < len(obs.proxy_inputs) else None
        if seen is not None and text not in seen:
            problems.append(f"message {index + 1}: the proxy's last request lacks this turn's user message")
    if CHECK_DUPLICATE_INPUT:
        problems += [
            f"message {index + 1}: the {agent}'s last request saw a user message twice (a create the provider had"
            f" already taken, sent again): {_short(text, 60)}"
            for index, agent, text in obs.duplicate_inputs
        ]
        problems += [
            f"a tool output sent twice for {call_id} (a submit the provider had already taken, sent again)"
            for call_id in obs.duplicate_outputs
        ]
    problems += [f"left active at the provider: {item}" for item in obs.live]
    excused = [f"left waiting on a deleted thread: {item}" for item in obs.unreachable]
    for entry in obs.rejected:
        line = f"rejected by the API: {entry.method} {entry.template}: {entry.error}"
        if entry.object_id in obs.ended_by_fault and "do not accept tool outputs" in (entry.error or ""):
            excused.append(line)
        else:
            problems.append(line)
    differs = reference is not None and [text for _, _, text in replies] != reference.replies
    return Verdict(
        cell=cell,
        problems=problems,
        excused=excused,
        replies=[(kind, text) for _, kind, text in replies],
        took_effect=[_injection_label(injection) for injection in obs.injected],
        engine_log=obs.engine_log,
        seconds=obs.seconds,
        differs=differs,
        requests=points_of(obs.window, obs.boundaries, obs.continuing) if obs.boundaries else [],
    )


def _permanent_hits(obs: Observation) -> dict[int, set[str]]:
    """Per message: "proxy" and/or "sub" when a run of that turn failed permanently (whatever fault did it)."""
    hits: dict[int, set[str]] = defaultdict(set)
    for tick, agent in obs.refused:
        turn = max(0, bisect.bisect_right(obs.boundaries, tick) - 1)
        hits[turn].add("proxy" if agent == PROXY else "sub")
    return hits


def _judge_reply(index: int, kind: str, text: str, permanent: set[str]) -> list[str]:
    where = f"message {index + 1}"
    if text == INTERNAL_ERROR_TEXT:
        return [f"{where}: the internal-error text"]
    if "proxy" in permanent:
        return [] if kind == "failure" else [f"{where}: an answer where the plain failure was due: {_short(text)}"]
    if kind != "answer":
        return [f"{where}: a {kind} on a transient fault: {_short(text)}"]
    lost = SUB_ERROR.search(text)
    if lost and "sub" not in permanent:
        return [f"{where}: a sub-assistant's part replaced by an error on a transient fault: {_short(text)}"]
    return []


def _short(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _injection_label(injection: Injection) -> str:
    detail = ",".join(f"{key}={value}" for key, value in injection.detail.items() if key not in ("template", "nth"))
    where = f"{injection.method} {injection.path}" if injection.method else (injection.target or "")
    applied = "" if injection.target or injection.kind not in ENDING_KINDS | {"stay_queued"} else " (no object)"
    return f"{injection.kind}({detail}) at {where} [{injection.agent or '-'}]{applied}"


def failure_class(problem: str, width: int = 110) -> str:
    """A problem with its ids and message number normalised (and long texts cut), to group runs failing alike."""
    problem = _IDS.sub(lambda match: f"{match.group(1)}_*", problem)
    return re.sub(r"^message \d+", "message N", problem)[:width]


# ---- the matrix --------------------------------------------------------------------------------------------------


async def record_reference(backend: str, spec: TurnSpec) -> Reference:
    """Run the turn without faults; its requests become the fault points (checked to be reproducible)."""
    first = await observe(spec, backend, [])
    second = await observe(spec, backend, [])
    points = points_of(first.window, first.boundaries, first.continuing)
    again = points_of(second.window, second.boundaries, second.continuing)
    if [(p.key, p.events) for p in points] != [(p.key, p.events) for p in again]:
        print(f"warning: reference {backend}/{spec.name} is not reproducible: {[p.key for p in points]} vs "
              f"{[p.key for p in again]}", file=sys.stderr)
    problems = judge(Cell(backend, spec, ()), first).problems
    if problems:
        raise RuntimeError(f"reference turn {backend}/{spec.name} fails without any fault: {problems}")
    return Reference(backend, spec, points, [text for _, _, text in first.replies], first.seconds)


def single_cells(reference: Reference, kinds: Sequence[str] | None = None, kill: bool = False) -> list[Cell]:
    return [
        Cell(reference.backend, reference.turn, ((point, kind),))
        for point in reference.points
        for kind in select_kinds(kinds_for(point, reference.backend, kill), kinds)
    ]


def double_cells(references: Sequence[Reference], count: int, seed: int) -> list[Cell]:
    """`count` runs with two distinct (point, kind) cells of one reference turn each, drawn from `seed`."""
    rng = random.Random(seed)
    pools = [(reference, single_cells(reference)) for reference in references]
    cells = []
    for _ in range(count):
        reference, pool = rng.choice(pools)
        first, second = rng.sample(pool, 2)
        cells.append(Cell(reference.backend, reference.turn, first.hits + second.hits))
    return cells


#: the second fault of a recovery cell: the recovery's own request failing once, the way any request can
RECOVERY_KINDS = tuple(kind for kind in HTTP_KINDS if kind.name in ("reset", "http_500", "http_429"))


def recovery_points(reference: Reference, verdict: Verdict) -> list[Point]:
    """The requests a faulted run made beyond the reference turn's: per (method, route, agent), those past the
    reference's count (a lookup of a lost create, a thread rebuilt, a resent create, a poll...)."""
    usual = Counter((p.method, p.template, p.agent) for p in reference.points)
    seen: Counter[tuple[str, str, str | None]] = Counter()
    extra = []
    for point in verdict.requests:
        key = (point.method, point.template, point.agent)
        seen[key] += 1
        if seen[key] > usual[key]:
            extra.append(point)
    return extra


def recovery_cells(reference: Reference, verdicts: Sequence[Verdict],
                   kinds: Sequence[Kind] = RECOVERY_KINDS) -> list[Cell]:
    """Faults enumerated at the points a recovery adds (`--recovery`): for every single-fault run of `reference`
    that passed, each request it made beyond the reference turn's, times each of `kinds`, on top of the first fault.
    A recovery step failing transiently must be recovered from like any other request."""
    cells = []
    for verdict in verdicts:
        if not verdict.passed or len(verdict.cell.hits) != 1 or verdict.cell.turn.name != reference.turn.name:
            continue
        if verdict.cell.backend != reference.backend or any(kind is KILL for _, kind in verdict.cell.hits):
            continue
        for point in recovery_points(reference, verdict):
            cells += [Cell(reference.backend, reference.turn, (*verdict.cell.hits, (point, kind))) for kind in kinds]
    return cells


async def run_cells(
    cells: Sequence[Cell],
    references: dict[tuple[str, str], Reference],
    concurrency: int = 2,
    progress: bool = False,
) -> list[Verdict]:
    slots = asyncio.Semaphore(concurrency)
    done = 0

    async def one(cell: Cell) -> Verdict:
        nonlocal done
        killing = any(kind is KILL for _, kind in cell.hits)
        async with slots:
            obs = await (observe_killed if killing else observe)(cell.turn, cell.backend, cell.faults())
        done += 1
        if progress and done % 100 == 0:
            print(f"  ... {done}/{len(cells)} runs", file=sys.stderr, flush=True)
        return judge(cell, obs, references.get((cell.backend, cell.turn.name)))

    return list(await asyncio.gather(*(one(cell) for cell in cells)))


# ---- the report --------------------------------------------------------------------------------------------------


def matrix_lines(reference: Reference, verdicts: Sequence[Verdict]) -> list[str]:
    """The matrix of one reference turn: a row per point, passed/run per kind family, the failing kinds named."""
    by_point: dict[str, list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        by_point[verdict.cell.hits[0][0].key].append(verdict)
    failed = sum(not verdict.passed for verdict in verdicts)
    title = f"{reference.backend} / {reference.turn.name}"
    out = [
        f"{title}: {len(reference.points)} points, {len(verdicts)} runs, {len(verdicts) - failed} passed, "
        f"{failed} failed",
        f"  {'#':>2}  {'point':<{POINT_WIDTH}} " + " ".join(f"{family:>8}" for family in FAMILIES) + "  failing kinds",
    ]
    for index, point in enumerate(reference.points, 1):
        mine = by_point.get(point.key, [])
        cells = []
        for family in FAMILIES:
            fam = [v for v in mine if v.cell.hits[0][1].family == family]
            cells.append(f"{sum(v.passed for v in fam)}/{len(fam)}" if fam else "-")
        failing = [v.cell.hits[0][1].name for v in mine if not v.passed]
        label = f"{point.key} (turn {point.turn + 1})" if len(reference.turn.texts) > 1 else point.key
        columns = " ".join(f"{c:>8}" for c in cells)
        out.append(f"  {index:>2}  {label:<{POINT_WIDTH}} {columns}  {_compact(failing)}")
    return out


def _compact(names: Sequence[str]) -> str:
    """break@0, break@1, ..., break@9 -> break@0-9."""
    breaks = sorted(int(name.split("@")[1]) for name in names if name.startswith("break@"))
    others = [name for name in names if not name.startswith("break@")]
    ranges: list[str] = []
    for k in breaks:
        if ranges and ranges[-1][1] == k - 1:
            ranges[-1] = (ranges[-1][0], k)  # type: ignore[assignment]
        else:
            ranges.append((k, k))  # type: ignore[arg-type]
    spans = [f"break@{a}" if a == b else f"break@{a}-{b}" for a, b in ranges]  # type: ignore[misc]
    return ", ".join([*spans, *others])


def failure_lines(verdicts: Sequence[Verdict], examples: int = 3) -> list[str]:
    """Failing runs grouped by how they failed, with example cells and what the engine logged."""
    groups: dict[str, list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        for problem in dict.fromkeys(failure_class(problem) for problem in verdict.problems):
            groups[problem].append(verdict)
    out = []
    for problem, members in sorted(groups.items(), key=lambda item: -len(item[1])):
        out.append(f"  [{len(members)} runs] {problem}")
        for verdict in members[:examples]:
            out.append(f"      {verdict.cell.backend}/{verdict.cell.turn.name}: {verdict.cell.label}")
            detail = next((p for p in verdict.problems if failure_class(p) == problem), "")
            out.append(f"        -> {_short(detail, 200)}")
            errors = [line for line in verdict.engine_log if line.startswith("error") or "failed:" in line]
            if errors:
                out.append(f"        engine: {_short(errors[0], 240)}")
    return out


def totals_lines(label: str, verdicts: Sequence[Verdict]) -> list[str]:
    failed = [verdict for verdict in verdicts if not verdict.passed]
    by_kind: Counter[str] = Counter()
    for verdict in failed:
        for _, kind in verdict.cell.hits:
            by_kind[kind.family] += 1
    excused = sum(len(verdict.excused) for verdict in verdicts)
    differs = sum(verdict.differs for verdict in verdicts)
    return [
        f"{label}: {len(verdicts)} runs, {len(verdicts) - len(failed)} passed, {len(failed)} failed"
        + (f" (failing runs by fault family: {', '.join(f'{k} {v}' for k, v in sorted(by_kind.items()))})"
           if failed else ""),
        f"  answers that differ from the reference answer (informative): {differs}; excused (a submit refused"
        f" because the fault had just ended that run; a run left on a deleted thread): {excused}",
    ]


# ---- command line ------------------------------------------------------------------------------------------------


@dataclass
class Options:
    backends: tuple[str, ...] = BACKENDS
    turns: tuple[str, ...] = tuple(TURNS)
    kinds: tuple[str, ...] | None = None
    double: int = 0
    seed: int = 1
    concurrency: int = 2
    json_path: str | None = None
    kill: bool = False
    recovery: bool = False


async def run_matrix(options: Options) -> tuple[list[str], dict[str, Any], bool]:
    started = time.perf_counter()
    references: dict[tuple[str, str], Reference] = {}
    for backend in options.backends:
        for name in options.turns:
            references[(backend, name)] = await record_reference(backend, TURNS[name])
    lines: list[str] = []
    data: dict[str, Any] = {"options": dataclasses.asdict(options), "references": [], "single": [], "double": []}
    all_ok = True
    for backend in options.backends:
        mine = [references[(backend, name)] for name in options.turns]
        singles = [cell for reference in mine for cell in single_cells(reference, options.kinds, options.kill)]
        print(f"{backend}: {len(singles)} single-fault runs", file=sys.stderr, flush=True)
        verdicts = await run_cells(singles, references, options.concurrency, progress=True)
        lines.append(f"=== {backend}: single faults ===")
        for reference in mine:
            lines += matrix_lines(reference, [v for v in verdicts if v.cell.turn.name == reference.turn.name])
            lines.append("")
            data["references"].append({
                "backend": backend, "turn": reference.turn.name, "texts": list(reference.turn.texts),
                "points": [point.to_json() for point in reference.points], "replies": reference.replies,
            })
        lines += totals_lines(f"{backend} single faults", verdicts)
        lines += failure_lines([v for v in verdicts if not v.passed])
        data["single"] += [verdict.to_json() for verdict in verdicts]
        all_ok &= all(verdict.passed for verdict in verdicts)
        if options.recovery:
            second = [cell for reference in mine for cell in recovery_cells(reference, verdicts)]
            print(f"{backend}: {len(second)} recovery-fault runs", file=sys.stderr, flush=True)
            recovery_verdicts = await run_cells(second, references, options.concurrency, progress=True)
            lines.append(f"=== {backend}: a second fault on each request a recovery added ===")
            lines += totals_lines(f"{backend} recovery faults", recovery_verdicts)
            lines += failure_lines([v for v in recovery_verdicts if not v.passed])
            data.setdefault("recovery", []).extend(verdict.to_json() for verdict in recovery_verdicts)
            all_ok &= all(verdict.passed for verdict in recovery_verdicts)
        if options.double:
            doubles = double_cells(mine, options.double, options.seed)
            print(f"{backend}: {len(doubles)} double-fault runs", file=sys.stderr, flush=True)
            double_verdicts = await run_cells(doubles, references, options.concurrency, progress=True)
            lines.append(f"=== {backend}: double faults (seed {options.seed}) ===")
            lines += totals_lines(f"{backend} double faults", double_verdicts)
            lines += failure_lines([v for v in double_verdicts if not v.passed])
            data["double"] += [verdict.to_json() for verdict in double_verdicts]
            all_ok &= all(verdict.passed for verdict in double_verdicts)
        lines.append("")
    seconds = time.perf_counter() - started
    lines.append(f"wall time {seconds:.1f} s")
    data["seconds"] = round(seconds, 1)
    return lines, data, all_ok


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fault_matrix", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=[*BACKENDS, "both"], default="both")
    parser.add_argument("--turn", default="all", help=f"comma-separated: {', '.join(TURNS)} (default all)")
    parser.add_argument(
        "--kinds", default=None,
        help="comma-separated kind names or families (http, lock, deleted, break, outcome, poll; "
             "break@first, break@mid, break@last); default all",
    )
    parser.add_argument("--double", type=int, default=0, metavar="N", help="N double-fault runs per backend")
    parser.add_argument("--seed", type=int, default=1, help="seed of the double-fault sample")
    parser.add_argument("--concurrency", type=int, default=2, help="runs in flight at once (default 2)")
    parser.add_argument("--json", dest="json_path", default=None, metavar="FILE", help="write every run here")
    parser.add_argument("--kill", action="store_true", help="also kill the bot process (SIGKILL) at every point")
    parser.add_argument("--recovery", action="store_true",
                        help="then a second fault (reset, 500, 429) on every request each single-fault run's "
                             "recovery added")
    args = parser.parse_args(argv)
    turns = tuple(TURNS) if args.turn == "all" else tuple(name.strip() for name in args.turn.split(","))
    unknown = [name for name in turns if name not in TURNS]
    if unknown:
        parser.error(f"unknown turn(s): {', '.join(unknown)}")
    return Options(
        backends=BACKENDS if args.backend == "both" else (args.backend,),
        turns=turns,
        kinds=tuple(k.strip() for k in args.kinds.split(",")) if args.kinds else None,
        double=args.double,
        seed=args.seed,
        concurrency=max(1, args.concurrency),
        json_path=args.json_path,
        kill=args.kill,
        recovery=args.recovery,
    )


def quiet_logging() -> EngineLog:
    """Engine warnings go to the runs that caused them, not to the terminal."""
    handler = EngineLog()
    logging.getLogger("switchboard").addHandler(handler)
    logging.getLogger("switchboard").propagate = False
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    logging.getLogger("emulator").setLevel(logging.CRITICAL)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        asyncio.run(worker(*argv[1:6]))
        return 0
    options = parse_args(argv)
    quiet_logging()
    lines, data, ok = asyncio.run(run_matrix(options))
    print("\n".join(lines))
    if options.json_path:
        Path(options.json_path).write_text(json.dumps(data, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
