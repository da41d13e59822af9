"""A fake Slack Web API + Socket Mode server on loopback, for end-to-end tests with the real slack_sdk clients.

Usage::

    async with FakeSlack() as fake:
        client = AsyncWebClient(token="xoxb-test", base_url=fake.api_url)
        ...
        await fake.wait_for(lambda: fake.calls_to("chat.stopStream"))

What it does:
- Web API methods the Switchboard adapter uses (see `_HANDLERS`), with Slack's limits enforced
  (chat.update msg_too_long above 4,000 characters, section text 3,000, markdown_text 12,000 per stream call,
  recipients required for streams outside DMs, `refuse_streaming_in_channels` to exercise the fallback).
- Every call recorded with a monotonic timestamp (`calls`), and `wait_for(predicate)` to wait on the log.
- Faults, each as Slack really answers (see `fail` and `FAULT_KINDS`): `fail(method, kind, times=1, skip=0,
  channel=None)` makes exactly the calls of one method (optionally in one channel, after `skip` good ones) fail
  `times` times (None: always) with HTTP 429 + Retry-After, HTTP 5xx, a dropped connection (TCP reset), or an
  `ok: false` error; an error the method's documentation does not list is refused, so a test cannot invent one.
  `rate_limit(method, times, retry_after)` is the 429 shorthand.
- The thinking indicator as Slack keeps it (`status_of(channel, thread_ts)`): set by assistant.threads.setStatus,
  removed by status "" or by a message the bot posts in the thread.
- chat.postMessage to a user id posts into the app's DM with that user (`dm_channel(user)`); `dm_refused` holds
  users whose DM refuses it (`messages_tab_disabled`).
- Messages kept per channel with their metadata, so conversations.replies / conversations.history
  (include_all_metadata) can find them; `add_user_message` records what a person posted.
- Socket Mode: apps.connections.open returns `ws_url`; `push_envelope` sends an envelope to the connected
  client and `wait_ack(envelope_id)` waits for its acknowledgement.
- Slash-command `response_url`s (`new_response_url()`), recording what is posted to them.
- `sign(body)`: X-Slack-Signature / X-Slack-Request-Timestamp headers for signed HTTP requests.

Longer than our usual module on purpose (test-only): it is one fake service, each method citing the Slack doc it
follows.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

# Limits, each with where Slack states it (method pages under https://docs.slack.dev/reference/):
#: chat.update answers msg_too_long near 4,000 characters (measured; shared/PLATFORM_FACTS.md "Limits")
UPDATE_MAX_CHARS = 4_000
#: block-kit/blocks/section-block: "text ... Maximum length for the text in this field is 3000 characters"
SECTION_TEXT_MAX_CHARS = 3_000
#: chat.postMessage `markdown_text` and the streaming chunks: "limited to 12,000 characters"
MARKDOWN_TEXT_MAX_CHARS = 12_000
#: chat.postMessage "Truncating content": text over 40,000 characters is refused (msg_too_long)
POST_TEXT_MAX_CHARS = 40_000
#: assistant.threads.setSuggestedPrompts: up to 4 prompts
SUGGESTED_PROMPTS_MAX = 4
#: assistant.threads.setStatus `loading_messages`: "Maximum of 10 messages"
LOADING_MESSAGES_MAX = 10
DEFAULT_TIMEOUT = 5.0

Predicate = Callable[[], Any]

# ---- errors Slack documents, by method (a fault may only use these) -------------------------------------------
#: Errors any Web API method can return: "Common errors" on every method page, e.g.
#: https://docs.slack.dev/reference/methods/chat.postMessage#errors ("internal_error ... likely due to a transient
#: issue on our end", "fatal_error", "service_unavailable", "request_timeout", "ratelimited").
COMMON_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited", "invalid_auth"}
)
#: Method-specific errors, from each method's reference page under https://docs.slack.dev/reference/methods/.
DOCUMENTED_ERRORS: dict[str, frozenset[str]] = {
    # chat.postMessage#errors
    "chat.postMessage": frozenset(
        {"channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text", "restricted_action",
         "messages_tab_disabled", "invalid_metadata_format", "invalid_blocks", "cannot_reply_to_message"}
    ),
    # chat.update#errors
    "chat.update": frozenset(
        {"channel_not_found", "message_not_found", "cant_update_message", "edit_window_closed", "msg_too_long",
         "is_archived", "invalid_blocks"}
    ),
    # chat.delete#errors
    "chat.delete": frozenset({"channel_not_found", "message_not_found", "cant_delete_message"}),
    # chat.startStream / chat.appendStream / chat.stopStream#errors. (unverified: modelled on chat.postMessage's
    # channel errors, since they post a message, plus the streaming-state errors the SDK's chat_stream handles)
    "chat.startStream": frozenset(
        {"channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "invalid_arguments",
         "missing_recipient", "streaming_not_supported_in_channel", "restricted_action"}
    ),
    "chat.appendStream": frozenset(
        {"channel_not_found", "not_in_channel", "msg_too_long", "message_not_found",
         "message_not_in_streaming_state", "invalid_chunks"}
    ),
    "chat.stopStream": frozenset(
        {"channel_not_found", "not_in_channel", "msg_too_long", "message_not_found",
         "message_not_in_streaming_state", "invalid_chunks", "invalid_metadata_format"}
    ),
    # assistant.threads.setStatus#errors
    "assistant.threads.setStatus": frozenset({"channel_not_found", "invalid_thread_ts", "invalid_arguments"}),
    "assistant.threads.setSuggestedPrompts": frozenset({"channel_not_found", "invalid_thread_ts"}),
    # chat.postEphemeral#errors
    "chat.postEphemeral": frozenset({"channel_not_found", "not_in_channel", "user_not_in_channel", "is_archived"}),
    # conversations.replies#errors
    "conversations.replies": frozenset({"channel_not_found", "thread_not_found", "not_in_channel"}),
}


@dataclass(frozen=True)
class FaultKind:
    """One way a Web API call fails, as Slack (or the network in front of it) produces it."""

    status: int = 200  # HTTP status; 200 with `error` set is Slack's usual `{"ok": false, "error": ...}`
    error: str | None = None  # the `error` field (None for a body that is not Slack's: an edge proxy's page)
    retry_after: int | None = None  # seconds, in the Retry-After header (429 only)
    reset: bool = False  # the connection is reset (TCP RST) before any response
    #: the call took effect at Slack before the answer was lost (the reset or the error page came after): Slack's
    #: internal_error is documented as "It's possible some aspect of the operation succeeded before the error was
    #: raised", and a proxy in front of Slack may time out on a call Slack went on to process
    took_effect: bool = False


#: Named fault kinds the tests use. Sources: https://docs.slack.dev/apis/web-api/rate-limits ("HTTP 429 Too Many
#: Requests ... Retry-After header ... number of seconds"); the common errors above; a 502 is what a proxy in
#: front of Slack answers during an outage (an HTML page: no Slack error at all).
FAULT_KINDS: dict[str, FaultKind] = {
    "ratelimited": FaultKind(status=429, error="ratelimited", retry_after=1),
    "internal_error": FaultKind(status=500, error="internal_error"),
    "bad_gateway": FaultKind(status=502),
    "reset": FaultKind(reset=True),
    "not_in_channel": FaultKind(error="not_in_channel"),
    "channel_not_found": FaultKind(error="channel_not_found"),
    "msg_too_long": FaultKind(error="msg_too_long"),
    "internal_error_after_effect": FaultKind(status=500, error="internal_error", took_effect=True),
    "bad_gateway_after_effect": FaultKind(status=502, took_effect=True),
    "reset_after_effect": FaultKind(reset=True, took_effect=True),
}


@dataclass
class Fault:
    method: str
    kind: FaultKind
    times: int | None  # None: every matching call
    skip: int = 0  # let this many matching calls through first
    channel: str | None = None

    def matches(self, method: str, channel: str | None) -> bool:
        return method == self.method and (self.channel is None or channel == self.channel)


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    t: float
    token: str | None
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    user: str
    thread_ts: str | None = None
    bot_id: str | None = None
    metadata: dict[str, Any] | None = None
    blocks: list[dict[str, Any]] | None = None
    streaming: bool = False
    #: task_update chunks in arrival order: (task id, status)
    tasks: list[tuple[str, str]] = field(default_factory=list)
    deleted: bool = False
    updates: int = 0

    def as_api(self, with_metadata: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text, "user": self.user}
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.bot_id:
            out["bot_id"] = self.bot_id
        if with_metadata and self.metadata:
            out["metadata"] = self.metadata
        return out


class SlackApiError(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _text_of(args: dict[str, Any]) -> str:
    if args.get("markdown_text") is not None:
        return str(args["markdown_text"])
    return str(args.get("text") or "")


def _decode(value: Any) -> Any:
    """Form-encoded arguments arrive as strings; JSON-ish ones are decoded."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class FakeSlack:
    def __init__(
        self,
        *,
        team_id: str = "T0TEAM",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        signing_secret: str = "fake-signing-secret",
        app_token: str = "xapp-1-fake",
        bot_token: str = "xoxb-fake",
    ) -> None:
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.signing_secret = signing_secret
        self.app_token = app_token
        self.bot_token = bot_token
        self.refuse_streaming_in_channels = False
        #: the app's manifest has `agent_view` (not the legacy `assistant_view`): see `_set_prompts`
        self.agent_view = True
        #: suggested prompts as users see them, per DM channel (agent apps) or (channel, thread_ts) (legacy)
        self.suggested_prompts: dict[str | tuple[str, str], list[dict[str, str]]] = {}
        #: users whose DM with the app refuses posts (the app's Messages tab is turned off)
        self.dm_refused: set[str] = set()
        #: channels the bot is not a member of (a slash command works there; chat.postEphemeral does not)
        self.bot_absent: set[str] = set()
        #: the thinking indicator per (channel, thread_ts), as Slack shows it ("" when none)
        self.statuses: dict[tuple[str, str], str] = {}
        self.faults: list[Fault] = []
        self.users: dict[str, dict[str, Any]] = {}
        #: user groups by id (`add_usergroup`); None: a free-plan workspace, which has none (usergroups.list fails)
        self.usergroups: dict[str, dict[str, Any]] | None = {}
        self.calls: list[Call] = []
        self.messages: dict[str, list[Message]] = {}
        self.response_url_posts: dict[str, list[dict[str, Any]]] = {}
        self.acks: dict[str, dict[str, Any]] = {}
        self.hellos_sent = 0
        self._ts = itertools.count(1)
        self._changed = asyncio.Condition()
        self._sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket"

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        app.router.add_post("/response/{token}", self._response_url)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server) and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- test helpers --------------------------------------------------------------------------------------------

    def add_usergroup(self, group_id: str, handle: str, users: Iterable[str], *, disabled: bool = False) -> None:
        assert self.usergroups is not None, "a free-plan workspace has no user groups"
        self.usergroups[group_id] = {
            "id": group_id,
            "team_id": self.team_id,
            "handle": handle,
            "name": handle,
            "date_delete": 1_700_000_000 if disabled else 0,
            "users": list(users),
        }

    def add_user(self, user_id: str, *, is_admin: bool = False, is_owner: bool = False, name: str = "") -> None:
        self.users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name or user_id.lower(),
            "is_admin": is_admin,
            "is_owner": is_owner,
            "is_primary_owner": False,
            "is_bot": False,
        }

    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 0) -> None:
        self.fail(method, FaultKind(status=429, error="ratelimited", retry_after=retry_after), times=times)

    def fail(
        self,
        method: str,
        kind: FaultKind | str,
        *,
        times: int | None = 1,
        skip: int = 0,
        channel: str | None = None,
    ) -> Fault:
        """Make calls of `method` (in `channel`, when given) fail `times` times (None: always) after `skip` good
        ones. `kind` is a `FaultKind` or a name in FAULT_KINDS; its error must be one Slack documents."""
        fault_kind = FAULT_KINDS[kind] if isinstance(kind, str) else kind
        if fault_kind.error is not None and fault_kind.error not in COMMON_ERRORS | DOCUMENTED_ERRORS.get(
            method, frozenset()
        ):
            raise ValueError(f"{method} does not document the error {fault_kind.error!r}")
        fault = Fault(method, fault_kind, times, skip, channel)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Forget every injected fault (Slack is healthy again)."""
        self.faults.clear()

    def dm_channel(self, user: str) -> str:
        """The id of the app's DM with `user` (what chat.postMessage to a user id posts into)."""
        return "D" + user.removeprefix("U").removeprefix("W")

    def status_of(self, channel: str, thread_ts: str) -> str:
        return self.statuses.get((channel, thread_ts), "")

    def next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def add_user_message(self, channel: str, user: str, text: str, thread_ts: str | None = None) -> Message:
        """Record a message a person posted (so conversations.replies sees it); returns it with its ts."""
        msg = Message(channel=channel, ts=self.next_ts(), text=text, user=user, thread_ts=thread_ts)
        self.messages.setdefault(channel, []).append(msg)
        return msg

    def calls_to(self, *methods: str) -> list[Call]:
        return [c for c in self.calls if c.method in methods]

    def ok_calls_to(self, *methods: str) -> list[Call]:
        return [c for c in self.calls_to(*methods) if c.ok]

    def bot_messages(
        self, channel: str, thread_ts: str | None = None, *, include_deleted: bool = False
    ) -> list[Message]:
        return [
            m
            for m in self.messages.get(channel, [])
            if m.user == self.bot_user_id
            and (include_deleted or not m.deleted)
            and (thread_ts is None or m.thread_ts == thread_ts)
        ]

    def message(self, channel: str, ts: str) -> Message:
        for m in self.messages.get(channel, []):
            if m.ts == ts:
                return m
        raise KeyError(ts)

    async def wait_for(self, predicate: Predicate, within: float = DEFAULT_TIMEOUT) -> Any:
        """Wait until predicate() is truthy (re-checked after every recorded call); returns its value."""

        async def _wait() -> Any:
            async with self._changed:
                while True:
                    value = predicate()
                    if value:
                        return value
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(_wait(), within)
        except TimeoutError:
            raise AssertionError(f"condition not met within {within}s; calls: {self.summary()}") from None

    def summary(self) -> list[str]:
        return [f"{c.method}:{c.status}:{c.response.get('error', '')}" for c in self.calls]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ---- signing -------------------------------------------------------------------------------------------------

    def sign(self, body: str, *, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        verifier = SignatureVerifier(secret or self.signing_secret)
        signature = verifier.generate_signature(timestamp=ts, body=body)
        assert signature is not None  # None only without a timestamp
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}

    # ---- payload builders ---------------------------------------------------------------------------------------

    def event_body(self, event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        return {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "api_app_id": "A0APP",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {"team_id": self.team_id, "user_id": self.bot_user_id, "is_bot": True, "is_enterprise_install": False}
            ],
            "is_ext_shared_channel": False,
        }

    def command_body(self, *, user: str, channel: str, text: str, command: str = "/switchboard") -> dict[str, str]:
        return {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": "general" if not channel.startswith("D") else "directmessage",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A0APP",
            "response_url": self.new_response_url(),
            "trigger_id": f"trigger-{uuid.uuid4().hex[:8]}",
        }

    def new_response_url(self) -> str:
        token = uuid.uuid4().hex
        self.response_url_posts[token] = []
        return f"{self.url}/response/{token}"

    def posts_to_response_url(self, url: str) -> list[dict[str, Any]]:
        return self.response_url_posts.get(url.rsplit("/", 1)[-1], [])

    # ---- Socket Mode --------------------------------------------------------------------------------------------

    async def wait_connected(self, within: float = DEFAULT_TIMEOUT) -> None:
        await self.wait_for(lambda: any(not ws.closed for ws in self._sockets), within)

    async def push_envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        envelope_id: str | None = None,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
    ) -> str:
        """Send an envelope ("events_api", "slash_commands", "interactive") to the connected client."""
        await self.wait_connected()
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id or str(uuid.uuid4()),
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
        }
        if kind == "events_api":
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = retry_reason or ""
        ws = next(ws for ws in reversed(self._sockets) if not ws.closed)
        await ws.send_str(json.dumps(envelope))
        return str(envelope["envelope_id"])

    async def wait_ack(self, envelope_id: str, within: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        return await self.wait_for(lambda: self.acks.get(envelope_id), within)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0APP"}}))
        self.hellos_sent += 1
        await self._notify()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                if "envelope_id" in data:
                    self.acks[data["envelope_id"]] = {"t": time.monotonic(), **data}
                    await self._notify()
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        await self._notify()
        return ws

    async def _response_url(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if token not in self.response_url_posts:
            return web.Response(status=404, text="no_such_response_url")
        self.response_url_posts[token].append(await request.json())
        await self._notify()
        return web.Response(text="ok")

    # ---- Web API ----------------------------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = {k: _decode(v) for k, v in request.query.items()}
        raw = await request.text()
        if raw:
            if request.content_type == "application/json":
                args.update(json.loads(raw))
            else:
                args.update({k: _decode(v) for k, v in parse_qsl(raw, keep_blank_values=True)})
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth else args.pop("token", None)
        call = Call(method=method, args=args, t=time.monotonic(), token=token)
        self.calls.append(call)
        try:
            fault = self._take_fault(method, args)
            if fault is not None and not fault.took_effect:
                return self._faulty_response(request, call, fault)
            handler = _HANDLERS.get(method)
            if handler is None:  # https://docs.slack.dev/apis/web-api/#errors: unknown_method
                call.response = {"ok": False, "error": "unknown_method"}
            else:  # every method: invalid_auth for a token that is not the app's (app-level token for connections)
                expected = self.app_token if method == "apps.connections.open" else self.bot_token
                if token != expected:
                    call.response = {"ok": False, "error": "invalid_auth"}
                else:
                    try:
                        call.response = {"ok": True, **handler(self, args)}
                    except SlackApiError as e:
                        call.response = {"ok": False, "error": e.error}
            if fault is not None:  # it took effect; the answer is lost on the way back
                return self._faulty_response(request, call, fault)
            return web.json_response(call.response)
        finally:
            await self._notify()

    def _take_fault(self, method: str, args: dict[str, Any]) -> FaultKind | None:
        channel = args.get("channel") or args.get("channel_id")
        for fault in self.faults:
            if fault.times == 0 or not fault.matches(method, None if channel is None else str(channel)):
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            if fault.times is not None:
                fault.times -= 1
            return fault.kind
        return None

    def _faulty_response(self, request: web.Request, call: Call, kind: FaultKind) -> web.Response:
        if kind.reset:
            # A TCP reset (SO_LINGER 0, then close): the client sees ECONNRESET, as when a connection dies on the way
            call.status, call.response = 0, {"ok": False, "error": "connection_reset"}
            transport = request.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        call.status = kind.status
        if kind.error is None:
            call.response = {"ok": False}
            return web.Response(status=kind.status, text=f"<html><body>{kind.status}</body></html>",
                                content_type="text/html")
        call.response = {"ok": False, "error": kind.error}
        headers = {"Retry-After": str(kind.retry_after)} if kind.retry_after is not None else None
        return web.json_response(call.response, status=kind.status, headers=headers)

    # each handler returns the response fields besides ok, or raises SlackApiError

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake.slack.test/",
            "team": "Fake",
            "user": "switchboard",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.ws_url}

    def _check_blocks(self, args: dict[str, Any]) -> None:
        # chat.postMessage#errors invalid_blocks: a section's text over 3,000, a markdown block over 12,000
        for block in args.get("blocks") or []:
            text = (block.get("text") or {}).get("text", "") if isinstance(block, dict) else ""
            if block.get("type") == "section" and len(text) > SECTION_TEXT_MAX_CHARS:
                raise SlackApiError("invalid_blocks")
            if block.get("type") == "markdown" and len(str(block.get("text", ""))) > MARKDOWN_TEXT_MAX_CHARS:
                raise SlackApiError("invalid_blocks")

    def _metadata(self, args: dict[str, Any]) -> dict[str, Any] | None:
        # chat.postMessage `metadata`: "JSON object with event_type and event_payload fields"; else
        # invalid_metadata_format (https://docs.slack.dev/messaging/message-metadata)
        meta = args.get("metadata")
        if meta is None:
            return None
        if not isinstance(meta, dict) or "event_type" not in meta or "event_payload" not in meta:
            raise SlackApiError("invalid_metadata_format")
        return meta

    def _need_channel(self, args: dict[str, Any]) -> str:
        # every chat.* method: channel_not_found when `channel` is missing or unknown
        channel = args.get("channel") or args.get("channel_id")
        if not channel:
            raise SlackApiError("channel_not_found")
        return str(channel)

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._need_channel(args)
        if channel[:1] in ("U", "W"):
            # chat.postMessage "channel": a user id posts into the app's DM with that user (its Messages tab);
            # https://docs.slack.dev/reference/methods/chat.postMessage#channels -- refused when that tab is off
            if channel in self.dm_refused:
                raise SlackApiError("messages_tab_disabled")
            channel = self.dm_channel(channel)
        text = _text_of(args)
        # chat.postMessage#errors: msg_too_long (limits above), no_text ("No message text provided")
        if args.get("markdown_text") is not None and len(text) > MARKDOWN_TEXT_MAX_CHARS:
            raise SlackApiError("msg_too_long")
        if len(text) > POST_TEXT_MAX_CHARS:
            raise SlackApiError("msg_too_long")
        if not text and not args.get("blocks"):
            raise SlackApiError("no_text")
        self._check_blocks(args)
        msg = Message(
            channel=channel,
            ts=self.next_ts(),
            text=text,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            thread_ts=args.get("thread_ts") or None,
            metadata=self._metadata(args),
            blocks=args.get("blocks"),
        )
        self.messages.setdefault(channel, []).append(msg)
        self._bot_posted(channel, msg.thread_ts)
        return {"channel": channel, "ts": msg.ts, "message": msg.as_api(True)}

    def _bot_posted(self, channel: str, thread_ts: str | None) -> None:
        # assistant.threads.setStatus: "A two minute timeout applies, which will cause the status to be removed if
        # no message has been sent": a message of the app in the thread removes it
        # (https://docs.slack.dev/reference/methods/assistant.threads.setStatus#arguments)
        if thread_ts is not None:
            self.statuses.pop((channel, thread_ts), None)

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._need_channel(args)
        msg = self._find(channel, str(args.get("ts")))
        text = _text_of(args)
        if len(text) > UPDATE_MAX_CHARS:
            raise SlackApiError("msg_too_long")
        self._check_blocks(args)
        msg.text = text
        msg.updates += 1
        meta = self._metadata(args)
        if meta is not None:
            msg.metadata = meta
        return {"channel": channel, "ts": msg.ts, "text": text}

    def _delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._need_channel(args)
        msg = self._find(channel, str(args.get("ts")))
        msg.deleted = True
        return {"channel": channel, "ts": msg.ts}

    def _find(self, channel: str, ts: str) -> Message:
        # chat.update / chat.delete#errors: message_not_found ("No message exists with the requested timestamp")
        for m in self.messages.get(channel, []):
            if m.ts == ts and not m.deleted:
                return m
        raise SlackApiError("message_not_found")

    def _apply_chunks(self, msg: Message, args: dict[str, Any]) -> None:
        # streaming chunks (https://docs.slack.dev/reference/methods/chat.appendStream#arguments): markdown_text
        # up to 12,000 characters per call; task_update status pending | in_progress | complete | error;
        # plan_update and blocks chunks; anything else is invalid_chunks
        md = args.get("markdown_text")
        if md is not None:
            if len(str(md)) > MARKDOWN_TEXT_MAX_CHARS:
                raise SlackApiError("msg_too_long")
            msg.text += str(md)
        for chunk in args.get("chunks") or []:
            kind = chunk.get("type")
            if kind == "markdown_text":
                if len(chunk.get("text", "")) > MARKDOWN_TEXT_MAX_CHARS:
                    raise SlackApiError("msg_too_long")
                msg.text += chunk.get("text", "")
            elif kind == "task_update":
                if chunk.get("status") not in ("pending", "in_progress", "complete", "error"):
                    raise SlackApiError("invalid_chunks")
                msg.tasks.append((str(chunk.get("id")), str(chunk.get("status"))))
            elif kind not in ("plan_update", "blocks"):
                raise SlackApiError("invalid_chunks")

    def _start_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        # chat.startStream: thread_ts required; outside DMs recipient_team_id and recipient_user_id are required
        # (https://docs.slack.dev/reference/methods/chat.startStream#arguments); some workspaces refuse streams in
        # channels (reported, unverified: shared/PLATFORM_FACTS.md), hence `refuse_streaming_in_channels`
        channel = self._need_channel(args)
        if not args.get("thread_ts"):
            raise SlackApiError("invalid_arguments")
        if not channel.startswith("D"):
            if self.refuse_streaming_in_channels:
                raise SlackApiError("streaming_not_supported_in_channel")
            if not args.get("recipient_team_id") or not args.get("recipient_user_id"):
                raise SlackApiError("missing_recipient")
        msg = Message(
            channel=channel,
            ts=self.next_ts(),
            text="",
            user=self.bot_user_id,
            bot_id=self.bot_id,
            thread_ts=str(args["thread_ts"]),
            streaming=True,
        )
        self._apply_chunks(msg, args)
        self.messages.setdefault(channel, []).append(msg)
        self._bot_posted(channel, msg.thread_ts)
        return {"channel": channel, "ts": msg.ts}

    def _streaming_message(self, args: dict[str, Any]) -> Message:
        # chat.appendStream / chat.stopStream: only a message still streaming takes chunks
        msg = self._find(self._need_channel(args), str(args.get("ts")))
        if not msg.streaming:
            raise SlackApiError("message_not_in_streaming_state")
        return msg

    def _append_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._streaming_message(args)
        self._apply_chunks(msg, args)
        msg.updates += 1
        return {"channel": msg.channel, "ts": msg.ts}

    def _stop_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._streaming_message(args)
        self._apply_chunks(msg, args)
        meta = self._metadata(args)
        if meta is not None:
            msg.metadata = meta
        msg.streaming = False
        return {"channel": msg.channel, "ts": msg.ts, "message": msg.as_api(True)}

    def _set_status(self, args: dict[str, Any]) -> dict[str, Any]:
        # https://docs.slack.dev/reference/methods/assistant.threads.setStatus: channel_id, thread_ts and status
        # required; "loading_messages ... Maximum of 10 messages"; status "" clears the indicator
        if not args.get("channel_id") or not args.get("thread_ts") or "status" not in args:
            raise SlackApiError("invalid_arguments")
        if len(args.get("loading_messages") or []) > LOADING_MESSAGES_MAX:
            raise SlackApiError("invalid_arguments")
        key = (str(args["channel_id"]), str(args["thread_ts"]))
        if args.get("status"):
            self.statuses[key] = str(args["status"])
        else:
            self.statuses.pop(key, None)
        return {}

    def _set_prompts(self, args: dict[str, Any]) -> dict[str, Any]:
        # https://docs.slack.dev/reference/methods/assistant.threads.setSuggestedPrompts: channel_id and 1-4
        # prompts, each with a title and a message. "The thread_ts parameter should only be used in the legacy
        # assistant messaging experience. Including it in a call for an agent app will cause the call to silently
        # fail": ok, and nothing shown.
        prompts = args.get("prompts") or []
        if not args.get("channel_id") or not prompts or len(prompts) > SUGGESTED_PROMPTS_MAX:
            raise SlackApiError("invalid_arguments")
        if not all(isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts):
            raise SlackApiError("invalid_arguments")
        channel, thread = str(args["channel_id"]), args.get("thread_ts")
        if self.agent_view and thread:
            return {}
        key: str | tuple[str, str] = (channel, str(thread)) if thread else channel
        self.suggested_prompts[key] = [dict(p) for p in prompts]
        return {}

    def _replies(self, args: dict[str, Any]) -> dict[str, Any]:
        # https://docs.slack.dev/reference/methods/conversations.replies: thread_not_found for an unknown thread;
        # metadata only with include_all_metadata; cursor pagination through response_metadata.next_cursor
        channel = self._need_channel(args)
        thread = str(args.get("ts") or "")
        with_meta = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        found = [
            m for m in self.messages.get(channel, []) if not m.deleted and (m.ts == thread or m.thread_ts == thread)
        ]
        if not found:
            raise SlackApiError("thread_not_found")
        limit = int(args.get("limit") or 1000)
        start = int(args.get("cursor") or 0)
        page = found[start : start + limit]
        more = start + limit < len(found)
        return {
            "messages": [m.as_api(with_meta) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _history(self, args: dict[str, Any]) -> dict[str, Any]:
        # https://docs.slack.dev/reference/methods/conversations.history: newest first, top-level messages only
        channel = self._need_channel(args)
        oldest = str(args.get("oldest") or "0")
        with_meta = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        found = [
            m
            for m in reversed(self.messages.get(channel, []))
            if not m.deleted and m.thread_ts is None and m.ts >= oldest
        ]
        limit = int(args.get("limit") or 100)
        start = int(args.get("cursor") or 0)
        more = start + limit < len(found)
        return {
            "messages": [m.as_api(with_meta) for m in found[start : start + limit]],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        # https://docs.slack.dev/reference/methods/users.info#errors: user_not_found
        user = self.users.get(str(args.get("user")))
        if user is None:
            raise SlackApiError("user_not_found")
        return {"user": user}

    def _usergroups_list(self, args: dict[str, Any]) -> dict[str, Any]:
        # https://docs.slack.dev/reference/methods/usergroups.list: disabled groups only with include_disabled,
        # members only with include_users; errors: plan_upgrade_required (no user groups on the free plan)
        if self.usergroups is None:
            raise SlackApiError("plan_upgrade_required")
        truthy = ("1", "true", "True", True)
        groups = []
        for group in self.usergroups.values():
            if group["date_delete"] and args.get("include_disabled") not in truthy:
                continue
            shown = dict(group)
            if args.get("include_users") not in truthy:
                del shown["users"]
            groups.append(shown)
        return {"usergroups": groups}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        # https://docs.slack.dev/reference/methods/chat.postEphemeral#errors: user_not_in_channel; not_in_channel
        # when the app's bot is not in the channel (slash commands, unlike bot posts, work in any channel)
        channel = self._need_channel(args)
        if not args.get("user"):
            raise SlackApiError("user_not_in_channel")
        if channel in self.bot_absent:
            raise SlackApiError("not_in_channel")
        return {"message_ts": self.next_ts()}


_HANDLERS: dict[str, Callable[[FakeSlack, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": FakeSlack._auth_test,
    "apps.connections.open": FakeSlack._connections_open,
    "chat.postMessage": FakeSlack._post_message,
    "chat.update": FakeSlack._update,
    "chat.delete": FakeSlack._delete,
    "chat.startStream": FakeSlack._start_stream,
    "chat.appendStream": FakeSlack._append_stream,
    "chat.stopStream": FakeSlack._stop_stream,
    "chat.postEphemeral": FakeSlack._post_ephemeral,
    "assistant.threads.setStatus": FakeSlack._set_status,
    "assistant.threads.setSuggestedPrompts": FakeSlack._set_prompts,
    "conversations.replies": FakeSlack._replies,
    "conversations.history": FakeSlack._history,
    "users.info": FakeSlack._users_info,
    "usergroups.list": FakeSlack._usergroups_list,
}


def statuses(calls: Iterable[Call]) -> list[str]:
    """The `status` argument of each assistant.threads.setStatus call."""
    return [str(c.args.get("status")) for c in calls if c.method == "assistant.threads.setStatus"]
