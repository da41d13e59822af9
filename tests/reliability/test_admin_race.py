"""An admin cancel or reset and the conversation worker never race (issue 12): a message arriving while the admin
action waits on the provider must not resume the turn just reported stopped, and is itself answered once the action
is done.

The provider's cancel call is held on an `asyncio.Event` and the slow run waits on the emulator's manual clock, so
the message lands inside the window every time. Runs for cancel and reset, once per backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.backends.base import Backend
from bot.engine import Bot, make_backend
from bot.types import Actor, CommandContext
from emulator import Emulator, ManualClock, Rule, Script, run_emulator
from tests.engine.harness import BACKENDS, RecordingSurface, inbound, remote_runs, run_input_texts, team
from tests.reliability.helpers import RecordingStore

CONV = "console:test:c1"
WAIT_SECONDS = 20.0
ADMIN = CommandContext(Actor("console", "root", platform_admin=True), "console:test", CONV)


class HeldCancel:
    """Holds the provider cancel calls an admin task makes until `release` is set; the worker's own are not held
    (the admin awaits the worker, so holding those would only deadlock the test)."""

    def __init__(self, backend: Backend) -> None:
        self._cancel = backend.cancel
        self.admin: asyncio.Task[object] | None = None
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        backend.cancel = self._held  # type: ignore[method-assign]

    async def _held(self, run_id: str, thread_id: str) -> None:
        if asyncio.current_task() is self.admin:
            self.entered.set()
            await self.release.wait()
        await self._cancel(run_id, thread_id)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    # The first proxy run works until the manual clock moves, which it never does here.
    scripts = {"proxy": Script(rules=[Rule(match="slow", delay=60.0, times=1)])}
    async with run_emulator(clock=ManualClock(), scripts=scripts, retry_after=0.01) as emulator:
        yield emulator


@pytest.mark.parametrize(
    ("command", "done", "notice"),
    [
        ("cancel", "Cancelled the running turn.", "cancelled by root"),
        ("reset", "Done: the next message starts a fresh conversation.", "stopped because root reset"),
    ],
)
async def test_a_message_during_an_admin_cancel_or_reset_does_not_resume_the_stopped_turn(
    emu, tmp_path, backend, command, done, notice
):
    cfg = team(emu.base_url, tmp_path / "db", backend=backend, stream_idle_timeout=60.0)
    store = RecordingStore(cfg.db_path)
    bot = Bot(cfg, store, make_backend(cfg))
    surface = RecordingSurface()
    bot.add_surface(surface)
    async with bot.running():
        await bot.accept(inbound("a slow question", CONV))
        async with asyncio.timeout(WAIT_SECONDS):
            await store.run_recorded("proxy").wait()  # the turn's run exists and is on record: cancel must stop it
        [cancelled] = await store.unfinished_turns(CONV)
        [slow_run] = remote_runs(emu, "proxy")

        held = HeldCancel(bot.backend)
        admin = asyncio.create_task(bot.command(ADMIN, command))
        held.admin = admin
        async with asyncio.timeout(WAIT_SECONDS):
            await held.entered.wait()  # the worker is stopped and the admin is at the provider
        accepted = await bot.accept(inbound("a quick question", CONV))
        held.release.set()
        async with asyncio.timeout(WAIT_SECONDS):
            result = await admin
            await bot.idle()

        assert result.text == done
        # the cancelled turn was not resumed: the only other provider run answers the new message (a chat server
        # sees its client close the connection a moment later)
        await emu.wait_until(lambda: remote_runs(emu, "proxy")[0].status != "in_progress")
        runs = remote_runs(emu, "proxy")
        assert [(run_input_texts(emu, r), r.status) for r in runs] == [
            (["a slow question"], "cancelled"),
            (["a quick question"], "completed"),
        ]
        assert runs[0].id == slow_run.id and runs[0].record.cancelled_by == "client"
        # a reset takes effect for the message that arrived during it: a fresh conversation at the provider
        assert (runs[1].thread == slow_run.thread) == (command == "cancel")
        # one notice for the cancelled turn, then one answer to the new message, nothing else
        delivered = [(turn.id, reply.kind) for turn, reply in surface.deliveries]
        assert delivered[0] == (cancelled.id, "notice") and notice in surface.replies()[0].text
        assert len(delivered) == 2 and delivered[1][1] == "answer", delivered
        assert surface.replies()[1].text == "You said: a quick question"
        answered = await store.inbound_for_turn(delivered[1][0])
        assert [(m.text, m.state) for m in answered] == [("a quick question", "answered")]
        record = await store.get_turn(cancelled.id)
        assert (record.state, record.reply_kind) == ("delivered", "notice")
        assert await store.unfinished_turns(CONV) == [] and await store.active_runs() == []
        assert accepted.queued_behind_turn  # it waited for the admin action instead of starting a worker
