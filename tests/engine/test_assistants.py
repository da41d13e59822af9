"""The Assistants v2 backend's own guarantees: the proxy run expiring while sub-assistants work, the thread lock (a
stale run of ours cancelled, someone else's waited for), dropped streams polled with `openai-poll-after-ms`, lost
creates adopted instead of duplicated, deleted sub-assistant threads rebuilt, assistants synced from the team file,
and the SDK's DeprecationWarning handled once."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
import warnings

import openai

from bot.backends import assistants as assistants_module
from bot.backends.assistants import TAG_KEY, AssistantsBackend
from bot.engine import Bot
from emulator import ManualClock, Rule, Script, run_emulator
from storage.sqlite import SQLiteStore
from tests.engine.harness import (
    RecordingSurface,
    inbound,
    remote_runs,
    run_creates,
    running_bot,
    team,
    thread_texts,
)

RESULTS_RULE = Rule(match=r"^Results of the tools you called", reply="Final answer. {input}")


def spy_polls(bot, count: int) -> tuple[list[float], asyncio.Event]:
    """Record when the engine polls a run (`retrieve`); the event is set at the `count`-th poll."""
    polled: list[float] = []
    reached = asyncio.Event()
    retrieve = bot.backend.retrieve

    async def timed_retrieve(run_id: str, thread_id: str):
        polled.append(time.monotonic())
        if len(polled) >= count:
            reached.set()
        return await retrieve(run_id, thread_id)

    bot.backend.retrieve = timed_retrieve
    return polled, reached


def reasons(surface) -> list[str]:
    return [e.reason for e in surface.kinds("retrying")]


async def one_reply(bot, surface):
    [(turn, reply)] = await surface.wait_for(1)
    await bot.idle()
    assert len(surface.deliveries) == 1
    return turn, reply


async def test_sub_assistants_outlasting_the_proxy_runs_expiry_end_in_one_answer_using_every_result(tmp_path):
    clock = ManualClock()
    work = Script(rules=[Rule(delay=300.0)])  # each sub-assistant works 5 minutes, one after the other
    scripts = {"proxy": Script(rules=[RESULTS_RULE]), "researcher": work, "critic": work, "planner": work}
    async with run_emulator(clock=clock, scripts=scripts, expiry_seconds=600, retry_after=0.01) as emu:
        cfg = team(emu.base_url, tmp_path / "db", backend="assistants", max_parallel=1)
        async with running_bot(cfg) as (bot, surface):
            await bot.accept(inbound("ask the team about the launch"))
            for name in ("researcher", "critic", "planner"):
                await emu.wait_until(lambda n=name: any(r.status == "in_progress" for r in remote_runs(emu, n)))
                await clock.advance(300.0)  # 15 minutes in all: the proxy's run expires after 10
            _, reply = await one_reply(bot, surface)
        assert reply.kind == "answer"
        assert reply.text.startswith("Final answer. Results of the tools you called")
        for name in ("researcher", "critic", "planner"):
            assert f"{name}: done with 'Task: ask the team about the launch'" in reply.text
        first, second = remote_runs(emu, "proxy")
        assert (first.status, second.status) == ("expired", "completed")
        assert first.thread == second.thread  # recreated on the same thread
        assert reasons(surface) == ["outputs_rejected"]
        # every sub-assistant worked once: the finished results were handed over, not recomputed
        assert [r.agent for r in remote_runs(emu) if r.agent != "proxy"] == ["researcher", "critic", "planner"]
        # the user's message is on the thread once; the results went to the new run as one message
        texts = thread_texts(emu, first.thread)
        assert texts.count("ask the team about the launch") == 1
        assert sum(t.startswith("Results of the tools you called") for t in texts) == 1


async def test_thread_held_by_someone_elses_run_is_waited_for_never_posted_into(emu, tmp_path):
    async with running_bot(team(emu.base_url, tmp_path / "db", backend="assistants")) as (bot, surface):
        await bot.accept(inbound("first"))
        await surface.wait_for(1)
        thread = (await bot.store.get_conversation("console:test:c1")).main_thread
        # another client runs its own assistant on our thread for a moment
        emu.scripts["intruder"] = Script(rules=[Rule(reply="mine", delay=0.3)])
        client = openai.AsyncOpenAI(base_url=emu.base_url, api_key="x", max_retries=0)
        intruder = await client.post("/assistants", body={"model": "m", "name": "intruder"}, cast_to=object)
        run = await client.post(f"/threads/{thread}/runs", body={"assistant_id": intruder["id"]}, cast_to=object)
        await bot.accept(inbound("second"))
        replies = await surface.wait_for(2)
        await bot.idle()
        await client.close()
        assert replies[1][1].text == "You said: second"
        assert "thread_locked" in reasons(surface)
        assert emu.runs[run["id"]].status == "completed"  # waited for, not cancelled
        assert [e.status for e in run_creates(emu, "assistants")].count(400) >= 1
        # nothing was posted while the thread was locked: the message went in with the run that followed
        assert not [e for e in emu.log if e.path.endswith("/messages") and e.method == "POST"]
        assert thread_texts(emu, thread) == ["first", "You said: first", "mine", "second", "You said: second"]


async def test_stale_run_of_ours_holding_the_thread_is_cancelled(emu, tmp_path):
    # Our run never leaves `queued`, and cancelling it fails (HTTP 500) for a while: it still holds the thread when
    # we recreate. The lock error names it, it is ours, so it is cancelled then, and the turn goes on.
    emu.faults.stay_queued(agent="proxy")
    emu.faults.http_error(500, method="POST", path="/v1/threads/*/runs/*/cancel", count=None)
    cfg = team(emu.base_url, tmp_path / "db", backend="assistants", queued_timeout=0.2)
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("hello"))
        await surface.wait_event("retrying")  # queued too long; the cancel did not go through
        emu.faults.clear()
        _, reply = await one_reply(bot, surface)
    assert reply.text == "You said: hello"
    assert reasons(surface)[:2] == ["queued_too_long", "thread_locked"]
    stale, fresh = remote_runs(emu, "proxy")
    assert (stale.status, fresh.status) == ("cancelled", "completed")
    assert [e.status for e in run_creates(emu, "assistants")] == [200, 400, 200]
    cancels = [e.status for e in emu.log if e.path.endswith("/cancel")]
    assert 500 in cancels and cancels[-1] == 200
    assert thread_texts(emu, stale.thread).count("hello") == 1


async def test_dropped_stream_falls_back_to_polling_at_the_providers_pace(tmp_path):
    clock = ManualClock()
    scripts = {"proxy": Script(rules=[Rule(delay=5.0)])}
    async with run_emulator(clock=clock, scripts=scripts, retry_after=0.01, poll_after_ms=60) as emu:
        emu.faults.drop_stream(3, agent="proxy", api="assistants")  # created, queued, in_progress: then gone
        cfg = team(emu.base_url, tmp_path / "db", backend="assistants", poll_interval=0.001)
        async with running_bot(cfg) as (bot, surface):
            polled, fourth = spy_polls(bot, 4)
            await bot.accept(inbound("hello polling world"))
            await fourth.wait()
            await clock.advance(5.0)
            _, reply = await one_reply(bot, surface)
        assert reply.text == "You said: hello polling world"
        assert len(remote_runs(emu, "proxy")) == 1  # the same run, watched to the end, never recreated
        assert bot.supervisor.recovery_counts == {"stream_dropped": 1}
        # the engine waited what `openai-poll-after-ms` asked (60 ms) between polls, not the configured 1 ms
        gaps = [b - a for a, b in itertools.pairwise(polled)]
        assert min(gaps) >= 0.05, gaps


async def test_lost_create_is_adopted_not_duplicated(tmp_path):
    # The create reached the provider but its stream died before the first event: the run exists and holds the
    # thread. Recreating must neither post the message again nor start a second run.
    clock = ManualClock()
    async with run_emulator(clock=clock, scripts={"proxy": Script(rules=[Rule(delay=1.0)])}, retry_after=0.01) as emu:
        emu.faults.drop_stream(0, agent="proxy", api="assistants")
        async with running_bot(team(emu.base_url, tmp_path / "db", backend="assistants")) as (bot, surface):
            _, polling = spy_polls(bot, 1)
            await bot.accept(inbound("hello"))
            await polling.wait()
            await clock.advance(1.0)
            _, reply = await one_reply(bot, surface)
        assert reply.text == "You said: hello"
        [run] = remote_runs(emu, "proxy")
        assert thread_texts(emu, run.thread) == ["hello", "You said: hello"]
        assert [m.metadata.get(TAG_KEY, "").split(".")[0] for m in emu.threads[run.thread].messages[:1]] == [
            run.record.metadata["input"]
        ]


async def test_deleted_sub_assistant_thread_is_rebuilt_with_its_history(emu, tmp_path):
    async with running_bot(team(emu.base_url, tmp_path / "db", backend="assistants")) as (bot, surface):
        await bot.accept(inbound("ask the critic about plan A"))
        await surface.wait_for(1)
        old = await bot.store.get_sub_thread("console:test:c1", 0, "critic")
        emu.faults.delete_thread(old)
        await bot.accept(inbound("ask the critic about plan B"))
        replies = await surface.wait_for(2)
        new = await bot.store.get_sub_thread("console:test:c1", 0, "critic")
    assert new != old
    assert "(I remember 1 earlier requests)" in replies[1][1].text
    assert [(e.who, e.reason) for e in surface.kinds("retrying")] == [("critic", "thread_gone")]


async def test_assistants_are_synced_once_and_rewritten_only_when_changed(emu, tmp_path):
    cfg = team(emu.base_url, tmp_path / "db", backend="assistants")
    store = SQLiteStore(cfg.db_path)
    await store.open()

    async def sync(config, bound=store):
        backend = AssistantsBackend(openai.AsyncOpenAI(base_url=emu.base_url, api_key="x"), config, bound)
        try:
            return {c.name: c.action for c in await backend.sync()}, backend
        finally:
            await backend.close()

    try:
        first, _ = await sync(cfg)
        assert first == dict.fromkeys(("proxy", "researcher", "critic", "planner"), "created")
        ids = {a.name: a.id for a in emu.assistants.values()}
        assert (await store.get_agent("assistants", "critic"))[0] == ids["critic"]  # cached in SQLite
        writes = len([e for e in emu.log if e.method == "POST"])
        again, _ = await sync(cfg)
        assert set(again.values()) == {"unchanged"}
        assert len([e for e in emu.log if e.method == "POST"]) == writes  # nothing rewritten

        critic = dataclasses.replace(cfg.sub("critic"), instructions="Be harsh.")
        changed = dataclasses.replace(cfg, subs=tuple(critic if s.name == "critic" else s for s in cfg.subs))
        after_edit, _ = await sync(changed)
        assert after_edit == {"proxy": "unchanged", "researcher": "unchanged", "critic": "updated",
                              "planner": "unchanged"}
        assert emu.assistants[ids["critic"]].instructions == "Be harsh."

        # a fresh database (cache lost) finds the same assistants by name and metadata instead of duplicating them
        fresh = SQLiteStore(tmp_path / "fresh.db")
        await fresh.open()
        try:
            found, _ = await sync(changed, fresh)
        finally:
            await fresh.close()
        assert set(found.values()) == {"unchanged"}
        assert len(emu.assistants) == 4
        assert {a.name: a.id for a in emu.assistants.values()} == ids
        # the proxy's assistant carries the delegation tools; sub-assistants (max_depth 1) carry none
        proxy = emu.assistants[ids["proxy"]]
        assert sorted(t["function"]["name"] for t in proxy.tools) == ["ask_critic", "ask_planner", "ask_researcher"]
        assert emu.assistants[ids["critic"]].tools == []
    finally:
        await store.close()


async def test_deprecation_warning_is_handled_once_quietly(emu, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(assistants_module, "_deprecation_quieted", False)
    caplog.set_level(logging.INFO, logger="switchboard.backends.assistants")
    client = openai.AsyncOpenAI(base_url=emu.base_url, api_key="x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with running_bot(team(emu.base_url, tmp_path / "db", backend="assistants")) as (bot, surface):
            await bot.accept(inbound("ask the critic"))
            await one_reply(bot, surface)
        assistants_module.quiet_deprecation()
        # even code that goes through the SDK's beta namespace stays quiet now
        await client.beta.assistants.list()
        await client.beta.threads.create()
        await client.beta.threads.create()
    await client.close()
    assert [w for w in caught if issubclass(w.category, DeprecationWarning)] == []
    lines = [r for r in caplog.records if "Assistants v2 API" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO


async def test_restart_after_the_proxy_run_expired_reuses_the_finished_results(tmp_path):
    # The bot stops while the critic works; when it starts again the proxy's run has expired. The critic's finished
    # work is picked up (not redone) and reaches the proxy through a new run on the same thread.
    clock = ManualClock()
    scripts = {"proxy": Script(rules=[RESULTS_RULE]), "critic": Script(rules=[Rule(delay=500.0)])}
    async with run_emulator(clock=clock, scripts=scripts, expiry_seconds=600, retry_after=0.01) as emu:
        cfg = team(emu.base_url, tmp_path / "db", backend="assistants")
        first = Bot.from_config(cfg)
        first.add_surface(RecordingSurface())
        await first.start()
        await first.accept(inbound("ask the critic about the plan"))
        await emu.wait_until(lambda: [r.status for r in remote_runs(emu, "critic")] == ["in_progress"])
        await first.stop(grace=0)  # the turn is interrupted with the critic still working
        await clock.advance(700.0)  # the critic finished at 500 s; the proxy's run expired at 600 s
        assert [r.status for r in remote_runs(emu)] == ["expired", "completed"]
        async with running_bot(cfg) as (bot, surface):
            _, reply = await one_reply(bot, surface)
        assert reply.text.startswith("Final answer. Results of the tools you called")
        assert "critic: done with 'Task: ask the critic about the plan'" in reply.text
        assert len(remote_runs(emu, "critic")) == 1  # picked up, not recomputed
        assert [r.status for r in remote_runs(emu, "proxy")] == ["expired", "completed"]
        assert reasons(surface) == ["outputs_rejected"]


async def test_assistant_deleted_on_the_server_is_made_again(emu, tmp_path):
    async with running_bot(team(emu.base_url, tmp_path / "db", backend="assistants")) as (bot, surface):
        await bot.accept(inbound("first"))
        await surface.wait_for(1)
        [proxy] = [a for a in emu.assistants.values() if a.name == "proxy"]
        del emu.assistants[proxy.id]
        await bot.accept(inbound("second"))
        replies = await surface.wait_for(2)
        await bot.idle()
        assert replies[1][1].text == "You said: second"
        assert reasons(surface) == ["assistant_gone"]
        [again] = [a for a in emu.assistants.values() if a.name == "proxy"]
        assert again.id != proxy.id
        assert (await bot.store.get_agent("assistants", "proxy"))[0] == again.id


async def test_long_transcript_seeds_a_thread_in_one_request(emu, tmp_path):
    from bot.backends.base import TranscriptItem

    cfg = team(emu.base_url, tmp_path / "db", backend="assistants")
    backend = AssistantsBackend(openai.AsyncOpenAI(base_url=emu.base_url, api_key="x"), cfg)
    seed = [TranscriptItem("user" if i % 2 == 0 else "assistant", f"message {i}") for i in range(40)]
    try:
        thread_id = await backend.create_thread(seed, {"thread": "main"})
    finally:
        await backend.close()
    texts = thread_texts(emu, thread_id)
    assert len(texts) == 32 and texts[1:] == [f"message {i}" for i in range(9, 40)]
    assert texts[0].startswith("Earlier in this conversation:\nuser: message 0\nassistant: message 1")
    assert texts[0].endswith("user: message 8")
    assert [e.path for e in emu.log] == ["/v1/threads"]
