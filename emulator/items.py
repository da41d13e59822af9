"""Responses/Conversations items: normalising client input, reading text out of items, checking tool calls and
building the `Turn` a script sees."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from emulator.errors import DUPLICATE_ITEM, NO_TOOL_CALL, NO_TOOL_OUTPUT, invalid_request
from emulator.scripts import Messenger, ToolResult, Turn, messenger_target
from emulator.wire import JSON

TEXT_PART_TYPES = ("input_text", "output_text", "text")
ITEM_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def normalise_input(raw: Any, new_id: Callable[[str], str], *, param: str = "input") -> list[JSON]:
    """Client input (a string or a list of items) as stored items, each with an id and a status."""
    if isinstance(raw, str):
        return [user_message(raw, new_id("msg"))]
    if not isinstance(raw, list):
        raise invalid_request(f"Invalid type for '{param}': expected a string or an array of items.", param=param)
    return [normalise_item(item, new_id, f"{param}[{index}]") for index, item in enumerate(raw)]


def user_message(text: str, item_id: str) -> JSON:
    return {
        "id": item_id,
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }


def normalise_item(item: Any, new_id: Callable[[str], str], param: str) -> JSON:
    if not isinstance(item, dict):
        raise invalid_request(f"Invalid type for '{param}': expected an object.", param=param)
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind is None:
        raise invalid_request(f"Missing required parameter: '{param}.type'.", param=f"{param}.type")
    stored = dict(item)
    stored["type"] = kind
    stored.setdefault("id", new_id(ITEM_ID_PREFIX.get(kind, "item")))
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise invalid_request(f"Invalid value for '{param}.role': {role!r}.", param=f"{param}.role")
        stored["content"] = _normalise_content(item.get("content"), role, param)
        stored["status"] = "completed"
    elif kind == "function_call_output":
        for key in ("call_id", "output"):
            if key not in item:
                raise invalid_request(f"Missing required parameter: '{param}.{key}'.", param=f"{param}.{key}")
        stored["status"] = "completed"
    elif kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if key not in item:
                raise invalid_request(f"Missing required parameter: '{param}.{key}'.", param=f"{param}.{key}")
        stored["status"] = "completed"
    return stored


def _normalise_content(content: Any, role: str, param: str) -> list[JSON]:
    part_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        part: JSON = {"type": part_type, "text": content}
        if part_type == "output_text":
            part.update(annotations=[], logprobs=[])
        return [part]
    if isinstance(content, list):
        return [dict(part) for part in content if isinstance(part, dict)]
    raise invalid_request(f"Invalid type for '{param}.content'.", param=f"{param}.content")


def message_text(item: JSON) -> str:
    parts = item.get("content") or []
    if isinstance(parts, str):
        return parts
    return "".join(str(part.get("text", "")) for part in parts if part.get("type") in TEXT_PART_TYPES)


def item_text(item: JSON) -> str:
    """Every piece of text an item carries (for token counts)."""
    kind = item.get("type")
    if kind == "message":
        return message_text(item)
    if kind == "function_call":
        return str(item.get("name", "")) + str(item.get("arguments", ""))
    if kind == "function_call_output":
        output = item.get("output")
        return output if isinstance(output, str) else str(output)
    return ""


def output_str(item: JSON) -> str:
    output = item.get("output")
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(str(part.get("text", "")) for part in output if isinstance(part, dict))
    return str(output)


def check_duplicates(existing: Sequence[JSON], new: Sequence[JSON], *, param: str = "input") -> None:
    seen = {item.get("id") for item in existing}
    for item in new:
        item_id = item.get("id")
        if item_id in seen:
            raise invalid_request(DUPLICATE_ITEM.format(item_id=item_id), param=param)
        seen.add(item_id)


def check_tool_calls(context: Sequence[JSON], new: Sequence[JSON]) -> None:
    """400s OpenAI gives: an output for an unknown call; any call still without an output."""
    calls: set[str] = set()
    answered: set[str] = set()
    for item in context:
        if item.get("type") == "function_call":
            calls.add(item["call_id"])
        elif item.get("type") == "function_call_output":
            answered.add(item["call_id"])
    for item in new:
        if item.get("type") == "function_call":
            calls.add(item["call_id"])
        elif item.get("type") == "function_call_output":
            if item["call_id"] not in calls:
                raise invalid_request(NO_TOOL_CALL.format(call_id=item["call_id"]), param="input")
            answered.add(item["call_id"])
    for item in (*context, *new):
        if item.get("type") == "function_call" and item["call_id"] not in answered:
            raise invalid_request(NO_TOOL_OUTPUT.format(call_id=item["call_id"]), param="input")


def build_turn(
    *, agent: str, context: Sequence[JSON], new: Sequence[JSON], tools: list[str], parallel_tool_calls: bool,
    messengers: dict[str, Messenger] | None = None, text_params: dict[str, str] | None = None,
) -> Turn:
    """What the script sees. Tool outputs count as "just came back" only when they are new in this request and
    nothing newer than them (a user or assistant message) follows, so a client that resends the whole history
    with every request is judged by the end of it, as one chaining `previous_response_id` is."""
    messengers = messengers or {}
    items = [*context, *new]
    user_positions = [
        index for index, item in enumerate(items) if item.get("type") == "message" and item.get("role") == "user"
    ]
    texts = [message_text(items[index]) for index in user_positions]
    last_user = user_positions[-1] if user_positions else -1
    last_message = max((index for index, item in enumerate(items) if item.get("type") == "message"), default=-1)
    call_order: dict[str, tuple[int, str]] = {}
    for index, item in enumerate(items):
        if item.get("type") == "function_call":
            name = messenger_target(item.get("name", ""), str(item.get("arguments") or ""), messengers)
            call_order[item["call_id"]] = (index, name)

    def results(source: Sequence[JSON]) -> list[ToolResult]:
        found = [
            (
                call_order[item["call_id"]][0],
                ToolResult(item["call_id"], call_order[item["call_id"]][1], output_str(item)),
            )
            for item in source
            if item.get("type") == "function_call_output" and item["call_id"] in call_order
        ]
        return [result for _, result in sorted(found, key=lambda pair: pair[0])]

    since_user = items[last_user + 1 :]
    fresh = items[max(len(context), last_message + 1) :]
    return Turn(
        agent=agent,
        text=texts[-1] if texts else "",
        earlier=texts[:-1],
        tools=tools,
        tool_outputs=results(fresh),
        outputs_since_user=results(since_user),
        called_since_user=[
            call_order[item["call_id"]][1] for item in since_user if item.get("type") == "function_call"
        ],
        parallel_tool_calls=parallel_tool_calls,
        messengers=messengers,
        text_params=text_params or {},
        api="responses",
    )


def function_tool_names(tools: Any) -> list[str]:
    if not isinstance(tools, list):
        return []
    names = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "function":
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if name:
                names.append(str(name))
    return names
