"""Hostile input at the Slack adapter: events parsed into messages, and requests to its real HTTP endpoint.

* any event (huge, empty, control characters, unusual Unicode, SQL metacharacters, wrong types) becomes either
  nothing or a sane `Inbound` that the real engine stores exactly or refuses with a reason;
* forged, replayed (older than 5 minutes), unsigned and tampered requests get 401, and signed but malformed ones
  400, with no side effect (nothing stored, no call to Slack);
* slash-command text of any kind gets an answer through the response_url, never an error.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.slack import SlackAdapter
from bot.engine import Bot, make_backend
from bot.types import Inbound, InvalidInbound
from fakes.configs import slack_settings, soak_team
from fakes.slack_api import FakeSlack
from storage.sqlite import SQLiteStore
from tests.reliability.conftest import fuzz_settings
from tests.reliability.hostile import hostile_text
from tests.reliability.loop_thread import LoopThread

FUZZ = fuzz_settings()
MAX_BODY_BYTES = 1024**2  # aiohttp's default client_max_size


@dataclass
class SlackWorld:
    loop: LoopThread
    fake: FakeSlack
    bot: Bot
    adapter: SlackAdapter
    session: aiohttp.ClientSession
    db_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.http_port}/slack/events"

    async def post(self, raw: bytes, headers: dict[str, str]) -> int:
        async with self.session.post(self.url, data=raw, headers=headers) as response:
            await response.read()
            return response.status

    def api_calls(self) -> int:
        """Calls to Slack's Web API, but bolt's one-time auth.test (it identifies the bot, it changes nothing)."""
        return sum(1 for call in self.fake.calls if call.method != "auth.test")

    def inbox_count(self) -> int:
        with sqlite3.connect(self.db_path) as db:
            return int(db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlackWorld]:
    loop = LoopThread()
    db_path = str(Path(tmp_path_factory.mktemp("hostile-slack")) / "db")

    async def start() -> SlackWorld:
        fake = await FakeSlack().start()
        fake.add_user("U0ALICE")
        cfg = soak_team("http://127.0.0.1:9/v1", db_path)  # no provider: turns never start here
        bot = Bot(cfg, SQLiteStore(db_path), make_backend(cfg))
        bot.mailbox.kick = lambda conversation: None  # type: ignore[method-assign]  # store, never run
        adapter = SlackAdapter(bot, slack_settings(fake, "http"))
        await bot.start()
        await adapter.start()
        return SlackWorld(loop, fake, bot, adapter, aiohttp.ClientSession(), db_path)

    w = loop.run(start())
    yield w

    async def stop() -> None:
        await w.session.close()
        await w.adapter.stop()
        await w.bot.stop()
        await w.fake.stop()

    loop.run(stop())
    loop.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ---- events -> Inbound --------------------------------------------------------------------------------------------

ids = st.one_of(st.none(), st.sampled_from(["C0GENERAL", "D0ALICE", "G0PRIVATE", "U0ALICE", "U0BOT", ""]),
                st.text(max_size=30))
timestamps = st.one_of(st.none(), st.sampled_from(["1700000000.000100", "0", "", "-1", "1e9", "nan"]),
                       st.text(max_size=20), st.integers(), st.floats())
odd = st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@st.composite
def slack_events(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], bool]:
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(["app_mention", "message"])),
        "user": draw(st.one_of(ids, odd)),
        "text": draw(st.one_of(hostile_text(), odd)),
        "ts": draw(timestamps),
        "channel": draw(st.one_of(ids, odd)),
    }
    for key, values in (
        ("thread_ts", timestamps),
        ("subtype", st.one_of(st.sampled_from(["bot_message", "message_changed", "file_share", "thread_broadcast"]),
                              st.text(max_size=10), odd)),
        ("channel_type", st.one_of(st.sampled_from(["im", "channel", "group", "mpim"]), st.text(max_size=5), odd)),
        ("bot_id", st.one_of(st.text(max_size=5), odd)),
        ("team", st.one_of(ids, odd)),
    ):
        if draw(st.booleans()):
            event[key] = draw(values)
    body = {"event_id": draw(st.one_of(st.none(), st.text(max_size=40), st.integers())),
            "team_id": draw(st.one_of(ids, odd))}
    return body, event, draw(st.booleans())


@FUZZ
@given(slack_events())
def test_any_slack_event_becomes_nothing_or_a_sane_stored_message(world: SlackWorld, case) -> None:
    body, event, via_mention = case

    async def run() -> None:
        inbound = await world.adapter.messages.route(body, event, world.fake.bot_user_id, via_mention=via_mention)
        if inbound is None:
            return
        assert isinstance(inbound, Inbound) and inbound.platform == "slack"
        assert inbound.text and inbound.text == inbound.text.strip()
        assert f"<@{world.fake.bot_user_id}>" not in inbound.text
        assert inbound.event_id and inbound.conversation.startswith("slack:")
        json.dumps(dict(inbound.route))
        try:
            accepted = await world.bot.accept(inbound)
        except InvalidInbound as refusal:
            assert str(refusal)  # a reason fit to show the user
            return
        stored = [m for m in await world.bot.store.pending_inbound(inbound.conversation)
                  if m.event_id == inbound.event_id]
        if not accepted.duplicate:  # (a generated event id may repeat an earlier example's)
            assert stored[0].text == inbound.text.strip() and stored[0].route == dict(inbound.route)

    world.loop.run(run())


# ---- the HTTP endpoint: forged, replayed, malformed ---------------------------------------------------------------

HEADER_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E)  # what an HTTP client can send in a header
REFUSALS = ("forged", "replayed", "from_the_future", "unsigned", "garbage_timestamp", "garbage_signature",
            "tampered")


def signed(fake: FakeSlack, raw: bytes, *, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
    import hashlib
    import hmac

    ts = str(int(time.time()) if timestamp is None else timestamp)
    key = (secret or fake.signing_secret).encode()
    digest = hmac.new(key, b"v0:" + ts.encode() + b":" + raw, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


@st.composite
def refused_requests(draw: st.DrawFn, fake: FakeSlack) -> tuple[str, bytes, dict[str, str]]:
    kind = draw(st.sampled_from(REFUSALS))
    event = {"type": "app_mention", "user": "U0ALICE", "channel": "C0GENERAL", "ts": "1700000000.000100",
             "text": f"<@{fake.bot_user_id}> " + draw(hostile_text(allow_huge=False))}
    raw = json.dumps(fake.event_body(event)).encode()
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                                                     "text/plain"]))}
    now = int(time.time())
    if kind == "forged":
        headers |= signed(fake, raw, secret=draw(st.text(min_size=1, max_size=30).filter(
            lambda s: s != fake.signing_secret and s.isascii() and s.strip())))
    elif kind == "replayed":
        headers |= signed(fake, raw, timestamp=now - draw(st.integers(min_value=301, max_value=10**9)))
    elif kind == "from_the_future":  # (a margin above 300 s: time passes before the request is checked)
        headers |= signed(fake, raw, timestamp=now + draw(st.integers(min_value=310, max_value=10**9)))
    elif kind == "unsigned":
        pass
    elif kind == "garbage_timestamp":
        headers |= signed(fake, raw)
        headers["X-Slack-Request-Timestamp"] = draw(st.text(HEADER_CHARS, max_size=20))
    elif kind == "garbage_signature":
        headers |= signed(fake, raw)
        headers["X-Slack-Signature"] = draw(st.text(HEADER_CHARS, max_size=80))
    else:  # tampered: signed, then the body changed
        headers |= signed(fake, raw)
        raw = raw.replace(b"U0ALICE", b"U0ADMIN") if draw(st.booleans()) else raw + b" "
    return kind, raw, headers


def malformed_bodies() -> st.SearchStrategy[tuple[bytes, str]]:
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                               lambda inner: st.lists(inner, max_size=3), max_leaves=5)
    return st.one_of(
        st.binary(max_size=300).map(lambda b: (b, "application/json")),
        st.binary(max_size=300).map(lambda b: (b, "application/x-www-form-urlencoded")),
        json_values.map(lambda v: (json.dumps(v).encode(), "application/json")),  # JSON, not an object
        st.text(max_size=100).map(lambda t: (("{" + t).encode("utf-8", "surrogatepass"), "application/json")),
        st.dictionaries(st.sampled_from(["type", "event", "event_id", "team_id"]), json_values, min_size=1).map(
            lambda d: (json.dumps({"type": "event_callback", **d, "event": d.get("event", 1)}).encode(),
                       "application/json")),
        st.text(max_size=60).map(lambda t: (f"payload={t}".encode(), "application/x-www-form-urlencoded")),
    )


@pytest.fixture(scope="module")
def tally() -> Iterator[dict[str, int]]:
    counts: dict[str, int] = {}
    yield counts
    print(f"\nSlack requests refused by kind: {counts}")


@FUZZ
@given(st.data())
def test_forged_replayed_and_tampered_requests_get_401_and_change_nothing(world: SlackWorld, tally, data) -> None:
    kind, raw, headers = data.draw(refused_requests(world.fake))
    before_calls, before_rows = world.api_calls(), world.inbox_count()
    status = world.loop.run(world.post(raw, headers))
    assert status == 401, (kind, status)
    assert world.api_calls() == before_calls and world.inbox_count() == before_rows
    tally[kind] = tally.get(kind, 0) + 1


@FUZZ
@given(malformed_bodies())
def test_signed_but_malformed_requests_get_400_and_change_nothing(world: SlackWorld, tally, case) -> None:
    raw, content_type = case
    before_calls, before_rows = world.api_calls(), world.inbox_count()
    status = world.loop.run(world.post(raw, {"Content-Type": content_type, **signed(world.fake, raw)}))
    assert status == 400, (raw[:80], status)
    assert world.api_calls() == before_calls and world.inbox_count() == before_rows
    tally["malformed"] = tally.get("malformed", 0) + 1


def test_a_properly_signed_event_still_gets_through(world: SlackWorld) -> None:
    event = {"type": "app_mention", "user": "U0ALICE", "channel": "C0GENERAL", "ts": "1700000001.000100",
             "text": f"<@{world.fake.bot_user_id}> hello"}
    raw = json.dumps(world.fake.event_body(event, event_id="EvCONTROL")).encode()
    before = world.inbox_count()
    status = world.loop.run(world.post(raw, {"Content-Type": "application/json", **signed(world.fake, raw)}))
    assert status == 200 and world.inbox_count() == before + 1


# ---- slash commands ---------------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=max(30, FUZZ.max_examples // 10))  # end to end over HTTP (slower)
@given(st.one_of(hostile_text(), st.sampled_from(["help", "status", "reset", "reset channel", "reset all", "audit",
                                                  "cancel", "assistants", "RESET\u00a0ALL\tconfirm"])))
def test_any_slash_command_text_gets_an_answer(world: SlackWorld, text: str) -> None:
    """(Bot.command's parsing gets the full count in test_hostile_commands.py.)"""
    from urllib.parse import urlencode

    # Slack sends UTF-8, which cannot carry a lone surrogate: such text arrives as replacement characters.
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    fields = world.fake.command_body(user="U0ALICE", channel="C0GENERAL", text=text)
    raw = urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **signed(world.fake, raw)}

    async def run() -> list[dict[str, Any]]:
        status = await world.post(raw, headers)
        if len(raw) > MAX_BODY_BYTES:  # far beyond anything Slack sends: the server refuses it unread
            assert status == 413
            return []
        assert status == 200
        return await world.fake.wait_for(lambda: world.fake.posts_to_response_url(fields["response_url"]), 20)

    posts = world.loop.run(run())
    if len(raw) > MAX_BODY_BYTES:
        return
    assert 1 <= len(posts) <= 5 and all(p["text"].strip() for p in posts)
    assert all(p["response_type"] == "ephemeral" for p in posts)
