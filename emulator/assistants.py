"""Assistants v2: assistants, threads and messages (runs and run steps live in `runs.py`).

The Assistants API is gone from OpenAI itself, but Azure and self-hosted servers still speak it, so the emulator
keeps it: same objects, same thread-lock errors, same run state machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from emulator.errors import THREAD_LOCKED_MESSAGE, invalid_request, not_found
from emulator.httputil import OBJECT_ID, json_response, read_json
from emulator.runs import RunRecord, RunsAPI
from emulator.wire import JSON, list_page, page_params

if TYPE_CHECKING:
    from emulator.server import Emulator

DEFAULT_ASSISTANT_AGENT = "assistant"  # agent name of an assistant created without a name
MAX_THREAD_MESSAGES_PER_CREATE = 32
_ASSISTANT_FIELDS = ("name", "description", "model", "instructions", "tools", "metadata", "temperature", "top_p")


@dataclass
class AssistantRecord:
    id: str
    created_at: float
    model: str
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    tools: list[JSON] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    temperature: float | None = 1.0
    top_p: float | None = 1.0

    @property
    def agent(self) -> str:
        return self.name or DEFAULT_ASSISTANT_AGENT

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "assistant",
            "created_at": int(self.created_at),
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "instructions": self.instructions,
            "tools": self.tools,
            "tool_resources": {},
            "metadata": self.metadata,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "response_format": "auto",
        }


@dataclass
class MessageRecord:
    id: str
    thread_id: str
    created_at: float
    role: str
    text: str
    status: str = "completed"
    assistant_id: str | None = None
    run_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    completed_at: float | None = None
    incomplete_at: float | None = None
    incomplete_reason: str | None = None

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "thread.message",
            "created_at": int(self.created_at),
            "thread_id": self.thread_id,
            "status": self.status,
            "incomplete_details": {"reason": self.incomplete_reason} if self.incomplete_reason else None,
            "completed_at": int(self.completed_at) if self.completed_at is not None else None,
            "incomplete_at": int(self.incomplete_at) if self.incomplete_at is not None else None,
            "role": self.role,
            "content": [{"type": "text", "text": {"value": self.text, "annotations": []}}] if self.text else [],
            "assistant_id": self.assistant_id,
            "run_id": self.run_id,
            "attachments": [],
            "metadata": self.metadata,
        }


@dataclass
class ThreadRecord:
    id: str
    created_at: float
    metadata: dict[str, str] = field(default_factory=dict)
    messages: list[MessageRecord] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    active_run: str | None = None
    deleted: bool = False
    agent: str | None = None  # `metadata.agent` at creation, then the agent of its latest run

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "thread",
            "created_at": int(self.created_at),
            "tool_resources": {},
            "metadata": self.metadata,
        }


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                text = part.get("text")
                parts.append(text.get("value", "") if isinstance(text, dict) else str(text or ""))
        return "".join(parts)
    raise invalid_request("Invalid 'content': expected a string or an array of content parts.", param="content")


class AssistantsAPI:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.assistants: dict[str, AssistantRecord] = {}
        self.threads: dict[str, ThreadRecord] = {}
        self.run_engine = RunsAPI(emulator, self)

    @property
    def runs(self) -> dict[str, RunRecord]:
        return self.run_engine.records

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/assistants", self.create_assistant)
        router.add_get("/v1/assistants", self.list_assistants)
        router.add_get("/v1/assistants/{assistant_id}", self.retrieve_assistant)
        router.add_post("/v1/assistants/{assistant_id}", self.update_assistant)
        router.add_delete("/v1/assistants/{assistant_id}", self.delete_assistant)
        router.add_post("/v1/threads", self.create_thread)
        router.add_get("/v1/threads/{thread_id}", self.retrieve_thread)
        router.add_post("/v1/threads/{thread_id}", self.update_thread)
        router.add_delete("/v1/threads/{thread_id}", self.delete_thread)
        router.add_post("/v1/threads/{thread_id}/messages", self.create_message)
        router.add_get("/v1/threads/{thread_id}/messages", self.list_messages)
        router.add_get("/v1/threads/{thread_id}/messages/{message_id}", self.retrieve_message)
        self.run_engine.add_routes(router)

    def clear(self) -> None:
        self.assistants.clear()
        self.threads.clear()
        self.run_engine.records.clear()

    def close_streams(self) -> None:
        self.run_engine.close_streams()

    def provider_cancel(self, run_id: str) -> None:
        self.run_engine.provider_cancel(run_id)

    def expire_now(self, run_id: str) -> None:
        self.run_engine.expire_now(run_id)

    def delete_thread_now(self, thread_id: str) -> None:
        self.get_thread(thread_id).deleted = True
        self.emu.notify()

    # --- lookups -------------------------------------------------------------------------------------------------

    def get_assistant(self, assistant_id: str, *, param: str | None = None) -> AssistantRecord:
        record = self.assistants.get(assistant_id)
        if record is None:
            raise not_found(f"No assistant found with id '{assistant_id}'.", param=param)
        return record

    def get_thread(self, thread_id: str) -> ThreadRecord:
        record = self.threads.get(thread_id)
        if record is None or record.deleted:
            raise not_found(f"No thread found with id '{thread_id}'.")
        return record

    def thread_of(self, request: web.Request) -> ThreadRecord:
        thread_id = request.match_info["thread_id"]
        request[OBJECT_ID] = thread_id
        return self.get_thread(thread_id)

    # --- assistants ----------------------------------------------------------------------------------------------

    def _apply_assistant_fields(self, record: AssistantRecord, body: JSON) -> None:
        for name in _ASSISTANT_FIELDS:
            if name in body:
                value = body[name]
                if name == "tools":
                    value = list(value or [])
                elif name == "metadata":
                    value = dict(value or {})
                setattr(record, name, value)

    async def create_assistant(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not body.get("model"):
            raise invalid_request("Missing required parameter: 'model'.", param="model")
        record = AssistantRecord(id=self.emu.ids.new("asst"), created_at=self.emu.clock.now(), model=body["model"])
        self._apply_assistant_fields(record, body)
        self.assistants[record.id] = record
        request[OBJECT_ID] = record.id
        return json_response(record.to_json())

    async def list_assistants(self, request: web.Request) -> web.Response:
        limit, order, after, before = page_params(request.query)
        items = [record.to_json() for record in self.assistants.values()]
        return json_response(list_page(items, limit=limit, order=order, after=after, before=before))

    def _assistant_of(self, request: web.Request) -> AssistantRecord:
        assistant_id = request.match_info["assistant_id"]
        request[OBJECT_ID] = assistant_id
        return self.get_assistant(assistant_id)

    async def retrieve_assistant(self, request: web.Request) -> web.Response:
        return json_response(self._assistant_of(request).to_json())

    async def update_assistant(self, request: web.Request) -> web.Response:
        record = self._assistant_of(request)
        self._apply_assistant_fields(record, await read_json(request))
        return json_response(record.to_json())

    async def delete_assistant(self, request: web.Request) -> web.Response:
        record = self._assistant_of(request)
        del self.assistants[record.id]
        return json_response({"id": record.id, "object": "assistant.deleted", "deleted": True})

    # --- threads -------------------------------------------------------------------------------------------------

    def new_thread(self, body: JSON) -> ThreadRecord:
        raw_messages = body.get("messages") or []
        if len(raw_messages) > MAX_THREAD_MESSAGES_PER_CREATE:
            raise invalid_request(
                f"Invalid 'messages': at most {MAX_THREAD_MESSAGES_PER_CREATE} messages.", param="messages"
            )
        metadata = dict(body.get("metadata") or {})
        thread = ThreadRecord(
            id=self.emu.ids.new("thread"),
            created_at=self.emu.clock.now(),
            metadata=metadata,
            agent=metadata.get("agent"),
        )
        for raw in raw_messages:
            self.add_message(thread, raw)
        self.threads[thread.id] = thread
        return thread

    def add_message(self, thread: ThreadRecord, body: JSON) -> MessageRecord:
        role = body.get("role")
        if role not in ("user", "assistant"):
            raise invalid_request(f"Invalid value for 'role': {role!r}; expected 'user' or 'assistant'.", param="role")
        if "content" not in body:
            raise invalid_request("Missing required parameter: 'content'.", param="content")
        now = self.emu.clock.now()
        message = MessageRecord(
            id=self.emu.ids.new("msg"),
            thread_id=thread.id,
            created_at=now,
            role=role,
            text=message_text(body["content"]),
            metadata=dict(body.get("metadata") or {}),
            completed_at=now,
        )
        thread.messages.append(message)
        return message

    def start_assistant_message(self, thread_id: str, assistant_id: str, run_id: str) -> MessageRecord:
        """An empty in-progress assistant message a run is about to write (kept even if the thread is gone)."""
        message = MessageRecord(
            id=self.emu.ids.new("msg"),
            thread_id=thread_id,
            created_at=self.emu.clock.now(),
            role="assistant",
            text="",
            status="in_progress",
            assistant_id=assistant_id,
            run_id=run_id,
        )
        thread = self.threads.get(thread_id)
        if thread is not None:
            thread.messages.append(message)
        return message

    async def create_thread(self, request: web.Request) -> web.Response:
        thread = self.new_thread(await read_json(request))
        request[OBJECT_ID] = thread.id
        return json_response(thread.to_json())

    async def retrieve_thread(self, request: web.Request) -> web.Response:
        return json_response(self.thread_of(request).to_json())

    async def update_thread(self, request: web.Request) -> web.Response:
        thread = self.thread_of(request)
        body = await read_json(request)
        if "metadata" in body:
            thread.metadata = dict(body["metadata"] or {})
        return json_response(thread.to_json())

    async def delete_thread(self, request: web.Request) -> web.Response:
        thread = self.thread_of(request)
        thread.deleted = True
        self.emu.notify()
        return json_response({"id": thread.id, "object": "thread.deleted", "deleted": True})

    # --- messages ------------------------------------------------------------------------------------------------

    async def create_message(self, request: web.Request) -> web.Response:
        thread = self.thread_of(request)
        body = await read_json(request)
        if thread.active_run is not None:
            raise invalid_request(THREAD_LOCKED_MESSAGE.format(thread_id=thread.id, run_id=thread.active_run))
        return json_response(self.add_message(thread, body).to_json())

    async def list_messages(self, request: web.Request) -> web.Response:
        thread = self.thread_of(request)
        limit, order, after, before = page_params(request.query)
        run_id = request.query.get("run_id")
        items = [message.to_json() for message in thread.messages if run_id is None or message.run_id == run_id]
        return json_response(list_page(items, limit=limit, order=order, after=after, before=before))

    async def retrieve_message(self, request: web.Request) -> web.Response:
        thread = self.thread_of(request)
        message_id = request.match_info["message_id"]
        for message in thread.messages:
            if message.id == message_id:
                return json_response(message.to_json())
        raise not_found(f"No message found with id '{message_id}'.")
