"""The admin socket is created 0600 without leaving the process's umask changed, even when several bots start at
once in one process (the fault matrix runs two): the umask is the whole process's."""

from __future__ import annotations

import asyncio
import os
import stat

from bot.admin_socket import AdminSocket
from bot.types import CommandContext, CommandResult


async def _no_command(ctx: CommandContext, text: str) -> CommandResult:
    return CommandResult(False, "unused")


async def test_sockets_started_together_are_private_and_leave_the_umask_alone(tmp_path):
    before = os.umask(0o022)
    try:
        sockets = [AdminSocket(_no_command, str(tmp_path / f"admin-{i}.sock")) for i in range(4)]
        await asyncio.gather(*(s.start() for s in sockets))
        try:
            for s in sockets:
                assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
            probe = os.umask(0o022)
            assert probe == 0o022  # nothing left behind: files made after this still get the usual mode
        finally:
            await asyncio.gather(*(s.stop() for s in sockets))
    finally:
        os.umask(before)
