"""The `chat` backend end to end: threads kept in our SQLite (tool calls and outputs included), the tool-calling
habits of real servers, permanent failures, a stalled stream, context windows folded into summaries, and teams
whose assistants use different providers. The rows it shares with the other backends are in test_turns.py,
test_recovery.py, test_crash.py and tests/admin (the `backend` fixture)."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from bot.backends.chat import CANCELLED_OUTPUT, THREAD_PREFIX
from bot.backends.providers import make_client
from bot.config import Provider, parse_config
from emulator import Rule, Script, ToolCall, run_emulator
from tests.engine.harness import inbound, remote_runs, running_bot, team

CONV = "console:test:c1"
REPO = Path(__file__).resolve().parents[2]


def chat_team(emu, tmp_path, **limits):
    return team(emu.base_url, tmp_path / "db", backend="chat", **limits)


async def main_thread(bot) -> list[dict]:
    conv = await bot.store.get_conversation(CONV)
    assert conv.main_thread.startswith(THREAD_PREFIX)
    thread = await bot.store.chat_thread(conv.main_thread)
    return [m.message for m in thread.messages]


async def test_thread_lives_in_sqlite_with_its_tool_calls_and_outputs(emu, tmp_path):
    async with running_bot(chat_team(emu, tmp_path)) as (bot, surface):
        await bot.accept(inbound("ask the critic about plan A"))
        await surface.wait_for(1)
        await bot.idle()
        messages = await main_thread(bot)
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
        [call] = messages[1]["tool_calls"]
        assert call["function"]["name"] == "ask_critic" and messages[2]["tool_call_id"] == call["id"]
        assert messages[2]["content"].startswith("critic: done with") and messages[3]["content"].startswith("Here is")
        # the follow-up is sent the whole thread (the server keeps nothing), and the critic remembers
        await bot.accept(inbound("ask the critic about plan B"))
        replies = await surface.wait_for(2)
        assert "(I remember 1 earlier requests)" in replies[1][1].text
        last = remote_runs(emu, "proxy")[-1].record
        assert [m["role"] for m in last.messages][:5] == ["system", "user", "assistant", "tool", "assistant"]


async def test_arguments_that_are_not_json_are_reported_and_the_model_tries_again(emu, tmp_path):
    emu.scripts["proxy"] = Script([
        Rule(on="message", calls=[ToolCall("ask_critic", '{"task": "x", ')], times=1),
        Rule(on="tool_outputs", calls=[ToolCall("ask_critic", {"task": "{input}", "context": ""})], times=1),
    ])
    async with running_bot(chat_team(emu, tmp_path)) as (bot, surface):
        await bot.accept(inbound("review my plan"))
        [(_, reply)] = await surface.wait_for(1)
        await bot.idle()
        assert reply.kind == "answer" and "critic: done with 'Task: review my plan'" in reply.text
        messages = await main_thread(bot)
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
        assert messages[1]["tool_calls"][0]["function"]["arguments"] == "{}"  # kept parseable for the server
        assert "not valid JSON" in messages[2]["content"]
        assert [r.agent for r in remote_runs(emu) if r.agent != "proxy"] == ["critic"]


async def test_a_call_to_an_unknown_tool_is_answered_with_what_went_wrong(emu, tmp_path):
    emu.scripts["proxy"] = Script([Rule(on="message", calls=[ToolCall("ask_oracle", {"task": "x"})], times=1)])
    async with running_bot(chat_team(emu, tmp_path)) as (bot, surface):
        await bot.accept(inbound("what will happen?"))
        [(_, reply)] = await surface.wait_for(1)
        assert reply.kind == "answer"
        assert "- oracle: ERROR: there is no tool named 'ask_oracle'" in reply.text


async def test_calling_tools_wrongly_forever_is_stopped_by_the_retry_budget(emu, tmp_path):
    emu.scripts["proxy"] = Script([Rule(calls=[ToolCall("ask_oracle", {"task": "x"})])])
    async with running_bot(chat_team(emu, tmp_path, retry_budget=2)) as (bot, surface):
        await bot.accept(inbound("what will happen?"))
        [(_, reply)] = await surface.wait_for(1)
        assert reply.kind == "failure" and "kept calling its tools wrongly" in reply.text
        assert len(remote_runs(emu, "proxy")) == 3


async def test_text_beside_tool_calls_is_kept_with_them(emu, tmp_path):
    emu.scripts["proxy"] = Script([
        Rule(on="message", reply="Let me ask the critic.", calls=[ToolCall("ask_critic", {"task": "{input}"})],
             times=1),
    ])
    async with running_bot(chat_team(emu, tmp_path)) as (bot, surface):
        await bot.accept(inbound("is this plan sound?"))
        [(_, reply)] = await surface.wait_for(1)
        await bot.idle()
        assert reply.text.startswith("Here is what the team found:")
        messages = await main_thread(bot)
        assert messages[1]["content"] == "Let me ask the critic." and len(messages[1]["tool_calls"]) == 1


async def test_servers_without_usage_or_call_ids_and_with_odd_finish_reasons(emu, tmp_path):
    emu.chat_api.quirks = {"no_usage", "no_call_ids", "stop_with_calls", "name_every_chunk"}
    async with running_bot(chat_team(emu, tmp_path)) as (bot, surface):
        await bot.accept(inbound("ask the critic and the planner"))
        [(turn, reply)] = await surface.wait_for(1)
        await bot.idle()
        assert "- critic: critic: done with" in reply.text and "- planner: planner: done with" in reply.text
        calls = (await main_thread(bot))[1]["tool_calls"]
        assert [c["function"]["name"] for c in calls] == ["ask_critic", "ask_planner"]
        assert len({c["id"] for c in calls}) == 2  # ids of ours, each answered by its own tool message
        recorded = await bot.store.get_turn(turn.id)
        assert recorded.input_tokens > 0 and recorded.output_tokens > 0  # estimated, not zero


async def test_content_filter_is_a_plain_permanent_failure(emu, tmp_path):
    emu.scripts["proxy"] = Script([Rule(reply="", incomplete="content_filter")])
    async with running_bot(chat_team(emu, tmp_path)) as (bot, surface):
        await bot.accept(inbound("something it will not say"))
        [(_, reply)] = await surface.wait_for(1)
        assert reply.kind == "failure" and "content_filter" in reply.text
        assert surface.kinds("retrying") == [] and len(remote_runs(emu, "proxy")) == 1


async def test_a_refused_request_is_not_retried(emu, tmp_path):
    emu.faults.http_error(400, path="/v1/chat/completions")
    async with running_bot(chat_team(emu, tmp_path)) as (bot, surface):
        await bot.accept(inbound("hello"))
        [(_, reply)] = await surface.wait_for(1)
        assert reply.kind == "failure" and surface.kinds("retrying") == []


async def test_a_stalled_stream_is_given_up_and_sent_again(emu, tmp_path):
    emu.faults.stay_queued(agent="proxy", api="chat")
    async with running_bot(chat_team(emu, tmp_path, stream_idle_timeout=0.3)) as (bot, surface):
        await bot.accept(inbound("hello"))
        [(_, reply)] = await surface.wait_for(1)
        assert reply.text == "You said: hello"
        assert [e.reason for e in surface.kinds("retrying")] == ["run_gone"]
        assert len(remote_runs(emu, "proxy")) == 2
        assert [m["role"] for m in await main_thread(bot)] == ["user", "assistant"]  # the lost run left nothing


async def test_an_abandoned_call_is_answered_cancelled_on_the_next_turn(emu, tmp_path):
    emu.scripts["critic"] = Script([Rule(fail="invalid_prompt", times=1)])
    emu.faults.http_error(400, agent="proxy", path="/v1/chat/completions", nth=2)
    async with running_bot(chat_team(emu, tmp_path)) as (bot, surface):
        await bot.accept(inbound("ask the critic"))  # the proxy's second request (with the results) is refused
        await surface.wait_for(1)
        await bot.accept(inbound("hello again"))
        replies = await surface.wait_for(2)
        assert replies[1][1].text == "You said: hello again"
        roles = [m["role"] for m in await main_thread(bot)]
        assert roles == ["user", "assistant", "tool", "user", "assistant"]
        assert (await main_thread(bot))[2]["content"] == CANCELLED_OUTPUT


async def test_a_long_conversation_is_folded_into_a_stored_summary(emu, tmp_path):
    emu.scripts["proxy/summary"] = Script([Rule(reply="Earlier: the user listed some facts about a fox.")])
    cfg = chat_team(emu, tmp_path)
    cfg = dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, max_context_tokens=200))
    async with running_bot(cfg) as (bot, surface):
        for n in range(6):
            await bot.accept(inbound(f"fact number {n}: " + "the quick brown fox jumps over the lazy dog " * 2))
            await surface.wait_for(n + 1)
        await bot.idle()
        assert all(r.kind == "answer" for r in surface.replies())
        conv = await bot.store.get_conversation(CONV)
        thread = await bot.store.chat_thread(conv.main_thread)
        assert thread.summary == "Earlier: the user listed some facts about a fox."  # made by the agent's model
        summaries = [r for r in emu.chat_completions.values() if r.agent == "proxy/summary"]
        assert 1 <= len(summaries) < 6  # stored and reused, not made afresh for every turn
        assert "fact number 0" in summaries[0].messages[1]["content"]  # from the oldest turns
        if len(summaries) > 1:  # a later fold summarises the earlier summary with the turns since
            assert "Earlier summary:\nEarlier: the user listed" in summaries[1].messages[1]["content"]
        last = remote_runs(emu, "proxy")[-1].record
        assert thread.summary in last.messages[0]["content"] and "fact number 5" in last.messages[-1]["content"]
        assert not any("fact number 0" in (m.get("content") or "") for m in last.messages[1:])


async def test_a_server_refusing_the_length_gets_a_folded_thread_instead(emu, tmp_path):
    emu.scripts["proxy/summary"] = Script([Rule(reply="Earlier: three notes of lorem ipsum.")])
    async with running_bot(chat_team(emu, tmp_path)) as (bot, surface):
        for n in range(3):
            await bot.accept(inbound(f"note {n}: " + "lorem ipsum dolor sit amet " * 20))
            await surface.wait_for(n + 1)
        emu.chat_api.context_window = 400  # the thread no longer fits this model; we set no window of ours
        await bot.accept(inbound("and one more"))
        replies = await surface.wait_for(4)
        assert replies[3][1].kind == "answer" and replies[3][1].text == "You said: and one more"
        assert not any("context" in r.text for r in surface.replies())
        refused = [e for e in emu.log if e.status == 400 and e.error_code == "context_length_exceeded"]
        assert len(refused) == 1
        assert [r.agent for r in emu.chat_completions.values()].count("proxy/summary") == 1


async def test_each_assistant_uses_its_own_provider_and_key(tmp_path):
    async with run_emulator(api_key="key-a") as openai_like, run_emulator(api_key="key-b") as local:
        raw = {
            "backend": "responses",
            "proxy": {"instructions": "You are the proxy.", "model": "emu-1"},
            "assistants": [
                {"name": "critic", "description": "The critic.", "instructions": "Criticise.", "model": "llama3",
                 "backend": "chat", "base_url": local.base_url, "api_key_env": "LOCAL_KEY"},
                {"name": "planner", "description": "The planner.", "instructions": "Plan.", "model": "emu-1"},
            ],
            "storage": {"path": str(tmp_path / "db")},
        }
        env = {"OPENAI_BASE_URL": openai_like.base_url, "OPENAI_API_KEY": "key-a", "LOCAL_KEY": "key-b"}
        cfg = dataclasses.replace(parse_config(raw, env=env), limits=team("x", "y").limits)
        async with running_bot(cfg) as (bot, surface):
            await bot.accept(inbound("ask the critic and the planner"))
            [(_, reply)] = await surface.wait_for(1)
        assert "critic: done with" in reply.text and "planner: done with" in reply.text
        assert {r.agent for r in openai_like.responses.values()} == {"proxy", "planner"}
        assert [r.agent for r in local.chat_completions.values()] == ["critic"]
        assert [r.model for r in local.chat_completions.values()] == ["llama3"]
        assert not [e for e in (*openai_like.log, *local.log) if e.status == 401]


def test_azure_deployment_urls_get_the_api_version_and_key_header():
    provider = Provider("chat", "https://example.openai.azure.com/openai/deployments/gpt-4o", "AZURE_KEY",
                        api_version="2024-10-21")
    client = make_client(provider, "azure-secret")
    assert client.default_query.get("api-version") == "2024-10-21"
    assert client.default_headers.get("api-key") == "azure-secret"
    v1 = make_client(Provider("chat", "https://example.openai.azure.com/openai/v1", "AZURE_KEY"), "azure-secret")
    assert "api-version" not in v1.default_query and "api-key" not in v1.default_headers


@pytest.mark.parametrize("name", ["openai", "azure", "local"])
async def test_the_example_team_files_work(emu, tmp_path, name):
    """Each provider kind's team file in examples/ (README), with its endpoints pointed at the emulator."""
    raw = tomllib.loads((REPO / "examples" / f"{name}.toml").read_text(encoding="utf-8"))
    raw.setdefault("openai", {})["base_url"] = emu.base_url
    for agent in (raw["proxy"], *raw["assistants"]):
        if "base_url" in agent:
            agent["base_url"] = emu.base_url
    raw["storage"] = {"path": str(tmp_path / "db")}
    env = {"OPENAI_API_KEY": "k1", "AZURE_OPENAI_API_KEY": "k2", "LOCAL_LLM_KEY": "none"}
    cfg = dataclasses.replace(parse_config(raw, env=env), limits=team("x", "y").limits)
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("ask the researcher and the critic"))
        [(_, reply)] = await surface.wait_for(1)
    assert "researcher: done with" in reply.text and "critic: done with" in reply.text
    kinds = {"responses": emu.responses, "chat": emu.chat_completions}
    for agent in cfg.members:
        assert any(r.agent == agent.name for r in kinds[cfg.provider_of(agent).backend].values()), agent.name
