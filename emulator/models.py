"""`GET /v1/models` and `GET /v1/models/{id}`: enough for a client to check its key (as `switchboard doctor` does)."""

from __future__ import annotations

from aiohttp import web

from emulator.errors import not_found
from emulator.httputil import json_response

MODEL_IDS = ("gpt-5-mini", "gpt-5", "emu-1")
CREATED = 1_767_225_600


def _model(model_id: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "switchboard-emulator"}


class ModelsAPI:
    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/models", self.list)
        router.add_get("/v1/models/{model_id}", self.retrieve)

    async def list(self, request: web.Request) -> web.Response:
        return json_response({"object": "list", "data": [_model(m) for m in MODEL_IDS]})

    async def retrieve(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if model_id not in MODEL_IDS:
            raise not_found(f"The model '{model_id}' does not exist or you do not have access to it.")
        return json_response(_model(model_id))
