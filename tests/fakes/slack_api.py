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
- `rate_limit(method, times, retry_after)`: the next `times` calls answer HTTP 429 with Retry-After.
- Messages kept per channel with their metadata, so conversations.replies / conversations.history
  (include_all_metadata) can find them; `add_user_message` records what a person posted.
- Socket Mode: apps.connections.open returns `ws_url`; `push_envelope` sends an envelope to the connected
  client and `wait_ack(envelope_id)` waits for its acknowledgement.
- Slash-command `response_url`s (`new_response_url()`), recording what is posted to them.
- `sign(body)`: X-Slack-Signature / X-Slack-Request-Timestamp headers for signed HTTP requests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

UPDATE_MAX_CHARS = 4_000
SECTION_TEXT_MAX_CHARS = 3_000
MARKDOWN_TEXT_MAX_CHARS = 12_000
POST_TEXT_MAX_CHARS = 40_000
SUGGESTED_PROMPTS_MAX = 4
LOADING_MESSAGES_MAX = 10
DEFAULT_TIMEOUT = 5.0

Predicate = Callable[[], Any]


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
        self.users: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.messages: dict[str, list[Message]] = {}
        self.response_url_posts: dict[str, list[dict[str, Any]]] = {}
        self.acks: dict[str, dict[str, Any]] = {}
        self.hellos_sent = 0
        self._rate_limits: dict[str, list[int]] = {}
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
        assert server is not None and server.sockets
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
        self._rate_limits[method] = [times, retry_after]

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
        return {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": verifier.generate_signature(timestamp=ts, body=body),
        }

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
            limit = self._rate_limits.get(method)
            if limit and limit[0] > 0:
                limit[0] -= 1
                call.status = 429
                call.response = {"ok": False, "error": "ratelimited"}
                return web.json_response(call.response, status=429, headers={"Retry-After": str(limit[1])})
            handler = _HANDLERS.get(method)
            if handler is None:
                call.response = {"ok": False, "error": "unknown_method"}
            else:
                expected = self.app_token if method == "apps.connections.open" else self.bot_token
                if token != expected:
                    call.response = {"ok": False, "error": "invalid_auth"}
                else:
                    try:
                        call.response = {"ok": True, **handler(self, args)}
                    except SlackApiError as e:
                        call.response = {"ok": False, "error": e.error}
            return web.json_response(call.response)
        finally:
            await self._notify()

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
        for block in args.get("blocks") or []:
            text = (block.get("text") or {}).get("text", "") if isinstance(block, dict) else ""
            if block.get("type") == "section" and len(text) > SECTION_TEXT_MAX_CHARS:
                raise SlackApiError("invalid_blocks")
            if block.get("type") == "markdown" and len(str(block.get("text", ""))) > MARKDOWN_TEXT_MAX_CHARS:
                raise SlackApiError("invalid_blocks")

    def _metadata(self, args: dict[str, Any]) -> dict[str, Any] | None:
        meta = args.get("metadata")
        if meta is None:
            return None
        if not isinstance(meta, dict) or "event_type" not in meta or "event_payload" not in meta:
            raise SlackApiError("invalid_metadata_format")
        return meta

    def _need_channel(self, args: dict[str, Any]) -> str:
        channel = args.get("channel") or args.get("channel_id")
        if not channel:
            raise SlackApiError("channel_not_found")
        return str(channel)

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._need_channel(args)
        text = _text_of(args)
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
        return {"channel": channel, "ts": msg.ts, "message": msg.as_api(True)}

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
        for m in self.messages.get(channel, []):
            if m.ts == ts and not m.deleted:
                return m
        raise SlackApiError("message_not_found")

    def _apply_chunks(self, msg: Message, args: dict[str, Any]) -> None:
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
        return {"channel": channel, "ts": msg.ts}

    def _streaming_message(self, args: dict[str, Any]) -> Message:
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
        if not args.get("channel_id") or not args.get("thread_ts") or "status" not in args:
            raise SlackApiError("invalid_arguments")
        if len(args.get("loading_messages") or []) > LOADING_MESSAGES_MAX:
            raise SlackApiError("invalid_arguments")
        return {}

    def _set_prompts(self, args: dict[str, Any]) -> dict[str, Any]:
        prompts = args.get("prompts") or []
        if not args.get("channel_id") or not prompts or len(prompts) > SUGGESTED_PROMPTS_MAX:
            raise SlackApiError("invalid_arguments")
        return {}

    def _replies(self, args: dict[str, Any]) -> dict[str, Any]:
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
        user = self.users.get(str(args.get("user")))
        if user is None:
            raise SlackApiError("user_not_found")
        return {"user": user}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        self._need_channel(args)
        if not args.get("user"):
            raise SlackApiError("user_not_in_channel")
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
}


def statuses(calls: Iterable[Call]) -> list[str]:
    """The `status` argument of each assistant.threads.setStatus call."""
    return [str(c.args.get("status")) for c in calls if c.method == "assistant.threads.setStatus"]
