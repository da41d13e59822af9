"""Handoffs on one shared thread, on every backend: a transfer within a turn gives one answer from the assistant that
ends up active, on the same main thread, with its own instructions plus the notes, the state and who said what; the
active assistant and the state persist across turns and go back to the entry on reset."""

from __future__ import annotations

import json

import pytest

from bot.types import Actor, CommandContext, HandedOff
from tests.engine.harness import handoff_team, inbound, instructions_of, remote_runs, running_bot

HANDOFF_BACKENDS = ("responses", "chains", "assistants", "chat")
ADMIN = CommandContext(Actor("console", "root", platform_admin=True), channel="console:test",
                       conversation="console:test:c1")


@pytest.fixture(params=HANDOFF_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_transfer_within_a_turn_answers_once_from_the_new_assistant_on_the_same_thread(emu, tmp_path, backend):
    cfg = handoff_team(emu.base_url, tmp_path / "h.db", backend)
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("hello there"))
        await surface.wait_for(1)
        await bot.accept(inbound("I want the editor for page_id=42 please"))
        replies = [r for _, r in await surface.wait_for(2)]
        await bot.idle()
        store = bot.store
        conv = await store.get_conversation("console:test:c1")
        assert conv is not None
        held = await store.handoff_state(conv.key, conv.generation)
        tokens = await store.token_rows(conv.key)

    assert replies[0].text == "greeter: You said: hello there"
    # token accounting names the assistant of each run: the transfer turn has one greeter run and one editor run
    second = {r.agent: r.runs for r in tokens if r.turn_id != tokens[0].turn_id}
    assert second == {"greeter": 1, "editor": 1} and all(r.tokens.input > 0 for r in tokens), tokens
    assert replies[1].text.startswith("editor: ") and "page_id=42" in replies[1].text
    assert len(surface.deliveries) == 2
    handed = [e for _, e in surface.events if isinstance(e, HandedOff)]
    assert handed == [HandedOff("greeter", "editor", "the user asked for editor")]
    assert held.active == "editor" and dict(held.state) == {"page_id": "42"} and held.from_agent == "greeter"

    greeter, editor = remote_runs(emu, "greeter"), remote_runs(emu, "editor")
    assert len(editor) == 1 and len(greeter) == 2
    if backend != "chat":  # chat threads are ours: every request carries the whole thread instead
        assert editor[0].thread == greeter[0].thread == greeter[1].thread  # one shared main thread
    briefing = instructions_of(editor[0])
    assert briefing.startswith("You are the editor.")
    assert "The greeter assistant handed the conversation to you. Reason: the user asked for editor" in briefing
    assert "Notes from greeter: I want the editor for page_id=42 please" in briefing
    assert "Conversation state: page_id=42" in briefing
    assert '- greeter: "greeter: You said: hello there"' in briefing  # earlier replies attributed by name
    assert "transfer_to_" not in instructions_of(greeter[0])


async def test_the_active_assistant_and_state_persist_across_turns_and_a_reset_returns_to_the_entry(
    emu, tmp_path, backend
):
    cfg = handoff_team(emu.base_url, tmp_path / "h.db", backend)
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("editor please, page_id=7"))
        await surface.wait_for(1)
        await bot.accept(inbound("make the title bigger"))
        await surface.wait_for(2)
        status = await bot.command(ADMIN, "status")
        result = await bot.command(ADMIN, "reset")
        assert result.ok, result.text
        await bot.accept(inbound("hello after reset"))
        await surface.wait_for(3)
        conv = await bot.store.get_conversation("console:test:c1")
        assert conv is not None
        held = await bot.store.handoff_state(conv.key, conv.generation)

    texts = [r.text for r in surface.replies()]
    assert texts[1].startswith("editor: ")  # no new transfer: the editor still holds the conversation
    assert len(remote_runs(emu, "editor")) == 2
    second = remote_runs(emu, "editor")[1]
    assert "Conversation state: page_id=7" in instructions_of(second)
    assert "active assistant: editor" in status.text and "page_id=7" in status.text
    assert texts[2] == "greeter: You said: hello after reset"
    assert held.active is None and dict(held.state) == {}


async def test_handoff_and_delegation_combine_in_one_turn(emu, tmp_path, backend):
    cfg = handoff_team(emu.base_url, tmp_path / "h.db", backend)
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("editor: have the researcher check page_id=9"))
        (_, reply), = await surface.wait_for(1)
    assert reply.text.startswith("editor: Here is what the team found:")
    assert "- researcher: researcher: done with" in reply.text
    researcher = remote_runs(emu, "researcher")
    editor = remote_runs(emu, "editor")
    assert len(researcher) == 1 and researcher[0].thread != editor[0].thread  # the sub works on its own thread
    assert [e.kind for e in surface.kinds("delegated")] == ["delegated"]


async def test_max_handoffs_per_turn_stops_a_chain_and_the_last_holder_answers(emu, tmp_path, backend):
    cfg = handoff_team(emu.base_url, tmp_path / "h.db", backend, max_handoffs_per_turn=1)
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("editor then layout"))
        (_, reply), = await surface.wait_for(1)
        conv = await bot.store.get_conversation("console:test:c1")
        assert conv is not None
        transfers = await bot.store.transfers(conv.key, conv.generation)
    assert reply.text.startswith("editor: ")
    assert [(t.from_agent, t.to_agent) for t in transfers] == [("greeter", "editor")]
    assert remote_runs(emu, "layout") == []


async def test_a_chain_of_transfers_within_the_limit_ends_with_the_last_assistant(emu, tmp_path, backend):
    cfg = handoff_team(emu.base_url, tmp_path / "h.db", backend)
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("editor then layout, page_id=3"))
        (_, reply), = await surface.wait_for(1)
    assert reply.text.startswith("layout: ")
    assert [(e.from_agent, e.to_agent) for e in surface.kinds("handed_off")] == [
        ("greeter", "editor"), ("editor", "layout")]


async def test_a_transfer_to_an_assistant_not_listed_is_refused_and_changes_nothing(emu, tmp_path):
    from emulator import Rule, Script, ToolCall

    cfg = handoff_team(emu.base_url, tmp_path / "h.db")
    emu.scripts["greeter"] = Script([Rule(on="message", calls=[ToolCall("transfer_to_layout", {
        "reason": "x", "notes": "", "state": {}})]), Rule(on="tool_outputs", reply="outputs: {outputs}")])
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("layout now"))
        (_, reply), = await surface.wait_for(1)
        conv = await bot.store.get_conversation("console:test:c1")
        assert conv is not None
        held = await bot.store.handoff_state(conv.key, conv.generation)
    assert reply.text.startswith("greeter: outputs: ERROR: greeter cannot hand the conversation to 'layout'")
    assert held.active is None
    assert json.loads(json.dumps(surface.kinds("handed_off"))) == []


async def test_an_admin_sets_the_active_assistant_audited_and_a_user_cannot(emu, tmp_path):
    cfg = handoff_team(emu.base_url, tmp_path / "h.db")
    user = CommandContext(Actor("console", "someone"), channel="console:test", conversation="console:test:c1")
    async with running_bot(cfg) as (bot, surface):
        listed = await bot.command(user, "assistants")
        before = await bot.command(ADMIN, "handoff layout")
        await bot.accept(inbound("hello"))
        await surface.wait_for(1)
        refused = await bot.command(user, "handoff layout")
        unknown = await bot.command(ADMIN, "handoff nobody")
        done = await bot.command(ADMIN, "handoff Layout")
        in_channel = CommandContext(ADMIN.actor, channel="console:test")
        by_key = await bot.command(in_channel, "handoff editor console:test:c1")
        elsewhere = await bot.command(CommandContext(ADMIN.actor, channel="console:other"),
                                      "handoff editor console:test:c1")
        await bot.command(ADMIN, "handoff layout")
        status = await bot.command(CommandContext(ADMIN.actor, channel="console:test"), "status")
        await bot.accept(inbound("and now?"))
        await surface.wait_for(2)
        audit = [(e.actor, e.action, e.outcome, e.detail) for e in reversed(await bot.store.recent_audit())]
    assert listed.text.splitlines()[0] == "Conversations start with greeter; whoever holds one answers you."
    assert "editor: The editor. (hands over to greeter, layout)" in listed.text
    assert not before.ok and "has not started" in before.text
    assert not refused.ok and "only admins" in refused.text
    assert not unknown.ok and "'nobody' is not an assistant" in unknown.text
    assert done.ok and done.text == "layout now answers in this conversation (was greeter)."
    assert by_key.ok and "(was layout)" in by_key.text
    assert not elsewhere.ok and "No conversation 'console:test:c1' in this channel" in elsewhere.text
    assert "console:test:c1: active assistant: layout; state: (empty)" in status.text
    assert surface.replies()[1].text.startswith("layout: ")
    assert [a[:3] for a in audit] == [
        ("root", "handoff", "failed"), ("someone", "handoff", "refused"), ("root", "handoff", "failed"),
        ("root", "handoff", "done"), ("root", "handoff", "done"), ("root", "handoff", "done")]
    assert audit[3][3] == "to layout"


async def test_handoffs_persist_on_both_stores_across_a_restart(emu, store_url):
    """The engine on SQLite and on PostgreSQL: the transfer, the state and who answered survive a restart, and the
    next turn after it is the editor's."""
    cfg = handoff_team(emu.base_url, store_url)
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("editor please, page_id=11"))
        (_, first), = await surface.wait_for(1)
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("and the title?"))
        (_, second), = await surface.wait_for(1)
        conv = await bot.store.get_conversation("console:test:c1")
        assert conv is not None
        held = await bot.store.handoff_state(conv.key, conv.generation)
        authors = await bot.store.turn_agents(conv.key, conv.generation)
    assert first.text.startswith("editor: ") and second.text.startswith("editor: ")
    assert held.active == "editor" and dict(held.state) == {"page_id": "11"}
    assert sorted(authors.values()) == ["editor", "editor"]
    assert 'Conversation state: page_id=11' in instructions_of(remote_runs(emu, "editor")[-1])
