"""A fake Discord on loopback: the REST routes and the gateway websocket that discord.py 2.7 uses.

The real discord.py client connects to it once `patched()` points `discord.http.Route.BASE` and
`discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY` here. Faithful where it matters for the adapter:

- login (`/users/@me`, `/oauth2/applications/@me`), command bulk overwrite (global and guild);
- gateway: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeat ACK, RESUME; close 4004 on a bad token and 4014
  when the privileged message-content intent is requested but not enabled for the app;
- messages: create / edit / delete / get / list (newest first, `before`/`after`/`around`), 2,000-character and
  embed limits, replies (`message_reference`, `referenced_message`), mentions parsed from the content,
  `nonce` echoed only by the create response and MESSAGE_CREATE (never by GET, as on Discord), `enforce_nonce`
  deduplication (same author + nonce in a window returns the first message; 404 10008 if it was deleted);
- without the message-content intent, guild messages that do not mention the bot reach it with empty content
  (gateway and REST), like Discord;
- permissions computed from roles and channel overwrites (owner / administrator = everything); 403 50013 when the
  bot may not post, create threads or read history; 403 50005 when it edits someone else's (or a webhook's) message;
- threads: start without a message (THREAD_CREATE + a "started a thread" system message) or from a message;
- interactions: INTERACTION_CREATE built by `slash()`; the callback answers `{"interaction": ..., "resource": ...}`
  with content type exactly `application/json`; 404 10062 after 3 s (late ack) or for an unknown id, 400 40060 when
  answered twice; followups and `@original` through the webhook routes, 401 50027 once the 15-minute token is
  dead; the first followup after a defer replaces the "thinking" message;
- typing; guild members; DM channels.

Every REST call is recorded with `time.monotonic()` and the injected clock's `monotonic()`. Faults, each as Discord
(or the network in front of it) really produces it, on the requests matching a method and a path regex (and, with
`channel=`, only those about that channel: see `channel_of`), `times` times (None: always) after `skip` good ones:
- `inject_429()`: 429 with JSON `retry_after`, `Retry-After`, `X-RateLimit-*` and the `Via` header discord.py
  requires;
- `inject_error()`: a JSON error `{"code", "message"}` from Discord's table of JSON error codes (the status and
  message must be the ones Discord uses for that code: see `JSON_ERRORS`);
- `inject_server_error()`: HTTP 500 (Discord's JSON), 502 (the edge's HTML page) or 503 (the proxy's plain text);
- `inject_reset()`: the connection is reset before any response (the request never took effect);
- `inject_lost_answer()`: the request is carried out, then its answer is lost (the edge's 502, or a reset): what a
  client that sends a create again must survive without a second message.
DMs: `dm_closed` holds users who do not accept DMs from the bot (403 50007 on a post into their DM).

Longer than our usual module on purpose (test-only): it is one fake service (REST and gateway), each rule citing the
Discord doc it follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import re
import secrets
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import yarl
from aiohttp import WSMsgType, web

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000

CONTENT_LIMIT = 2_000
EMBED_DESCRIPTION_LIMIT = 4_096
EMBED_TITLE_LIMIT = 256
EMBED_TOTAL_LIMIT = 6_000
NONCE_LIMIT = 25
ACK_DEADLINE_S = 3.0
TOKEN_LIFETIME_S = 15 * 60.0
HEARTBEAT_INTERVAL_MS = 41_250

# permission bits
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_APPLICATION_COMMANDS = 1 << 31
CREATE_PUBLIC_THREADS = 1 << 35
CREATE_PRIVATE_THREADS = 1 << 36
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 51) - 1
DEFAULT_MEMBER_PERMISSIONS = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | SEND_MESSAGES_IN_THREADS
)

INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | INTENT_MESSAGE_CONTENT

# channel types
GUILD_TEXT = 0
DM = 1
PUBLIC_THREAD = 11
PRIVATE_THREAD = 12
THREAD_TYPES = {10, PUBLIC_THREAD, PRIVATE_THREAD}

FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
MSG_DEFAULT = 0
MSG_THREAD_CREATED = 18
MSG_REPLY = 19
MSG_CHAT_INPUT_COMMAND = 20

_MENTION = re.compile(r"<@!?(\d+)>")


class ClockLike(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class _SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


#: Discord's JSON error codes the fake produces: code -> (HTTP status, message). Source: "JSON Error Codes",
#: https://discord.com/developers/docs/topics/opcodes-and-status-codes#json-json-error-codes (statuses as Discord
#: sends them: 404 for unknown objects, 403 for permissions, 401 for a dead webhook token).
JSON_ERRORS: dict[int, tuple[int, str]] = {
    10003: (404, "Unknown Channel"),
    10008: (404, "Unknown Message"),
    10015: (404, "Unknown Webhook"),
    10062: (404, "Unknown interaction"),
    40060: (400, "Interaction has already been acknowledged."),
    50001: (403, "Missing Access"),
    50005: (403, "Cannot edit a message authored by another user"),
    50007: (403, "Cannot send messages to this user"),
    50013: (403, "Missing Permissions"),
    50027: (401, "Invalid Webhook Token"),
    160002: (403, "Cannot reply without permission to read message history"),
}


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, "code": code}
        if errors:
            self.body["errors"] = errors


@dataclass(slots=True)
class RecordedCall:
    index: int
    method: str
    path: str  # without the /api/v10 prefix
    route: str  # e.g. "POST /channels/{channel_id}/messages"
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    t: float  # time.monotonic() when the request arrived
    clock_t: float  # the injected clock's monotonic() when the request arrived
    status: int = 0
    response: Any = None

    def matches(self, method: str | None = None, route: str | None = None, path: str | None = None) -> bool:
        if method is not None and self.method != method:
            return False
        if route is not None and self.route.split(" ", 1)[1] != route:
            return False
        return path is None or re.fullmatch(path, self.path) is not None


@dataclass(slots=True)
class _Fault:
    method: str
    path: re.Pattern[str]
    times: int
    retry_after: float
    is_global: bool
    skip: int = 0  # let this many matching requests through first
    status: int = 429
    code: int = 0
    message: str = "You are being rate limited."
    reset: bool = False
    channel: int | None = None  # only requests about this channel (see FakeDiscord.channel_of)
    stall: asyncio.Event | None = None  # hold the request until this is set (a process killed meanwhile)
    took_effect: bool = False  # the request is carried out first; then its answer is lost (502 or reset)


@dataclass(slots=True)
class FakeInteraction:
    id: int
    token: str
    created: float  # clock.now()
    guild_id: int | None
    channel_id: int
    user_id: int
    payload: dict[str, Any]
    responded: bool = False
    original_id: int | None = None


@dataclass(slots=True)
class _Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, dict[str, Any]] = field(default_factory=dict)
    members: dict[int, list[int]] = field(default_factory=dict)  # user id -> role ids


@dataclass(slots=True)
class _Session:
    ws: web.WebSocketResponse
    intents: int = 0
    seq: int = 0
    shard: tuple[int, int] = (0, 1)  # (shard id, shard count) from IDENTIFY
    session_id: str = field(default_factory=lambda: secrets.token_hex(8))
    identified: asyncio.Event = field(default_factory=asyncio.Event)


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that receives a guild's events (discord.com/developers/docs/topics/gateway#sharding)."""
    return (guild_id >> 22) % shard_count


def _times(times: int | None) -> int:
    return 1 << 62 if times is None else times


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat()


class FakeDiscord:
    def __init__(
        self,
        *,
        clock: ClockLike | None = None,
        token: str = "fake-discord-token",
        message_content_allowed: bool = True,
        nonce_window: float = 300.0,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
    ) -> None:
        self.clock: ClockLike = clock or _SystemClock()
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.heartbeats = 0
        self.token = token
        self.message_content_allowed = message_content_allowed
        self.nonce_window = nonce_window
        self._counter = itertools.count(1)
        self.users: dict[int, dict[str, Any]] = {}
        self.guilds: dict[int, _Guild] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, list[dict[str, Any]]] = {}  # channel id -> messages, oldest first
        self._message_index: dict[int, dict[str, Any]] = {}
        self._nonces: dict[tuple[int, str], dict[str, Any]] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.calls: list[RecordedCall] = []
        self.identifies: list[dict[str, Any]] = []
        self.sessions: list[_Session] = []
        self._faults: list[_Fault] = []
        #: users who do not accept direct messages from the bot (privacy settings, or they blocked it)
        self.dm_closed: set[int] = set()
        self._changed: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.bot_user = self.add_user("Switchboard", bot=True)
        self.bot_id = int(self.bot_user["id"])
        self.application_id = self.bot_id
        self._routes = self._route_table()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeDiscord:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server) and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        for session in list(self.sessions):
            with contextlib.suppress(Exception):
                await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        """Point discord.py at this fake; restore the real endpoints afterwards."""
        import discord.gateway
        import discord.http

        old_base = discord.http.Route.BASE
        old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.base_url
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    # ------------------------------------------------------------------ world building

    def snowflake(self, at: float | None = None) -> int:
        ms = int((self.clock.now() if at is None else at) * 1000)
        return ((ms - DISCORD_EPOCH_MS) << 22) | (next(self._counter) & 0x3FFFFF)

    def add_user(self, name: str, *, bot: bool = False) -> dict[str, Any]:
        uid = self.snowflake()
        user = {
            "id": str(uid),
            "username": name.lower(),
            "global_name": name,
            "discriminator": "0",
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }
        self.users[uid] = user
        return user

    def add_guild(self, name: str = "Test Server", *, owner_id: int | None = None) -> int:
        gid = self.snowflake()
        owner = owner_id if owner_id is not None else int(self.add_user(f"{name} owner")["id"])
        guild = _Guild(gid, name, owner)
        guild.roles[gid] = self._role(gid, "@everyone", DEFAULT_MEMBER_PERMISSIONS)
        self.guilds[gid] = guild
        bot_role = self.add_role(gid, "Switchboard", DEFAULT_MEMBER_PERMISSIONS, managed=True)
        guild.members[self.bot_id] = [bot_role]
        guild.members[owner] = []
        return gid

    def _role(self, rid: int, name: str, permissions: int, *, managed: bool = False) -> dict[str, Any]:
        return {
            "id": str(rid),
            "name": name,
            "permissions": str(permissions),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": managed,
            "mentionable": False,
            "flags": 0,
        }

    def add_role(self, guild_id: int, name: str, permissions: int, *, managed: bool = False) -> int:
        rid = self.snowflake()
        role = self._role(rid, name, permissions, managed=managed)
        role["position"] = len(self.guilds[guild_id].roles)
        self.guilds[guild_id].roles[rid] = role
        return rid

    def add_member(self, guild_id: int, name: str, *, roles: tuple[int, ...] = ()) -> int:
        uid = int(self.add_user(name)["id"])
        self.guilds[guild_id].members[uid] = list(roles)
        return uid

    def add_channel(
        self,
        guild_id: int,
        name: str = "general",
        *,
        deny_bot: int = 0,
        deny_everyone: int = 0,
    ) -> int:
        """A text channel; `deny_bot` / `deny_everyone` become permission overwrites."""
        cid = self.snowflake()
        overwrites = []
        if deny_everyone:
            overwrites.append({"id": str(guild_id), "type": 0, "allow": "0", "deny": str(deny_everyone)})
        if deny_bot:
            overwrites.append({"id": str(self.bot_id), "type": 1, "allow": "0", "deny": str(deny_bot)})
        self.channels[cid] = {
            "id": str(cid),
            "type": GUILD_TEXT,
            "guild_id": str(guild_id),
            "name": name,
            "position": len(self.channels),
            "permission_overwrites": overwrites,
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        self.messages[cid] = []
        return cid

    def dm_channel(self, user_id: int) -> int:
        for cid, channel in self.channels.items():
            if channel["type"] == DM and int(channel["recipients"][0]["id"]) == user_id:
                return cid
        cid = self.snowflake()
        self.channels[cid] = {
            "id": str(cid),
            "type": DM,
            "recipients": [self.users[user_id]],
            "last_message_id": None,
            "flags": 0,
        }
        self.messages[cid] = []
        return cid

    async def add_thread(self, channel_id: int, name: str, *, owner_id: int, announce: bool = True) -> int:
        """A public thread someone (not necessarily the bot) opened; announced with THREAD_CREATE unless
        `announce` is False (then the bot only learns of it from a message in it, as after a restart)."""
        thread = self._make_thread(channel_id, name, owner_id, self.snowflake(), 1_440)
        if announce:
            await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return int(thread["id"])

    def _make_thread(self, parent_id: int, name: str, owner_id: int, tid: int, archive: int) -> dict[str, Any]:
        parent = self.channels[parent_id]
        thread = {
            "id": str(tid),
            "type": PUBLIC_THREAD,
            "guild_id": parent["guild_id"],
            "parent_id": str(parent_id),
            "owner_id": str(owner_id),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": archive,
                "archive_timestamp": _iso(self.clock.now()),
                "locked": False,
                "create_timestamp": _iso(self.clock.now()),
            },
        }
        self.channels[tid] = thread
        self.messages[tid] = []
        return thread

    # ------------------------------------------------------------------ permissions

    def guild_of(self, channel_id: int) -> _Guild | None:
        gid = self.channels[channel_id].get("guild_id")
        return self.guilds[int(gid)] if gid else None

    def base_permissions(self, guild: _Guild, user_id: int) -> int:
        if user_id == guild.owner_id:
            return ALL_PERMISSIONS
        perms = int(guild.roles[guild.id]["permissions"])
        for rid in guild.members.get(user_id, []):
            perms |= int(guild.roles[rid]["permissions"])
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def permissions_in(self, channel_id: int, user_id: int) -> int:
        channel = self.channels[channel_id]
        if channel["type"] == DM:
            return VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY | EMBED_LINKS | ATTACH_FILES
        guild = self.guild_of(channel_id)
        assert guild is not None
        perms = self.base_permissions(guild, user_id)
        if perms == ALL_PERMISSIONS:
            return perms
        source = self.channels[int(channel["parent_id"])] if channel["type"] in THREAD_TYPES else channel
        overwrites = {int(o["id"]): o for o in source.get("permission_overwrites", [])}
        everyone = overwrites.get(guild.id)
        if everyone:
            perms = (perms & ~int(everyone["deny"])) | int(everyone["allow"])
        allow = deny = 0
        for rid in guild.members.get(user_id, []):
            if rid in overwrites:
                allow |= int(overwrites[rid]["allow"])
                deny |= int(overwrites[rid]["deny"])
        perms = (perms & ~deny) | allow
        member = overwrites.get(user_id)
        if member:
            perms = (perms & ~int(member["deny"])) | int(member["allow"])
        return perms

    def _require(self, channel_id: int, user_id: int, needed: int) -> None:
        # https://discord.com/developers/docs/topics/permissions (computed as documented: base role permissions,
        # then @everyone, role and member overwrites); missing ones: 403 50013 "Missing Permissions"
        if self.permissions_in(channel_id, user_id) & needed != needed:
            raise ApiError(403, 50013, "Missing Permissions")

    # ------------------------------------------------------------------ records and waiting

    def inject_429(
        self,
        method: str,
        path: str,
        *,
        retry_after: float = 0.2,
        times: int | None = 1,
        is_global: bool = False,
        skip: int = 0,
        channel: int | None = None,
    ) -> None:
        """The next `times` requests matching `method` and the `path` regex (without /api/v10) get a 429."""
        self._faults.append(
            _Fault(method, re.compile(path), _times(times), retry_after, is_global, skip, channel=channel)
        )

    def inject_error(
        self,
        method: str,
        path: str,
        *,
        code: int,
        status: int | None = None,
        message: str | None = None,
        times: int | None = 1,
        skip: int = 0,
        channel: int | None = None,
    ) -> None:
        """The matching requests after the first `skip` fail `times` times (None: always) with Discord's JSON error
        `code`; `status` and `message` default to (and must agree with) what Discord sends for it."""
        if code not in JSON_ERRORS:
            raise ValueError(f"{code} is not a Discord JSON error code this fake knows")
        known_status, known_message = JSON_ERRORS[code]
        if status is not None and status != known_status:
            raise ValueError(f"Discord answers code {code} with HTTP {known_status}, not {status}")
        self._faults.append(
            _Fault(method, re.compile(path), _times(times), 0.0, False, skip, known_status, code,
                   message or known_message, channel=channel)
        )

    def inject_server_error(
        self,
        method: str,
        path: str,
        *,
        status: int = 500,
        times: int | None = 1,
        skip: int = 0,
        channel: int | None = None,
    ) -> None:
        """HTTP 500 (Discord's own JSON body), 502 (the edge's HTML page) or 503 (the proxy's plain text)."""
        if status not in (500, 502, 503):
            raise ValueError("a server error is 500, 502 or 503")
        self._faults.append(_Fault(method, re.compile(path), _times(times), 0.0, False, skip, status, channel=channel))

    def inject_reset(
        self, method: str, path: str, *, times: int | None = 1, skip: int = 0, channel: int | None = None
    ) -> None:
        """The connection is reset (TCP RST) before any response: the request never took effect."""
        self._faults.append(
            _Fault(method, re.compile(path), _times(times), 0.0, False, skip, 0, reset=True, channel=channel)
        )

    def inject_lost_answer(
        self, method: str, path: str, *, status: int = 502, skip: int = 0, channel: int | None = None
    ) -> None:
        """The request is carried out, then its answer is lost: the edge answers 502 (`status=502`) or the
        connection is reset (`status=0`). A create the client sends again must not make a second message."""
        self._faults.append(
            _Fault(method, re.compile(path), 1, 0.0, False, skip, status, reset=status == 0, channel=channel,
                   took_effect=True)
        )

    def _vanish(self, path: str) -> None:
        """Delete the message a request path names (a channel message, or an interaction's webhook message)."""
        parts = path.strip("/").split("/")
        message: dict[str, Any] | None = None
        if len(parts) == 4 and parts[0] == "channels" and parts[2] == "messages" and parts[3].isdigit():
            message = self._message_index.get(int(parts[3]))
        elif len(parts) == 5 and parts[0] == "webhooks" and parts[3] == "messages":
            for interaction in self.interactions.values():
                if interaction.token == parts[2]:
                    ref = interaction.original_id if parts[4] == "@original" else int(parts[4])
                    message = self._message_index.get(ref or 0)
        if message is not None:
            message["_deleted"] = True

    def inject_stall(
        self, method: str, path: str, *, skip: int = 0, channel: int | None = None
    ) -> asyncio.Event:
        """Hold the next matching request (after `skip`) unanswered until the returned event is set, then drop its
        connection without it taking effect: the moment a test kills the process that sent it."""
        release = asyncio.Event()
        self._faults.append(_Fault(method, re.compile(path), 1, 0.0, False, skip, 0, channel=channel, stall=release))
        return release

    def channel_of(self, path: str) -> int | None:
        """The guild channel a request is about: the channel in its path (a thread counts as its parent), or the
        channel of the interaction whose token or id it carries. None for anything else (logins, DMs opened...)."""
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "channels" and parts[1].isdigit():
            channel = self.channels.get(int(parts[1]))
            if channel is None:
                return None
            if channel["type"] in THREAD_TYPES:
                return int(channel["parent_id"])
            return int(channel["id"])
        if len(parts) >= 3 and parts[0] == "interactions" and parts[1].isdigit():
            interaction = self.interactions.get(int(parts[1]))
            return interaction.channel_id if interaction is not None else None
        if len(parts) >= 3 and parts[0] == "webhooks":
            for interaction in self.interactions.values():
                if interaction.token == parts[2]:
                    return interaction.channel_id
        return None

    def clear_faults(self) -> None:
        """Forget every injected fault (the platform is healthy again)."""
        self._faults.clear()

    def mark(self) -> int:
        return len(self.calls)

    def find_calls(
        self, method: str | None = None, route: str | None = None, *, path: str | None = None, after: int = 0
    ) -> list[RecordedCall]:
        return [c for c in self.calls[after:] if c.status and c.matches(method, route, path)]

    async def wait_until(self, predicate: Callable[[], Any], within: float = 5.0) -> Any:
        assert self._changed is not None
        async with asyncio.timeout(within):
            async with self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result

    async def wait_for_call(
        self,
        method: str | None = None,
        route: str | None = None,
        *,
        path: str | None = None,
        after: int = 0,
        status: int | None = None,
        within: float = 5.0,
    ) -> RecordedCall:
        def found() -> RecordedCall | None:
            for call in self.find_calls(method, route, path=path, after=after):
                if status is None or call.status == status:
                    return call
            return None

        return await self.wait_until(found, within)

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    def channel_messages(self, channel_id: int, *, include_ephemeral: bool = False) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages.get(channel_id, [])
            if not m["_deleted"] and (include_ephemeral or not m["flags"] & FLAG_EPHEMERAL)
        ]

    def bot_messages(self, channel_id: int) -> list[dict[str, Any]]:
        return [m for m in self.channel_messages(channel_id) if int(m["author"]["id"]) == self.bot_id]

    def message(self, message_id: int) -> dict[str, Any]:
        return self._message_index[message_id]

    # ------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        # https://discord.com/developers/docs/events/gateway: HELLO (op 10) with heartbeat_interval, heartbeat
        # (op 1) answered by HEARTBEAT_ACK (op 11), IDENTIFY (op 2), RESUME (op 6) answered by RESUMED
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = _Session(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                op = payload.get("op")
                data = payload.get("d")
                if op == 1:
                    self.heartbeats += 1
                    await ws.send_str(json.dumps({"op": 11}))
                    await self._notify()
                elif op == 2:
                    await self._identify(session, data)
                elif op == 6:
                    session.seq = int(data.get("seq") or 0)
                    self.sessions.append(session)
                    await self._send_event(session, "RESUMED", {})
                    session.identified.set()
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
        return ws

    async def _identify(self, session: _Session, data: dict[str, Any]) -> None:
        # gateway close codes (topics/opcodes-and-status-codes#gateway-gateway-close-event-codes): 4004
        # "Authentication failed", 4014 "Disallowed intent(s)" for a privileged intent not enabled for the app
        self.identifies.append({k: v for k, v in data.items() if k != "token"})
        await self._notify()
        if data.get("token") != self.token:
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & INTENT_MESSAGE_CONTENT and not self.message_content_allowed:
            await session.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        # topics/gateway#sharding: IDENTIFY's `shard` is [shard_id, num_shards]; an invalid one closes with 4010
        shard_id, shard_count = data.get("shard") or (0, 1)
        if not (isinstance(shard_count, int) and isinstance(shard_id, int) and 0 <= shard_id < shard_count):
            await session.ws.close(code=4010, message=b"Invalid shard.")
            return
        session.intents = intents
        session.shard = (shard_id, shard_count)
        guilds = [gid for gid in self.guilds if shard_of(gid, shard_count) == shard_id]
        ready = {
            "v": 10,
            "user": {**self.bot_user, "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(gid), "unavailable": True} for gid in guilds],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "shard": [shard_id, shard_count],
        }
        await self._send_event(session, "READY", ready)
        for gid in guilds:
            await self._send_event(session, "GUILD_CREATE", self._guild_payload(gid))
        self.sessions.append(session)
        session.identified.set()
        await self._notify()

    async def wait_identified(self, within: float = 5.0) -> None:
        await self.wait_until(lambda: any(s.identified.is_set() for s in self.sessions), within)

    async def _send_event(self, session: _Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await session.ws.send_str(json.dumps({"op": 0, "t": event, "s": session.seq, "d": data}))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        guild = data.get("guild_id")
        for session in list(self.sessions):
            shard_id, shard_count = session.shard
            # topics/gateway#sharding: a guild's events go to shard (guild_id >> 22) % num_shards only; DMs to shard 0
            if (shard_of(int(guild), shard_count) if guild else 0) != shard_id:
                continue
            payload = data
            if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
                payload = self._visible_to_bot(data, session.intents)
            await self._send_event(session, event, payload)

    def _dispatch_soon(self, event: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(self.dispatch(event, data))

    def _visible_to_bot(self, message: dict[str, Any], intents: int | None) -> dict[str, Any]:
        # https://discord.com/developers/docs/events/gateway#message-content-intent: without it, content, embeds,
        # attachments and components are empty, except in DMs, the bot's own messages and messages mentioning it
        """Discord hides content of guild messages from bots without the message-content intent, except for
        their own messages and messages that mention them."""
        has_intent = self.message_content_allowed if intents is None else bool(intents & INTENT_MESSAGE_CONTENT)
        if has_intent or not message.get("guild_id"):
            return message
        if int(message["author"]["id"]) == self.bot_id:
            return message
        if any(int(u["id"]) == self.bot_id for u in message.get("mentions", [])):
            return message
        return {**message, "content": "", "embeds": [], "attachments": [], "components": []}

    def _guild_payload(self, gid: int) -> dict[str, Any]:
        guild = self.guilds[gid]
        channels = [
            {k: v for k, v in c.items() if k != "guild_id"}
            for c in self.channels.values()
            if c.get("guild_id") == str(gid) and c["type"] not in THREAD_TYPES
        ]
        threads = [c for c in self.channels.values() if c.get("guild_id") == str(gid) and c["type"] in THREAD_TYPES]
        return {
            "id": str(gid),
            "name": guild.name,
            "icon": None,
            "owner_id": str(guild.owner_id),
            "roles": list(guild.roles.values()),
            "emojis": [],
            "stickers": [],
            "features": [],
            "channels": channels,
            "threads": threads,
            "members": [self._member_payload(gid, self.bot_id)],
            "member_count": len(guild.members),
            "large": False,
            "unavailable": False,
            "joined_at": _iso(self.clock.now()),
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_flags": 0,
        }

    def _member_payload(self, gid: int, uid: int, *, with_user: bool = True) -> dict[str, Any]:
        member: dict[str, Any] = {
            "roles": [str(r) for r in self.guilds[gid].members.get(uid, [])],
            "joined_at": _iso(self.clock.now()),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "pending": False,
        }
        if with_user:
            member["user"] = self.users[uid]
        return member

    # ------------------------------------------------------------------ test-side actions

    async def user_message(
        self,
        channel_id: int,
        author_id: int,
        content: str,
        *,
        reply_to: int | None = None,
        ping_reply: bool = True,
    ) -> dict[str, Any]:
        """A user posts a message (dispatched as MESSAGE_CREATE). `<@id>` in `content` are mentions; a reply to
        a message pings its author unless `ping_reply` is False (as in Discord's client)."""
        reference = {"message_id": str(reply_to), "channel_id": str(channel_id)} if reply_to else None
        extra_mentions = []
        if reply_to and ping_reply:
            extra_mentions.append(int(self._message_index[reply_to]["author"]["id"]))
        return await self._create_message(
            channel_id, author_id, {"content": content, "message_reference": reference}, extra_mentions=extra_mentions
        )

    async def slash(
        self,
        name: str,
        *,
        user_id: int,
        channel_id: int,
        options: dict[str, Any] | None = None,
        subcommand: str | None = None,
        age: float = 0.0,
    ) -> FakeInteraction:
        """A user runs a slash command: dispatches INTERACTION_CREATE. `age` backdates the interaction id."""
        channel = self.channels[channel_id]
        gid = int(channel["guild_id"]) if channel.get("guild_id") else None
        command = self._find_command(name, gid)
        option_list = [
            {"name": k, "type": 5 if isinstance(v, bool) else 4 if isinstance(v, int) else 3, "value": v}
            for k, v in (options or {}).items()
        ]
        if subcommand is not None:
            option_list = [{"name": subcommand, "type": 1, "options": option_list}]
        created = self.clock.now() - age
        iid = self.snowflake(at=created)
        token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48)
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1, "options": option_list}
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        channel_payload: dict[str, Any] = {
            k: channel[k] for k in ("id", "type", "name", "guild_id", "parent_id", "owner_id") if k in channel
        }
        if channel["type"] in THREAD_TYPES:
            channel_payload["thread_metadata"] = channel["thread_metadata"]
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": 2,
            "data": data,
            "channel_id": str(channel_id),
            "channel": channel_payload,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "app_permissions": str(self.permissions_in(channel_id, self.bot_id)),
            "entitlements": [],
            "attachment_size_limit": 8 * 1024 * 1024,
        }
        if gid is not None:
            member = self._member_payload(gid, user_id)
            member["permissions"] = str(self.permissions_in(channel_id, user_id))
            payload.update(
                guild_id=str(gid),
                member=member,
                guild_locale="en-US",
                guild={"id": str(gid), "locale": "en-US", "features": []},
                context=0,
                authorizing_integration_owners={"0": str(gid)},
            )
        else:
            payload.update(user=self.users[user_id], context=1, authorizing_integration_owners={"0": "0"})
        interaction = FakeInteraction(iid, token, created, gid, channel_id, user_id, payload)
        self.interactions[iid] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    def _find_command(self, name: str, guild_id: int | None) -> dict[str, Any]:
        pools = ([*self.guild_commands.get(guild_id, [])] if guild_id else []) + self.global_commands
        for command in pools:
            if command["name"] == name:
                return command
        raise LookupError(f"command /{name} was never synced")

    def commands_for(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        return self.guild_commands.get(guild_id, []) if guild_id else self.global_commands

    # ------------------------------------------------------------------ REST plumbing

    def _route_table(self) -> list[tuple[str, re.Pattern[str], str, Callable[..., Any]]]:
        table = [
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/users/@me", self._get_me),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("PUT", "/applications/{application_id}/commands", self._put_global_commands),
            ("GET", "/applications/{application_id}/commands", self._get_global_commands),
            ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", self._put_guild_commands),
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", self._get_guild_commands),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("POST", "/channels/{channel_id}/messages", self._post_message),
            ("GET", "/channels/{channel_id}/messages", self._list_messages),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            ("POST", "/channels/{channel_id}/threads", self._start_thread),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._thread_from_message),
            ("PUT", "/channels/{channel_id}/thread-members/{user_id}", self._add_thread_member),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._callback),
            ("POST", "/webhooks/{application_id}/{token}", self._followup),
            ("GET", "/webhooks/{application_id}/{token}/messages/{message_id}", self._webhook_get),
            ("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}", self._webhook_edit),
            ("DELETE", "/webhooks/{application_id}/{token}/messages/{message_id}", self._webhook_delete),
        ]
        compiled = []
        for method, template, handler in table:
            pattern = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")
            compiled.append((method, pattern, f"{method} {template}", handler))
        return compiled

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body: Any = None
        raw = await request.read()
        if raw:
            content_type = request.headers.get("Content-Type", "")
            if content_type.startswith("multipart/"):
                body = {"multipart": True}
            else:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
        route_name = f"{request.method} ?"
        handler: Callable[..., Any] | None = None
        params: dict[str, str] = {}
        for method, pattern, name, candidate in self._routes:
            match = pattern.match(path)
            if match and method == request.method:
                route_name, handler, params = name, candidate, match.groupdict()
                break
        call = RecordedCall(
            index=len(self.calls),
            method=request.method,
            path=path,
            route=route_name,
            params=params,
            query=dict(request.query),
            body=body,
            t=time.monotonic(),
            clock_t=self.clock.monotonic(),
        )
        self.calls.append(call)
        try:
            response = await self._maybe_fault(request, path, call)
            if response is None:
                response = await self._handle(request, handler, params, body, call)
                # it took effect; the answer may still be lost on the way back
                response = await self._maybe_fault(request, path, call, took_effect=True) or response
        finally:
            await self._notify()
        return response

    async def _handle(
        self,
        request: web.Request,
        handler: Callable[..., Any] | None,
        params: dict[str, str],
        body: Any,
        call: RecordedCall,
    ) -> web.Response:
        needs_bot_auth = not (
            call.route.startswith("POST /interactions/") or call.route.split(" ", 1)[1].startswith("/webhooks/")
        )
        try:
            if needs_bot_auth and request.headers.get("Authorization") != f"Bot {self.token}":
                raise ApiError(401, 0, "401: Unauthorized")
            if handler is None:
                raise ApiError(404, 0, "404: Not Found")
            status, data = await handler(
                params=params, body=body if isinstance(body, dict | list) else {}, query=dict(request.query)
            )
        except ApiError as exc:
            status, data = exc.status, exc.body
        call.status = status
        call.response = data
        if status == 204 or data is None:
            return web.Response(status=status if status != 200 else 204)
        return _json(status, data)

    def _take_fault(self, method: str, path: str, *, took_effect: bool) -> _Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.method == method and fault.path.fullmatch(path):
                if fault.took_effect != took_effect:
                    continue
                if fault.channel is not None and self.channel_of(path) != fault.channel:
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fault.times -= 1
                return fault
        return None

    async def _maybe_fault(
        self, request: web.Request, path: str, call: RecordedCall, *, took_effect: bool = False
    ) -> web.Response | None:
        method = request.method
        fault = self._take_fault(method, path, took_effect=took_effect)
        if fault is None:
            return None
        if fault.stall is not None:
            await self._notify()
            await fault.stall.wait()  # released: it never took effect; the connection goes (as a reset)
        if fault.reset or fault.stall is not None:
            # TCP reset (SO_LINGER 0, then close): the client sees ECONNRESET before any response
            call.status, call.response = -1, {"message": "connection reset"}
            transport = request.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        if fault.status == 500:
            call.status, call.response = 500, {"message": "500: Internal Server Error", "code": 0}
            return _json(500, call.response)
        if fault.status == 502:
            call.status, call.response = 502, "<html>502 Bad Gateway (cloudflare)</html>"
            return web.Response(status=502, text=call.response, content_type="text/html")
        if fault.status == 503:
            call.status = 503
            call.response = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            return web.Response(status=503, text=call.response, content_type="text/plain")
        if fault.status != 429:
            if fault.code == 10008:
                self._vanish(path)  # "Unknown Message": it was deleted (by someone) before this request
            call.status, call.response = fault.status, {"message": fault.message, "code": fault.code}
            return _json(fault.status, call.response)
        body = {
            "message": "You are being rate limited.",
            "retry_after": fault.retry_after,
            "global": fault.is_global,
        }
        call.status, call.response = 429, body
        headers = {
            "Retry-After": str(max(1, round(fault.retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": f"{fault.retry_after:.3f}",
            "X-RateLimit-Bucket": "fake-bucket-" + re.sub(r"\d+", "id", path),
            "X-RateLimit-Scope": "global" if fault.is_global else "user",
            "Via": "1.1 google",
        }
        if fault.is_global:
            headers["X-RateLimit-Global"] = "true"
        return _json(429, body, headers)

    # ------------------------------------------------------------------ REST: login, commands

    async def _get_gateway(self, **_: Any) -> tuple[int, Any]:
        return 200, {"url": self.gateway_url}

    async def _get_gateway_bot(self, **_: Any) -> tuple[int, Any]:
        return 200, {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
        }

    async def _get_me(self, **_: Any) -> tuple[int, Any]:
        return 200, {**self.bot_user, "verified": True, "mfa_enabled": False, "flags": 0}

    async def _get_application(self, **_: Any) -> tuple[int, Any]:
        return 200, {
            "id": str(self.application_id),
            "name": "Switchboard",
            "icon": None,
            "description": "",
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "bot": self.bot_user,
            "owner": next(iter(self.users.values())),
            "summary": "",
            "verify_key": "0" * 64,
            "team": None,
            "flags": 1 << 19 if self.message_content_allowed else 0,  # GATEWAY_MESSAGE_CONTENT_LIMITED
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "approximate_guild_count": len(self.guilds),
        }

    def _store_commands(self, body: Any, guild_id: int | None) -> list[dict[str, Any]]:
        if not isinstance(body, list):
            raise ApiError(400, 50035, "Invalid Form Body")
        stored = []
        for command in body:
            entry = {
                **command,
                "id": str(self.snowflake()),
                "application_id": str(self.application_id),
                "version": str(self.snowflake()),
                "type": command.get("type", 1),
            }
            if guild_id is not None:
                entry["guild_id"] = str(guild_id)
            stored.append(entry)
        return stored

    async def _put_global_commands(self, *, body: Any, **_: Any) -> tuple[int, Any]:
        self.global_commands = self._store_commands(body, None)
        return 200, self.global_commands

    async def _get_global_commands(self, **_: Any) -> tuple[int, Any]:
        return 200, self.global_commands

    async def _put_guild_commands(self, *, params: dict[str, str], body: Any, **_: Any) -> tuple[int, Any]:
        # interactions/application-commands#bulk-overwrite-guild-application-commands: 403 50001 outside the guild
        gid = int(params["guild_id"])
        if gid not in self.guilds:
            raise ApiError(403, 50001, "Missing Access")
        self.guild_commands[gid] = self._store_commands(body, gid)
        return 200, self.guild_commands[gid]

    async def _get_guild_commands(self, *, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        return 200, self.guild_commands.get(int(params["guild_id"]), [])

    # ------------------------------------------------------------------ REST: channels and messages

    def _channel(self, params: dict[str, str]) -> int:
        cid = int(params["channel_id"])
        if cid not in self.channels:
            raise ApiError(404, 10003, "Unknown Channel")
        return cid

    async def _get_channel(self, *, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        cid = self._channel(params)
        if self.channels[cid]["type"] != DM:
            self._require(cid, self.bot_id, VIEW_CHANNEL)
        return 200, self.channels[cid]

    async def _post_message(self, *, params: dict[str, str], body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        # https://discord.com/developers/docs/resources/message#create-message: needs SEND_MESSAGES (in a thread
        # SEND_MESSAGES_IN_THREADS) and VIEW_CHANNEL, else 403 50013; a DM to a user who does not accept them is
        # 403 50007 "Cannot send messages to this user"
        cid = self._channel(params)
        channel = self.channels[cid]
        if channel["type"] == DM and int(channel["recipients"][0]["id"]) in self.dm_closed:
            raise ApiError(403, 50007, "Cannot send messages to this user")
        is_thread = channel["type"] in THREAD_TYPES
        self._require(cid, self.bot_id, VIEW_CHANNEL | (SEND_MESSAGES_IN_THREADS if is_thread else SEND_MESSAGES))
        nonce = body.get("nonce")
        # Create Message `enforce_nonce`: "the nonce will be checked for uniqueness in the past few minutes. If
        # another message was created by the same author with the same nonce, that message will be returned and no
        # new message will be created"; a deleted one answers 404 10008 (observed)
        if nonce is not None and body.get("enforce_nonce"):
            key = (self.bot_id, str(nonce))
            earlier = self._nonces.get(key)
            if earlier is not None and self.clock.now() - earlier["_created"] <= self.nonce_window:
                if earlier["_deleted"]:
                    raise ApiError(404, 10008, "Unknown Message")
                return 200, self._public(earlier, with_nonce=True)
        message = await self._create_message(cid, self.bot_id, body)
        return 200, self._public(message, with_nonce=True)

    async def _create_message(
        self,
        channel_id: int,
        author_id: int,
        body: dict[str, Any],
        *,
        extra_mentions: list[int] | None = None,
        webhook: bool = False,
        interaction: FakeInteraction | None = None,
        flags: int = 0,
        message_type: int | None = None,
    ) -> dict[str, Any]:
        content = body.get("content") or ""
        embeds = body.get("embeds") or []
        _check_content(content, embeds, allow_empty=bool(flags & FLAG_LOADING) or message_type == MSG_THREAD_CREATED)
        nonce = body.get("nonce")
        if nonce is not None and len(str(nonce)) > NONCE_LIMIT:
            raise ApiError(400, 50035, "Invalid Form Body", {"nonce": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}})
        # Create Message: "nonce ... max 25 characters"; a reply (message_reference) needs READ_MESSAGE_HISTORY,
        # else 403 160002; a reference to an unknown message is 400 50035 REPLIES_UNKNOWN_MESSAGE unless
        # fail_if_not_exists is false (then sent as a plain message)
        reference = body.get("message_reference")
        referenced = None
        if (
            reference
            and author_id == self.bot_id
            and not self.permissions_in(channel_id, author_id) & READ_MESSAGE_HISTORY
        ):
            raise ApiError(403, 160002, "Cannot reply without permission to read message history")
        if reference:
            ref_id = int(reference["message_id"])
            target = self._message_index.get(ref_id)
            if target is None or target["_deleted"] or int(target["channel_id"]) != channel_id:
                if reference.get("fail_if_not_exists", True):
                    raise ApiError(
                        400,
                        50035,
                        "Invalid Form Body",
                        {"message_reference": {"_errors": [{"code": "REPLIES_UNKNOWN_MESSAGE"}]}},
                    )
                reference = None
            else:
                referenced = target
        mention_ids = [int(m) for m in _MENTION.findall(content)] + (extra_mentions or [])
        channel = self.channels[channel_id]
        mid = self.snowflake()
        flags |= int(body.get("flags") or 0)
        message: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": self.users[author_id],
            "content": content,
            "timestamp": _iso(self.clock.now()),
            "edited_timestamp": None,
            "tts": bool(body.get("tts")),
            "mention_everyone": False,
            "mentions": [self.users[u] for u in dict.fromkeys(mention_ids) if u in self.users],
            "mention_roles": [],
            "attachments": [],
            "embeds": embeds,
            "pinned": False,
            "type": message_type if message_type is not None else (MSG_REPLY if reference else MSG_DEFAULT),
            "flags": flags,
            "components": body.get("components") or [],
            "_nonce": None if nonce is None else str(nonce),
            "_deleted": False,
            "_created": self.clock.now(),
        }
        if channel.get("guild_id"):
            message["guild_id"] = channel["guild_id"]
            guild = self.guilds[int(channel["guild_id"])]
            if author_id in guild.members:
                message["member"] = self._member_payload(guild.id, author_id, with_user=False)
        if reference:
            message["message_reference"] = {
                "type": 0,
                "message_id": str(reference["message_id"]),
                "channel_id": str(channel_id),
                **({"guild_id": channel["guild_id"]} if channel.get("guild_id") else {}),
            }
            message["referenced_message"] = self._public(referenced) if referenced else None
        if webhook:
            message["webhook_id"] = str(self.application_id)
            message["application_id"] = str(self.application_id)
        if interaction is not None:
            message["interaction_metadata"] = {
                "id": str(interaction.id),
                "type": 2,
                "user": self.users[interaction.user_id],
                "authorizing_integration_owners": interaction.payload.get("authorizing_integration_owners", {}),
            }
        self.messages[channel_id].append(message)
        self._message_index[mid] = message
        channel["last_message_id"] = str(mid)
        if nonce is not None and body.get("enforce_nonce"):
            self._nonces[(author_id, str(nonce))] = message
        if not flags & FLAG_EPHEMERAL:
            await self.dispatch("MESSAGE_CREATE", self._public(message, with_nonce=True))
        return message

    def _public(self, message: dict[str, Any], *, with_nonce: bool = False) -> dict[str, Any]:
        out = {k: v for k, v in message.items() if not k.startswith("_")}
        if with_nonce and message["_nonce"] is not None:
            out["nonce"] = message["_nonce"]
        return out

    def _get_visible(self, channel_id: int, message_id: int) -> dict[str, Any]:
        message = self._message_index.get(message_id)
        if message is None or message["_deleted"] or int(message["channel_id"]) != channel_id:
            raise ApiError(404, 10008, "Unknown Message")
        return message

    async def _list_messages(self, *, params: dict[str, str], query: dict[str, str], **_: Any) -> tuple[int, Any]:
        # https://discord.com/developers/docs/resources/message#get-channel-messages: needs READ_MESSAGE_HISTORY,
        # limit 1-100 (default 50), one of around / before / after, newest first
        cid = self._channel(params)
        self._require(cid, self.bot_id, VIEW_CHANNEL | READ_MESSAGE_HISTORY)
        limit = max(1, min(100, int(query.get("limit", 50))))
        visible = self.channel_messages(cid)  # oldest first
        if "after" in query:
            after = int(query["after"])
            selected = [m for m in visible if int(m["id"]) > after][:limit]
        elif "before" in query:
            before = int(query["before"])
            selected = [m for m in visible if int(m["id"]) < before][-limit:]
        elif "around" in query:
            around = int(query["around"])
            older = [m for m in visible if int(m["id"]) < around][-(limit // 2) :]
            newer = [m for m in visible if int(m["id"]) >= around][: limit - len(older)]
            selected = older + newer
        else:
            selected = visible[-limit:]
        return 200, [self._visible_to_bot(self._public(m), None) for m in reversed(selected)]

    async def _get_message(self, *, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        # resources/message#get-channel-message: needs READ_MESSAGE_HISTORY; 404 10008 for an unknown message
        cid = self._channel(params)
        self._require(cid, self.bot_id, VIEW_CHANNEL | READ_MESSAGE_HISTORY)
        message = self._get_visible(cid, int(params["message_id"]))
        return 200, self._visible_to_bot(self._public(message), None)

    async def _apply_edit(self, message: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        content = body["content"] if "content" in body and body["content"] is not None else message["content"]
        if "content" in body and body["content"] is None:
            content = ""
        embeds = body["embeds"] if "embeds" in body and body["embeds"] is not None else message["embeds"]
        if "embeds" in body and body["embeds"] is None:
            embeds = []
        _check_content(content, embeds, allow_empty=False)
        message["content"] = content
        message["embeds"] = embeds
        message["flags"] &= ~FLAG_LOADING
        message["edited_timestamp"] = _iso(self.clock.now())
        if not message["flags"] & FLAG_EPHEMERAL:
            await self.dispatch("MESSAGE_UPDATE", self._public(message))
        return message

    async def _edit_message(self, *, params: dict[str, str], body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        # https://discord.com/developers/docs/resources/message#edit-message: only the author edits content
        # (403 50005); a deleted or unknown message is 404 10008
        cid = self._channel(params)
        message = self._get_visible(cid, int(params["message_id"]))
        if int(message["author"]["id"]) != self.bot_id or message.get("webhook_id"):
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        return 200, self._public(await self._apply_edit(message, body))

    async def _delete_message(self, *, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        # Delete Message: someone else's message needs MANAGE_MESSAGES
        cid = self._channel(params)
        message = self._get_visible(cid, int(params["message_id"]))
        if int(message["author"]["id"]) != self.bot_id:
            self._require(cid, self.bot_id, MANAGE_MESSAGES)
        message["_deleted"] = True
        self._dispatch_soon(
            "MESSAGE_DELETE",
            {
                "id": message["id"],
                "channel_id": message["channel_id"],
                **({"guild_id": message["guild_id"]} if "guild_id" in message else {}),
            },
        )
        return 204, None

    async def _typing(self, *, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        # https://discord.com/developers/docs/resources/channel#trigger-typing-indicator: 204; needs the right to post
        cid = self._channel(params)
        is_thread = self.channels[cid]["type"] in THREAD_TYPES
        self._require(cid, self.bot_id, VIEW_CHANNEL | (SEND_MESSAGES_IN_THREADS if is_thread else SEND_MESSAGES))
        return 204, None

    async def _start_thread(self, *, params: dict[str, str], body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        # https://discord.com/developers/docs/resources/channel#start-thread-without-message: text channels only
        # (50024), CREATE_PUBLIC_THREADS / CREATE_PRIVATE_THREADS (50013), name 1-100 characters (50035)
        cid = self._channel(params)
        if self.channels[cid]["type"] != GUILD_TEXT:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        kind = int(body.get("type", PRIVATE_THREAD))
        needed = CREATE_PUBLIC_THREADS if kind == PUBLIC_THREAD else CREATE_PRIVATE_THREADS
        self._require(cid, self.bot_id, VIEW_CHANNEL | needed)
        name = str(body.get("name", ""))
        if not 1 <= len(name) <= 100:
            raise ApiError(400, 50035, "Invalid Form Body", {"name": {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH"}]}})
        thread = self._make_thread(
            cid, name, self.bot_id, self.snowflake(), int(body.get("auto_archive_duration", 4320))
        )
        thread["type"] = kind
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        await self._create_message(cid, self.bot_id, {"content": name}, message_type=MSG_THREAD_CREATED)
        return 201, thread

    async def _thread_from_message(self, *, params: dict[str, str], body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        # resources/channel#start-thread-from-message: the thread takes the message's id; 400 160004 when one exists
        cid = self._channel(params)
        self._require(cid, self.bot_id, VIEW_CHANNEL | CREATE_PUBLIC_THREADS)
        mid = int(params["message_id"])
        self._get_visible(cid, mid)
        if mid in self.channels:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        thread = self._make_thread(
            cid, str(body.get("name", "thread")), self.bot_id, mid, int(body.get("auto_archive_duration", 4320))
        )
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return 201, thread

    async def _add_thread_member(self, *, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        self._channel(params)
        return 204, None

    async def _create_dm(self, *, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        # resources/user#create-dm: returns the existing DM channel with the recipient, or a new one
        return 200, self.channels[self.dm_channel(int(body["recipient_id"]))]

    async def _get_member(self, *, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        # resources/guild#get-guild-member: 404 10007 Unknown Member
        guild = self.guilds.get(int(params["guild_id"]))
        uid = int(params["user_id"])
        if guild is None or uid not in guild.members:
            raise ApiError(404, 10007, "Unknown Member")
        return 200, self._member_payload(guild.id, uid)

    # ------------------------------------------------------------------ REST: interactions and webhooks

    async def _callback(
        self, *, params: dict[str, str], body: dict[str, Any], query: dict[str, str], **_: Any
    ) -> tuple[int, Any]:
        # https://discord.com/developers/docs/interactions/receiving-and-responding#responding-to-an-interaction:
        # the first response within 3 seconds (else 404 10062), only once (400 40060); type 5 defers ("thinking",
        # LOADING flag), type 4 answers; `with_response` returns the interaction callback response object
        interaction = self.interactions.get(int(params["interaction_id"]))
        if interaction is None or interaction.token != params["token"]:
            raise ApiError(404, 10062, "Unknown interaction")
        if self.clock.now() - interaction.created > ACK_DEADLINE_S:
            raise ApiError(404, 10062, "Unknown interaction")
        if interaction.responded:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        flags = int(data.get("flags") or 0) & FLAG_EPHEMERAL
        if kind == 5:
            message = await self._create_message(
                interaction.channel_id,
                self.bot_id,
                {},
                webhook=True,
                interaction=interaction,
                flags=flags | FLAG_LOADING,
                message_type=MSG_CHAT_INPUT_COMMAND,
            )
        elif kind == 4:
            message = await self._create_message(
                interaction.channel_id,
                self.bot_id,
                {k: v for k, v in data.items() if k != "flags"},
                webhook=True,
                interaction=interaction,
                flags=flags,
                message_type=MSG_CHAT_INPUT_COMMAND,
            )
        else:
            raise ApiError(400, 50035, f"Invalid Form Body (unsupported callback type {kind})")
        interaction.responded = True
        interaction.original_id = int(message["id"])
        if query.get("with_response") not in ("1", "true", "True"):
            return 204, None
        return 200, {
            "interaction": {
                "id": str(interaction.id),
                "type": 2,
                "response_message_id": message["id"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(flags),
            },
            "resource": {"type": kind, "message": self._public(message)},
        }

    def _token_interaction(self, params: dict[str, str]) -> FakeInteraction:
        # "Interaction tokens are valid for 15 minutes": afterwards followups and @original answer 401 50027;
        # before the first response the webhook does not exist yet (404 10015)
        if int(params["application_id"]) != self.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        for interaction in self.interactions.values():
            if interaction.token == params["token"]:
                if self.clock.now() - interaction.created > TOKEN_LIFETIME_S:
                    raise ApiError(401, 50027, "Invalid Webhook Token")
                if not interaction.responded:
                    raise ApiError(404, 10015, "Unknown Webhook")
                return interaction
        raise ApiError(401, 50027, "Invalid Webhook Token")

    def _webhook_message(self, interaction: FakeInteraction, ref: str) -> dict[str, Any]:
        # followup messages and @original (receiving-and-responding#get-original-interaction-response): only the
        # interaction's own messages; 404 10008 otherwise
        mid = interaction.original_id if ref == "@original" else int(ref)
        message = self._message_index.get(mid or 0)
        if (
            message is None
            or message["_deleted"]
            or message.get("interaction_metadata", {}).get("id") != str(interaction.id)
        ):
            raise ApiError(404, 10008, "Unknown Message")
        return message

    async def _followup(
        self, *, params: dict[str, str], body: dict[str, Any], query: dict[str, str], **_: Any
    ) -> tuple[int, Any]:
        # Create Followup Message: "When used after a deferred response, the first followup will edit the
        # loading message" (receiving-and-responding#create-followup-message)
        interaction = self._token_interaction(params)
        assert interaction.original_id is not None
        original = self._message_index[interaction.original_id]
        if original["flags"] & FLAG_LOADING:  # the first followup after a defer replaces "thinking..."
            message = await self._apply_edit(original, body)
        else:
            flags = int(body.get("flags") or 0) & FLAG_EPHEMERAL
            message = await self._create_message(
                interaction.channel_id,
                self.bot_id,
                {k: v for k, v in body.items() if k != "flags"},
                webhook=True,
                interaction=interaction,
                flags=flags,
            )
        if query.get("wait") in ("1", "true", "True"):
            return 200, self._public(message)
        return 204, None

    async def _webhook_get(self, *, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        interaction = self._token_interaction(params)
        return 200, self._public(self._webhook_message(interaction, params["message_id"]))

    async def _webhook_edit(self, *, params: dict[str, str], body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        interaction = self._token_interaction(params)
        message = self._webhook_message(interaction, params["message_id"])
        return 200, self._public(await self._apply_edit(message, body))

    async def _webhook_delete(self, *, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        interaction = self._token_interaction(params)
        self._webhook_message(interaction, params["message_id"])["_deleted"] = True
        return 204, None


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses JSON only when the content type is exactly "application/json" (no charset)
    return web.Response(
        status=status, body=json.dumps(data).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )


def _check_content(content: str, embeds: list[dict[str, Any]], *, allow_empty: bool) -> None:
    # https://discord.com/developers/docs/resources/message#create-message-jsonform-params: content up to 2,000
    # characters; embed limits (resources/message#embed-object-embed-limits): title 256, description 4,096, 6,000
    # in total; an empty message is 400 50006
    if len(content) > CONTENT_LIMIT:
        raise ApiError(
            400,
            50035,
            "Invalid Form Body",
            {
                "content": {
                    "_errors": [
                        {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {CONTENT_LIMIT} or fewer in length."}
                    ]
                }
            },
        )
    for embed in embeds:
        title = embed.get("title") or ""
        description = embed.get("description") or ""
        footer = (embed.get("footer") or {}).get("text") or ""
        if len(title) > EMBED_TITLE_LIMIT or len(description) > EMBED_DESCRIPTION_LIMIT:
            raise ApiError(400, 50035, "Invalid Form Body", {"embeds": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}})
        if len(title) + len(description) + len(footer) > EMBED_TOTAL_LIMIT:
            raise ApiError(400, 50035, "Invalid Form Body", {"embeds": {"_errors": [{"code": "MAX_EMBED_SIZE"}]}})
    if not allow_empty and not content and not embeds:
        raise ApiError(400, 50006, "Cannot send an empty message")
