"""Regressions for the engine classes of issue 12 that random soaks never hit (each failed on the code before it).

1. A stream that breaks before its first event escaped the supervisor as an internal error.
2. A sub-assistant failing with anything but `RunFailed` failed the whole turn while its siblings ran on.
3. After the main conversation was rebuilt mid-turn, tool outputs went to a conversation that never saw the calls
   (400 `No tool call found...`) and the fallback request lacked the user's message.
4. A turn that followed a failed one met the function calls the failed turn left unanswered one rejected request
   per call, instead of having them closed up front.
5. Responses: a create that took effect but whose answer never came (a timeout, a stream broken before its first
   event) was sent again, so the conversation held the user's message twice, and an orphan's function calls made
   the resend fail with `No tool output found`.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bot.backends.base import RunRequest
from bot.engine import INTERNAL_ERROR_TEXT, Bot, make_backend
from emulator import ManualClock, Rule, Script, run_emulator
from storage.base import StoreError
from tests.reliability.helpers import RecordingStore, Surface, conversations_team, message, running_bot, team

LIVE = {"queued", "in_progress", "requires_action", "cancelling"}


def live_objects(emu) -> list[str]:
    """Responses and runs still going (or waiting for us) at the provider."""
    return [r.id for r in emu.responses.values() if r.status in LIVE] + [
        run.id for run in emu.runs.values() if run.status in LIVE
    ]


def rejected(emu) -> list[str]:
    """Requests the provider refused with a 400 that no injected fault caused: requests the real API rejects."""
    return [f"{e.method} {e.path}" for e in emu.log.filter(status=400) if e.fault is None]


@pytest.mark.parametrize("backend", ["responses", "assistants"])
async def test_a_stream_that_breaks_before_its_first_event_is_recovered(tmp_path, backend):
    async with run_emulator(retry_after=0.01) as emu:
        emu.faults.drop_stream(after_events=0, agent="proxy")
        cfg = dataclasses.replace(team(emu.base_url, tmp_path / "db"), backend=backend)
        async with running_bot(cfg) as (bot, surface):
            await bot.accept(message("hello"))
            await surface.wait_for(1)
            await bot.idle()
        [posted] = surface.posted
        assert (posted.kind, posted.text) == ("answer", "You said: hello")
        assert live_objects(emu) == []
        if backend == "assistants":  # the run the broken stream created is adopted, not duplicated
            assert [r.status for r in emu.runs.values() if r.agent == "proxy"] == ["completed"]


@pytest.mark.parametrize("backend", ["responses", "assistants"])
async def test_a_sub_assistant_that_crashes_gives_the_proxy_an_error_and_its_siblings_finish(tmp_path, backend):
    async with run_emulator(retry_after=0.01) as emu:
        cfg = dataclasses.replace(team(emu.base_url, tmp_path / "db"), backend=backend)
        inner = make_backend(cfg)
        original_start = inner.start

        async def start(request: RunRequest):
            if request.agent.name == "critic":
                raise KeyError("a provider answer we do not understand")
            return await original_start(request)

        inner.start = start  # type: ignore[method-assign]
        bot = Bot(cfg, RecordingStore(cfg.db_path), inner)
        surface = Surface()
        bot.add_surface(surface)
        async with bot.running():
            await bot.accept(message("ask the critic and the researcher about plan A"))
            await surface.wait_for(1)
            await bot.idle()
        [posted] = surface.posted
        assert posted.kind == "answer"
        lines = posted.text.splitlines()
        assert lines[0] == "Here is what the team found:"
        assert "- researcher: researcher: done with" in posted.text
        assert any(line.startswith("- critic: ERROR: the critic assistant could not finish") for line in lines)
        assert live_objects(emu) == []


async def test_when_recording_a_sub_assistant_fails_its_siblings_are_stopped_with_their_runs(tmp_path):
    clock = ManualClock()
    slow = Script([Rule(delay=60)])
    async with run_emulator(clock=clock, retry_after=0.01, scripts={"researcher": slow}) as emu:
        cfg = team(emu.base_url, tmp_path / "db")

        class FailingStore(RecordingStore):
            async def finish_tool_call(self, turn_id, scope, call_id, output, ok) -> None:
                if output.startswith("critic:"):
                    raise StoreError("database write failed (disk I/O error)")
                await super().finish_tool_call(turn_id, scope, call_id, output, ok)

        store = FailingStore(cfg.db_path)
        async with running_bot(cfg, store) as (bot, surface):
            await bot.accept(message("ask the critic and the researcher about plan A"))
            await surface.wait_for(1)
            await bot.idle()
        [posted] = surface.posted
        assert (posted.kind, posted.text) == ("failure", INTERNAL_ERROR_TEXT)
        [researcher] = [r for r in emu.responses.values() if r.agent == "researcher"]
        assert researcher.status == "cancelled"  # not left working (and spending) for a turn that is over
        assert live_objects(emu) == []


async def test_a_conversation_rebuilt_mid_turn_gets_the_users_message_and_the_results(tmp_path):
    async with run_emulator(retry_after=0.01) as emu:
        cfg = conversations_team(emu.base_url, tmp_path / "db")
        store = RecordingStore(cfg.db_path)
        async with running_bot(cfg, store) as (bot, surface):
            await bot.accept(message("hello"))
            await surface.wait_for(1)
            main = (await store.get_conversation("console:rel:c1")).main_thread
            # the main conversation disappears while the critic works on the next turn
            recorded = store.run_recorded("critic")
            await bot.accept(message("ask the critic about plan A"))
            await recorded.wait()
            emu.conversations_api.delete_now(main)
            await surface.wait_for(2)
            await bot.idle()
        first, second = surface.posted
        assert (first.kind, first.text) == ("answer", "You said: hello")
        # (the scripted proxy delegates again: the handed-over results name the critic)
        assert second.kind == "answer" and second.text.startswith("Here is what the team found:")
        assert rejected(emu) == []  # no tool output was sent to a conversation that never saw the call
        [rebuilt] = [c for c in emu.conversations.values() if c.id != main and c.metadata.get("thread") == "main"]
        user_texts = [i["content"] for i in rebuilt.items if i.get("type") == "message" and i.get("role") == "user"]
        user_texts = [t if isinstance(t, str) else t[0]["text"] for t in user_texts]
        assert user_texts[0] == "hello"  # the earlier turn, from the local transcript
        assert "ask the critic about plan A" in user_texts[1:]  # this turn's message reached the rebuilt conversation
        assert any(t.startswith("Results of the tools you called earlier") and "critic: done" in t for t in user_texts)


async def test_calls_left_unanswered_by_a_failed_turn_are_closed_up_front_in_one_request(tmp_path):
    refuse_results = Script([Rule(on="tool_outputs", fail="invalid_prompt")])
    async with run_emulator(retry_after=0.01, scripts={"proxy": refuse_results}) as emu:
        async with running_bot(conversations_team(emu.base_url, tmp_path / "db")) as (bot, surface):
            await bot.accept(message("ask the team about plan A"))  # three parallel calls, then a refusal
            await surface.wait_for(1)
            await bot.idle()
            await bot.accept(message("hello again"))
            await surface.wait_for(2)
            await bot.idle()
        failed, answered = surface.posted
        assert failed.kind == "failure" and "refused" in failed.text
        assert (answered.kind, answered.text) == ("answer", "You said: hello again")
        assert rejected(emu) == []  # the next turn never met a conversation stuck on unanswered calls
        closes = emu.log.filter(method="POST", where=lambda e: e.path.endswith("/items"))
        assert len(closes) == 1  # all three calls closed in one write


async def test_a_resent_submit_follows_the_run_that_already_took_the_outputs(tmp_path):
    """Assistants: the stream of submit_tool_outputs breaks before its first event, yet the run took the outputs
    and went on. Sending them again is refused; the supervisor must watch that run, not start a second one."""
    async with run_emulator(retry_after=0.01) as emu:
        cfg = dataclasses.replace(team(emu.base_url, tmp_path / "db"), backend="assistants")
        store = RecordingStore(cfg.db_path)
        async with running_bot(cfg, store) as (bot, surface):
            recorded = store.run_recorded("critic")
            await bot.accept(message("ask the critic about plan A"))
            await recorded.wait()
            emu.faults.drop_stream(after_events=0, agent="proxy")  # the next proxy stream: the submit
            await surface.wait_for(1)
            await bot.idle()
        [posted] = surface.posted
        assert posted.kind == "answer" and posted.text.startswith("Here is what the team found:")
        assert [r.status for r in emu.runs.values() if r.agent == "proxy"] == ["completed"]
        assert live_objects(emu) == []


async def test_closing_calls_never_blocks_a_failing_turn_forever(tmp_path):
    """The up-front close is best effort: a provider that hangs on it does not hold the failure message back."""
    refuse_results = Script([Rule(on="tool_outputs", fail="invalid_prompt")])
    async with run_emulator(retry_after=0.01, scripts={"proxy": refuse_results}) as emu:
        cfg = team(emu.base_url, tmp_path / "db", stream_idle_timeout=0.2)
        backend = make_backend(cfg)
        hang = asyncio.Event()

        async def abandon(state) -> None:
            await hang.wait()

        backend.abandon = abandon  # type: ignore[method-assign]
        bot = Bot(cfg, RecordingStore(cfg.db_path), backend)
        surface = Surface()
        bot.add_surface(surface)
        async with bot.running():
            await bot.accept(message("ask the critic about plan A"))
            await surface.wait_for(1)
        [failed] = surface.posted
        assert failed.kind == "failure" and "refused" in failed.text


async def test_an_unknown_run_that_holds_the_conversation_is_left_behind_on_a_fresh_one(tmp_path):
    """Responses: the stream broke before the response was named, and that response stays queued (a reported bug of
    the real API). Nothing can cancel a response whose id we never learnt, so after a few waits the turn moves to a
    conversation rebuilt from the local transcript instead of spending its budget on the lock."""
    async with run_emulator(retry_after=0.01) as emu:
        async with running_bot(conversations_team(emu.base_url, tmp_path / "db")) as (bot, surface):
            await bot.accept(message("hello"))
            await surface.wait_for(1)
            emu.faults.drop_stream(after_events=0, agent="proxy")
            emu.faults.stay_queued(agent="proxy")
            await bot.accept(message("hello again"))
            await surface.wait_for(2)
            await bot.idle()
        assert [(p.kind, p.text) for p in surface.posted] == [
            ("answer", "You said: hello"), ("answer", "You said: hello again")
        ]
        assert bot.supervisor.recovery_counts.get("thread_locked_by_unknown_run") == 1
        [orphan] = [r for r in emu.responses.values() if r.status == "queued"]  # the one we could never name
        assert live_objects(emu) == [orphan.id]
        rebuilt = [c for c in emu.conversations.values() if c.metadata.get("thread") == "main"][-1]
        texts = [i["content"] for i in rebuilt.items if i.get("role") == "user"]
        texts = [t if isinstance(t, str) else t[0]["text"] for t in texts]
        assert texts == ["hello", "hello again"]  # the earlier turn from the transcript, this one once


def main_user_texts(emu) -> list[str]:
    """The user messages in the (newest) main conversation, as the model sees them."""
    main = [c for c in emu.conversations.values() if c.metadata.get("thread") == "main"][-1]
    texts = [i["content"] for i in main.items if i.get("type") == "message" and i.get("role") == "user"]
    return [t if isinstance(t, str) else "".join(part["text"] for part in t) for t in texts]


@pytest.mark.parametrize("fault", ["timeout", "break@0"])
async def test_a_lost_create_that_ran_is_adopted_not_sent_again(tmp_path, fault):
    async with run_emulator(retry_after=0.01) as emu:
        if fault == "timeout":
            emu.faults.timeout(agent="proxy")
        else:
            emu.faults.drop_stream(after_events=0, agent="proxy")
        async with running_bot(conversations_team(emu.base_url, tmp_path / "db")) as (bot, surface):
            await bot.accept(message("hello"))
            await surface.wait_for(1)
            await bot.idle()
        [posted] = surface.posted
        assert (posted.kind, posted.text) == ("answer", "You said: hello")
        assert main_user_texts(emu) == ["hello"]
        assert [r.agent for r in emu.responses.values()] == ["proxy"]  # the orphan answered; nothing resent
        assert bot.supervisor.recovery_counts.get("lost_create_adopted") == 1


async def test_a_lost_create_that_called_tools_gets_its_calls_answered(tmp_path):
    """The proxy's lost response delegated: its function calls are taken over, not met as a rejected request."""
    async with run_emulator(retry_after=0.01) as emu:
        emu.faults.drop_stream(after_events=0, agent="proxy")
        async with running_bot(conversations_team(emu.base_url, tmp_path / "db")) as (bot, surface):
            await bot.accept(message("ask the critic about plan A"))
            await surface.wait_for(1)
            await bot.idle()
        [posted] = surface.posted
        assert posted.kind == "answer" and posted.text.startswith("Here is what the team found:")
        assert rejected(emu) == []
        assert main_user_texts(emu) == ["ask the critic about plan A"]
        assert len([r for r in emu.responses.values() if r.agent == "critic"]) == 1
        assert live_objects(emu) == []


async def test_a_lost_create_still_running_is_waited_for_and_adopted(tmp_path):
    """The lost response is still working when the resend meets its lock: the turn waits for it and adopts what it
    leaves, instead of moving to a rebuilt conversation and answering twice at the provider."""
    slow_first = Script([Rule(delay=5, times=1)])
    async with run_emulator(retry_after=0.01, clock=ManualClock(), scripts={"proxy": slow_first}) as emu:
        emu.faults.drop_stream(after_events=0, agent="proxy")
        async with running_bot(conversations_team(emu.base_url, tmp_path / "db", lock_wait=5)) as (bot, surface):
            await bot.accept(message("hello"))
            await emu.wait_until(lambda: bool(emu.log.filter(status=400, agent="proxy")))  # the resend met the lock
            await emu.clock.advance(5)
            await surface.wait_for(1)
            await bot.idle()
        [posted] = surface.posted
        assert (posted.kind, posted.text) == ("answer", "You said: hello")
        assert [c.metadata.get("thread") for c in emu.conversations.values()].count("main") == 1  # no rebuild
        assert main_user_texts(emu) == ["hello"]
        assert bot.supervisor.recovery_counts.get("lost_create_adopted") == 1
        assert live_objects(emu) == []
