"""Slash commands map to `bot.command` texts; admin commands are refused without Manage Server, before the engine."""

from __future__ import annotations

import pytest

from adapters.discord.commands import RESET_ALL_UNCONFIRMED
from adapters.discord.constants import MESSAGE_TEXT
from bot.types import CommandResult
from fakes.discord_server import FLAG_EPHEMERAL
from tests.discord.conftest import StartAdapter, World
from tests.discord.fakes import FakeBot

CALLBACK = "/interactions/{interaction_id}/{token}/callback"


async def _answer(world: World, interaction_id: int, count: int = 1) -> list[str]:
    """The (ephemeral) messages shown to the user for one interaction, once its response is settled."""
    fake = world.fake

    def shown() -> list[str] | None:
        interaction = fake.interactions[interaction_id]
        if interaction.original_id is None:
            return None
        messages = [
            m
            for m in fake.messages[interaction.channel_id]
            if m.get("interaction_metadata", {}).get("id") == str(interaction_id) and not m["_deleted"]
        ]
        if len(messages) < count or any(m["flags"] & (1 << 7) for m in messages):
            return None
        return [m["content"] for m in messages]

    return await fake.wait_until(shown)


@pytest.mark.parametrize(
    ("command", "text"), [("status", "status"), ("assistants", "assistants"), ("help", "help"), ("reset", "reset")]
)
async def test_user_commands_reach_the_engine(
    world: World, start_adapter: StartAdapter, command: str, text: str
) -> None:
    _, bot = await start_adapter()
    interaction = await world.fake.slash(command, user_id=world.alice, channel_id=world.general)
    assert await _answer(world, interaction.id) == [f"ran {text}"]
    ((ctx, sent),) = bot.commands
    assert sent == text
    assert ctx.actor.platform == "discord" and ctx.actor.user == str(world.alice)
    assert ctx.actor.platform_admin is False
    assert ctx.channel == ctx.conversation == f"discord:{world.guild}:{world.general}"
    callback = world.fake.find_calls("POST", CALLBACK)[0]
    assert callback.body == {"type": 5, "data": {"flags": FLAG_EPHEMERAL}}  # acknowledged first, privately


async def test_engine_refusal_and_long_results_in_plain_words(world: World, start_adapter: StartAdapter) -> None:
    bot = FakeBot()
    bot.results["reset"] = CommandResult(
        False, "Only the person who started this conversation or an admin can reset it."
    )
    await start_adapter(bot)
    interaction = await world.fake.slash("reset", user_id=world.alice, channel_id=world.general)
    assert await _answer(world, interaction.id) == [
        "⚠️ Only the person who started this conversation or an admin can reset it."
    ]
    bot.results["audit"] = CommandResult(True, "\n".join(f"{i:04d} reset by someone" for i in range(300)))
    admin = await world.fake.slash("admin", subcommand="audit", user_id=world.mod, channel_id=world.general)
    expected = MESSAGE_TEXT.split(bot.results["audit"].text)
    assert len(expected) >= 3
    assert await _answer(world, admin.id, count=len(expected)) == expected
    shown = [
        m for m in world.fake.messages[world.general] if m.get("interaction_metadata", {}).get("id") == str(admin.id)
    ]
    assert all(m["flags"] & FLAG_EPHEMERAL for m in shown)  # every part stays private


async def test_member_without_manage_server_is_decided_by_the_engine_as_non_admin(
    world: World, start_adapter: StartAdapter
) -> None:
    """The permission check fails, and the command reaches the engine marked as NOT a platform admin: the engine
    refuses it (or allows an admin listed in the team file) and audits the refusal either way."""
    _, bot = await start_adapter()
    cases = [("reset-channel", {}, "reset channel"), ("reset-all", {"confirm": True}, "reset all"),
             ("cancel", {}, "cancel"), ("audit", {}, "audit")]
    for sub, options, _ in cases:
        interaction = await world.fake.slash(
            "admin", subcommand=sub, options=options, user_id=world.alice, channel_id=world.general
        )
        await _answer(world, interaction.id)
        deferred = [
            c for c in world.fake.find_calls("POST", CALLBACK) if c.params["interaction_id"] == str(interaction.id)
        ]
        assert deferred[0].body["data"]["flags"] == FLAG_EPHEMERAL
    assert [t for _, t in bot.commands] == [text for _, _, text in cases]
    assert not any(ctx.actor.platform_admin for ctx, _ in bot.commands)


async def test_admin_commands_for_members_with_manage_server(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()
    fake = world.fake
    thread = await fake.add_thread(world.general, "a thread", owner_id=world.alice)
    cases = [
        ("reset-channel", {}, "reset channel", world.mod, world.general),
        ("cancel", {}, "cancel", world.owner, thread),
        ("audit", {}, "audit", world.owner, world.general),
        ("reset-all", {"confirm": True}, "reset all confirm", world.mod, world.general),
    ]
    for sub, options, text, user, channel in cases:
        interaction = await fake.slash("admin", subcommand=sub, options=options, user_id=user, channel_id=channel)
        assert await _answer(world, interaction.id) == [f"ran {text}"]
    # confirm:True is the confirmation: the engine gets "reset all" and then "reset all confirm"
    assert [t for _, t in bot.commands] == ["reset channel", "cancel", "audit", "reset all", "reset all confirm"]
    assert all(ctx.actor.platform_admin for ctx, _ in bot.commands)
    cancel_ctx = bot.commands[1][0]
    assert cancel_ctx.conversation == f"discord:{world.guild}:{thread}"
    assert cancel_ctx.channel == f"discord:{world.guild}:{world.general}"  # "reset channel" covers its threads


async def test_reset_all_needs_confirmation(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()
    interaction = await world.fake.slash(
        "admin", subcommand="reset-all", options={"confirm": False}, user_id=world.mod, channel_id=world.general
    )
    assert await _answer(world, interaction.id) == [RESET_ALL_UNCONFIRMED]
    assert bot.commands == []


async def test_admin_commands_are_refused_in_dms(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter(guild_id=None)  # global commands can be invoked in DMs (guild-only is advisory)
    dm = world.fake.dm_channel(world.mod)
    interaction = await world.fake.slash("admin", subcommand="audit", user_id=world.mod, channel_id=dm)
    assert await _answer(world, interaction.id) == ["This command only works inside a server."]
    status = await world.fake.slash("status", user_id=world.mod, channel_id=dm)
    assert await _answer(world, status.id) == ["ran status"]
    ((ctx, text),) = bot.commands
    assert text == "status" and ctx.channel == f"discord:dm:{dm}" and ctx.actor.platform_admin is False


async def test_engine_error_is_reported_plainly(world: World, start_adapter: StartAdapter) -> None:
    class Broken(FakeBot):
        async def command(self, ctx, text):  # type: ignore[no-untyped-def]
            raise RuntimeError("sqlite3.OperationalError: database is locked")

    await start_adapter(Broken())
    interaction = await world.fake.slash("status", user_id=world.alice, channel_id=world.general)
    (shown,) = await _answer(world, interaction.id)
    assert "Something went wrong" in shown and "sqlite" not in shown
