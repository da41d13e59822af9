"""The optional ops HTTP port: `/healthz` (database writable, platforms connected) and `/metrics` (Prometheus).

Bind it to 127.0.0.1 (the default) or a private interface: it exposes no secrets, but it is not meant for the
public internet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.engine import Bot

log = logging.getLogger("switchboard.ops")

HealthCheck = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT_SECONDS = 2.0


class OpsServer:
    def __init__(self, bot: Bot, host: str = "127.0.0.1", port: int = 0) -> None:
        self.bot = bot
        self.host = host
        self.port = port
        self.checks: dict[str, HealthCheck] = {"database": bot.store.writable}
        self._runner: web.AppRunner | None = None

    def add_check(self, name: str, check: HealthCheck) -> None:
        self.checks[name] = check

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("ops endpoint on http://%s:%s (/healthz, /metrics)", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def healthz(self, request: web.Request) -> web.Response:
        results = await asyncio.gather(*(self._run(check) for check in self.checks.values()))
        checks = dict(zip(self.checks, results, strict=True))
        healthy = all(checks.values())
        return web.json_response({"status": "ok" if healthy else "unhealthy", "checks": checks},
                                 status=200 if healthy else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        self.bot.metrics.queue_depth.set(self.bot.mailbox.depth)
        body = generate_latest(self.bot.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @staticmethod
    async def _run(check: HealthCheck) -> bool:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                return bool(await check())
        except Exception as exc:
            log.warning("health check failed: %s", type(exc).__name__)
            return False
