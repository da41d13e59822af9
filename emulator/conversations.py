"""The Conversations API: conversations and their items.

Responses created with ``conversation=`` read the items as context and append their input and output items only
once they complete; while one is running the conversation is locked (see `responses.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from emulator.errors import invalid_request, not_found
from emulator.httputil import OBJECT_ID, json_response, read_json
from emulator.items import check_duplicates, normalise_input
from emulator.wire import JSON, list_page, page_params

if TYPE_CHECKING:
    from emulator.server import Emulator

MAX_ITEMS_PER_REQUEST = 20
MAX_METADATA_PAIRS = 16


@dataclass
class ConversationRecord:
    id: str
    created_at: float
    metadata: dict[str, str] = field(default_factory=dict)
    items: list[JSON] = field(default_factory=list)
    deleted: bool = False
    active_response: str | None = None
    agent: str | None = None  # `metadata.agent` at creation, then the agent of its latest response

    def to_json(self) -> JSON:
        return {"id": self.id, "object": "conversation", "created_at": int(self.created_at), "metadata": self.metadata}


def _check_metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_PAIRS:
        raise invalid_request(
            f"Invalid 'metadata': expected an object with at most {MAX_METADATA_PAIRS} pairs.", param="metadata"
        )
    return {str(key): str(value) for key, value in metadata.items()}


def _check_item_count(items: Any) -> None:
    if isinstance(items, list) and len(items) > MAX_ITEMS_PER_REQUEST:
        raise invalid_request(
            f"Invalid 'items': array too long. Expected an array with maximum length {MAX_ITEMS_PER_REQUEST}, "
            f"but got an array with length {len(items)} instead.",
            param="items",
        )


class ConversationsAPI:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.records: dict[str, ConversationRecord] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/conversations", self.create)
        router.add_get("/v1/conversations/{conversation_id}", self.retrieve)
        router.add_post("/v1/conversations/{conversation_id}", self.update)
        router.add_delete("/v1/conversations/{conversation_id}", self.delete)
        router.add_post("/v1/conversations/{conversation_id}/items", self.create_items)
        router.add_get("/v1/conversations/{conversation_id}/items", self.list_items)
        router.add_get("/v1/conversations/{conversation_id}/items/{item_id}", self.retrieve_item)
        router.add_delete("/v1/conversations/{conversation_id}/items/{item_id}", self.delete_item)

    def get(self, conversation_id: str, *, param: str | None = None) -> ConversationRecord:
        record = self.records.get(conversation_id)
        if record is None or record.deleted:
            raise not_found(f"Conversation with id '{conversation_id}' not found.", param=param)
        return record

    def delete_now(self, conversation_id: str) -> None:
        """Delete behind the client's back (fault injection); a running response keeps running."""
        record = self.get(conversation_id)
        record.deleted = True
        self.emu.notify()

    def _lookup(self, request: web.Request) -> ConversationRecord:
        conversation_id = request.match_info["conversation_id"]
        request[OBJECT_ID] = conversation_id
        return self.get(conversation_id)

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        raw_items = body.get("items") or []
        _check_item_count(raw_items)
        items = normalise_input(raw_items, self.emu.ids.new, param="items")
        check_duplicates([], items, param="items")
        metadata = _check_metadata(body.get("metadata"))
        record = ConversationRecord(
            id=self.emu.ids.new("conv"),
            created_at=self.emu.clock.now(),
            metadata=metadata,
            items=items,
            agent=metadata.get("agent"),
        )
        self.records[record.id] = record
        request[OBJECT_ID] = record.id
        return json_response(record.to_json())

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_response(self._lookup(request).to_json())

    async def update(self, request: web.Request) -> web.Response:
        record = self._lookup(request)
        body = await read_json(request)
        if "metadata" not in body:
            raise invalid_request("Missing required parameter: 'metadata'.", param="metadata")
        record.metadata = _check_metadata(body["metadata"])
        return json_response(record.to_json())

    async def delete(self, request: web.Request) -> web.Response:
        record = self._lookup(request)
        record.deleted = True
        self.emu.notify()
        return json_response({"id": record.id, "object": "conversation.deleted", "deleted": True})

    async def create_items(self, request: web.Request) -> web.Response:
        record = self._lookup(request)
        body = await read_json(request)
        raw_items = body.get("items")
        if not isinstance(raw_items, list) or not raw_items:
            raise invalid_request("Missing required parameter: 'items'.", param="items")
        _check_item_count(raw_items)
        items = normalise_input(raw_items, self.emu.ids.new, param="items")
        check_duplicates(record.items, items, param="items")
        record.items.extend(items)
        return json_response(list_page(items, limit=len(items), order="asc", after=None))

    async def list_items(self, request: web.Request) -> web.Response:
        record = self._lookup(request)
        limit, order, after, _ = page_params(request.query)
        return json_response(list_page(record.items, limit=limit, order=order, after=after))

    def _item(self, record: ConversationRecord, item_id: str) -> JSON:
        for item in record.items:
            if item.get("id") == item_id:
                return item
        raise not_found(f"Item with id '{item_id}' not found.")

    async def retrieve_item(self, request: web.Request) -> web.Response:
        record = self._lookup(request)
        return json_response(self._item(record, request.match_info["item_id"]))

    async def delete_item(self, request: web.Request) -> web.Response:
        record = self._lookup(request)
        item = self._item(record, request.match_info["item_id"])
        record.items.remove(item)
        return json_response(record.to_json())
