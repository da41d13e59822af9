"""manifest.yml declares every event, scope and command the adapter uses, and nothing else."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from adapters.slack import SlackAdapter
from adapters.slack import constants as c
from adapters.slack.settings import DEFAULT_SUGGESTED_PROMPTS
from fakes.slack_api import FakeSlack
from tests.slack.conftest import settings_for
from tests.slack.fake_bot import FakeBot

ROOT = Path(__file__).resolve().parents[2]
ADAPTER_SOURCES = sorted((ROOT / "adapters" / "slack").rglob("*.py"))

#: the scope each Web API method the adapter calls needs (per Slack's method reference)
METHOD_SCOPES: dict[str, set[str]] = {
    "auth_test": set(),
    "chat_postMessage": {"chat:write"},
    "chat_update": {"chat:write"},
    "chat_delete": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "chat_startStream": {"chat:write"},
    "chat_appendStream": {"chat:write"},
    "chat_stopStream": {"chat:write"},
    "assistant_threads_setStatus": {"assistant:write"},
    "assistant_threads_setSuggestedPrompts": {"assistant:write"},
    # find_delivery reads the thread the reply went to: any kind of conversation
    "conversations_replies": {"channels:history", "groups:history", "im:history", "mpim:history"},
    "conversations_history": {"channels:history", "groups:history", "im:history", "mpim:history"},
    "users_info": {"users:read"},
    "usergroups_list": {"usergroups:read"},
}
#: the scope each bot event needs
EVENT_SCOPES: dict[str, set[str]] = {
    "app_mention": {"app_mentions:read"},
    "message.channels": {"channels:history"},
    "message.groups": {"groups:history"},
    "message.im": {"im:history"},
    "message.mpim": {"mpim:history"},
    "app_home_opened": set(),  # https://docs.slack.dev/reference/events/app_home_opened: no scope required
}
_MESSAGE_CHANNEL_TYPES = {
    "message.channels": "channel",
    "message.groups": "group",
    "message.im": "im",
    "message.mpim": "mpim",
}


def manifest() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def web_api_methods_called() -> set[str]:
    found: set[str] = set()
    for path in ADAPTER_SOURCES:
        found |= set(re.findall(r"\.(" + "|".join(METHOD_SCOPES) + r"|[a-z]+_[A-Za-z]+)\(", path.read_text()))
    return {
        m
        for m in found
        if m in METHOD_SCOPES
        or re.fullmatch(
            r"(chat|assistant_threads|conversations|users|usergroups|"
            r"auth|apps|reactions|files)_[A-Za-z]+",
            m,
        )
    }


def sample_event(name: str) -> dict[str, Any]:
    if name in _MESSAGE_CHANNEL_TYPES:
        event = {
            "type": "message",
            "channel_type": _MESSAGE_CHANNEL_TYPES[name],
            "channel": "C1",
            "user": "U1",
            "text": "hi",
            "ts": "1.1",
        }
    else:
        event = {
            "type": name,
            "channel": "C1",
            "user": "U1",
            "text": "hi",
            "ts": "1.1",
            "assistant_thread": {"channel_id": "D1", "thread_ts": "1.1"},
        }
    return {"type": "event_callback", "team_id": "T1", "event_id": "Ev1", "event": event}


def sample_command(command: str) -> dict[str, Any]:
    return {
        "command": command,
        "text": "help",
        "team_id": "T1",
        "channel_id": "C1",
        "user_id": "U1",
        "response_url": "http://127.0.0.1:1/x",
        "trigger_id": "t",
    }


def sample_shortcut(callback_id: str) -> dict[str, Any]:
    return {
        "type": "message_action",
        "callback_id": callback_id,
        "team": {"id": "T1"},
        "channel": {"id": "C1"},
        "user": {"id": "U1"},
        "message": {"ts": "1.1"},
        "response_url": "http://127.0.0.1:1/x",
        "trigger_id": "t",
    }


async def matching_listeners(adapter: SlackAdapter, body: dict[str, Any]) -> list[Any]:
    req = AsyncBoltRequest(body=json.dumps(body), mode="socket_mode")
    resp = BoltResponse(status=404)
    return [lst for lst in adapter.app._async_listeners if await lst.async_matches(req=req, resp=resp)]


async def test_events_commands_and_shortcuts_match_both_ways(fake: FakeSlack):
    m = manifest()
    adapter = SlackAdapter(FakeBot(), settings_for(fake))
    declared_events = m["settings"]["event_subscriptions"]["bot_events"]
    assert sorted(declared_events) == sorted(c.BOT_EVENTS)
    commands = [sc["command"] for sc in m["features"]["slash_commands"]]
    shortcuts = [sh["callback_id"] for sh in m["features"].get("shortcuts", [])]
    assert commands == [c.SLASH_COMMAND]
    assert shortcuts == [c.RESET_SHORTCUT_CALLBACK_ID]

    bodies = [sample_event(e) for e in declared_events]
    bodies += [sample_command(cmd) for cmd in commands] + [sample_shortcut(s) for s in shortcuts]
    used: set[int] = set()
    for body in bodies:
        matched = await matching_listeners(adapter, body)
        assert matched, f"manifest declares something no listener handles: {body}"
        used |= {id(lst) for lst in matched}
    unused = [lst for lst in adapter.app._async_listeners if id(lst) not in used]
    assert not unused, "a listener handles something manifest.yml does not declare"
    # and nothing undeclared reaches a listener
    for undeclared in ("assistant_thread_started", "reaction_added", "assistant_thread_context_changed"):
        assert not await matching_listeners(adapter, sample_event(undeclared))
    assert not await matching_listeners(adapter, sample_command("/other"))


def test_scopes_match_what_the_code_calls_and_subscribes():
    m = manifest()
    declared = set(m["oauth_config"]["scopes"]["bot"])
    methods = web_api_methods_called()
    unknown = methods - set(METHOD_SCOPES)
    assert not unknown, f"add the scope of these Web API methods to METHOD_SCOPES: {unknown}"
    needed: set[str] = set()
    for method in methods:
        needed |= METHOD_SCOPES[method]
    for event in m["settings"]["event_subscriptions"]["bot_events"]:
        needed |= EVENT_SCOPES[event]
    if m["features"].get("slash_commands") or m["features"].get("shortcuts"):
        needed.add("commands")
    assert declared == needed, f"missing: {needed - declared}, unused: {declared - needed}"
    assert set(c.BOT_SCOPES) == declared


def test_features_and_settings():
    m = manifest()
    settings = m["settings"]
    assert settings["socket_mode_enabled"] is True
    assert settings["interactivity"]["is_enabled"] is True  # the reset shortcut
    assert m["features"]["bot_user"]["display_name"]
    assert "agent_view" in m["features"] or "assistant_view" in m["features"]
    prompts = m["features"]["agent_view"]["suggested_prompts"]
    assert [(p["title"], p["message"]) for p in prompts] == list(DEFAULT_SUGGESTED_PROMPTS)
    # an agent app (agent_view) is told of its DM being opened by app_home_opened, which replaces the legacy
    # assistant_thread_started (https://docs.slack.dev/ai/migrating-to-agent-messaging/)
    assert "agent_view" in m["features"] and "assistant_view" not in m["features"]
    assert "app_home_opened" in settings["event_subscriptions"]["bot_events"]
    assert "assistant_thread_started" not in settings["event_subscriptions"]["bot_events"]
