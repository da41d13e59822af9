"""A database that is read-only or full: a clear error or a sensible answer on every entry point, nothing crashes,
nothing stored is corrupted (`PRAGMA integrity_check`), and the work resumes once the database is writable.

Tests run as root, so file permissions do not stop writes: a read-only database is `PRAGMA query_only`, a full one
is `PRAGMA max_page_count` at the current size with the free pages used up; a real full filesystem (a 1 MB tmpfs)
is used when this machine lets the test mount one.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.console import ConsoleSurface, chat
from adapters.slack import SlackAdapter
from bot.engine import Bot
from emulator import ManualClock, Rule, Script, run_emulator
from fakes.configs import slack_settings
from fakes.slack_api import FakeSlack
from storage.base import StoreError
from storage.sqlite import SQLiteStore
from tests.reliability.helpers import WAIT, RecordingStore, message, running_bot, team


def sqlite_store(bot: Bot) -> SQLiteStore:
    assert isinstance(bot.store, SQLiteStore)
    return bot.store


async def read_only(bot: Bot, on: bool = True) -> None:
    await sqlite_store(bot).set_pragma("query_only", int(on))


async def fill_up(bot: Bot) -> None:
    """No page left: the file may not grow, and its free pages are used by a filler table.

    `max_page_count` holds for one connection only: the store's is set, then a connection of our own, under the
    same limit, uses up the free pages."""
    store = sqlite_store(bot)
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    await store.set_pragma("max_page_count", pages + 1)
    await asyncio.to_thread(_fill_free_pages, store.path, pages + 1)


def _fill_free_pages(path: str, max_pages: int) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute(f"PRAGMA max_page_count={max_pages}")
        db.execute("CREATE TABLE IF NOT EXISTS filler(x BLOB)")
        with contextlib.suppress(sqlite3.OperationalError):
            for _ in range(10_000):
                db.execute("INSERT INTO filler VALUES (zeroblob(512))")
        with contextlib.suppress(sqlite3.OperationalError):
            for _ in range(10_000):
                db.execute("INSERT INTO filler VALUES (zeroblob(16))")


async def make_room(bot: Bot) -> None:
    store = sqlite_store(bot)
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as db:
        db.execute("DROP TABLE IF EXISTS filler")
    await store.set_pragma("max_page_count", 1073741823)


def integrity(path: str | Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


BREAKERS = {"read-only": (read_only, lambda bot: read_only(bot, False)), "full": (fill_up, make_room)}


@pytest.fixture(params=sorted(BREAKERS))
def breaker(request: pytest.FixtureRequest):
    return BREAKERS[request.param]


async def test_a_full_database_refuses_a_message_it_has_no_room_for(tmp_path):
    async with run_emulator(retry_after=0.01) as emu:
        cfg = team(emu.base_url, tmp_path / "db")
        async with running_bot(cfg) as (bot, surface):
            await bot.accept(message("before"))
            await surface.wait_for(1)
            await fill_up(bot)
            with pytest.raises(StoreError, match="writable and not full"):
                await bot.accept(message("x" * 20_000))  # needs pages the database may not take
            await make_room(bot)
            await bot.accept(message("after"))
            await surface.wait_for(2)
            await bot.idle()
    assert integrity(cfg.db_path) == "ok"


async def test_new_messages_are_refused_plainly_and_accepted_again_once_the_database_works(tmp_path):
    brk, fix = BREAKERS["read-only"]
    async with run_emulator(retry_after=0.01) as emu, FakeSlack() as fake:
        cfg = team(emu.base_url, tmp_path / "db")
        async with running_bot(cfg) as (bot, surface):
            await bot.accept(message("before"))
            await surface.wait_for(1)
            slack = SlackAdapter(bot, slack_settings(fake, "http"))
            bot.add_surface(surface)  # the console surface stays the one delivering console turns
            await slack.start()
            try:
                await brk(bot)
                # the engine: a StoreError that says what is wrong
                with pytest.raises(StoreError, match="writable and not full"):
                    await bot.accept(message("x" * 20_000))
                # Slack: acknowledged (a retry would meet the same database) and the user is told, privately
                event = {"type": "app_mention", "user": "U0ALICE", "channel": "C0GENERAL", "ts": "1700000000.000100",
                         "text": f"<@{fake.bot_user_id}> hello"}
                raw = json.dumps(fake.event_body(event))
                async with aiohttp.ClientSession() as session, session.post(
                    f"http://127.0.0.1:{slack.http_port}/slack/events", data=raw,
                    headers={"Content-Type": "application/json", **fake.sign(raw)},
                ) as response:
                    assert response.status == 200
                [told] = await fake.wait_for(lambda: fake.ok_calls_to("chat.postEphemeral"))
                assert told.args["user"] == "U0ALICE" and "could not take" in told.args["text"]
                # the console: says so and goes on reading
                out, err = io.StringIO(), io.StringIO()
                console = ConsoleSurface(out=out, err=err, live=False)
                assert await chat(bot, console, "console:rel:c2", stdin=io.StringIO("hello\n")) == 0
                assert "[not sent]" in err.getvalue() and out.getvalue() == ""
            finally:
                await slack.stop()
            await fix(bot)
            await bot.accept(message("after"))
            await surface.wait_for(2)
            await bot.idle()
        assert [p.text for p in surface.posted] == ["You said: before", "You said: after"]
    assert integrity(cfg.db_path) == "ok"


#: what a conversation's worker asks the store, in order, outside a turn's answering (which ends in an explicit
#: failure reply when the store fails): reading the inbox, the conversation, starting the turn, ending its delivery
WORKER_STORE_CALLS = ("pending_inbound", "get_conversation", "start_turn", "finish_delivery")


class RefusingStore(SQLiteStore):
    """Refuses `method` `refusals` times, as a database locked or away for a moment; `served` is set once the call
    goes through after that."""

    def __init__(self, path: str, method: str, refusals: int) -> None:
        super().__init__(path)
        self.refusals = refusals
        self.served = asyncio.Event()
        real = getattr(self, method)

        async def refusing(*args: Any) -> Any:
            if self.refusals:
                self.refusals -= 1
                raise StoreError(f"the database refused {method} (test)")
            result = await real(*args)
            self.served.set()
            return result

        setattr(self, method, refusing)


@pytest.mark.parametrize("method", WORKER_STORE_CALLS)
async def test_a_worker_the_store_failed_runs_again_and_answers_once_without_another_message(tmp_path, method):
    # Its worker failed: the mailbox runs it again after a growing delay (the team's backoff), not only at the next
    # message or restart (a user who waits for the answer sends none). Refused after the reply was posted
    # (`finish_delivery`), the turn resumes and finds the reply on the platform instead of posting it twice.
    async with run_emulator(retry_after=0.01) as emu:
        cfg = team(emu.base_url, tmp_path / "db")
        store = RefusingStore(cfg.db_path, method, refusals=3)
        async with running_bot(cfg, store) as (bot, surface):
            await bot.accept(message("hello"))
            await asyncio.wait_for(store.served.wait(), WAIT)  # the retries are timers: idle() alone returns early
            await bot.idle()
            assert [p.text for p in surface.posted] == ["You said: hello"]
            assert await bot.store.unfinished_turns() == [] and await bot.store.pending_inbound("console:rel:c1") == []
            assert [m.state for m in await bot.store.inbound_for_turn(surface.posted[0].turn_id)] == ["answered"]


async def test_a_turn_whose_reply_cannot_be_recorded_still_answers_once_and_finishes_later(tmp_path, breaker):
    brk, fix = breaker
    clock = ManualClock()
    critic = Script([Rule(delay=5, times=1)])  # slow the first time only
    async with run_emulator(clock=clock, retry_after=0.01, scripts={"critic": critic}) as emu:
        cfg = team(emu.base_url, tmp_path / "db")
        store = RecordingStore(cfg.db_path)
        async with running_bot(cfg, store) as (bot, surface):
            await bot.accept(message("ask the critic about plan A"))
            await asyncio.wait_for(store.run_recorded("critic").wait(), 20)
            await brk(bot)  # the database breaks while the critic works
            await clock.advance(5)
            await surface.wait_for(1)  # the user still gets a reply, plainly
            await bot.idle()
            [first] = surface.posted
            assert first.kind in ("answer", "failure") and first.text
            await fix(bot)
            bot.resume_later("console:rel:c1")  # what the next message or a restart does
            await bot.idle()
        async with running_bot(cfg) as (bot, again):  # a restart finds nothing left to do twice
            again.posted = list(surface.posted)
            await bot.idle()
            assert await bot.store.unfinished_turns() == []
            assert [m.state for m in await bot.store.inbound_for_turn(first.turn_id)] == ["answered"]
        assert len(surface.posted) == 1 and again.posted == surface.posted
    assert integrity(cfg.db_path) == "ok"


def fill_filesystem(ballast: Path) -> None:
    """Write zeros until the filesystem has not a byte left."""
    with open(ballast, "wb", buffering=0) as out:
        for size in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
                    out.flush()


@pytest.fixture
def tiny_filesystem() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="switchboard-tmpfs-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                             capture_output=True, check=False).returncode == 0
    if not mounted:
        os.rmdir(folder)
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        with contextlib.suppress(OSError):
            os.rmdir(folder)


async def test_a_really_full_filesystem_refuses_plainly_and_keeps_the_database_sound(tiny_filesystem):
    db_path = tiny_filesystem / "switchboard.db"
    async with run_emulator(retry_after=0.01) as emu:
        cfg = team(emu.base_url, db_path)
        async with running_bot(cfg) as (bot, surface):
            await bot.accept(message("before"))
            await surface.wait_for(1)
            await asyncio.to_thread(fill_filesystem, tiny_filesystem / "ballast")
            refused = 0
            for i in range(50):  # until the WAL needs a page the disk does not have
                try:
                    await bot.accept(message(f"message {i} " + "y" * 4000, conversation=f"console:rel:full{i}"))
                except StoreError:
                    refused += 1
                    break
            assert refused == 1
            await asyncio.wait_for(bot.idle(), 30)
            os.remove(tiny_filesystem / "ballast")
            await bot.accept(message("after", conversation="console:rel:fresh"))
            await asyncio.wait_for(bot.idle(), 30)
        assert surface.posted[0].text == "You said: before" and surface.posted[-1].text == "You said: after"
    assert integrity(db_path) == "ok"
