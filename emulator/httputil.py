"""aiohttp glue: reading JSON bodies, writing JSON and error responses, streaming an `EventLog` as SSE.

Contract: `stream_log` sends exactly the frames a fault allows (all, the first k, none) and records how many in the
request (`EVENTS`), so the request log can say how far every stream got.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from emulator.errors import APIError, invalid_request
from emulator.events import EventLog
from emulator.wire import JSON, dumps, loads

if TYPE_CHECKING:
    from emulator.faults import Bound

JSON_CONTENT_TYPE = "application/json"
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
DONE_FRAME = b"event: done\ndata: [DONE]\n\n"
TRUE_VALUES = ("true", "1", "yes")

# Per-request facts the handlers leave for the request log.
REQUEST_ID = web.RequestKey("request_id", str)
AGENT = web.RequestKey("agent", str)
OBJECT_ID = web.RequestKey("object_id", str)
DROPPED = web.RequestKey("dropped", bool)  # the connection was closed without a complete answer
EVENTS = web.RequestKey("events", int)  # stream frames sent (not counting the `[DONE]` marker)
ERROR = web.RequestKey("error", tuple)  # (code, message) of an error answer
BOUND = web.RequestKey("bound", list)  # faults bound to this request (`Faults.bind`)
WITHHOLD = web.RequestKey("withhold", bool)  # a `timeout` fault: handle the request, send nothing back


def bound_faults(request: web.Request) -> list[Bound]:
    return request.get(BOUND) or []


async def read_json(request: web.Request) -> JSON:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = loads(raw)
    except ValueError:
        raise invalid_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
            "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
        ) from None
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    return body


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type=JSON_CONTENT_TYPE, headers=headers)


def error_response(error: APIError) -> web.Response:
    return json_response(error.body(), status=error.status, headers=error.headers or None)


def query_flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in TRUE_VALUES


def query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise invalid_request(f"Invalid '{name}': expected an integer, got '{raw}'.", param=name) from None


def body_id(value: Any, param: str) -> str:
    """An object reference given either as ``"id"`` or as ``{"id": "..."}``."""
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise invalid_request(f"Invalid '{param}': expected an id.", param=param)
    return value


async def stream_log(
    request: web.Request,
    log: EventLog,
    *,
    start: int = 0,
    stop_at_boundary: bool = False,
    drop_after: int | None = None,
    done_marker: bool = False,
) -> web.StreamResponse:
    """Send the log's frames from `start` as SSE. `drop_after` aborts the connection once that many frames are
    sent, as a broken network connection would (no further event, no clean end of the chunked body): 0 breaks it
    right after the headers, the segment's frame count right after its terminal event (before `[DONE]`)."""
    response = web.StreamResponse(headers={**SSE_HEADERS, "x-request-id": request[REQUEST_ID]})
    request[EVENTS] = 0
    if request.get(WITHHOLD):  # a `timeout` fault: the object exists and runs on, the client hears nothing
        return response
    await response.prepare(request)
    sent = 0
    try:
        if drop_after == 0:
            return _drop(request, response)
        async for batch in log.follow_batches(start, stop_at_boundary=stop_at_boundary):
            if drop_after is not None:
                batch = batch[: drop_after - sent]
            await response.write(b"".join(frame.data for frame in batch))
            sent += len(batch)
            request[EVENTS] = sent
            if drop_after is not None and sent >= drop_after:
                return _drop(request, response)
        if done_marker:
            await response.write(DONE_FRAME)
        await response.write_eof()
    except ConnectionResetError:  # the client went away: the object carries on without it
        pass
    return response


def _drop(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    request[DROPPED] = True
    if request.transport is not None:
        request.transport.abort()
    return response
