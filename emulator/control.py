"""The HTTP control endpoint under ``/_emulator/``: faults, clock, log, counters, scripts, reset.

GET    /_emulator/health                 {"ok": true, "base_url": ...}
GET    /_emulator/faults                 armed faults, random mode, what was injected
POST   /_emulator/faults                 arm one: {"kind": "http_error", "status": 429, "path": "/v1/responses"}
                                         or apply now: {"kind": "cancel", "target_id": "resp_..."}
DELETE /_emulator/faults                 disarm all;  DELETE /_emulator/faults/{id}: disarm one
POST   /_emulator/faults/random          {"rate": 0.2, "seed": 7, "kinds": ["http_429", "server_error"]}
GET    /_emulator/clock                  {"now": ..., "manual": bool}
POST   /_emulator/clock/advance          {"seconds": 5} (manual clock only)
GET    /_emulator/log?since=N            request log entries from index N
GET    /_emulator/counters               requests per path template, statuses, responses/runs by status
GET    /_emulator/objects                every response and run with its status and lifetime
GET    /_emulator/report?since=N         responses/runs still live; requests since log index N refused with a
                                         400 that no injected fault caused (requests the real API rejects too)
PUT    /_emulator/scripts/{agent}        a script in its YAML/JSON form ({"rules": [...]})
DELETE /_emulator/scripts/{agent}        back to the default script
POST   /_emulator/reset                  forget objects, faults, log and counters
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from emulator.errors import invalid_request, not_found
from emulator.httputil import json_response, read_json
from emulator.scripts import script_from_dict

if TYPE_CHECKING:
    from emulator.server import Emulator


class ControlAPI:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    def add_routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        router.add_get(f"{prefix}/health", self.health)
        router.add_get(f"{prefix}/faults", self.list_faults)
        router.add_post(f"{prefix}/faults", self.add_fault)
        router.add_delete(f"{prefix}/faults", self.clear_faults)
        router.add_delete(f"{prefix}/faults/{{fault_id}}", self.remove_fault)
        router.add_post(f"{prefix}/faults/random", self.random_faults)
        router.add_get(f"{prefix}/clock", self.clock)
        router.add_post(f"{prefix}/clock/advance", self.advance)
        router.add_get(f"{prefix}/log", self.log)
        router.add_get(f"{prefix}/counters", self.counters)
        router.add_get(f"{prefix}/objects", self.objects)
        router.add_get(f"{prefix}/report", self.report)
        router.add_put(f"{prefix}/scripts/{{agent}}", self.set_script)
        router.add_delete(f"{prefix}/scripts/{{agent}}", self.remove_script)
        router.add_post(f"{prefix}/reset", self.reset)

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"ok": True, "base_url": self.emu.base_url})

    async def list_faults(self, request: web.Request) -> web.Response:
        return json_response(self.emu.faults.to_json())

    async def add_fault(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            result = self.emu.faults.add_from_json(body)
        except KeyError as exc:
            raise not_found(f"No object found with id {exc}.") from None
        return json_response(result)

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.emu.faults.clear()
        return json_response(self.emu.faults.to_json())

    async def remove_fault(self, request: web.Request) -> web.Response:
        raw = request.match_info["fault_id"]
        if not raw.isdigit() or not self.emu.faults.remove(int(raw)):
            raise not_found(f"No fault with id '{raw}'.")
        return json_response({"removed": int(raw)})

    async def random_faults(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if body.get("rate") is None or body.get("seed") is None:
            raise invalid_request("Missing required parameters: 'rate' and 'seed'.")
        try:
            self.emu.faults.random(float(body["rate"]), int(body["seed"]), body.get("kinds"))
        except ValueError as exc:
            raise invalid_request(str(exc), param="kinds") from None
        return json_response(self.emu.faults.to_json())

    async def clock(self, request: web.Request) -> web.Response:
        clock = self.emu.clock
        return json_response({"now": clock.now(), "manual": bool(getattr(clock, "manual", False))})

    async def advance(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        advance = getattr(self.emu.clock, "advance", None)
        if advance is None:
            raise invalid_request("The emulator runs on a real clock; start it with a ManualClock to advance time.")
        seconds = body.get("seconds")
        if not isinstance(seconds, int | float) or seconds < 0:
            raise invalid_request("'seconds' must be a non-negative number.", param="seconds")
        await advance(float(seconds))
        return json_response({"now": self.emu.clock.now(), "manual": True})

    async def log(self, request: web.Request) -> web.Response:
        since = request.query.get("since", "0")
        start = int(since) if since.isdigit() else 0
        return json_response({"entries": self.emu.log.to_json(start), "dropped": self.emu.log.dropped})

    async def counters(self, request: web.Request) -> web.Response:
        return json_response(self.emu.counters.to_json())

    async def objects(self, request: web.Request) -> web.Response:
        def lifetime(record: Any) -> dict[str, Any]:
            return {
                "id": record.id,
                "agent": record.agent,
                "status": record.status,
                "created_at": record.created_at,
                "finished_at": record.finished_at,
                "created_tick": record.created_tick,
                "finished_tick": record.finished_tick,
            }

        return json_response(
            {
                "responses": [lifetime(record) for record in self.emu.responses.values()],
                "runs": [lifetime(record) for record in self.emu.runs.values()],
                "chat_completions": [
                    {**lifetime(record), "thread": record.thread, "client_run": record.client_run}
                    for record in self.emu.chat_completions.values()
                ],
                "conversations": [
                    {"id": conv.id, "items": len(conv.items), "deleted": conv.deleted}
                    for conv in self.emu.conversations.values()
                ],
            }
        )

    async def report(self, request: web.Request) -> web.Response:
        since = request.query.get("since", "0")
        rejected = self.emu.rejections(int(since) if since.isdigit() else 0)
        return json_response({"live": self.emu.live_objects(), "rejected": [entry.to_json() for entry in rejected]})

    async def set_script(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            self.emu.scripts[request.match_info["agent"]] = script_from_dict(body)
        except (ValueError, TypeError, KeyError) as exc:
            raise invalid_request(f"Invalid script: {exc}") from None
        return json_response({"agent": request.match_info["agent"], "rules": len(body.get("rules") or [])})

    async def remove_script(self, request: web.Request) -> web.Response:
        self.emu.scripts.pop(request.match_info["agent"], None)
        return json_response({"agent": request.match_info["agent"], "rules": 0})

    async def reset(self, request: web.Request) -> web.Response:
        self.emu.reset()
        return json_response({"reset": True})
