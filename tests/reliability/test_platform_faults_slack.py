"""The Slack fault matrix (issue 12 §2): every Web API call a turn makes fails once, with what Slack really answers.

How it works: four reference turns (a stream in a channel thread, a placeholder in a DM, a stream restarted after a
retry, a plain answer) run on the real engine (scripted AI: tests/fakes/scripted_engine.py) behind the real
adapter in HTTP mode against the fake Slack. `REFERENCE` is the sequence of Web API calls each makes, checked
against a fault-free run (`test_reference_sequence`): when the adapter changes what it calls, that test shows the
new sequence to put here. Then, for every call of every sequence and every error Slack can answer it with
(`KINDS_FOR`), one case fails exactly that call once (`FakeSlack.fail(method, kind, skip=k, channel=...)`) and
checks what the user gets:

- the event was acknowledged (HTTP 200) within Slack's 3 seconds: the ack never waits on a Web API call or on the
  SDK's sleep through a 429's Retry-After (which is 3 s here);
- exactly one reply reached the user (in the thread, or by a fallback: the channel, the user's DM), and no
  preview is left beside it;
- the thinking indicator ends cleared (as Slack keeps it: `FakeSlack.status_of`);
- the turn is recorded `delivered`, never left `delivering`.

`UNDELIVERABLE` cases break a place for good (the bot removed from the channel and the user's DM closed; Slack
answering 502 to every post): no reply, the turn recorded `undeliverable:<reason>`, one warning line, the
`switchboard_undeliverable` metric counted once per case, the indicator still cleared.

All cases share one engine, adapter and fake (each case in its own channel, with its own user) and run
concurrently, so the whole matrix takes a few seconds; the parametrised tests then only read the outcomes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from adapters.slack import SlackAdapter
from adapters.slack import constants as c
from adapters.slack.keys import conversation_key
from bot.engine import Bot
from bot.types import UNDELIVERABLE_PREFIX, Delegated, Retrying, SubFinished, TextDelta
from fakes.slack_api import FAULT_KINDS, FakeSlack, FaultKind, Message
from storage.base import TurnRecord
from tests.fakes.scripted_engine import ScriptedOrchestrator, TurnScript, WatchedStore, scripted_bot
from tests.reliability.platform_matrix import WarningLines, selected_cases
from tests.slack.conftest import HttpSender, settings_for

ANSWER = "Here is what the team found: three sources agree, and the summary is below. (Short, so one message.)"
PREVIEW = ANSWER[:40]
#: a case waits this long for its turn to be recorded; far above what a case takes, only a bug reaches it
TURN_WAIT_SECONDS = 30.0
#: cases running at once (the machine is shared: this keeps the ack latency honest)
CONCURRENCY = 64
#: a 429's Retry-After, in seconds: as long as Slack's ack deadline, so an ack that waited on it would be late
RETRY_AFTER_SECONDS = 3

SCENARIOS: dict[str, TurnScript] = {
    # a mention in a channel: the stream shows a sub-assistant's task and the live text
    "stream": TurnScript(
        [Delegated("researcher", "look it up", "call_r"), SubFinished("researcher", "call_r", ok=True),
         TextDelta(PREVIEW), TextDelta(ANSWER[len(PREVIEW):])],
        ANSWER,
    ),
    # a DM's top level: no thread to stream into, so a placeholder message updated in place
    "placeholder": TurnScript(
        [Delegated("researcher", "look it up", "call_r"), SubFinished("researcher", "call_r", ok=True),
         TextDelta(PREVIEW)],
        ANSWER,
    ),
    # the proxy retried after streaming text: that stream is removed and a new one starts
    "restart": TurnScript([TextDelta(PREVIEW), Retrying("server_error", 1), TextDelta(ANSWER)], ANSWER),
    # no progress at all: one post
    "plain": TurnScript([], ANSWER),
}
IN_DM = {"placeholder"}

STATUS = "assistant.threads.setStatus"
#: the Web API calls of each reference turn, in order (checked by test_reference_sequence)
REFERENCE: dict[str, list[str]] = {
    "stream": [STATUS, STATUS, "chat.startStream", STATUS, "chat.appendStream", "chat.appendStream",
               "chat.appendStream", "chat.stopStream", STATUS],
    "placeholder": [STATUS, STATUS, "chat.postMessage", STATUS, "chat.update", "chat.update", "chat.update", STATUS],
    "restart": [STATUS, "chat.startStream", STATUS, "chat.stopStream", "chat.delete", "chat.startStream",
                "chat.stopStream", STATUS],
    "plain": [STATUS, "chat.postMessage", STATUS],
}

KINDS: dict[str, FaultKind] = {
    **FAULT_KINDS,
    "ratelimited": FaultKind(status=429, error="ratelimited", retry_after=RETRY_AFTER_SECONDS),
}
_TRANSPORT = ("ratelimited", "internal_error", "bad_gateway", "reset")
_POSTING = (*_TRANSPORT, "not_in_channel", "channel_not_found", "msg_too_long")
#: the call went through, then its answer was lost: a new message must not be posted twice
_AFTER_EFFECT = ("internal_error_after_effect", "bad_gateway_after_effect", "reset_after_effect")
#: what each method can fail with (its documented errors, see DOCUMENTED_ERRORS in the fake, plus the transport)
KINDS_FOR: dict[str, tuple[str, ...]] = {
    STATUS: (*_TRANSPORT, "channel_not_found"),
    "chat.postMessage": (*_POSTING, *_AFTER_EFFECT),
    "chat.startStream": _POSTING,
    "chat.appendStream": _POSTING,
    "chat.stopStream": _POSTING,
    "chat.update": (*_TRANSPORT, *_AFTER_EFFECT, "channel_not_found", "msg_too_long"),
    "chat.delete": (*_TRANSPORT, "channel_not_found"),
}


@dataclass(frozen=True)
class Case:
    scenario: str
    method: str | None = None  # None: no fault (the reference run)
    index: int = 0  # which call of `method` in the turn fails (0: the first)
    kind: str = "none"
    #: a place broken for good (see UNDELIVERABLE) instead of one failing call
    broken: str | None = None

    @property
    def id(self) -> str:
        if self.broken:
            return f"{self.scenario}-undeliverable-{self.broken}"
        if self.method is None:
            return f"{self.scenario}-reference"
        return f"{self.scenario}-{self.method}#{self.index}-{self.kind}"


def fault_cases() -> list[Case]:
    cases = []
    for scenario, calls in REFERENCE.items():
        seen: dict[str, int] = {}
        for method in calls:
            index = seen.get(method, 0)
            seen[method] = index + 1
            cases += [Case(scenario, method, index, kind) for kind in KINDS_FOR[method]]
    return cases


REFERENCE_CASES = [Case(scenario) for scenario in SCENARIOS]
FAULT_CASES = fault_cases()
UNDELIVERABLE = [Case("stream", broken="removed_from_channel"), Case("plain", broken="slack_down")]
ALL_CASES = REFERENCE_CASES + FAULT_CASES + UNDELIVERABLE


@dataclass
class Outcome:
    ack_status: int = 0
    ack_seconds: float = float("inf")
    calls: list[str] = field(default_factory=list)
    replies: list[Message] = field(default_factory=list)
    status: str = "?"
    record: TurnRecord | None = None
    error: str = ""

    def describe(self) -> str:
        record = self.record and (self.record.state, self.record.delivered_ref)
        return (
            f"ack={self.ack_status} in {self.ack_seconds:.2f}s, replies={[m.text[:50] for m in self.replies]}, "
            f"indicator={self.status!r}, record={record}, calls={self.calls}, {self.error}"
        )


@dataclass
class Matrix:
    outcomes: dict[str, Outcome]
    undeliverable_metric: float
    engine_warnings: list[str]


async def _run_case(fake: FakeSlack, adapter: SlackAdapter, bot: Bot, orch: ScriptedOrchestrator, case: Case,
                    n: int) -> Outcome:
    out = Outcome()
    user = f"U{n:07d}"
    channel = fake.dm_channel(user) if case.scenario in IN_DM else f"C{n:07d}"
    if case.method is not None:
        fake.fail(case.method, KINDS[case.kind], skip=case.index, channel=channel)
    if case.broken == "removed_from_channel":
        for method in ("chat.postMessage", "chat.startStream", "chat.appendStream", "chat.stopStream"):
            fake.fail(method, "not_in_channel", times=None, channel=channel)
        fake.fail("chat.update", "channel_not_found", times=None, channel=channel)
        fake.dm_refused.add(user)
    elif case.broken == "slack_down":
        for target in (channel, user):
            fake.fail("chat.postMessage", "bad_gateway", times=None, channel=target)
    fake.add_user(user)
    posted = fake.add_user_message(channel, user, f"<@{fake.bot_user_id}> {case.scenario}")
    if case.scenario in IN_DM:
        event = {"type": "message", "channel_type": "im", "text": case.scenario}
        thread_key, status_ts = None, posted.ts
    else:
        event = {"type": "app_mention", "text": posted.text}
        thread_key, status_ts = posted.ts, posted.ts
    event.update(user=user, ts=posted.ts, channel=channel, event_ts=posted.ts, team=fake.team_id)
    conversation = conversation_key(fake.team_id, channel, thread_key)

    started = time.monotonic()
    out.ack_status, _ = await HttpSender(fake, adapter).event(event)
    out.ack_seconds = time.monotonic() - started
    try:
        async with asyncio.timeout(TURN_WAIT_SECONDS):
            await orch.started(conversation).wait()
            store = bot.store
            assert isinstance(store, WatchedStore)
            await store.finished(orch.turn_of[conversation]).wait()
    except TimeoutError:
        out.error = "the turn was never recorded as finished"
    turn_id = orch.turn_of.get(conversation)
    out.record = await bot.store.get_turn(turn_id) if turn_id else None
    out.calls = [x.method for x in fake.calls if _channel_of(x.args) in (channel, user)]
    places = [channel] if case.scenario in IN_DM else [channel, fake.dm_channel(user)]
    out.replies = [m for place in places for m in fake.bot_messages(place)]
    out.status = fake.status_of(channel, status_ts)
    return out


def _channel_of(args: dict[str, Any]) -> str:
    return str(args.get("channel") or args.get("channel_id") or "")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def matrix(request: pytest.FixtureRequest) -> AsyncIterator[Matrix]:
    cases = selected_cases(request, ALL_CASES, Case)
    collect = WarningLines()
    logging.getLogger("switchboard.engine").addHandler(collect)
    async with FakeSlack() as fake:
        adapter_box: list[SlackAdapter] = []

        async def settle(turn_id: str) -> None:
            await adapter_box[0].surface.settled(turn_id)

        orch = ScriptedOrchestrator(SCENARIOS, settle)
        bot = scripted_bot(orch)
        settings = settings_for(
            fake, "http", update_interval_seconds=0.0, post_interval_seconds=0.0, retry_base_seconds=0.01
        )
        adapter = SlackAdapter(bot, settings)
        adapter_box.append(adapter)
        await bot.start()
        await adapter.start()
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(case: Case, n: int) -> tuple[str, Outcome]:
            async with gate:
                return case.id, await _run_case(fake, adapter, bot, orch, case, n)

        try:
            results = await asyncio.gather(*(one(case, n) for n, case in enumerate(cases, start=1)))
            await bot.idle()
            metric = bot.metrics.undeliverable.labels("slack")._value.get()
            yield Matrix(dict(results), metric, collect.lines)
        finally:
            logging.getLogger("switchboard.engine").removeHandler(collect)
            await adapter.stop()
            await bot.stop()


def _delivered_once(out: Outcome) -> None:
    assert out.ack_status == 200 and out.ack_seconds < c.ACK_DEADLINE_SECONDS, out.describe()
    assert len(out.replies) == 1 and out.replies[0].text.endswith(ANSWER), out.describe()
    assert out.status == "", out.describe()
    assert out.record is not None and out.record.state == "delivered", out.describe()
    assert not (out.record.delivered_ref or "").startswith(UNDELIVERABLE_PREFIX), out.describe()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_reference_sequence(matrix: Matrix, scenario: str) -> None:
    out = matrix.outcomes[Case(scenario).id]
    assert out.calls == REFERENCE[scenario], f"update REFERENCE[{scenario!r}]: {out.calls}"
    _delivered_once(out)


@pytest.mark.parametrize("case", FAULT_CASES, ids=lambda case: case.id)
def test_one_failing_call(matrix: Matrix, case: Case) -> None:
    _delivered_once(matrix.outcomes[case.id])


@pytest.mark.parametrize("case", UNDELIVERABLE, ids=lambda case: case.id)
def test_undeliverable(matrix: Matrix, case: Case) -> None:
    out = matrix.outcomes[case.id]
    assert out.ack_status == 200 and out.ack_seconds < c.ACK_DEADLINE_SECONDS, out.describe()
    assert out.replies == [], out.describe()
    assert out.status == "", out.describe()
    reason = {"removed_from_channel": "not_in_channel", "slack_down": "http_502"}[case.broken or ""]
    assert out.record is not None and out.record.state == "delivered", out.describe()
    assert out.record.delivered_ref == UNDELIVERABLE_PREFIX + reason, out.describe()
    assert sum(out.record.id in line and "could not be delivered" in line for line in matrix.engine_warnings) == 1


def test_undeliverable_metric_counts_each_undeliverable_turn(matrix: Matrix) -> None:
    undeliverable = sum(
        1
        for out in matrix.outcomes.values()
        if out.record is not None and (out.record.delivered_ref or "").startswith(UNDELIVERABLE_PREFIX)
    )
    assert matrix.undeliverable_metric == undeliverable
    assert undeliverable == sum(case.id in matrix.outcomes for case in UNDELIVERABLE)
