"""Scripted assistants: who answers what, deterministically.

The emulator builds a `Turn` from a request (agent name, newest user text, earlier user texts, offered tools,
tool outputs just received) and asks the agent's `Script` for a `Plan` (text to stream, function calls to make,
how long to take, or how to fail). A Script is an ordered list of `Rule`s; the first rule that matches decides.
When no rule matches (or the matching rule only adds a delay) the script's `fallback` (by default
`default_plan`, the proxy/sub-assistant behaviour `switchboard demo` relies on) decides.

YAML form (``switchboard emulator --scripts FILE``), one entry per agent name; ``default`` applies to every agent
without its own script::

    critic:
      rules:
        - match: "(?i)slow"        # regex searched in the newest user text
          delay: 5                  # seconds on the emulator clock
        - match: "boom"
          fail: server_error        # server_error | rate_limit_exceeded | invalid_prompt
        - reply: "critic says: {input}"
    proxy:
      rules:
        - on: message               # message | tool_outputs (default: either)
          calls:
            - name: ask_critic
              arguments: {task: "{input}", context: ""}
        - on: tool_outputs
          reply: "Summary: {outputs}"
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ASK_PREFIX = "ask_"
TRANSFER_PREFIX = "transfer_to_"
STATE_PAIR = re.compile(r"\b([a-z][a-z0-9_]{0,39})=([^\s,;]+)")
RECIPIENT_WORD = "recipient"  # a messenger tool's parameter naming the agent (enum), e.g. `recipient_agent`
MESSAGE_PARAMS = ("message", "task", "input", "request")  # its parameter carrying the text, first one present
EVERYONE_WORDS = ("team", "everyone")
DEFAULT_AGENT = "default"

TurnKind = Literal["message", "tool_outputs"]


@dataclass(frozen=True)
class ToolResult:
    """A function call and its output, in the order the calls were made."""

    call_id: str
    name: str
    output: str


@dataclass(frozen=True)
class Messenger:
    """A generic "send a message to agent X" tool: one function whose `recipient_param` is an enum of agent names."""

    tool: str
    recipient_param: str
    message_param: str
    other_params: tuple[str, ...] = ()

    def arguments(self, recipient: str, text: str) -> str:
        filled = dict.fromkeys(self.other_params, "")
        filled.update({self.recipient_param: recipient, self.message_param: text})
        return json.dumps(filled)


def _function_specs(tools: Any) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, parameters, properties) of each function tool in a request's `tools` (Responses or Chat shape)."""
    specs = []
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        function = tool.get("function")
        spec: dict[str, Any] = function if isinstance(function, dict) else tool
        name, parameters = spec.get("name"), spec.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        if name and isinstance(parameters, dict) and isinstance(properties, dict):
            specs.append((str(name), parameters, properties))
    return specs


def text_params_of(tools: Any) -> dict[str, str]:
    """Tool name -> the one parameter that carries the text, for ``ask_`` tools without a `task` parameter (an
    agent offered as a tool by another framework, e.g. ``{"input": string}``)."""
    found = {}
    for name, _, properties in _function_specs(tools):
        if name.startswith(ASK_PREFIX) and "task" not in properties:
            param = next((key for key in MESSAGE_PARAMS if key in properties), next(iter(properties), None))
            if param is not None:
                found[name] = param
    return found


def messengers_of(tools: Any) -> dict[str, Messenger]:
    """Agent name -> the messenger tool that reaches it, from a request's `tools` (Responses or Chat shape)."""
    found: dict[str, Messenger] = {}
    for name, parameters, properties in _function_specs(tools):
        recipient = next((key for key, value in properties.items()
                          if RECIPIENT_WORD in key.lower() and isinstance(value, dict) and value.get("enum")), None)
        message = next((key for key in MESSAGE_PARAMS if key in properties), None)
        if recipient is None or message is None:
            continue
        required = parameters.get("required") or []
        others = tuple(key for key in required if key not in (recipient, message)
                       and (properties.get(key) or {}).get("type") == "string")
        messenger = Messenger(name, recipient, message, others)
        for agent in properties[recipient]["enum"]:
            found.setdefault(str(agent), messenger)
    return found


def messenger_target(name: str, arguments: str, messengers: Mapping[str, Messenger]) -> str:
    """A function call's name as the default script reads it: a messenger call becomes ``ask_<recipient>``."""
    tools = {messenger.tool: messenger for messenger in messengers.values()}
    messenger = tools.get(name)
    if messenger is None:
        return name
    try:
        recipient = json.loads(arguments or "{}").get(messenger.recipient_param)
    except (ValueError, AttributeError):
        return name
    return ASK_PREFIX + recipient if isinstance(recipient, str) and recipient in messengers else name


@dataclass
class Turn:
    """What a scripted assistant sees of one request."""

    agent: str
    text: str
    earlier: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    tool_outputs: list[ToolResult] = field(default_factory=list)
    outputs_since_user: list[ToolResult] = field(default_factory=list)
    called_since_user: list[str] = field(default_factory=list)
    parallel_tool_calls: bool = True
    messengers: dict[str, Messenger] = field(default_factory=dict)
    text_params: dict[str, str] = field(default_factory=dict)
    api: Literal["responses", "assistants", "chat"] = "responses"

    @property
    def kind(self) -> TurnKind:
        return "tool_outputs" if self.tool_outputs else "message"


@dataclass
class PlannedCall:
    name: str
    arguments: str


@dataclass
class Plan:
    """What the assistant will do: optional text, optional function calls, how long it takes, how it ends."""

    text: str | None = None
    calls: list[PlannedCall] = field(default_factory=list)
    delay: float = 0.0
    fail: str | None = None
    fail_message: str | None = None
    incomplete: str | None = None


@dataclass
class ToolCall:
    """A function call a Rule makes. String values in `arguments` are templates (see `Rule.reply`)."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)


@dataclass
class Rule:
    """One scripted behaviour.

    match: regex searched (case-insensitive) in the newest user text; None matches everything.
    on: "message" (a new user message), "tool_outputs" (tool results just came back) or None (either).
    reply: text template; ``{input}`` newest user text, ``{agent}``, ``{context}`` earlier user texts joined by
        newlines, ``{outputs}`` the tool outputs just received joined by newlines.
    calls: function calls to make (all in one response; several only if parallel_tool_calls allows).
    delay: seconds on the emulator clock before the outcome.
    fail: error code to fail with (server_error | rate_limit_exceeded | invalid_prompt).
    incomplete: end incomplete with this reason (e.g. max_output_tokens), after streaming the reply.
    times: apply at most this many times, then the rule is skipped (None: always).
    A rule with only `delay` slows down whatever the fallback would have done.
    """

    match: str | None = None
    on: TurnKind | None = None
    reply: str | None = None
    calls: list[ToolCall] = field(default_factory=list)
    delay: float = 0.0
    fail: str | None = None
    fail_message: str | None = None
    incomplete: str | None = None
    times: int | None = None
    used: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.match, re.IGNORECASE) if self.match is not None else None

    def matches(self, turn: Turn) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.on is not None and self.on != turn.kind:
            return False
        return self._pattern is None or self._pattern.search(turn.text) is not None

    @property
    def decides(self) -> bool:
        return bool(self.reply is not None or self.calls or self.fail or self.incomplete)


Fallback = Callable[[Turn], Plan]


@dataclass
class Script:
    rules: list[Rule] = field(default_factory=list)
    fallback: Fallback | None = None

    def plan(self, turn: Turn) -> Plan:
        fallback = self.fallback or default_plan
        for rule in self.rules:
            if not rule.matches(turn):
                continue
            rule.used += 1
            plan = _plan_from_rule(rule, turn) if rule.decides else fallback(turn)
            plan.delay += rule.delay
            return plan
        return fallback(turn)


def default_script() -> Script:
    """The script used for any agent without one: `default_plan`."""
    return Script(rules=[], fallback=default_plan)


_PLACEHOLDER = re.compile(r"\{(input|agent|context|outputs)\}")


def _fill(template: str, turn: Turn) -> str:
    """Replace the known ``{placeholders}``; every other brace stays as written (JSON templates work)."""
    values = {
        "input": turn.text,
        "agent": turn.agent,
        "context": "\n".join(turn.earlier),
        "outputs": "\n".join(result.output for result in turn.tool_outputs),
    }
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def _fill_args(arguments: Mapping[str, Any] | str, turn: Turn) -> str:
    if isinstance(arguments, str):
        return _fill(arguments, turn)
    filled = {key: _fill(value, turn) if isinstance(value, str) else value for key, value in arguments.items()}
    return json.dumps(filled)


def _plan_from_rule(rule: Rule, turn: Turn) -> Plan:
    calls = [PlannedCall(call.name, _fill_args(call.arguments, turn)) for call in rule.calls]
    if not turn.parallel_tool_calls:
        calls = calls[:1]
    text = _fill(rule.reply, turn) if rule.reply is not None else None
    if rule.incomplete and text is None and not calls:
        text = default_plan(turn).text
    return Plan(text=text, calls=calls, fail=rule.fail, fail_message=rule.fail_message, incomplete=rule.incomplete)


# --- the default behaviour -------------------------------------------------------------------------------------


def _sub_names(tools: Sequence[str]) -> list[str]:
    return [name[len(ASK_PREFIX) :] for name in tools if name.startswith(ASK_PREFIX) and len(name) > len(ASK_PREFIX)]


def _named_subs(text: str, subs: Sequence[str]) -> list[str]:
    if any(re.search(rf"\b{word}\b", text, re.IGNORECASE) for word in EVERYONE_WORDS):
        return list(subs)
    return [sub for sub in subs if re.search(rf"(?<!\w){re.escape(sub)}(?!\w)", text, re.IGNORECASE)]


def _task_of(text: str) -> str:
    """A sub-assistant's task: the `task` field when the text is a JSON object carrying one, else the text."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict) and isinstance(data.get("task"), str):
        return data["task"]
    return text


def default_plan(turn: Turn) -> Plan:
    """The default script (exactly what `switchboard demo` and the engine tests rely on).

    Proxy (offered ``ask_<sub>`` tools): after tool outputs, reply "Here is what the team found:" with one
    "- <sub>: <output>" line per output in call order; on a user message, call ``ask_<sub>`` for every sub named
    in the text as a word (all of them for "team" / "everyone") with ``{"task", "context"}`` (or, for a tool
    without a `task` parameter, the text in its one text parameter, see `text_params_of`), all in one response
    unless parallel_tool_calls is false (then one per response); nobody named: "You said: <text>". A generic
    messenger tool (`Messenger`: a recipient enum and a message field) counts as ``ask_<recipient>`` for each
    recipient not offered its own ``ask_`` tool, and is called with the newest user text as the message.
    Sub-assistant (no ``ask_`` tools): "<agent>: done with '<task-or-text>'", plus
    " (I remember <n> earlier requests)" when the conversation/thread has earlier user messages.
    Handoffs (offered ``transfer_to_<name>`` tools): on a user message naming one of those assistants (as a word)
    not yet transferred to since that message, call ``transfer_to_<name>`` with ``{"reason", "notes": <text>,
    "state": {k: v for each k=v in the text}}``; an assistant that just received the conversation (its only tool
    outputs are transfers) treats the user's message as new.
    """
    if turn.tool_outputs and all(r.name.startswith(TRANSFER_PREFIX) for r in turn.tool_outputs):
        turn = dataclasses.replace(turn, tool_outputs=[], outputs_since_user=[])
    handoff = _transfer_plan(turn)
    if handoff is not None:
        return handoff
    subs = list(dict.fromkeys([*_sub_names(turn.tools), *turn.messengers]))
    if not subs:
        reply = f"{turn.agent}: done with '{_task_of(turn.text)}'"
        if turn.earlier:
            reply += f" (I remember {len(turn.earlier)} earlier requests)"
        return Plan(text=reply)
    wanted = _named_subs(turn.text, subs)
    pending = [sub for sub in wanted if ASK_PREFIX + sub not in turn.called_since_user]
    if turn.tool_outputs and (turn.parallel_tool_calls or not pending):
        results = turn.outputs_since_user or turn.tool_outputs
        lines = [f"- {_strip_prefix(result.name)}: {result.output}" for result in results]
        return Plan(text="Here is what the team found:\n" + "\n".join(lines))
    if not wanted:
        return Plan(text=f"You said: {turn.text}")
    arguments = json.dumps({"task": turn.text, "context": "\n".join(turn.earlier)})
    targets = pending if turn.tool_outputs else wanted
    if not turn.parallel_tool_calls:
        targets = targets[:1]
    return Plan(calls=[_call_to(sub, turn, arguments) for sub in targets])


def _call_to(sub: str, turn: Turn, arguments: str) -> PlannedCall:
    """``ask_<sub>`` when offered, else the messenger tool that reaches `sub` with the newest user text."""
    tool = ASK_PREFIX + sub
    if tool in turn.text_params:
        return PlannedCall(tool, json.dumps({turn.text_params[tool]: turn.text}))
    if tool in turn.tools or sub not in turn.messengers:
        return PlannedCall(tool, arguments)
    return PlannedCall(turn.messengers[sub].tool, turn.messengers[sub].arguments(sub, turn.text))


def _transfer_plan(turn: Turn) -> Plan | None:
    if turn.tool_outputs:
        return None
    targets = [n[len(TRANSFER_PREFIX):] for n in turn.tools if n.startswith(TRANSFER_PREFIX)]
    named = [t for t in targets if re.search(rf"(?<!\w){re.escape(t)}(?!\w)", turn.text, re.IGNORECASE)]
    for target in named:
        if TRANSFER_PREFIX + target in turn.called_since_user:
            continue
        state = dict(STATE_PAIR.findall(turn.text))
        arguments = json.dumps({"reason": f"the user asked for {target}", "notes": turn.text, "state": state})
        return Plan(calls=[PlannedCall(TRANSFER_PREFIX + target, arguments)])
    return None


def _strip_prefix(name: str) -> str:
    return name[len(ASK_PREFIX) :] if name.startswith(ASK_PREFIX) else name


# --- loading ------------------------------------------------------------------------------------------------------

_RULE_FIELDS = {"match", "on", "reply", "calls", "delay", "fail", "fail_message", "incomplete", "times"}


def rule_from_dict(data: Mapping[Any, Any]) -> Rule:
    """A rule from its YAML/JSON form; keys are field names, or `True` for a bare YAML 1.1 `on:`."""
    data = dict(data)
    if True in data:  # YAML 1.1 reads a bare `on:` key as the boolean true
        data["on"] = data.pop(True)
    unknown = {str(key) for key in data} - _RULE_FIELDS
    if unknown:
        raise ValueError(f"unknown rule field(s): {', '.join(sorted(unknown))}")
    calls = [ToolCall(name=str(call["name"]), arguments=call.get("arguments", {})) for call in data.get("calls") or []]
    return Rule(
        match=data.get("match"),
        on=data.get("on"),
        reply=data.get("reply"),
        calls=calls,
        delay=float(data.get("delay", 0.0)),
        fail=data.get("fail"),
        fail_message=data.get("fail_message"),
        incomplete=data.get("incomplete"),
        times=data.get("times"),
    )


def script_from_dict(data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> Script:
    """A script from its YAML/JSON form: ``{"rules": [...]}`` or just the list of rules."""
    if data is None:
        return default_script()
    rules = data if isinstance(data, Sequence) else data.get("rules") or []
    return Script(rules=[rule_from_dict(rule) for rule in rules])


def scripts_from_dict(data: Mapping[str, Any]) -> dict[str, Script]:
    return {str(agent): script_from_dict(spec) for agent, spec in (data or {}).items()}


def load_scripts(path: str | Path) -> dict[str, Script]:
    """Read a YAML scripts file: a mapping of agent name to script."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of agent name to script")
    return scripts_from_dict(data)


def script_for(scripts: Mapping[str, Script], agent: str) -> Script:
    return scripts.get(agent) or scripts.get(DEFAULT_AGENT) or _DEFAULT


_DEFAULT = default_script()
