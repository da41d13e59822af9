"""Regressions for supervisor bugs the fault soak found (benchmarks/soak.py, docs/RELIABILITY.md).

1. A run stuck in `queued` whose cancel met a transient error was recorded as cancelled but kept holding the
   conversation: every later attempt failed as `conversation_locked` until the retry budget was spent.
2. The Responses API never names the holder of a locked conversation, so a stale run of ours was never cancelled.
3. A transient error while *watching* a run (resuming its stream, polling it) made the supervisor start a second
   run instead of watching the first one again: a duplicate run racing the first for the conversation.
"""

from __future__ import annotations

import dataclasses

from emulator import ManualClock, Rule, Script, run_emulator
from tests.reliability.helpers import conversations_team, message, running_bot, team


def proxy_responses(emu) -> list:
    return [r for r in emu.responses.values() if r.agent == "proxy"]


async def test_stuck_queued_run_is_cancelled_even_when_the_first_cancels_fail(tmp_path):
    async with run_emulator(retry_after=0.01) as emu:
        emu.faults.stay_queued(agent="proxy")
        emu.faults.http_error(500, method="POST", path="/v1/responses/*/cancel", count=2)
        async with running_bot(team(emu.base_url, tmp_path / "db", queued_timeout=0.2)) as (bot, surface):
            await bot.accept(message("hello"))
            await surface.wait_for(1)
            await bot.idle()
        [posted] = surface.posted
        assert (posted.kind, posted.text) == ("answer", "You said: hello")
        stuck, answered = proxy_responses(emu)
        assert stuck.status == "cancelled" and answered.status == "completed"


async def test_a_stale_run_of_ours_holding_the_conversation_is_cancelled_when_the_lock_is_met(tmp_path):
    async with run_emulator(retry_after=0.01) as emu:
        emu.faults.stay_queued(agent="proxy")
        # every cancel attempt made at the queued timeout fails (the budget is 6: 7 attempts)
        emu.faults.http_error(500, method="POST", path="/v1/responses/*/cancel", count=7)
        cfg = conversations_team(emu.base_url, tmp_path / "db", queued_timeout=0.2)  # a lock needs a conversation
        async with running_bot(cfg) as (bot, surface):
            await bot.accept(message("hello"))
            await surface.wait_for(1)
            await bot.idle()
        [posted] = surface.posted
        assert (posted.kind, posted.text) == ("answer", "You said: hello")
        assert [r.status for r in proxy_responses(emu)] == ["cancelled", "completed"]
        assert bot.supervisor.recovery_counts.get("thread_locked") == 1


async def test_a_transient_error_while_resuming_keeps_watching_the_same_run(tmp_path):
    clock = ManualClock()
    async with run_emulator(clock=clock, retry_after=0.01, scripts={"proxy": Script([Rule(delay=5)])}) as emu:
        emu.faults.drop_stream(after_events=2, agent="proxy")
        emu.faults.http_error(429, method="GET", path="/v1/responses/*", count=2)
        async with running_bot(team(emu.base_url, tmp_path / "db")) as (bot, surface):
            await bot.accept(message("hello"))
            await surface.wait_events("retrying", 2)  # both resumes refused; it goes on watching
            await clock.advance(5)
            await surface.wait_for(1)
            await bot.idle()
        [posted] = surface.posted
        assert (posted.kind, posted.text) == ("answer", "You said: hello")
        [only] = proxy_responses(emu)  # no second run was started
        assert only.status == "completed"
        assert [e.reason for e in surface.events if e.kind == "retrying"] == ["rate_limit", "rate_limit"]


async def test_a_run_left_waiting_for_tool_outputs_by_a_failed_turn_does_not_lock_out_the_next_turn(tmp_path):
    """4. (Assistants) A turn that failed while its proxy run waited for tool outputs left that run holding the
    thread (runs keep it locked until they expire, 10 minutes): every later turn met "already has an active run",
    a run not of its own scope, and failed too once its budget was spent."""
    async with run_emulator(retry_after=0.01) as emu:
        emu.faults.http_error(429, method="POST", path="/v1/threads/*/runs/*/submit_tool_outputs", count=7)
        cfg = team(emu.base_url, tmp_path / "db")
        cfg = dataclasses.replace(cfg, backend="assistants")
        async with running_bot(cfg) as (bot, surface):
            await bot.accept(message("ask the critic about plan A"))
            await surface.wait_for(1)
            await bot.accept(message("hello again"))
            await surface.wait_for(2)
            await bot.idle()
        first, second = surface.posted
        assert first.kind == "failure" and "rate-limiting" in first.text  # the budget was spent on the submit
        assert (second.kind, second.text) == ("answer", "You said: hello again")
        stale = next(r for r in emu.runs.values() if r.agent == "proxy")
        assert stale.status == "cancelled"
