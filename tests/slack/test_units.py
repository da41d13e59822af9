"""Splitting, keys, settings, retries: the small pieces, with property tests where it matters."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.slack import constants as c
from adapters.slack.app import refuse_request
from adapters.slack.keys import Route, ThreadRegistry, conversation_key
from adapters.slack.listeners.messages import strip_mentions
from adapters.slack.render import Task, placeholder_text
from adapters.slack.retry import classify, error_name, retry_after
from adapters.slack.settings import SettingsError, SlackSettings
from adapters.slack.status import loading_messages
from bot.backoff import backoff_delay, retrying

TEXT = st.text(alphabet=st.sampled_from(list("ab c.\n`🙂é")), max_size=3000) | st.text(max_size=500)


@settings(max_examples=300, deadline=None)
@given(text=TEXT, limit=st.integers(min_value=2, max_value=400))
def test_split_never_cuts_and_respects_the_limit(text: str, limit: int):
    parts = c.MESSAGE_TEXT.split(text, limit=limit)
    assert "".join(parts) == text
    assert all(c.MESSAGE_TEXT.length(p) <= limit for p in parts)
    assert all(parts)


@settings(max_examples=200, deadline=None)
@given(text=TEXT, first=st.integers(min_value=2, max_value=600), data=st.data())
def test_split_keeps_a_shown_prefix_in_the_first_part(text: str, first: int, data: st.DataObject):
    shown = data.draw(st.integers(min_value=0, max_value=len(text)))
    if c.MESSAGE_TEXT.length(text[:shown]) > first:
        return
    parts = c.MESSAGE_TEXT.split(text, limit=50, first_limit=first, first_min=shown)
    assert "".join(parts) == text
    assert parts == [] or parts[0].startswith(text[:shown])
    assert parts == [] or c.MESSAGE_TEXT.length(parts[0]) <= first


def test_split_prefers_paragraphs_and_keeps_code_fences_whole():
    code = "```\n" + "\n".join(f"line {i}" for i in range(20)) + "\n```"
    text = "Intro paragraph.\n\n" + code + "\n\nOutro paragraph with words."
    parts = c.MESSAGE_TEXT.split(text, limit=len(code) + 25)
    assert "".join(parts) == text
    assert any(code in p for p in parts)
    assert parts[0].endswith("\n\n")


def test_emoji_count_as_two_units():
    assert c.MESSAGE_TEXT.length("🙂") == 2
    parts = c.MESSAGE_TEXT.split("🙂" * 10, limit=5)
    assert all(c.MESSAGE_TEXT.length(p) <= 5 for p in parts) and "".join(parts) == "🙂" * 10


def test_keys_and_routes():
    assert conversation_key("T1", "C1", "1.2") == "slack:T1:C1:1.2"
    assert conversation_key("T1", "D1", None) == "slack:T1:D1:dm"
    route = Route("T1", "D1", "U1", "5.5", None, "dm")
    assert Route.from_mapping(route.as_mapping()) == route
    assert route.status_thread_ts == "5.5"


async def test_registry_lookup_and_seed():
    asked: list[str] = []

    async def lookup(key: str) -> bool:
        asked.append(key)
        return key == "slack:T:C:1"

    reg = ThreadRegistry(lookup=lookup)
    reg.seed(["slack:T:C:0"])
    assert await reg.knows("slack:T:C:0") and not asked
    assert await reg.knows("slack:T:C:1") and "slack:T:C:1" in reg
    assert not await reg.knows("slack:T:C:2")


def test_strip_mentions():
    assert strip_mentions("<@U0BOT> hi <@U0BOB>", "U0BOT") == "hi <@U0BOB>"
    assert strip_mentions("<@U0BOT|switchboard>   ", "U0BOT") == ""


def test_loading_messages_are_bounded():
    assert loading_messages([]) == [c.LOADING_THINKING]
    many = loading_messages([f"sub{i}" for i in range(30)], retrying=True)
    assert len(many) == c.STATUS_LOADING_MESSAGES_MAX and many[0] == c.LOADING_RETRYING
    [line] = loading_messages([], retrying=True, why="cannot connect to the AI provider")
    assert line == "Cannot connect to the AI provider; trying again..." and len(line) <= c.LOADING_MESSAGE_MAX_CHARS


def test_placeholder_stays_below_the_update_limit():
    tasks = [Task(f"call{i}", f"sub{i}", "x" * 500) for i in range(40)]
    text = placeholder_text(tasks, "preview " * 2000)
    assert c.MESSAGE_TEXT.length(text) <= c.MESSAGE_PART_MAX_CHARS
    assert text.endswith("preview ")


def test_settings_from_env_and_clear_errors():
    s = SlackSettings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"})
    assert s.mode == "socket"
    assert "xoxb-1" not in repr(s) and "xapp-1" not in repr(s)
    h = SlackSettings.from_env(
        {
            "SLACK_BOT_TOKEN": "xoxb-1",
            "SLACK_MODE": "http",
            "SLACK_SIGNING_SECRET": "s3cr3t-value",
            "SLACK_HTTP_PORT": "8080",
        }
    )
    assert h.mode == "http" and h.http_port == 8080 and "s3cr3t-value" not in repr(h)
    with pytest.raises(SettingsError, match="SLACK_BOT_TOKEN"):
        SlackSettings.from_env({})
    with pytest.raises(SettingsError, match="SLACK_APP_TOKEN"):
        SlackSettings.from_env({"SLACK_BOT_TOKEN": "xoxb-1"})
    with pytest.raises(SettingsError, match="SLACK_SIGNING_SECRET"):
        SlackSettings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_MODE": "http"})
    with pytest.raises(SettingsError, match="SLACK_HTTP_PORT"):
        SlackSettings.from_env(
            {
                "SLACK_BOT_TOKEN": "xoxb-1",
                "SLACK_MODE": "http",
                "SLACK_SIGNING_SECRET": "s",
                "SLACK_HTTP_PORT": "eighty",
            }
        )
    with pytest.raises(SettingsError, match="xoxb"):
        SlackSettings.from_env({"SLACK_BOT_TOKEN": "xapp-wrong", "SLACK_APP_TOKEN": "xapp-1"})


# ---- retries: bot.backoff and what a Slack failure means (adapters/slack/retry.py) ----------------------------------


@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(min_value=-3, max_value=200),
    base=st.floats(min_value=0, max_value=10),
    cap=st.floats(min_value=0, max_value=60),
    retry_after=st.none() | st.floats(min_value=0, max_value=120),
)
def test_backoff_is_full_jitter_below_the_cap_and_honours_retry_after(attempt, base, cap, retry_after):
    delay = backoff_delay(attempt, base, cap, retry_after)
    ceiling = min(cap, base * 2 ** max(attempt, 0))
    assert delay >= 0
    if retry_after is not None:
        assert delay >= retry_after
    if retry_after is None or retry_after <= ceiling:
        assert delay <= ceiling + 1e-9


def test_backoff_spreads_the_retries_of_clients_that_failed_together():
    delays = {round(backoff_delay(3, 0.5, 8.0), 6) for _ in range(50)}
    assert len(delays) > 40  # full jitter, not one shared delay
    assert all(0 <= d <= 4.0 for d in delays)


async def test_retrying_stops_at_the_first_failure_that_is_not_retryable():
    calls: list[str] = []

    async def call() -> str:
        calls.append("x")
        raise (TimeoutError() if len(calls) == 1 else ValueError("bad request"))

    with pytest.raises(ValueError):
        await retrying(call, attempts=5, base=0, cap=0, retryable=lambda e: isinstance(e, TimeoutError))
    assert len(calls) == 2


async def test_retrying_gives_up_after_its_attempts():
    calls: list[int] = []

    async def call() -> None:
        calls.append(1)
        raise TimeoutError()

    with pytest.raises(TimeoutError):
        await retrying(call, attempts=3, base=0, cap=0, retryable=lambda e: True)
    assert len(calls) == 3


def _slack_error(status: int, data: dict, headers: dict | None = None) -> SlackApiError:
    response = AsyncSlackResponse(
        client=None, http_verb="POST", api_url="https://slack.com/api/chat.postMessage", req_args={},
        data=data, headers=headers or {}, status_code=status,
    )
    return SlackApiError("failed", response)


@pytest.mark.parametrize(
    ("status", "data", "expected"),
    [
        (429, {"ok": False, "error": "ratelimited"}, "transient"),
        (500, {"ok": False, "error": "internal_error"}, "transient"),
        (502, {}, "transient"),  # an edge proxy's page: no Slack error at all
        (200, {"ok": False, "error": "fatal_error"}, "transient"),
        (200, {"ok": False, "error": "not_in_channel"}, "elsewhere"),
        (200, {"ok": False, "error": "channel_not_found"}, "elsewhere"),
        (200, {"ok": False, "error": "cannot_reply_to_message"}, "elsewhere"),
        (200, {"ok": False, "error": "msg_too_long"}, "too_long"),
        (200, {"ok": False, "error": "invalid_blocks"}, "permanent"),
    ],
)
def test_slack_failures_are_classified_by_what_can_be_done_about_them(status, data, expected):
    error = _slack_error(status, data)
    assert classify(error) == expected
    assert error_name(error) == data.get("error", f"http_{status}")


def test_a_dropped_connection_is_transient_and_a_429_says_how_long_to_wait():
    assert classify(aiohttp.ServerDisconnectedError()) == "transient"
    assert classify(ConnectionResetError(104, "Connection reset by peer")) == "transient"
    assert retry_after(_slack_error(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "7"})) == 7.0
    assert retry_after(_slack_error(500, {"ok": False, "error": "internal_error"})) is None


# ---- request verification (slack_sdk's SignatureVerifier behind our 401 / 400 answers) -------------------------

SECRET = "unit-signing-secret"
EVENT_BODY = json.dumps({"type": "event_callback", "event": {"type": "app_mention"}})


def _signed(body: str, age: float, secret: str = SECRET) -> dict[str, str]:
    timestamp = str(int(time.time() - age))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature, "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("age", "answer"),
    [
        (0, None),
        (c.SIGNATURE_MAX_AGE_SECONDS - 10, None),  # late but within the window
        (-(c.SIGNATURE_MAX_AGE_SECONDS - 10), None),  # a clock ahead of ours, within the window: the verifier's abs()
        (c.SIGNATURE_MAX_AGE_SECONDS + 10, (401, "request timestamp too old or in the future (replayed?)")),
        (-(c.SIGNATURE_MAX_AGE_SECONDS + 10), (401, "request timestamp too old or in the future (replayed?)")),
    ],
)
def test_the_signature_window_is_five_minutes_either_way(age: float, answer: tuple[int, str] | None):
    verifier = SignatureVerifier(SECRET)
    assert refuse_request(EVENT_BODY.encode(), _signed(EVENT_BODY, age), verifier) == answer


def test_refusals_say_why():
    verifier = SignatureVerifier(SECRET)
    raw = EVENT_BODY.encode()
    good = _signed(EVENT_BODY, 0)
    assert refuse_request(raw, _signed(EVENT_BODY, 0, secret="another"), verifier) == (401, "invalid signature")
    assert refuse_request(raw + b" ", good, verifier) == (401, "invalid signature")  # tampered
    assert refuse_request(raw, good | {"X-Slack-Signature": "v0=é"}, verifier) == (401, "invalid signature")
    assert refuse_request(raw, good, None) == (401, "invalid signature")  # no secret: nothing is trusted
    no_timestamp = {k: v for k, v in good.items() if k != "X-Slack-Request-Timestamp"}
    malformed = (401, "missing or malformed X-Slack-Request-Timestamp")
    assert refuse_request(raw, no_timestamp, verifier) == malformed
    assert refuse_request(raw, good | {"X-Slack-Request-Timestamp": "soon"}, verifier) == malformed
    assert refuse_request(b"\xff{", good, verifier) == (400, "body is not a Slack payload")
    not_an_object = "[1, 2]"
    assert refuse_request(not_an_object.encode(), _signed(not_an_object, 0), verifier) == (
        400,
        "body is not a Slack payload",
    )


def test_http_mode_refuses_a_blank_signing_secret():
    with pytest.raises(SettingsError, match="SLACK_SIGNING_SECRET"):
        SlackSettings(bot_token="xoxb-1", mode="http", signing_secret="   ")
