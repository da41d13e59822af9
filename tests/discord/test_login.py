"""Login, intents and command sync against the fake Discord with the real discord.py client."""

from __future__ import annotations

import pytest

from adapters.discord import DiscordAdapter, DiscordStartError, check_discord
from adapters.discord.constants import INTENT_MESSAGE_CONTENT
from tests.discord.conftest import StartAdapter, World
from tests.discord.fakes import FakeBot

EXPECTED_COMMANDS = {"ask", "reset", "status", "assistants", "help", "admin", "usage"}
ADMIN_SUBCOMMANDS = {"reset-channel", "reset-all", "cancel", "audit", "grant", "forget", "reload", "handoff"}


async def test_login_and_guild_sync(world: World, start_adapter: StartAdapter) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    routes = [c.route for c in fake.calls]
    assert routes[:2] == ["GET /users/@me", "GET /oauth2/applications/@me"]
    sync = fake.find_calls("PUT", "/applications/{application_id}/guilds/{guild_id}/commands")
    assert len(sync) == 1 and sync[0].params["guild_id"] == str(world.guild)
    assert not fake.find_calls("PUT", "/applications/{application_id}/commands")  # no global sync
    commands = {c["name"]: c for c in fake.commands_for(world.guild)}
    assert set(commands) == EXPECTED_COMMANDS
    admin = commands["admin"]
    assert {o["name"] for o in admin["options"]} == ADMIN_SUBCOMMANDS
    assert int(admin["default_member_permissions"]) == 1 << 5  # Manage Server by default
    assert int(commands["usage"]["default_member_permissions"]) == 1 << 5
    ask_prompt = commands["ask"]["options"][0]
    assert ask_prompt["name"] == "prompt" and ask_prompt["required"] and ask_prompt["max_length"] == 6000
    # identified without the privileged intent; the surface is registered with the engine
    assert fake.identifies and not int(fake.identifies[-1]["intents"]) & INTENT_MESSAGE_CONTENT
    assert bot.surfaces == [adapter.surface] and adapter.surface.platform == "discord"
    assert adapter.client.is_ready()


async def test_global_sync_without_guild_id(world: World, start_adapter: StartAdapter) -> None:
    await start_adapter(guild_id=None)
    assert len(world.fake.find_calls("PUT", "/applications/{application_id}/commands")) == 1
    assert {c["name"] for c in world.fake.commands_for(None)} == EXPECTED_COMMANDS
    assert not world.fake.find_calls("PUT", "/applications/{application_id}/guilds/{guild_id}/commands")


async def test_message_content_intent_requested_when_enabled(world: World, start_adapter: StartAdapter) -> None:
    await start_adapter(message_content=True)
    assert int(world.fake.identifies[-1]["intents"]) & INTENT_MESSAGE_CONTENT


async def test_privileged_intent_not_enabled_is_explained(world: World) -> None:
    world.fake.message_content_allowed = False
    adapter = DiscordAdapter(FakeBot(), world.settings(message_content=True), clock=world.clock)
    world.adapters.append(adapter)
    with pytest.raises(DiscordStartError, match="Message Content intent"):
        await adapter.start(ready_within=10)


async def test_bad_token_is_explained_without_echoing_it(world: World) -> None:
    adapter = DiscordAdapter(FakeBot(), world.settings(token="not-the-token-xyz"), clock=world.clock)
    world.adapters.append(adapter)
    with pytest.raises(DiscordStartError) as caught:
        await adapter.start(ready_within=10)
    assert "DISCORD_TOKEN" in str(caught.value) and "not-the-token-xyz" not in str(caught.value)


async def test_the_token_never_reaches_the_logs(
    world: World, start_adapter: StartAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    _, bot = await start_adapter()
    fake = world.fake
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> hi")
    await bot.run_turn(await bot.next_inbound(), "Hello.")
    await fake.slash("status", user_id=world.alice, channel_id=world.general)
    await bot.wait_until(lambda: bot.commands)
    assert caplog.records and fake.token not in caplog.text


async def test_heartbeats_are_acknowledged(world: World, start_adapter: StartAdapter) -> None:
    world.fake.heartbeat_interval_ms = 50  # Discord says ~41 s; short here so the loop runs a few times
    adapter, _ = await start_adapter()
    await world.fake.wait_until(lambda: world.fake.heartbeats >= 3)
    assert adapter.client.latency < 5 and not adapter.client.is_closed()
    assert len(world.fake.identifies) == 1  # acknowledged heartbeats: no reconnect


async def test_doctor_check(world: World) -> None:
    assert await check_discord(world.settings()) == []
    assert await check_discord(world.settings(message_content=True)) == []
    (bad,) = await check_discord(world.settings(token="wrong-token-abc"))
    assert "DISCORD_TOKEN was rejected" in bad and "wrong-token-abc" not in bad
    world.fake.message_content_allowed = False
    (intent,) = await check_discord(world.settings(message_content=True))
    assert "Message Content intent is off" in intent
    assert not world.fake.identifies  # REST only: the gateway was never opened


#: https://discord.com/developers/docs/topics/permissions: VIEW_CHANNEL 1<<10, SEND_MESSAGES 1<<11, EMBED_LINKS 1<<14,
#: READ_MESSAGE_HISTORY 1<<16, CREATE_PUBLIC_THREADS 1<<35, SEND_MESSAGES_IN_THREADS 1<<38; nothing else
EXPECTED_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 16) | (1 << 35) | (1 << 38)


def _invite_parts(url: str) -> dict[str, list[str]]:
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    assert parts.netloc == "discord.com" and parts.path == "/oauth2/authorize"
    return parse_qs(parts.query)


async def test_the_invite_url_asks_for_exactly_the_permissions_used(world: World, start_adapter: StartAdapter,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from adapters.discord.adapter import inspect_discord

    await start_adapter()
    printed = [w for w in capsys.readouterr().err.split() if w.startswith("https://discord.com/oauth2/")]
    problems, invite = await inspect_discord(world.settings())  # what `switchboard doctor` shows
    assert problems == [] and invite is not None and printed == [invite]
    query = _invite_parts(invite)
    assert int(query["permissions"][0]) == EXPECTED_PERMISSIONS
    assert query["scope"][0].split() == ["bot", "applications.commands"]
    assert query["client_id"][0] == str(world.fake.application_id)


async def test_guild_sync_removes_commands_left_registered_globally(world: World, start_adapter: StartAdapter) -> None:
    await start_adapter(guild_id=None)  # a first run synced globally
    assert {c["name"] for c in world.fake.commands_for(None)} == EXPECTED_COMMANDS
    await start_adapter()  # now with DISCORD_GUILD_ID: users would see every command twice
    assert world.fake.commands_for(None) == []
    assert {c["name"] for c in world.fake.commands_for(world.guild)} == EXPECTED_COMMANDS
