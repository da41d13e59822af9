"""`switchboard reset | cancel | audit`: the operator's admin commands, with the same meaning as on the platforms.

They go to the running bot through its admin socket (only the running process can stop its own turns). With no
bot running they act on the database and the provider directly; notices for interrupted messages are then
delivered when the bot next starts. On PostgreSQL (several instances) they always act through the database: the
command takes the conversation's lease, which stops the owning instance's writes, and gives it back after, so a
running instance delivers the notices within a heartbeat.
"""

from __future__ import annotations

import getpass
import sys

from bot import admin_socket
from bot.admin_socket import InstanceLock, operator_context
from bot.config import TeamConfig
from bot.types import CommandResult
from storage.select import is_postgres, redacted

MAX_LISTED = 5


async def run_admin(team: TeamConfig, texts: list[str], channel: str = "", conversation: str | None = None,
                    operator: str | None = None) -> CommandResult:
    """Run engine commands in order (stopping at the first refusal); returns the last result. `conversation` may be
    a short key (its last `:` parts, e.g. the thread timestamp) when only one conversation ends that way."""
    operator = operator or getpass.getuser()
    if conversation is not None:
        resolved = await resolve_conversation(team.db_path, conversation)
        if isinstance(resolved, CommandResult):
            return resolved
        conversation = resolved
    if is_postgres(team.db_path):
        return await _offline(team, texts, channel, conversation, operator, shared=True)
    path = admin_socket.socket_path(team.db_path)
    result: CommandResult | None = None
    for text in texts:
        result = await admin_socket.send(path, text, operator, channel, conversation)
        if result is None:
            return await _offline(team, texts, channel, conversation, operator)
        if not result.ok:
            break
    assert result is not None
    return result


async def resolve_conversation(db_path: str, name: str) -> str | CommandResult:
    """The full key `name` stands for, or a refusal naming the candidates."""
    from storage.select import store_for

    store = store_for(db_path)
    await store.open()
    try:
        keys = [c.key for c in await store.conversations()]
    finally:
        await store.close()
    if name in keys:
        return name
    matches = [key for key in keys if key.endswith(":" + name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        return CommandResult(False, f"no conversation {name!r} in {redacted(db_path)}: `switchboard status` lists them")
    listed = ", ".join(sorted(matches)[:MAX_LISTED])
    return CommandResult(False, f"{name!r} could be {len(matches)} conversations ({listed}); give more of the key")


async def _offline(team: TeamConfig, texts: list[str], channel: str, conversation: str | None,
                   operator: str, shared: bool = False) -> CommandResult:
    from bot.engine import Bot

    lock = None if shared else InstanceLock(team.db_path)
    if lock is not None:
        lock.acquire()  # AlreadyRunning: a bot holds the database but offers no admin socket
    bot = Bot.from_config(team)
    try:
        await bot.store.open()
        await bot.backend.open()
        await bot.mailbox.close()  # no workers here: the next start delivers the notices
        ctx = operator_context(operator, channel, conversation)
        result = CommandResult(False, "nothing to do")
        for text in texts:
            result = await bot.command(ctx, text)
            if not result.ok:
                break
        return result
    finally:
        try:
            await bot.ownership.stop()  # the leases it took, given back for a running instance to pick up
        finally:
            await bot.backend.close()
            await bot.store.close()
            if lock is not None:
                lock.release()


def confirm_reset_all(assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        print("switchboard: `reset --all` needs --yes when not run from a terminal", file=sys.stderr)
        return False
    answer = input("Reset EVERY conversation? Running turns are stopped and their users told. Type 'yes': ")
    return answer.strip().lower() == "yes"
