"""A local admin channel for operators: a Unix socket beside the database, readable and writable only by the
bot's own OS user (mode 0600), so the operating system authorises whoever runs `switchboard reset ...`; the audit
names the connecting process's OS user and pid as the kernel reports them (SO_PEERCRED), not what the client says.

The CLI's admin commands go through it when the bot is running, because only the running process can stop its
own turns; when no bot is running they work on the database directly (see `bot.admin_cli`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from bot.types import Actor, CommandContext, CommandResult
from storage.base import StoreError

#: runs one command as `Bot.command` does: all the admin socket may do with the engine
CommandRunner = Callable[[CommandContext, str], Awaitable[CommandResult]]

log = logging.getLogger("switchboard.admin")

SOCKET_SUFFIX = ".admin.sock"
LOCK_SUFFIX = ".lock"
SOCKET_MODE = 0o600
OPERATOR_PREFIX = "operator:"


class AlreadyRunning(StoreError):
    """Another Switchboard process holds this database."""


def socket_path(db_path: str) -> str:
    return db_path + SOCKET_SUFFIX


class InstanceLock:
    """An exclusive lock beside the database: one Switchboard process per database file."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path + LOCK_SUFFIX
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(fd)
            os.close(fd)
            db = self.path.removesuffix(LOCK_SUFFIX)
            who = f"another Switchboard process (PID {holder})" if holder else "another Switchboard process"
            stop = f"`kill {holder}`" if holder else "`switchboard run` wherever it was started"
            raise AlreadyRunning(
                f"{who} is using {db}: stop it first ({stop}), or give this one its own database with "
                "SWITCHBOARD_DB; `switchboard reset/cancel/audit` reach the running bot without stopping it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _holder_pid(fd: int) -> int | None:
    """The PID the lock holder wrote into the lock file (the lock itself dies with its process)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


class AdminSocket:
    def __init__(self, command: CommandRunner, path: str) -> None:
        self._run_command = command
        self.path = path
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # left by a process that was killed; the instance lock says it is gone
        app = web.Application()
        app.router.add_post("/command", self._command)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The socket is created 0600: no window in which others could connect. The umask is the whole process's, so
        # it is changed only around the bind itself, with no await in between: set across an await, another bot
        # starting in the same process restored it in the wrong order and left 0177 behind (every later file 0600).
        old_umask = os.umask(0o177)
        try:
            listener.bind(self.path)
        except OSError:
            listener.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(self.path, SOCKET_MODE)
        await web.SockSite(self._runner, listener).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _command(self, request: web.Request) -> web.Response:
        operator = peer_operator(request.transport.get_extra_info("socket") if request.transport else None)
        if operator is None:
            return web.json_response({"ok": False, "text": "cannot tell who is connecting"}, status=403)
        try:
            body = await request.json()
            ctx = operator_context(operator, body.get("channel") or "", body.get("conversation"))
            text = str(body["text"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return web.json_response({"ok": False, "text": "malformed admin request"}, status=400)
        result = await self._run_command(ctx, text)
        return web.json_response({"ok": result.ok, "text": result.text})


def peer_operator(sock: socket.socket | None) -> str | None:
    """`<os user>(uid <uid>, pid <pid>)` of the process at the other end of a Unix socket, from the kernel's
    SO_PEERCRED (`struct ucred`: pid, uid, gid as three ints; unix(7)). None when the kernel does not say."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, _gid = struct.unpack("3i", raw)
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return f"{name}(uid {uid}, pid {pid})"


def operator_context(operator: str, channel: str, conversation: str | None) -> CommandContext:
    actor = Actor("console", OPERATOR_PREFIX + operator, platform_admin=True)
    return CommandContext(actor=actor, channel=channel, conversation=conversation)


async def send(path: str, text: str, operator: str, channel: str = "", conversation: str | None = None
               ) -> CommandResult | None:
    """Send a command to the running bot; None when no bot is listening on `path`. `operator` is informational only:
    the bot records the OS user it sees connecting."""
    if not await asyncio.to_thread(os.path.exists, path):
        return None
    payload: dict[str, Any] = {"text": text, "operator": operator, "channel": channel, "conversation": conversation}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session:
            async with session.post("http://switchboard/command", json=payload) as response:
                data = await response.json()
    except aiohttp.ClientConnectionError:
        return None  # a stale socket file: nobody is listening
    return CommandResult(bool(data["ok"]), str(data["text"]))
