"""Wire helpers shared by every surface: JSON encoding, SSE frames, ids, list pages and token counts."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from emulator.errors import invalid_request

try:  # orjson is optional: it roughly halves encoding time on the hot path.
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

JSON = dict[str, Any]

DEFAULT_PAGE_LIMIT = 20
MAX_PAGE_LIMIT = 100
CHARS_PER_TOKEN = 4


def _dumps_std(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _dumps_orjson(obj: Any) -> bytes:
    assert _orjson is not None
    return _orjson.dumps(obj)


dumps: Callable[[Any], bytes] = _dumps_orjson if _orjson is not None else _dumps_std


def loads(data: bytes | str) -> Any:
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data)


def sse_frame(event: str | None, data: Any) -> bytes:
    """One server-sent event. `data` is JSON-encoded unless it is already a string (e.g. ``[DONE]``)."""
    payload = data.encode() if isinstance(data, str) else dumps(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


def tokens(text: str) -> int:
    """Approximate token count used for every `usage` figure: ceil(characters / 4)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class IdFactory:
    """OpenAI-looking ids (``resp_...``, ``conv_...``). Deterministic when a seed is given."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def new(self, prefix: str) -> str:
        return f"{prefix}_{self._rng.getrandbits(96):024x}"


def page_params(query: Any, *, default_order: str = "desc") -> tuple[int, str, str | None, str | None]:
    """Parse `limit`, `order`, `after`, `before` from a query mapping, validating like the API does."""
    raw_limit = query.get("limit")
    try:
        limit = DEFAULT_PAGE_LIMIT if raw_limit is None else int(raw_limit)
    except ValueError:
        raise invalid_request(f"Invalid 'limit': expected an integer, got '{raw_limit}'.", param="limit") from None
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise invalid_request(
            f"Invalid 'limit': integer must be between 1 and {MAX_PAGE_LIMIT}, got {limit}.", param="limit"
        )
    order = query.get("order") or default_order
    if order not in ("asc", "desc"):
        raise invalid_request(f"Invalid 'order': expected 'asc' or 'desc', got '{order}'.", param="order")
    return limit, order, query.get("after"), query.get("before")


def list_page(
    items: Sequence[JSON],
    *,
    limit: int,
    order: str,
    after: str | None,
    before: str | None = None,
    key: Callable[[JSON], str] = lambda item: item["id"],
) -> JSON:
    """A cursor page in OpenAI's shape. `items` are in ascending (creation) order."""
    ordered = list(items) if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [key(item) for item in ordered]
        if after not in ids:
            raise invalid_request(f"Invalid 'after': no item with id '{after}'.", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    if before is not None:
        ids = [key(item) for item in ordered]
        if before not in ids:
            raise invalid_request(f"Invalid 'before': no item with id '{before}'.", param="before")
        ordered = ordered[: ids.index(before)]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": key(data[0]) if data else None,
        "last_id": key(data[-1]) if data else None,
        "has_more": len(ordered) > limit,
    }
