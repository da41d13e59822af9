"""Hostile slash-command text through `Bot.command` (what every platform's commands end in): any text gets a
plain answer, unknown text is refused without echoing more than a short quote, and nobody but an admin (or, for
`reset`, the conversation's starter) changes anything."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.config import PlatformConfig
from bot.engine import Bot, make_backend
from bot.types import Actor, CommandContext, Inbound
from fakes.configs import soak_team
from storage.sqlite import SQLiteStore
from tests.reliability.conftest import fuzz_settings
from tests.reliability.hostile import hostile_text
from tests.reliability.loop_thread import LoopThread

FUZZ = fuzz_settings()
CONV = "console:cmd:c1"
CHANNEL = "console:cmd"
WORDS = ["help", "assistants", "status", "reset", "reset channel", "reset all", "reset all confirm", "cancel",
         "audit"]


@dataclasses.dataclass
class World:
    loop: LoopThread
    bot: Bot
    db_path: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    loop = LoopThread()
    db_path = str(Path(tmp_path_factory.mktemp("hostile-commands")) / "db")
    cfg = soak_team("http://127.0.0.1:9/v1", db_path)
    cfg = dataclasses.replace(cfg, platforms={"console": PlatformConfig(admins=("u-admin",))})

    async def start() -> Bot:
        bot = Bot(cfg, SQLiteStore(db_path), make_backend(cfg))
        bot.mailbox.kick = lambda conversation: None  # type: ignore[method-assign]  # no turn ever runs here
        await bot.start()
        await bot.accept(Inbound("console", "first", CONV, CHANNEL, "u-starter", "hello"))
        return bot

    w = World(loop, loop.run(start()), db_path)
    yield w
    loop.run(w.bot.stop())
    loop.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def generation(world: World) -> int:
    record = world.loop.run(world.bot.store.get_conversation(CONV))
    assert record is not None
    return record.generation


def decorated(word: str) -> st.SearchStrategy[str]:
    """A command word with hostile case, spacing and junk around it."""
    return st.tuples(st.sampled_from(["", " ", "\t", "\u00a0", "\u200b", "\n"]), st.booleans(),
                     st.sampled_from(["", " ", "  \u3000", "\x00", "!", " please"])).map(
        lambda t: t[0] + (word.upper() if t[1] else word).replace(" ", "\u2003") + t[2])


texts = st.one_of(hostile_text(), st.sampled_from(WORDS).flatmap(decorated), st.sampled_from(WORDS))
actors = st.sampled_from([Actor("console", "u-starter"), Actor("console", "u-other"),
                          Actor("console", "u-admin"), Actor("console", "u-platform", platform_admin=True),
                          Actor("slack", "u-admin")])  # the console's admin, seen from another platform


@FUZZ
@given(actors, texts, st.sampled_from([CONV, None]))
def test_any_command_text_gets_a_plain_answer_and_only_the_allowed_change_anything(world, actor, text, conv):
    before = generation(world)
    result = world.loop.run(world.bot.command(CommandContext(actor, CHANNEL, conv), text))
    assert isinstance(result.text, str) and result.text.strip()
    words = " ".join(text.split()).lower()
    if words not in WORDS and words != "":
        assert not result.ok and result.text.startswith("Unknown command") and len(result.text) < 1000
    admin = actor.platform_admin or (actor.platform == "console" and actor.user == "u-admin")
    may_reset = admin or (words == "reset" and actor.user == "u-starter" and conv == CONV)
    if not may_reset:
        assert generation(world) == before, (actor, text)
