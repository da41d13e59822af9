"""Fault soak: many conversations through the real adapters against the emulator in seeded random fault mode.

    python -m benchmarks.soak --messages 2000 --rate 0.25 --seed 1 --conversations 60 --concurrency 12

Messages enter through the real entry points: the Slack adapter over signed HTTP events and over Socket Mode
envelopes (fakes/slack_api.py plays Slack), and `Bot.accept` as the console does (a recording console surface,
fakes/console.py). Each conversation sends bursts of 1-3 messages at once (they queue behind, or join, the running
turn), mentions sub-assistants so turns fan out, sometimes repeats an event the way a platform retry does, and sometimes
sends Slack's twin `message` event for a mention. The emulator mixes every fault kind it offers at `--rate`
(random mode for the per-request and per-response kinds, targeted faults for the ones random mode lacks), and a
scripted rule makes some answers end incomplete.

Counts are taken from the platform fakes (what a user would see), matched against the engine's inbox:

* sent: user messages meant for the bot (a platform retry or a twin event of the same message is not a new one);
* accepted: messages the engine stored (the adapter acknowledged them);
* answered / failed explicitly: accepted messages whose turn has exactly one complete reply on the platform, an
  answer or an explicit failure (a notice counts as explicit too);
* lost: a message sent to the bot that was neither refused with an explanation nor covered by one complete reply
  of its turn (messages coalesced into one turn share that turn's reply);
* duplicated: a turn whose reply reached the platform more than once, or a user message answered by more than one
  turn.

Explicit failures are listed by reason; only `invalid_prompt` (permanent) and `budget_spent:*` (the retry budget
was spent) are expected. The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from adapters.slack import SlackAdapter
from adapters.slack import constants as slack_constants
from bot.engine import Bot, make_backend
from bot.types import Inbound, InvalidInbound, Progress, Reply, TurnRef
from emulator import run_emulator
from fakes.configs import SUBS, slack_settings, soak_team
from fakes.console import ConsolePlatform, Posted
from fakes.slack_api import FakeSlack
from storage.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[1]
AGENTS = ("proxy", *SUBS)
# Every kind the emulator's random mode offers for the Responses API (`expire` only exists on Assistants runs).
RANDOM_KINDS = {
    "responses": (
        "http_429", "http_500", "server_error", "rate_limit_exceeded", "invalid_prompt", "cancel", "drop_stream",
        "stay_queued",
    ),
    "assistants": (
        "http_429", "http_500", "server_error", "rate_limit_exceeded", "invalid_prompt", "cancel", "drop_stream",
        "stay_queued", "expire",
    ),
    # On a stateless chat server `cancel` is a stream the server breaks off and `stay_queued` a silent stream.
    "chat": (
        "http_429", "http_500", "server_error", "rate_limit_exceeded", "invalid_prompt", "cancel", "drop_stream",
        "stay_queued",
    ),
}
# Kinds random mode does not roll: armed as targeted faults, at the same per-kind rate.
TARGETED_KINDS = {"responses": ("delete_conversation",), "assistants": ("delete_thread",), "chat": ()}
PERMANENT_REASONS = frozenset({"invalid_prompt"})
BUDGET_PREFIX = "budget_spent:"
INCOMPLETE_WORD = "essay"  # a message with this word gets an answer cut short by the provider's limits
TOKEN = re.compile(r"\[(c\d+)\.(\d+)\]")
BURST_TIMEOUT = 90.0

log = logging.getLogger("switchboard.soak")


# ---- options and results ---------------------------------------------------------------------------------------


@dataclass
class SoakOptions:
    messages: int = 2000
    rate: float = 0.25
    seed: int = 1
    conversations: int = 60
    concurrency: int = 12
    backend: str = "responses"
    entry_points: tuple[str, ...] = ("slack_http", "slack_socket", "console")
    retry_share: float = 0.05  # messages whose event is delivered twice (platform retry)
    twin_share: float = 0.3  # Slack mentions also sent as their `message` twin event
    emulator_process: bool = True  # run the emulator in its own process (the second core); False: in-process
    retry_budget: int = 6
    db_path: str | None = None


@dataclass
class SoakReport:
    options: dict[str, Any]
    seconds: float = 0.0
    sent: int = 0
    sent_by_entry: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    refused: int = 0
    answered: int = 0
    failed_explicitly: int = 0
    lost: int = 0
    duplicated: int = 0
    turns: int = 0
    turns_answered: int = 0
    turns_failed: int = 0
    incomplete_answers: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    unexpected_failures: int = 0
    retries: int = 0
    recoveries_by_reason: dict[str, int] = field(default_factory=dict)
    injected_by_kind: dict[str, int] = field(default_factory=dict)
    provider_calls: int = 0
    faulted_calls: int = 0
    platform_retries_sent: int = 0
    twins_sent: int = 0
    stray_messages: int = 0
    misrouted: int = 0
    problems: list[str] = field(default_factory=list)
    kills: int = 0

    @property
    def faulted_share(self) -> float:
        return self.faulted_calls / self.provider_calls if self.provider_calls else 0.0

    def targets(self, min_messages: int, min_share: float, min_kills: int = 0) -> list[str]:
        """The targets this run missed (empty: all met)."""
        missed = []
        if self.sent < min_messages:
            missed.append(f"only {self.sent} messages sent (target >= {min_messages})")
        if self.faulted_share < min_share:
            missed.append(f"only {self.faulted_share:.1%} of provider calls faulted (target >= {min_share:.0%})")
        if self.kills < min_kills:
            missed.append(f"only {self.kills} kills (target >= {min_kills})")
        if self.lost:
            missed.append(f"{self.lost} lost")
        if self.duplicated:
            missed.append(f"{self.duplicated} duplicated")
        if self.answered + self.failed_explicitly != self.accepted:
            missed.append("not every accepted message was answered or explicitly failed")
        if self.unexpected_failures:
            missed.append(f"{self.unexpected_failures} explicit failures without a permanent cause")
        if self.misrouted:
            missed.append(f"{self.misrouted} replies carried another conversation's text")
        return missed

    def lines(self) -> list[str]:
        pct = (lambda n, d: f"{n / d:.1%}" if d else "-")  # noqa: E731
        out = [
            f"messages sent            {self.sent}  ({', '.join(f'{k} {v}' for k, v in self.sent_by_entry.items())})",
            f"  accepted               {self.accepted}",
            f"  refused with a reason  {self.refused}",
            f"  answered               {self.answered}  ({pct(self.answered, self.accepted)})",
            f"  failed explicitly      {self.failed_explicitly}  ({pct(self.failed_explicitly, self.accepted)})",
            f"  lost                   {self.lost}",
            f"  duplicated             {self.duplicated}",
            f"turns                    {self.turns}  (answered {self.turns_answered}, failed {self.turns_failed},"
            f" answers cut short {self.incomplete_answers})",
            "explicit failures by reason: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.failures_by_reason.items())) or "none")
            + (f"  [{self.unexpected_failures} without a permanent cause]" if self.unexpected_failures else ""),
            f"retries                  {self.retries}",
            "recoveries by reason:    "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.recoveries_by_reason.items())) or "none"),
            "injected faults by kind: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.injected_by_kind.items())) or "none"),
            f"provider calls           {self.provider_calls}, faulted {self.faulted_calls}"
            f" ({pct(self.faulted_calls, self.provider_calls)})",
            f"platform retries sent    {self.platform_retries_sent}; twin events sent {self.twins_sent}",
            f"stray bot messages       {self.stray_messages}; misrouted replies {self.misrouted}",
        ]
        if self.kills:
            out.insert(0, f"kills (SIGKILL)          {self.kills}")
        out.append(f"wall time                {self.seconds:.1f} s")
        out += [f"PROBLEM: {p}" for p in self.problems[:20]]
        return out

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["faulted_share"] = round(self.faulted_share, 4)
        return data


# ---- the emulator, steered through its control API ------------------------------------------------------------


@dataclass
class EmulatorHandle:
    base_url: str
    control_url: str
    session: aiohttp.ClientSession

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.control_url + path, json=body) as response:
            data = await response.json(content_type=None)
            if response.status >= 400:
                raise RuntimeError(f"emulator control {method} {path}: {response.status} {data}")
            return data

    async def random_faults(self, rate: float, seed: int, kinds: Iterable[str]) -> None:
        await self._call("POST", "/faults/random", {"rate": rate, "seed": seed, "kinds": list(kinds)})

    async def arm(self, fault: dict[str, Any]) -> None:
        await self._call("POST", "/faults", fault)

    async def stop_faults(self) -> None:
        await self._call("DELETE", "/faults")

    async def injected(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/faults"))["injected"])

    async def counters(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/counters"))

    async def set_script(self, agent: str, rules: list[dict[str, Any]]) -> None:
        await self._call("PUT", f"/scripts/{agent}", {"rules": rules})


@contextlib.asynccontextmanager
async def emulator(in_process: bool, seed: int, latency: float = 0.0) -> AsyncIterator[EmulatorHandle]:
    """An emulator on a free loopback port: in this process, or in its own (`switchboard emulator`)."""
    async with aiohttp.ClientSession() as session:
        if in_process:
            async with run_emulator(retry_after=0.01, seed=seed, latency=latency) as emu:
                yield EmulatorHandle(emu.base_url, emu.control_url, session)
            return
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard.cli", "emulator", "--port", "0", "--retry-after", "0.01",
            "--seed", str(seed), "--latency", str(latency), cwd=REPO, stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = (await proc.stdout.readline()).decode()
            base_url = line.rsplit(" ", 1)[-1].strip()
            if not base_url.startswith("http"):
                raise RuntimeError(f"emulator did not start: {line!r}")
            yield EmulatorHandle(base_url, base_url.removesuffix("/v1") + "/_emulator", session)
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()


def incomplete_rule() -> dict[str, Any]:
    """The proxy answers messages naming INCOMPLETE_WORD with a reply cut short by the provider's limits."""
    return {"match": INCOMPLETE_WORD, "on": "message", "reply": "A first part of the essay about {input}",
            "incomplete": "max_output_tokens"}


async def arm_random_faults(emu: EmulatorHandle, options: SoakOptions) -> None:
    await emu.set_script("proxy", [incomplete_rule()])
    if options.rate > 0:
        await emu.random_faults(options.rate, options.seed, RANDOM_KINDS[options.backend])


async def maybe_arm_targeted(emu: EmulatorHandle, options: SoakOptions, rng: random.Random) -> None:
    """Random mode does not delete containers: arm such a fault for a random agent at the per-kind rate."""
    per_kind = options.rate / (len(RANDOM_KINDS[options.backend]) + len(TARGETED_KINDS[options.backend]))
    for kind in TARGETED_KINDS[options.backend]:
        if rng.random() < per_kind * 2:  # a burst makes about two provider objects
            await emu.arm({"kind": kind, "agent": rng.choice(AGENTS)})


def tally_injected(injected: list[dict[str, Any]]) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for item in injected:
        kind = item["kind"]
        detail = item.get("detail") or {}
        if kind == "http_error":
            kind = f"http_{detail.get('status')}"
        elif kind == "fail":
            kind = str(detail.get("code"))
        kinds[kind] += 1
    return kinds


def provider_calls(counters: dict[str, Any]) -> int:
    return sum(r["count"] for r in counters.get("requests", []) if str(r["path"]).startswith("/v1"))


# ---- the engine's side: why turns failed, when they were delivered ----------------------------------------------


class FailureLog(logging.Handler):
    """Collects why turns failed, from the engine's own log lines ("turn %s failed: %s" / "turn %s crashed")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reasons: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == "turn %s failed: %s" and len(args) == 2:
            reason = str(args[1])
            self.reasons[str(args[0])] = reason if record.levelno < logging.ERROR else f"internal:{reason}"
        elif record.msg == "turn %s crashed" and args:
            self.reasons[str(args[0])] = "internal:crash"


class DeliveryTracker:
    """Wraps the bot's surfaces to learn when messages got their reply (pacing only: the counts come from the
    platforms afterwards)."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.done: set[str] = set()
        self._changed = asyncio.Condition()

    def install(self) -> None:
        for platform, surface in list(self.bot.surfaces.items()):
            self.bot.surfaces[platform] = _Tracked(surface, self)  # type: ignore[assignment]

    async def delivered(self, turn: TurnRef) -> None:
        try:
            ids = [m.event_id for m in await self.bot.store.inbound_for_turn(turn.id)]
        except Exception:  # the store may be closing; pacing is best effort
            return
        async with self._changed:
            self.done.update(ids)
            self._changed.notify_all()

    async def wait(self, event_ids: Iterable[str], within: float) -> bool:
        wanted = set(event_ids)
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: wanted <= self.done)
        except TimeoutError:
            return False
        return True


class _Tracked:
    def __init__(self, inner: Any, tracker: DeliveryTracker) -> None:
        self.inner = inner
        self.platform = inner.platform
        self.tracker = tracker

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        await self.inner.progress(turn, event)

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        ref = await self.inner.deliver(turn, reply)
        await self.tracker.delivered(turn)
        return str(ref)

    async def find_delivery(self, turn: TurnRef) -> str | None:
        return await self.inner.find_delivery(turn)


# ---- what was sent ------------------------------------------------------------------------------------------------


@dataclass
class SentMessage:
    event_id: str
    entry: str  # slack_http | slack_socket | console
    tag: str  # the conversation's tag, e.g. c12
    text: str
    channel: str = ""
    ts: str = ""
    outcome: str = "pending"  # accepted | duplicate | refused | ignored | seen | error | timeout


@dataclass
class ConversationPlan:
    tag: str
    entry: str
    place: str  # channel | dm | console
    channel: str
    user: str
    bursts: list[list[str]]


TEMPLATES = (
    "hello there, how are you today",
    "please ask the critic about plan {n}",
    "ask the researcher and the planner about topic {n}",
    "ask the team about idea {n}",
    "what does the researcher think of option {n}",
    "write me an essay about subject {n}",
    "thanks, one more question about point {n}",
)


def plan_conversations(options: SoakOptions, rng: random.Random) -> list[ConversationPlan]:
    count = max(1, min(options.conversations, options.messages))
    per = [options.messages // count + (1 if i < options.messages % count else 0) for i in range(count)]
    plans = []
    for i in range(count):
        tag = f"c{i}"
        entry = options.entry_points[i % len(options.entry_points)]
        place = "console" if entry == "console" else ("dm" if rng.random() < 0.3 else "channel")
        channel = (f"D0SOAK{i:04d}" if place == "dm" else f"C0SOAK{i % 5}") if entry != "console" else "console"
        texts = [f"[{tag}.{k}] " + rng.choice(TEMPLATES).format(n=k) for k in range(per[i])]
        bursts: list[list[str]] = []
        k = 0
        while k < len(texts):
            size = 1 if (k == 0 and place == "channel") else rng.choice((1, 1, 2, 3))
            bursts.append(texts[k : k + size])
            k += size
        plans.append(ConversationPlan(tag, entry, place, channel, f"U0USER{i:04d}", bursts))
    return plans


# ---- Slack entry points -------------------------------------------------------------------------------------------


class SlackSide:
    """The fake Slack and the adapters it talks to: one over signed HTTP, one over Socket Mode (sharing one
    surface, status board and thread memory, as one app would)."""

    def __init__(self, fake: FakeSlack, http: SlackAdapter | None, socket: SlackAdapter | None,
                 session: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.http = http
        self.socket = socket
        self.session = session
        self._outcomes: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        self._changed = asyncio.Condition()
        for adapter in (http, socket):
            if adapter is not None:
                adapter.messages.observers.append(self._observe)

    def _observe(self, event: dict[str, Any], outcome: str) -> None:
        key = (str(event.get("type")), str(event.get("channel")), str(event.get("ts")))
        self._outcomes[key].append(outcome)

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    async def outcome(self, event: dict[str, Any], nth: int = 1, within: float = 20.0) -> str:
        key = (str(event.get("type")), str(event.get("channel")), str(event.get("ts")))
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: len(self._outcomes[key]) >= nth)
        except TimeoutError:
            return "timeout"
        return self._outcomes[key][nth - 1]

    async def deliver_event(self, entry: str, event: dict[str, Any], event_id: str, retry: int = 0) -> None:
        body = self.fake.event_body(event, event_id=event_id)
        if entry == "slack_socket":
            envelope = await self.fake.push_envelope(
                "events_api", body, retry_attempt=retry or None, retry_reason="timeout" if retry else None
            )
            await self.fake.wait_ack(envelope, within=20)
            return
        assert self.http is not None
        raw = json.dumps(body)
        headers = {"Content-Type": "application/json", **self.fake.sign(raw)}
        if retry:
            headers["X-Slack-Retry-Num"] = str(retry)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        url = f"http://127.0.0.1:{self.http.http_port}{self.http.settings.http_path}"
        async with self.session.post(url, data=raw, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"Slack event refused with HTTP {response.status}")


# ---- one conversation ---------------------------------------------------------------------------------------------


class Driver:
    def __init__(self, bot: Bot, slack: SlackSide | None, tracker: DeliveryTracker, emu: EmulatorHandle,
                 options: SoakOptions, rng: random.Random) -> None:
        self.bot = bot
        self.slack = slack
        self.tracker = tracker
        self.emu = emu
        self.options = options
        self.rng = rng
        self.sent: list[SentMessage] = []
        self.retries_sent = 0
        self.twins_sent = 0
        self.problems: list[str] = []

    async def conversation(self, plan: ConversationPlan) -> None:
        root_ts: str | None = None
        for index, burst in enumerate(plan.bursts):
            await maybe_arm_targeted(self.emu, self.options, self.rng)
            if plan.entry == "console":
                messages = await asyncio.gather(*(self._console(plan, text) for text in burst))
            else:
                if plan.place == "channel" and index == 0:
                    first = await self._slack(plan, burst[0], root_ts=None)
                    root_ts = first.ts
                    messages = [first]
                else:
                    messages = await asyncio.gather(*(self._slack(plan, text, root_ts) for text in burst))
            ids = [m.event_id for m in messages if m.outcome == "accepted"]
            if ids and not await self.tracker.wait(ids, BURST_TIMEOUT):
                self.problems.append(f"{plan.tag}: burst {index} not answered within {BURST_TIMEOUT:g} s")

    async def _console(self, plan: ConversationPlan, text: str) -> SentMessage:
        message = SentMessage(f"console-{uuid.uuid4().hex[:16]}", "console", plan.tag, text, "console")
        self.sent.append(message)
        inbound = Inbound("console", message.event_id, f"console:soak:{plan.tag}", "console:soak", plan.user, text)
        try:
            accepted = await self.bot.accept(inbound)
            message.outcome = "duplicate" if accepted.duplicate else "accepted"
        except InvalidInbound:
            message.outcome = "refused"
        except Exception as exc:  # a crash of accept is what the soak is looking for
            message.outcome = "error"
            self.problems.append(f"accept raised {type(exc).__name__}: {exc}")
        if message.outcome == "accepted" and self.rng.random() < self.options.retry_share:
            self.retries_sent += 1
            again = await self.bot.accept(inbound)
            if not again.duplicate:
                self.problems.append(f"console retry of {message.event_id} was not recognised as a duplicate")
        return message

    async def _slack(self, plan: ConversationPlan, text: str, root_ts: str | None) -> SentMessage:
        assert self.slack is not None
        fake = self.slack.fake
        mention_in_thread = root_ts is not None and self.rng.random() < 0.15
        as_mention = plan.place == "channel" and (root_ts is None or mention_in_thread)
        posted_text = f"<@{fake.bot_user_id}> {text}" if as_mention else text
        msg = fake.add_user_message(plan.channel, plan.user, posted_text, root_ts)
        event: dict[str, Any] = {
            "type": "app_mention" if as_mention else "message",
            "user": plan.user,
            "text": posted_text,
            "ts": msg.ts,
            "channel": plan.channel,
            "event_ts": msg.ts,
            "team": fake.team_id,
        }
        if not as_mention:
            event["channel_type"] = "im" if plan.place == "dm" else "channel"
        if root_ts is not None:
            event["thread_ts"] = root_ts
        event_id = f"Ev{uuid.uuid4().hex[:12].upper()}"
        message = SentMessage(event_id, plan.entry, plan.tag, text, plan.channel, msg.ts)
        self.sent.append(message)
        try:
            await self.slack.deliver_event(plan.entry, event, event_id)
        except Exception as exc:
            message.outcome = "error"
            self.problems.append(f"{plan.entry} event {event_id}: {type(exc).__name__}: {exc}")
            return message
        message.outcome = await self.slack.outcome(event)
        if as_mention and self.rng.random() < self.options.twin_share:
            # Slack also sends the mention as a `message.channels` event, with its own event id
            twin = {**event, "type": "message", "channel_type": "channel"}
            self.twins_sent += 1
            await self.slack.deliver_event(plan.entry, twin, f"Ev{uuid.uuid4().hex[:12].upper()}")
            twin_outcome = await self.slack.outcome(twin)
            if twin_outcome not in ("ignored", "seen"):
                self.problems.append(f"twin event of {event_id} was {twin_outcome}")
        if message.outcome == "accepted" and self.rng.random() < self.options.retry_share:
            self.retries_sent += 1
            await self.slack.deliver_event(plan.entry, event, event_id, retry=1)
            again = await self.slack.outcome(event, nth=2)
            if again not in ("duplicate", "seen"):
                self.problems.append(f"Slack retry of {event_id} was {again}")
        return message


# ---- counting from the platforms' side -------------------------------------------------------------------------


@dataclass
class Delivery:
    """One turn's reply as a platform holds it."""

    turn_id: str
    copies: int  # how many times its first part was posted
    complete: bool  # every part up to the last one is there
    text: str
    place: tuple[str, str]  # (channel, thread) where it was posted


def slack_deliveries(fake: FakeSlack) -> tuple[dict[str, Delivery], int]:
    """Replies found in the fake Slack by their message metadata; plus the count of stray bot messages (previews
    or placeholders left behind without a reply's metadata)."""
    parts: dict[str, list[tuple[int, bool, Any]]] = defaultdict(list)
    stray = 0
    for messages in fake.messages.values():
        for msg in messages:
            if msg.user != fake.bot_user_id or msg.deleted:
                continue
            meta = msg.metadata or {}
            payload = meta.get("event_payload") or {}
            if meta.get("event_type") != slack_constants.REPLY_METADATA_EVENT_TYPE or "turn_id" not in payload:
                stray += 1
                continue
            parts[str(payload["turn_id"])].append((int(payload.get("part", 1)), bool(payload.get("last")), msg))
    result = {}
    for turn_id, found in parts.items():
        found.sort(key=lambda p: (p[0], p[2].ts))
        copies = sum(1 for p in found if p[0] == 1)
        numbers = {p[0] for p in found}
        lasts = [p[0] for p in found if p[1]]
        complete = bool(lasts) and all(n in numbers for n in range(1, min(lasts) + 1))
        seen: set[int] = set()
        text = ""
        for number, _, msg in found:
            if number not in seen:
                seen.add(number)
                text += msg.text
        first = found[0][2]
        result[turn_id] = Delivery(turn_id, copies, complete, text, (first.channel, first.thread_ts or ""))
    return result, stray


def console_deliveries(posted: list[Posted]) -> dict[str, Delivery]:
    result: dict[str, Delivery] = {}
    for item in posted:
        known = result.get(item.turn_id)
        if known is None:
            result[item.turn_id] = Delivery(item.turn_id, 1, True, item.text, ("console", item.conversation))
        else:
            known.copies += 1
    return result


@dataclass
class DbSnapshot:
    inbox: dict[str, dict[str, Any]]  # event_id -> row
    turns: dict[str, dict[str, Any]]  # turn id -> row


def read_db(path: str) -> DbSnapshot:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        inbox = {r["event_id"]: dict(r) for r in db.execute("SELECT * FROM inbox")}
        turns = {r["id"]: dict(r) for r in db.execute("SELECT * FROM turns")}
    return DbSnapshot(inbox, turns)


def expected_place(row: dict[str, Any]) -> tuple[str, str]:
    route = json.loads(row["route"] or "{}")
    if row["platform"] == "console":
        return ("console", row["conversation"])
    return (str(route.get("channel") or ""), str(route.get("thread_ts") or ""))


def count(report: SoakReport, sent: list[SentMessage], db: DbSnapshot, deliveries: dict[str, Delivery],
          failure_reasons: dict[str, str]) -> None:
    """Fill the message, turn and failure figures of `report` from what the platforms hold."""
    report.sent = len(sent)
    report.sent_by_entry = dict(Counter(m.entry for m in sent))
    answered_turns: set[str] = set()
    failed_turns: set[str] = set()
    turns_of_message: dict[tuple[str, str], set[str]] = defaultdict(set)
    for message in sent:
        row = db.inbox.get(message.event_id)
        if message.outcome == "refused" and row is None:
            report.refused += 1
            continue
        if row is None:
            report.lost += 1
            report.problems.append(f"{message.event_id} ({message.entry}, {message.text[:30]!r}) never stored:"
                                   f" {message.outcome}")
            continue
        report.accepted += 1
        turn_id = row["turn_id"]
        delivery = deliveries.get(turn_id) if turn_id else None
        if turn_id:
            turns_of_message[(message.channel, message.ts or message.event_id)].add(turn_id)
        if delivery is None or not delivery.complete:
            report.lost += 1
            state = db.turns.get(turn_id, {}).get("state") if turn_id else row["state"]
            report.problems.append(f"{message.event_id} ({message.entry}) turn {turn_id} state {state}: no complete"
                                   " reply on the platform")
            continue
        kind = db.turns.get(turn_id, {}).get("reply_kind") or "answer"
        if kind == "answer":
            report.answered += 1
            answered_turns.add(turn_id)
        else:
            report.failed_explicitly += 1
            failed_turns.add(turn_id)
        if delivery.place != expected_place(row):
            report.misrouted += 1
            report.problems.append(f"turn {turn_id} posted in {delivery.place}, expected {expected_place(row)}")
        tags = {m.group(1) for m in TOKEN.finditer(delivery.text)}
        if tags - {message.tag}:
            report.misrouted += 1
            report.problems.append(f"turn {turn_id} of {message.tag} mentions {sorted(tags - {message.tag})}")
    for turn_id, delivery in deliveries.items():
        if delivery.copies > 1:
            report.duplicated += delivery.copies - 1
            report.problems.append(f"turn {turn_id} delivered {delivery.copies} times")
        if turn_id not in db.turns:
            report.problems.append(f"a reply for unknown turn {turn_id}")
    for key, turn_ids in turns_of_message.items():
        if len(turn_ids) > 1:
            report.duplicated += len(turn_ids) - 1
            report.problems.append(f"message {key} answered by {len(turn_ids)} turns")
    report.turns = len(db.turns)
    report.turns_answered = len(answered_turns)
    report.turns_failed = len(failed_turns)
    report.incomplete_answers = sum(
        1 for t in answered_turns if "cut short" in (db.turns[t].get("reply_text") or "")
    )
    reasons: Counter[str] = Counter()
    for turn_id in failed_turns:
        row = db.turns[turn_id]
        reason = failure_reasons.get(turn_id) or ("notice" if row.get("reply_kind") == "notice" else "unknown")
        reasons[reason] += 1
        if reason not in PERMANENT_REASONS and not reason.startswith(BUDGET_PREFIX):
            report.unexpected_failures += 1
    report.failures_by_reason = dict(reasons)


# ---- the run ------------------------------------------------------------------------------------------------------


async def gather_limited(limit: int, jobs: list[Callable[[], Awaitable[None]]]) -> None:
    slots = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with slots:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


async def run_soak(options: SoakOptions) -> SoakReport:
    rng = random.Random(options.seed)
    report = SoakReport(options=dataclasses.asdict(options))
    started = time.monotonic()
    folder = None
    db_path = options.db_path
    if db_path is None:
        folder = tempfile.TemporaryDirectory(prefix="switchboard-soak-")
        db_path = str(Path(folder.name) / "soak.db")
    failures = FailureLog()
    engine_log = logging.getLogger("switchboard.engine")
    engine_log.addHandler(failures)
    previous_level = engine_log.level
    engine_log.setLevel(logging.INFO)
    try:
        async with emulator(not options.emulator_process, options.seed) as emu, FakeSlack() as fake:
            cfg = soak_team(emu.base_url, db_path, options.backend, options.retry_budget)
            bot = Bot(cfg, SQLiteStore(db_path), make_backend(cfg))
            console = ConsolePlatform()
            bot.add_surface(console)
            uses_slack = any(e.startswith("slack") for e in options.entry_points)
            socket_adapter = http_adapter = None
            if "slack_socket" in options.entry_points:
                socket_adapter = SlackAdapter(bot, slack_settings(fake, "socket"))
            if uses_slack:
                http_adapter = SlackAdapter(bot, slack_settings(fake, "http"))  # registered last: its surface
                if socket_adapter is not None:
                    socket_adapter.deps.surface = http_adapter.surface
                    socket_adapter.deps.status = http_adapter.status
                    socket_adapter.deps.threads = http_adapter.threads
            tracker = DeliveryTracker(bot)
            tracker.install()
            await bot.start()
            for adapter in (http_adapter, socket_adapter):
                if adapter is not None:
                    await adapter.start()
            if socket_adapter is not None:
                await fake.wait_connected(within=20)
            await arm_random_faults(emu, options)
            async with aiohttp.ClientSession() as session:
                slack = SlackSide(fake, http_adapter, socket_adapter, session) if uses_slack else None
                driver = Driver(bot, slack, tracker, emu, options, rng)
                plans = plan_conversations(options, rng)
                jobs = [lambda p=p: driver.conversation(p) for p in plans]  # type: ignore[misc]
                await gather_limited(options.concurrency, jobs)
                try:
                    async with asyncio.timeout(BURST_TIMEOUT):
                        await bot.idle()
                except TimeoutError:
                    report.problems.append("the engine was still busy at the end")
            injected = await emu.injected()
            counters = await emu.counters()
            await emu.stop_faults()
            for adapter in (socket_adapter, http_adapter):
                if adapter is not None:
                    await adapter.stop()
            await bot.stop()
            deliveries = console_deliveries(console.posted)
            slack_found, stray = slack_deliveries(fake)
            deliveries.update(slack_found)
            report.stray_messages = stray
            report.retries = bot.stats.retries
            report.recoveries_by_reason = dict(bot.supervisor.recovery_counts)
            report.injected_by_kind = dict(tally_injected(injected))
            report.faulted_calls = len(injected)
            report.provider_calls = provider_calls(counters)
            report.platform_retries_sent = driver.retries_sent
            report.twins_sent = driver.twins_sent
            report.problems += driver.problems
        count(report, driver.sent, read_db(db_path), deliveries, failures.reasons)
    finally:
        engine_log.removeHandler(failures)
        engine_log.setLevel(previous_level)
        if folder is not None:
            folder.cleanup()
    report.seconds = time.monotonic() - started
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000, help="user messages to send (default 2000)")
    parser.add_argument("--rate", type=float, default=0.25, help="fault rate per provider request/object")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--conversations", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=12, help="conversations sending at the same time")
    parser.add_argument("--entry", default="slack_http,slack_socket,console",
                        help="comma-separated entry points: slack_http, slack_socket, console")
    parser.add_argument("--in-process-emulator", action="store_true", help="run the emulator in this process")
    parser.add_argument("--backend", default="responses", choices=sorted(RANDOM_KINDS),
                        help="provider API (assistants adds the expire and delete_thread faults)")
    parser.add_argument("--retry-budget", type=int, default=6)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--log-level", default="ERROR")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(getattr(logging, args.log_level.upper(), logging.ERROR))
    logging.basicConfig(level=handler.level, handlers=[handler])
    options = SoakOptions(
        messages=args.messages,
        rate=args.rate,
        seed=args.seed,
        conversations=args.conversations,
        concurrency=args.concurrency,
        entry_points=tuple(e.strip() for e in args.entry.split(",") if e.strip()),
        emulator_process=not args.in_process_emulator,
        retry_budget=args.retry_budget,
        backend=args.backend,
    )
    report = asyncio.run(run_soak(options))
    for line in report.lines():
        print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2))
    missed = report.targets(min_messages=2000, min_share=0.20) if args.messages >= 2000 else report.targets(0, 0)
    for line in missed:
        print(f"TARGET MISSED: {line}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
