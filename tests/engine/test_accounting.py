"""Token accounting: the input, cached-input and output tokens recorded per run, assistant, turn and conversation
equal the sum of the `usage` the emulator billed, on every backend, a recreated run included; the same figures
reach the per-turn log line, the Prometheus counters and `switchboard status`."""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from bot import accounting
from bot.access import utc_day
from bot.types import Actor, CommandContext, Usage
from emulator import Emulator
from tests.engine.harness import inbound, running_bot, team

MESSAGES = (
    ("console:test:c1", "hello there"),
    ("console:test:c1", "ask the researcher and the critic about the plan"),
    ("console:test:c2", "ask the critic again"),
    ("console:test:c1", "and the planner too"),
)


def billed(emu: Emulator) -> dict[str, Usage]:
    """The usage in every answer the emulator gave (responses, runs, chat completions), by agent."""
    found: dict[str, Usage] = defaultdict(Usage)
    for r in emu.responses.values():
        u = r.usage or {}
        cached = (u.get("input_tokens_details") or {}).get("cached_tokens") or 0
        found[r.agent] += Usage(u.get("input_tokens") or 0, u.get("output_tokens") or 0, cached)
    for run in emu.runs.values():
        u = run.usage or {}
        found[run.agent] += Usage(u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0)
    for c in emu.chat_completions.values():
        u = c.usage or {}
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        found[c.agent] += Usage(u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0, cached)
    return {agent: usage for agent, usage in found.items() if usage.total}


async def test_recorded_tokens_equal_what_the_provider_billed(emu, tmp_path, backend, caplog):
    emu.prompt_cache.min_tokens = emu.prompt_cache.block = 1  # short test prompts hit the cache too
    emu.faults.fail("server_error", agent="critic")  # a failed run is billed, then recreated
    caplog.set_level(logging.INFO, logger="switchboard.engine.worker")
    async with running_bot(team(emu.base_url, tmp_path / "db", backend=backend)) as (bot, surface):
        for i, (conversation, text) in enumerate(MESSAGES, 1):
            await bot.accept(inbound(text, conversation=conversation))
            await surface.wait_for(i)
            await bot.idle()
        assert all(r.kind == "answer" for r in surface.replies())
        expected = billed(emu)
        found = accounting.totals(await bot.store.token_rows())
        assert found.assistants == expected
        assert found.total == sum(expected.values(), Usage())
        assert set(expected) == {"proxy", "researcher", "critic", "planner"}
        if backend != "assistants":  # OpenAI's runs report no cached figure
            assert found.total.cached_input_tokens > 0

        # per turn: the turn record (what the turn added up as it went) equals the sum of its runs
        turn_ids = {ref.id for ref, _ in surface.deliveries}
        for conversation, turns in found.turns.items():
            for turn_id, used in turns.items():
                record = await bot.store.get_turn(turn_id)
                assert record.conversation == conversation and turn_id in turn_ids
                assert (record.input_tokens, record.output_tokens) == (used.input_tokens, used.output_tokens)
        assert sum(found.conversations.values(), Usage()) == found.total
        assert len(found.turns["console:test:c1"]) == 3 and len(found.turns["console:test:c2"]) == 1

        # the daily budget rows (issue 16) carry the same totals, cached input included
        [bot_row] = [r for r in await bot.store.usage_on(utc_day(time.time())) if r.bucket == "bot"]
        assert (bot_row.input_tokens, bot_row.cached_input_tokens, bot_row.output_tokens) == (
            found.total.input_tokens, found.total.cached_input_tokens, found.total.output_tokens)
        assert f"of which {found.total.cached_input_tokens:,} cached" in await bot.policy.report()

        # Prometheus: per assistant and kind, and the totals by kind
        metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in bot.metrics.registry.collect() for s in family.samples}
        for agent, used in expected.items():
            for kind, value in zip(accounting.TOKEN_KINDS, (used.input_tokens, used.cached_input_tokens,
                                                            used.output_tokens), strict=True):
                assert metrics.get(("switchboard_assistant_tokens_total", (("assistant", agent), ("kind", kind))),
                                   0) == value
        assert metrics[("switchboard_tokens_total", (("kind", "input"),))] == found.total.input_tokens

        # the per-turn log line names the tokens, cached input and the assistants
        lines = [r for r in caplog.records if r.getMessage().startswith("turn ")]
        assert len(lines) == len(MESSAGES)
        assert sum(r.input_tokens for r in lines) == found.total.input_tokens  # type: ignore[attr-defined]
        assert sum(r.cached_input_tokens for r in lines) == found.total.cached_input_tokens  # type: ignore[attr-defined]
        assert "cached" in lines[1].getMessage() and "researcher " in lines[1].getMessage()

        status = "\n".join(await accounting.status_lines(bot.store))
        assert accounting.tokens_text(found.total) in status
        assert f"critic: {accounting.tokens_text(expected['critic'])}" in status

        # the chat `status` command: each conversation of the channel with its tokens so far
        asked = CommandContext(Actor("console", "u1"), "console:test", "console:test:c1")
        channel_status = (await bot.command(asked, "status")).text.splitlines()
        assert sorted(channel_status) == sorted(
            f"{conversation}: idle; tokens so far {accounting.tokens_text(used)}"
            for conversation, used in found.conversations.items())


async def test_a_version_3_database_keeps_its_runs_and_records_tokens_from_now_on(tmp_path):
    import sqlite3

    from storage.base import RunRecord, RunTokens, TurnRecord
    from storage.schema import MIGRATIONS
    from storage.sqlite import SQLiteStore

    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.executescript("".join(MIGRATIONS[:3]))
        conn.execute("INSERT INTO turns(id, conversation, generation, state, created_at, updated_at)"
                     " VALUES ('t1', 'c1', 0, 'delivered', 1, 1)")
        conn.execute("INSERT INTO runs(remote_id, turn_id, scope, agent, thread_id, status, attempt, input,"
                     " created_at, updated_at) VALUES ('r1', 't1', 'proxy', 'proxy', 'th', 'completed', 0, '[]', 1, 1)")
        conn.execute("PRAGMA user_version=3")
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        [old] = await store.token_rows()
        assert (old.agent, old.runs, old.tokens) == ("proxy", 1, RunTokens())  # from before accounting: zeros
        turn = TurnRecord.new("c1", 0)
        await store.start_turn(turn, [], "main")
        await store.record_run(RunRecord("r2", turn.id, "proxy/call_1", "critic", "th2", "in_progress", 0, []))
        await store.update_run("r2", status="completed", tokens=RunTokens(40, 16, 9))
        await store.update_run("r2", status="completed")  # no figures: the recorded ones stay
        rows = await store.token_rows("c1")
        assert [(r.agent, r.tokens) for r in rows] == [("proxy", RunTokens()), ("critic", RunTokens(40, 16, 9))]
    finally:
        await store.close()
