"""`SlackAdapter`: the bolt AsyncApp, its listeners, the surface, and the transport (Socket Mode or HTTP).

    adapter = SlackAdapter(bot, SlackSettings.from_env())   # registers its surface with bot.add_surface
    await adapter.start()                                   # auth.test, then connect / listen
    ...
    await adapter.stop()

or `await adapter.run()` to start and serve until cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import constants as c
from adapters.slack.admins import AdminCache
from adapters.slack.keys import Lookup, ThreadRegistry
from adapters.slack.listeners import Deps, register_all
from adapters.slack.retry import RetryPolicy
from adapters.slack.settings import SettingsError, SlackSettings
from adapters.slack.status import StatusBoard
from adapters.slack.surface import SlackSurface
from adapters.slack.usergroups import UserGroups
from bot.types import BotLike

log = logging.getLogger(__name__)

RATE_LIMIT_RETRIES = 3
SERVER_ERROR_RETRIES = 2
SOCKET_PING_INTERVAL_SECONDS = 10.0


def make_client(settings: SlackSettings) -> AsyncWebClient:
    kwargs: dict[str, Any] = {}
    if settings.base_url:
        kwargs["base_url"] = settings.base_url
    return AsyncWebClient(
        token=settings.bot_token,
        retry_handlers=[
            _ConnectionErrorRetry(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            _ServerErrorRetry(max_retry_count=SERVER_ERROR_RETRIES),
        ],
        **kwargs,
    )


def _posts_a_message(request: HttpRequest) -> bool:
    """A reset or a 5xx may come after Slack posted the message (Slack documents internal_error as "It's possible
    some aspect of the operation succeeded before the error was raised"): the surface looks for it before posting
    again (`TurnView._post_parts`), rather than the SDK resending it blindly."""
    return request.url.rsplit("/", 1)[-1] in c.NON_IDEMPOTENT_METHODS


class _ConnectionErrorRetry(AsyncConnectionErrorRetryHandler):
    async def _can_retry_async(
        self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _posts_a_message(request):
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


class _ServerErrorRetry(AsyncServerErrorRetryHandler):
    async def _can_retry_async(
        self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _posts_a_message(request):
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


def _store_lookup(bot: BotLike) -> Lookup:
    """Threads the engine has a conversation for are known to the bot even after a restart; a failed lookup counts
    as unknown."""

    async def lookup(key: str) -> bool:
        try:
            return await bot.has_conversation(key)
        except Exception as e:
            log.warning("conversation lookup failed: %s", type(e).__name__)
            return False

    return lookup


class SlackAdapter:
    def __init__(
        self,
        bot: BotLike,
        settings: SlackSettings,
        *,
        client: AsyncWebClient | None = None,
        threads: ThreadRegistry | None = None,
    ) -> None:
        self.bot = bot
        self.settings = settings
        self.client = client or make_client(settings)
        self.threads = threads if threads is not None else ThreadRegistry(lookup=_store_lookup(bot))
        self.bot_user_id: str | None = None
        http = settings.mode == "http"
        self.verifier = SignatureVerifier(settings.signing_secret) if http and settings.signing_secret else None
        self.app = AsyncApp(
            name="switchboard",
            client=self.client,
            signing_secret=settings.signing_secret if http else None,
            request_verification_enabled=http,
            # the message listener filters bot and own messages itself (one place, observable, tested)
            ignoring_self_events_enabled=False,
            # our listeners read the assistant thread themselves; no context store needed
            attaching_conversation_kwargs_enabled=False,
            # acknowledge an event only once its listener ran, i.e. once Bot.accept stored the message: an ack
            # sent first makes Slack forget an event that a crash then loses (slow work runs in lazy listeners)
            process_before_response=True,
        )
        retry = RetryPolicy(base=settings.retry_base_seconds)
        self.status = StatusBoard(self.client, refresh_seconds=settings.status_refresh_seconds, retry=retry)
        self.surface = SlackSurface(
            self.client,
            self.status,
            streaming=settings.streaming,
            update_interval=settings.update_interval_seconds,
            post_interval=settings.post_interval_seconds,
            bot_user_id=lambda: self.bot_user_id,
            retry=retry,
        )
        self.admins = AdminCache(self.client, settings.admin_cache_seconds)
        self.usergroups = UserGroups(self.client)
        self.deps = Deps(
            bot=bot,
            settings=settings,
            surface=self.surface,
            status=self.status,
            threads=self.threads,
            admins=self.admins,
            usergroups=self.usergroups,
        )
        self.messages = register_all(self.app, self.deps)
        bot.add_surface(self.surface)
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None

    # ---- lifecycle --------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._identify()
        await self.usergroups.refresh()
        if self.settings.mode == "socket":
            app_token = self.settings.app_token
            assert app_token is not None  # SlackSettings.__post_init__ requires it in socket mode
            self._socket = AsyncSocketModeHandler(
                self.app,
                app_token=app_token,
                web_client=self.client,
                ping_interval=SOCKET_PING_INTERVAL_SECONDS,
            )
            # ask for the websocket URL ourselves: the SDK would retry a rejected app token forever
            self._socket.client.wss_uri = await self._open_socket_url(app_token)
            await self._socket.connect_async()
            log.info("Slack adapter connected (Socket Mode) as %s", self.bot_user_id)
        else:
            await self._serve_http()
            log.info(
                "Slack adapter listening on http://%s:%s%s",
                self.settings.http_host,
                self.http_port,
                self.settings.http_path,
            )

    async def connected(self) -> bool:
        """For /healthz: the Socket Mode websocket is up, or the HTTP endpoint is listening."""
        if self._socket is not None:
            return bool(await self._socket.client.is_connected())
        return self._runner is not None

    async def stop(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close_async()
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.usergroups.close()
        await self.surface.close()

    async def run(self) -> None:
        """Start, then serve until cancelled. A failed start is cleaned up too (the Socket Mode client owns an HTTP
        session from its creation, before the app token is checked)."""
        try:
            await self.start()
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> SlackAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- internals --------------------------------------------------------------------------------------------------

    async def _identify(self) -> None:
        try:
            resp = await self.client.auth_test()
        except SlackApiError as e:
            raise SettingsError(
                f"Slack rejected SLACK_BOT_TOKEN (auth.test: {e.response.get('error')}); "
                "reinstall the app and copy its Bot User OAuth Token"
            ) from None
        self.bot_user_id = resp.get("user_id")

    async def _open_socket_url(self, app_token: str) -> str:
        try:
            resp = await self.client.apps_connections_open(app_token=app_token)
        except SlackApiError as e:
            raise SettingsError(
                f"Slack rejected SLACK_APP_TOKEN (apps.connections.open: {e.response.get('error')}); generate an "
                "app-level token with the connections:write scope and make sure Socket Mode is enabled"
            ) from None
        return str(resp["url"])

    async def _serve_http(self) -> None:
        web_app = web.Application()
        web_app.router.add_post(self.settings.http_path, self._handle_http)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port)
        await site.start()
        addresses = self._runner.addresses
        self.http_port = addresses[0][1] if addresses else self.settings.http_port

    async def _handle_http(self, request: web.Request) -> web.Response:
        raw = await request.read()
        refusal = refuse_request(raw, request.headers, self.verifier)
        if refusal is not None:
            status, reason = refusal
            log.warning("refused a request to %s with HTTP %d: %s", self.settings.http_path, status, reason)
            return web.json_response({"error": reason}, status=status)
        bolt_request = AsyncBoltRequest(
            body=raw.decode("utf-8"), query=request.query_string, headers=request.headers  # type: ignore[arg-type]
        )
        bolt_response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)


def refuse_request(
    raw: bytes, headers: Mapping[str, str], verifier: SignatureVerifier | None
) -> tuple[int, str] | None:
    """Check an HTTP request before bolt sees it: 401 unless `verifier` (slack_sdk's, with our signing secret) finds
    it signed less than 5 minutes ago (forged, replayed, tampered, unsigned), 400 when signed but not a well-formed
    Slack payload (bolt would fail with a 500). None: let bolt handle it (it verifies the signature again).

    A body that is not UTF-8 gets 400 before its signature is checked: the verifier signs text, and no request of
    Slack's is anything else."""
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    try:
        sent_at = int(timestamp)
    except ValueError:  # the verifier would raise it
        return 401, "missing or malformed X-Slack-Request-Timestamp"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return 400, "body is not a Slack payload"
    # (the verifier's compare_digest raises on a non-ASCII signature instead of answering False)
    signed = verifier is not None and signature.isascii() and verifier.is_valid(text, timestamp, signature)
    if not signed:
        if abs(time.time() - sent_at) > c.SIGNATURE_MAX_AGE_SECONDS:
            return 401, "request timestamp too old or in the future (replayed?)"
        return 401, "invalid signature"
    try:
        if "application/json" in headers.get("Content-Type", "") or text.lstrip().startswith("{"):
            body = json.loads(text)
        else:
            form = parse_qs(text, keep_blank_values=True)
            if "command" in form or "ssl_check" in form:  # a slash command, Slack's SSL check
                return None
            body = json.loads(form["payload"][0]) if "payload" in form else None  # interactivity
    except ValueError:  # not JSON
        return 400, "body is not a Slack payload"
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        return 400, "body is not a Slack payload"
    if not isinstance(body.get("event", {}), dict):
        return 400, "body is not a Slack payload"
    return None
