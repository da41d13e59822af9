"""Gateway shards spread over instances: each adapter connects only its `shard_ids` of `shard_count`, and the fake
Discord, like Discord, sends a guild's events to its one shard, so a message reaches exactly one instance."""

from __future__ import annotations

import pytest

from adapters.discord.settings import DiscordSettings, SettingsError
from fakes.discord_server import shard_of
from tests.discord.conftest import StartAdapter, World


async def test_each_guilds_messages_reach_only_the_instance_holding_its_shard(
    world: World, start_adapter: StartAdapter
) -> None:
    fake = world.fake
    first = shard_of(world.guild, 2)
    other = fake.add_guild("Other Server")
    while shard_of(other, 2) == first:  # a guild's shard follows its id's timestamp: made a millisecond later
        world.clock.advance(0.001)
        other = fake.add_guild("Other Server")
    channel = fake.add_channel(other, "general")
    bob = fake.add_member(other, "bob")
    _, bot_a = await start_adapter(shard_count=2, shard_ids=(first,))
    _, bot_b = await start_adapter(shard_count=2, shard_ids=(1 - first,))
    assert sorted(tuple(i["shard"]) for i in fake.identifies) == [(0, 2), (1, 2)]

    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> for shard {first}")
    await fake.user_message(channel, bob, f"<@{fake.bot_id}> for shard {1 - first}")
    assert (await bot_a.next_inbound()).text == f"for shard {first}"
    # b's next event is the second message: the first never reached it (one websocket, in order)
    assert (await bot_b.next_inbound()).text == f"for shard {1 - first}"
    assert bot_a.pending() == 0 and bot_b.pending() == 0


def test_shard_settings_come_from_the_environment_and_bad_ones_are_refused() -> None:
    env = {"DISCORD_TOKEN": "t", "DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "2, 0"}
    settings = DiscordSettings.from_env(env)
    assert settings.client_options() == {"shard_count": 4, "shard_ids": [0, 2]}
    assert DiscordSettings.from_env({"DISCORD_TOKEN": "t"}).client_options() == {}
    assert DiscordSettings.from_env({"DISCORD_TOKEN": "t", "DISCORD_SHARD_COUNT": "2"}).client_options() == {
        "shard_count": 2, "shard_ids": [0, 1]}
    for bad, match in (({"DISCORD_SHARD_IDS": "0"}, "needs DISCORD_SHARD_COUNT"),
                       ({"DISCORD_SHARD_COUNT": "0"}, "from 1 to"),
                       ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "2"}, "from 0 to 1"),
                       ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "1,1"}, "distinct")):
        with pytest.raises(SettingsError, match=match):
            DiscordSettings.from_env({"DISCORD_TOKEN": "t", **bad})
