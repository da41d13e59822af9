"""Regressions for supervisor bugs the fault soak found (benchmarks/soak.py, docs/RELIABILITY.md).

1. A run stuck in `queued` whose cancel met a transient error was recorded as cancelled but kept holding the
   conversation: every later attempt failed as `conversation_locked` until the retry budget was spent.
2. The Responses API never names the holder of a locked conversation, so a stale run of ours was never cancelled.
3. A transient error while *watching* a run (resuming its stream, polling it) made the supervisor start a second
   run instead of watching the first one again: a duplicate run racing the first for the conversation.
"""

from __future__ import annotations

from bot.emulator import ManualClock, Rule, Script, run_emulator
from tests.reliability.helpers import message, running_bot, team


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
        async with running_bot(team(emu.base_url, tmp_path / "db", queued_timeout=0.2)) as (bot, surface):
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
