"""The mailbox's per-conversation door (`Mailbox.exclusive`): it stops the conversation's worker, keeps new workers
out until the admin action ends (then starts the one that was asked for), lets only one admin action in at a time,
leaves other conversations alone, and counts for `idle()`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from bot.mailbox import Mailbox

WAIT_SECONDS = 10.0


class HeldWork:
    """A handler whose units of work start and finish when the test says so."""

    def __init__(self) -> None:
        self.pending: dict[str, int] = {}
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.finish = asyncio.Event()
        self.wind_down = asyncio.Event()  # a cancelled unit ends only when this is set
        self.wind_down.set()
        self._changed = asyncio.Condition()

    def add(self, conversation: str) -> None:
        self.pending[conversation] = self.pending.get(conversation, 0) + 1

    async def handle(self, conversation: str) -> bool:
        if not self.pending.get(conversation):
            return False
        async with self._changed:
            self.started.append(conversation)
            self._changed.notify_all()
        try:
            await self.finish.wait()
        except asyncio.CancelledError:
            async with self._changed:
                self.cancelled.append(conversation)
                self._changed.notify_all()
            await self.wind_down.wait()
            raise
        self.pending[conversation] -= 1
        return True

    async def wait_started(self, count: int) -> None:
        async with asyncio.timeout(WAIT_SECONDS), self._changed:
            await self._changed.wait_for(lambda: len(self.started) >= count)

    async def wait_cancelled(self, count: int) -> None:
        async with asyncio.timeout(WAIT_SECONDS), self._changed:
            await self._changed.wait_for(lambda: len(self.cancelled) >= count)


class Admin:
    """An admin action in its own task: it enters the door, reports that, and leaves when told."""

    def __init__(self, mailbox: Mailbox, conversation: str) -> None:
        self.inside = asyncio.Event()
        self.leave = asyncio.Event()
        self.task = asyncio.create_task(self._run(mailbox, conversation))

    async def _run(self, mailbox: Mailbox, conversation: str) -> None:
        async with mailbox.exclusive(conversation):
            self.inside.set()
            await self.leave.wait()

    async def wait_inside(self) -> None:
        async with asyncio.timeout(WAIT_SECONDS):
            await self.inside.wait()

    async def finish(self) -> None:
        self.leave.set()
        async with asyncio.timeout(WAIT_SECONDS):
            await self.task


async def one_loop_pass() -> None:
    """Every task already ready takes its next step first: asyncio runs ready callbacks in FIFO order, so a task
    created now runs after them."""
    await asyncio.create_task(nothing())


async def nothing() -> None:
    pass


async def wait_idle(mailbox: Mailbox) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        await mailbox.idle()


async def test_the_door_stops_the_worker_holds_kicks_and_starts_the_worker_after():
    work = HeldWork()
    mailbox = Mailbox(work.handle)
    work.add("c1")
    mailbox.kick("c1")
    await work.wait_started(1)

    admin = Admin(mailbox, "c1")
    await admin.wait_inside()
    assert work.cancelled == ["c1"] and mailbox.busy("c1")  # stopped, and new work would wait for the action
    assert mailbox.depth == 0  # the cancelled worker was awaited before the action got in

    work.add("c1")
    mailbox.kick("c1")  # a message arriving during the admin action
    assert mailbox.depth == 0 and work.started == ["c1"]

    await admin.finish()
    await work.wait_started(2)  # the remembered kick starts the worker right after the door opens
    work.finish.set()
    await wait_idle(mailbox)
    assert work.pending["c1"] == 0 and not mailbox.busy("c1")


async def test_admin_actions_on_one_conversation_take_turns_and_others_run_on():
    work = HeldWork()
    mailbox = Mailbox(work.handle)
    first = Admin(mailbox, "c1")
    await first.wait_inside()
    second = Admin(mailbox, "c1")
    work.add("c2")
    mailbox.kick("c2")
    await work.wait_started(1)  # another conversation's worker runs while c1's door is shut
    assert work.started == ["c2"]
    assert not second.inside.is_set()  # blocked at the door, not just not yet scheduled: the c2 worker ran

    work.add("c1")
    mailbox.kick("c1")
    await first.finish()
    await second.wait_inside()  # the second action goes in before any worker: the door stays shut between them
    assert work.started == ["c2"] and mailbox.busy("c1")
    await second.finish()
    await work.wait_started(2)
    assert work.started == ["c2", "c1"]
    work.finish.set()
    await wait_idle(mailbox)


async def test_idle_waits_for_an_admin_action_and_close_keeps_workers_out_after_it():
    work = HeldWork()
    mailbox = Mailbox(work.handle)
    admin = Admin(mailbox, "c1")
    await admin.wait_inside()
    idle = asyncio.create_task(mailbox.idle())
    work.add("c1")
    mailbox.kick("c1")
    await mailbox.close()
    await one_loop_pass()
    assert not idle.done()  # an admin action is still in progress
    await admin.finish()
    await asyncio.wait_for(idle, WAIT_SECONDS)
    assert work.started == [] and mailbox.depth == 0  # closed: the kick made during the action starts nothing


async def test_an_admin_cancelled_while_the_worker_winds_down_leaves_no_work_stranded():
    work = HeldWork()
    mailbox = Mailbox(work.handle)
    work.add("c1")
    mailbox.kick("c1")
    await work.wait_started(1)
    work.wind_down.clear()  # the worker takes its time to stop
    admin = Admin(mailbox, "c1")
    await work.wait_cancelled(1)
    assert mailbox.busy("c1") and not admin.inside.is_set()

    admin.task.cancel()  # e.g. the operator's connection went away
    with contextlib.suppress(asyncio.CancelledError):
        await admin.task
    assert mailbox.depth == 1  # the worker is still stopping

    work.wind_down.set()
    await work.wait_started(2)  # it is started again for the unit it was stopped in
    work.finish.set()
    await wait_idle(mailbox)
    assert work.pending["c1"] == 0


async def test_a_failed_worker_runs_again_after_a_growing_delay_and_close_stops_the_retries():
    calls: list[float] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def flaky(conversation: str) -> bool:
        calls.append(loop.time())
        if len(calls) <= 3:
            raise RuntimeError("the database is away")
        done.set()
        return False

    mailbox = Mailbox(flaky, retry_base=0.02, retry_max=0.04)
    mailbox.kick("c1")  # no message follows: only the retries run it again
    await asyncio.wait_for(done.wait(), WAIT_SECONDS)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(calls)]
    assert len(calls) == 4 and gaps[0] >= 0.02 and gaps[1] >= 0.04 and gaps[2] >= 0.04, gaps  # 0.02, 0.04, then the cap
    await wait_idle(mailbox)

    async def failing(conversation: str) -> bool:
        raise RuntimeError("broken for good")

    stopped = Mailbox(failing, retry_base=3600, retry_max=3600)
    stopped.kick("c1")
    await wait_idle(stopped)
    assert stopped._retries  # one retry waits
    await stopped.close()
    assert not stopped._retries
