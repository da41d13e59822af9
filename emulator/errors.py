"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with the matching HTTP status."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Texts the platform uses word for word (see PLATFORM_FACTS.md); clients match on them.
CONVERSATION_LOCKED = "Another process is currently operating on this conversation. Please retry in a few seconds."
NO_TOOL_OUTPUT = "No tool output found for function call {call_id}."
NO_TOOL_CALL = "No tool call found for function call output with call_id {call_id}."
DUPLICATE_ITEM = "Duplicate item found with id {item_id}."
THREAD_LOCKED_MESSAGE = "Can't add messages to {thread_id} while a run {run_id} is active."
THREAD_LOCKED_RUN = "Thread {thread_id} already has an active run {run_id}."
RUN_NO_TOOL_OUTPUTS = 'Runs in status "{status}" do not accept tool outputs.'
RUN_CANNOT_CANCEL = "Cannot cancel run with status '{status}'."
SYNC_RESPONSE_CANCEL = "Cannot cancel a synchronous response."

SERVER_ERROR_MESSAGE = (
    "The server had an error while processing your request. Sorry about that! "
    "You can retry your request, or contact us through our help center if the error persists."
)
RATE_LIMIT_MESSAGE = "Rate limit reached for requests. Please try again in {seconds}s."

# Messages used when a response or run fails with a given `error.code` / `last_error.code`.
FAILURE_MESSAGES: dict[str, str] = {
    "server_error": "The model produced an error while processing the request. You can retry your request.",
    "rate_limit_exceeded": "Rate limit reached for tokens. Please try again in 1s.",
    "invalid_prompt": "Invalid prompt: your prompt was flagged as potentially violating our usage policy.",
}
FAILURE_CODES = tuple(FAILURE_MESSAGES)


@dataclass
class APIError(Exception):
    """Raised by handlers; the server turns it into an OpenAI error response."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.type}: {self.message}"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def invalid_api_key() -> APIError:
    message = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
    return APIError(401, message, "invalid_request_error", None, "invalid_api_key")


def not_found(message: str, *, param: str | None = None) -> APIError:
    return APIError(404, message, "invalid_request_error", param, None)


def retry_after_headers(seconds: float) -> dict[str, str]:
    """`retry-after` (whole seconds, as the standard wants) and `retry-after-ms` (what the SDK prefers)."""
    return {"retry-after": str(max(0, math.ceil(seconds))), "retry-after-ms": str(max(0, round(seconds * 1000)))}


def rate_limited(retry_after: float) -> APIError:
    return APIError(
        429,
        RATE_LIMIT_MESSAGE.format(seconds=f"{retry_after:g}"),
        "requests",
        None,
        "rate_limit_exceeded",
        retry_after_headers(retry_after),
    )


def server_error(status: int = 500) -> APIError:
    return APIError(status, SERVER_ERROR_MESSAGE, "server_error", None, None)


def http_fault(status: int, retry_after: float) -> APIError:
    """The error injected by an HTTP fault with the given status."""
    if status == 429:
        return rate_limited(retry_after)
    if status >= 500:
        return server_error(status)
    return APIError(status, f"Injected HTTP {status}.", "invalid_request_error")
