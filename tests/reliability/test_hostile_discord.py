"""Hostile input at the Discord adapter, through discord.py's own gateway parsing (a fake Discord on loopback):

* any message (huge, empty, control characters, unusual Unicode, SQL metacharacters, odd attachments, from bots,
  webhooks, system messages, in DMs, channels and threads) becomes nothing, a hint, a plain refusal, or a sane
  message the real engine stores exactly; the listener never fails;
* an interaction for a command the bot does not have (a stale registration, a changed signature, an unknown
  subcommand) gets a plain ephemeral answer, not "something went wrong", and never reaches the engine.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.discord import DiscordAdapter, DiscordSettings
from adapters.discord.commands import UNKNOWN_COMMAND
from bot.engine import Bot, make_backend
from bot.types import Accepted, CommandContext, CommandResult, Inbound, Surface
from fakes.configs import soak_team
from fakes.discord_server import FakeDiscord
from storage.sqlite import SQLiteStore
from tests.discord.fakes import FakeClock, Outcomes
from tests.reliability.conftest import fuzz_settings
from tests.reliability.hostile import hostile_text
from tests.reliability.loop_thread import LoopThread

FUZZ = fuzz_settings()


class Engine:
    """The real Bot (its turns never run here), remembering what the adapter handed it."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.inbound: dict[str, Inbound] = {}
        self.commands: list[tuple[CommandContext, str]] = []

    def add_surface(self, surface: Surface) -> None:
        self.bot.add_surface(surface)

    async def accept(self, inbound: Inbound) -> Accepted:
        self.inbound[inbound.event_id] = inbound
        return await self.bot.accept(inbound)

    async def command(self, ctx: CommandContext, text: str) -> CommandResult:
        self.commands.append((ctx, text))
        return await self.bot.command(ctx, text)

    async def has_conversation(self, conversation: str) -> bool:
        return await self.bot.has_conversation(conversation)


@dataclasses.dataclass
class DiscordWorld:
    loop: LoopThread
    fake: FakeDiscord
    engine: Engine
    adapter: DiscordAdapter
    outcomes: Outcomes
    guild: int
    general: int
    thread: int
    dm: int
    alice: int
    other_bot: int
    db_path: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DiscordWorld]:
    loop = LoopThread()
    db_path = str(Path(tmp_path_factory.mktemp("hostile-discord")) / "db")
    fake = FakeDiscord(clock=FakeClock())
    patch = fake.patched()

    async def start() -> DiscordWorld:
        await fake.start()
        patch.__enter__()  # (once the fake has its port)
        guild = fake.add_guild("Hostile")
        general = fake.add_channel(guild, "general")
        alice = fake.add_member(guild, "alice")
        other_bot = int(fake.add_user("OtherBot", bot=True)["id"])
        fake.guilds[guild].members[other_bot] = []
        cfg = soak_team("http://127.0.0.1:9/v1", db_path)
        bot = Bot(cfg, SQLiteStore(db_path), make_backend(cfg))
        bot.mailbox.kick = lambda conversation: None  # type: ignore[method-assign]  # store, never run
        engine = Engine(bot)
        settings = DiscordSettings(token=fake.token, guild_id=guild, guild_ready_timeout=0.05, message_content=True)
        adapter = DiscordAdapter(engine, settings, clock=fake.clock)  # type: ignore[arg-type]
        outcomes = Outcomes()
        adapter.messages.observers.append(outcomes)
        await bot.start()
        await adapter.start(ready_within=10)
        thread = await fake.add_thread(general, "ours", owner_id=fake.bot_id)
        dm = fake.dm_channel(alice)
        return DiscordWorld(loop, fake, engine, adapter, outcomes, guild, general, thread, dm, alice, other_bot,
                            db_path)

    w = loop.run(start())
    yield w

    async def stop() -> None:
        await w.adapter.close()
        await w.engine.bot.stop()
        await fake.close()

    loop.run(stop())
    loop.close()
    patch.__exit__(None, None, None)
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def attachment(fake: FakeDiscord, name: str) -> dict[str, Any]:
    aid = fake.snowflake()
    url = f"https://cdn.example/attachments/{aid}/file"
    return {"id": str(aid), "filename": name or "_", "size": 3, "url": url, "proxy_url": url}


@st.composite
def messages(draw: st.DrawFn, w: DiscordWorld) -> dict[str, Any]:
    fake = w.fake
    channel = draw(st.sampled_from([w.general, w.thread, w.dm]))
    author = draw(st.sampled_from([w.alice, w.alice, w.alice, w.other_bot, fake.bot_id]))
    mention = draw(st.sampled_from(["", f"<@{fake.bot_id}> ", f"<@!{fake.bot_id}>", f"hey <@{fake.bot_id}>"]))
    content = mention + draw(hostile_text())
    payload: dict[str, Any] = {
        "id": str(fake.snowflake()),
        "channel_id": str(channel),
        "author": fake.users[author],
        "content": content,
        "timestamp": "2026-01-01T00:00:00+00:00",
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [fake.users[fake.bot_id]] if mention else [],
        "mention_roles": [],
        "attachments": [attachment(fake, n) for n in draw(st.lists(hostile_text(allow_huge=False), max_size=2))],
        "embeds": [],
        "pinned": False,
        "type": draw(st.sampled_from([0, 0, 0, 19, 6, 7, 18])),
        "flags": 0,
        "components": [],
    }
    if channel != w.dm:
        payload["guild_id"] = str(w.guild)
        if author in fake.guilds[w.guild].members:
            payload["member"] = fake._member_payload(w.guild, author, with_user=False)
    if draw(st.integers(0, 9)) == 0:
        payload["webhook_id"] = str(fake.snowflake())
    return payload


@FUZZ
@given(st.data())
def test_any_message_becomes_nothing_a_hint_a_refusal_or_a_sane_stored_message(world: DiscordWorld, data) -> None:
    payload = data.draw(messages(world))
    fake = world.fake
    mid = int(payload["id"])
    fake.messages[int(payload["channel_id"])].append({**payload, "_nonce": None, "_deleted": False, "_created": 0})
    fake._message_index[mid] = fake.messages[int(payload["channel_id"])][-1]

    async def run() -> str:
        await fake.dispatch("MESSAGE_CREATE", payload)
        return await world.outcomes.of(mid, within=20)

    outcome = world.loop.run(run())
    assert outcome in ("accepted", "duplicate", "hint", "refused") or outcome.startswith("ignored:"), outcome
    if outcome == "accepted":
        inbound = world.engine.inbound[str(mid)]
        assert inbound.text and inbound.text == inbound.text.strip() and f"<@{fake.bot_id}>" not in inbound.text
        stored = world.loop.run(world.engine.bot.store.pending_inbound(inbound.conversation))
        assert [m.text for m in stored if m.event_id == str(mid)] == [inbound.text]
    if int(payload["author"]["id"]) != world.alice or "webhook_id" in payload:
        assert outcome.startswith("ignored:")


async def _answers(fake: FakeDiscord, interaction_id: int) -> list[str]:
    def shown() -> list[str] | None:
        interaction = fake.interactions[interaction_id]
        if interaction.original_id is None:
            return None
        found = [m for m in fake.messages[interaction.channel_id]
                 if m.get("interaction_metadata", {}).get("id") == str(interaction_id) and not m["_deleted"]]
        if not found or any(m["flags"] & (1 << 7) for m in found):  # still "thinking..."
            return None
        return [m["content"] for m in found]

    return await fake.wait_until(shown, 10)


UNKNOWN = [("frobnicate", None, None), ("ask", None, {"question": "hi"}), ("admin", "explode", None),
           ("help", "more", None)]


@pytest.mark.parametrize(("name", "subcommand", "options"), UNKNOWN)
def test_an_interaction_for_a_command_the_bot_does_not_have_gets_a_plain_answer(world, name, subcommand, options):
    fake = world.fake
    if not any(c["name"] == name for c in fake.guild_commands.get(world.guild, [])):
        fake.guild_commands[world.guild].append(  # registered on Discord, unknown to this version of the bot
            {"id": str(fake.snowflake()), "name": name, "guild_id": str(world.guild), "type": 1})
    before = len(world.engine.commands), len(world.engine.inbound)

    async def run() -> list[str]:
        interaction = await fake.slash(name, user_id=world.alice, channel_id=world.general, options=options,
                                       subcommand=subcommand)
        return await _answers(fake, interaction.id)

    assert world.loop.run(run()) == [UNKNOWN_COMMAND]
    assert (len(world.engine.commands), len(world.engine.inbound)) == before
