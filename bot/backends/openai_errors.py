"""What both OpenAI backends share about the `openai` SDK: plain-JSON requests, translating its exceptions into the
backend error vocabulary, and closing its event streams completely."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal, cast

import aiohttp
import openai

from bot.backends.base import (
    UNREACHABLE,
    OutputsRejected,
    Permanent,
    RunGone,
    StuckToolCall,
    ThreadGone,
    ThreadLocked,
    Transient,
)

NotFoundMeans = Literal["thread", "run"]
JSON = dict[str, Any]
_CALL_ID = re.compile(r"function call (\S+?)\.?$")
_RUN_ID = re.compile(r"\b(run_\w+)")
_PREVIOUS_BUSY = re.compile(r"Previous response with id '([^']+)' is still in progress")
MAX_CAUSES = 8
CREDENTIALS_TEXT = "The bot's AI provider credentials were refused; an operator needs to check OPENAI_API_KEY."


async def get_json(client: openai.AsyncOpenAI, path: str, params: JSON | None = None) -> JSON:
    """GET through the SDK (its client, retries off, error classes), the body as plain JSON: no typed model."""
    options: Any = {"params": params} if params else {}
    return cast(JSON, await client.get(path, cast_to=object, options=options))


async def list_newest(client: openai.AsyncOpenAI, path: str, limit: int, page_size: int) -> list[JSON]:
    """The newest `limit` entries of a cursor-paged list (Conversation items, thread messages), oldest first."""
    found: list[JSON] = []
    params: JSON = {"order": "desc", "limit": min(page_size, limit)}
    async with provider_errors():
        while len(found) < limit:
            page = await get_json(client, path, params)
            data = page.get("data") or []
            found += data
            if not page.get("has_more") or not data:
                break
            params["after"] = data[-1].get("id")
    return list(reversed(found[:limit]))


async def post_json(client: openai.AsyncOpenAI, path: str, body: JSON | None = None) -> JSON:
    return cast(JSON, await client.post(path, body=body, cast_to=object))


def stream_error(event: JSON) -> openai.APIError:
    """The SDK error for an `error` event inside a stream, so it is translated like any failed request."""
    nested = event.get("error")
    detail: JSON = nested if isinstance(nested, dict) else event
    message = str(detail.get("message") or "error event in stream")
    error = openai.APIError(message, request=None, body={"message": message, "code": detail.get("code")})  # type: ignore[arg-type]
    error.code = detail.get("code")
    return error


def retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / divisor)
            except ValueError:
                continue
    return None


def translate(exc: openai.OpenAIError, not_found: NotFoundMeans = "thread") -> Exception:
    """Map one SDK exception to a backend error. The provider's message is kept (it holds no secrets)."""
    if isinstance(exc, openai.APIConnectionError) and _refused(exc):  # before timeouts: see `_refused`
        return Transient(f"cannot connect to {_origin(exc)}", reason=UNREACHABLE)
    if isinstance(exc, openai.APITimeoutError):
        return Transient("request to the AI provider timed out", reason="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return Transient(f"the connection to {_origin(exc)} failed", reason="connection")
    if not isinstance(exc, openai.APIError):
        return Permanent(f"{type(exc).__name__}: {exc}", reason="client")
    body = getattr(exc, "body", None)
    message = str(body.get("message") or exc) if isinstance(body, dict) else str(exc)
    code = getattr(exc, "code", None) or ""
    if isinstance(exc, openai.RateLimitError) or code == "rate_limit_exceeded":
        after = retry_after(exc) if isinstance(exc, openai.APIStatusError) else None
        return Transient(message, reason="rate_limit", retry_after=after)
    if isinstance(exc, openai.InternalServerError) or code == "server_error":
        after = retry_after(exc) if isinstance(exc, openai.APIStatusError) else None
        return Transient(message, reason="server_error", retry_after=after)
    if isinstance(exc, openai.ConflictError):
        return Transient(message, reason="conflict")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return Permanent(message, reason="credentials", user_text=CREDENTIALS_TEXT)
    if isinstance(exc, openai.NotFoundError):
        return RunGone(message) if not_found == "run" else ThreadGone(message)
    if code == "conversation_locked" or "already has an active run" in message or "while a run" in message:
        holder = _RUN_ID.search(message)
        return ThreadLocked(message, holder=holder.group(1) if holder else None)
    busy = _PREVIOUS_BUSY.search(message)
    if busy:  # a chained create before the response it continues ended: wait for it like a locked conversation
        return ThreadLocked(message, holder=busy.group(1))
    if message.startswith("No tool output found for function call"):
        match = _CALL_ID.search(message)
        return StuckToolCall(message, call_id=match.group(1) if match else "")
    if "No tool call found for function call output" in message or "do not accept tool outputs" in message:
        return OutputsRejected(message)
    if code == "invalid_prompt":
        return Permanent(message, reason="invalid_prompt", user_text="The AI provider refused this request.")
    if isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
        return Transient(message, reason="server_error", retry_after=retry_after(exc))
    return Permanent(message, reason=code or "bad_request")


def _refused(exc: BaseException) -> bool:
    """Nothing accepted the connection (refused, unknown host, no route): no request reached the provider. The SDK's
    aiohttp transport reports this as a connect *timeout*, so the cause chain is what tells."""
    seen: BaseException = exc
    for _ in range(MAX_CAUSES):
        cause = seen.__cause__ or seen.__context__
        if cause is None:
            return False
        seen = cause
        if isinstance(seen, ConnectionRefusedError | aiohttp.ClientConnectorError):
            return True
        if type(seen).__name__ == "ConnectError":  # the SDK's default (httpx) transport
            return True
    return False


def _origin(exc: openai.APIConnectionError) -> str:
    """Where the request went (scheme, host, port; no path or query), or a generic phrase."""
    try:
        url = exc.request.url
        return f"{url.scheme}://{url.netloc.decode()}"
    except (AttributeError, RuntimeError):  # an error raised without its request
        return "the AI provider"


@asynccontextmanager
async def provider_errors(not_found: NotFoundMeans = "thread") -> AsyncIterator[None]:
    try:
        yield
    except openai.OpenAIError as exc:
        raise translate(exc, not_found) from exc


async def close_sdk_stream(stream: Any) -> None:
    """Close an SDK stream and let its event generator finish. We stop reading at a run's terminal event, which
    leaves the generator suspended, holding the stream in a reference cycle (~20 objects per run) that only the
    cycle collector frees; at 100 turns/s that garbage drove 50-200 ms full collections (benchmarks/performance.py).
    Reading once more from the closed stream ends the generator (public API only)."""
    try:
        await stream.close()
    except Exception:  # closing a broken stream may fail again: leave the rest to the collector (reading on
        return  # from a stream that did not close could wait for its next event)
    try:
        await anext(stream)
    except (StopAsyncIteration, Exception):  # the closed body ends or breaks the generator: either frees it
        pass
