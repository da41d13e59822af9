"""Assistants v2 surface (placeholder until the full implementation lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.emulator.errors import not_found

if TYPE_CHECKING:
    from bot.emulator.server import Emulator


class AssistantsAPI:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.assistants: dict[str, Any] = {}
        self.threads: dict[str, Any] = {}
        self.runs: dict[str, Any] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        return None

    def clear(self) -> None:
        self.assistants.clear()
        self.threads.clear()
        self.runs.clear()

    def close_streams(self) -> None:
        return None

    def provider_cancel(self, run_id: str) -> None:
        raise not_found(f"No run found with id '{run_id}'.")

    def expire_now(self, run_id: str) -> None:
        raise not_found(f"No run found with id '{run_id}'.")

    def delete_thread_now(self, thread_id: str) -> None:
        raise not_found(f"No thread found with id '{thread_id}'.")
