"""The Conversations surface: CRUD, items, appending on completion, locking, the stuck unanswered-call state."""

from __future__ import annotations

import openai
import pytest

from emulator import Emulator, ManualClock, Rule, Script
from tests.emulator.conftest import ask_tools

LOCKED = "Another process is currently operating on this conversation. Please retry in a few seconds."


async def test_create_retrieve_update_delete(client: openai.AsyncOpenAI) -> None:
    created = await client.conversations.create(metadata={"topic": "launch"})
    assert created.id.startswith("conv_") and created.object == "conversation"
    assert (await client.conversations.retrieve(created.id)).metadata == {"topic": "launch"}
    updated = await client.conversations.update(created.id, metadata={"topic": "party"})
    assert updated.metadata == {"topic": "party"}
    deleted = await client.conversations.delete(created.id)
    assert deleted.deleted is True and deleted.id == created.id
    with pytest.raises(openai.NotFoundError) as caught:
        await client.conversations.retrieve(created.id)
    assert caught.value.body["message"] == f"Conversation with id '{created.id}' not found."
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="m", input="x", conversation=created.id)


async def test_initial_items_limit_is_20(client: openai.AsyncOpenAI) -> None:
    items = [{"role": "user", "content": str(index)} for index in range(21)]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.conversations.create(items=items)
    assert caught.value.param == "items"
    conversation = await client.conversations.create(items=items[:20])
    page = await client.conversations.items.list(conversation.id, limit=100, order="asc")
    assert [item.content[0].text for item in page.data] == [str(index) for index in range(20)]


async def test_items_create_list_retrieve_delete(client: openai.AsyncOpenAI) -> None:
    conversation = await client.conversations.create()
    added = await client.conversations.items.create(
        conversation.id, items=[{"role": "user", "content": f"m{index}"} for index in range(5)]
    )
    assert len(added.data) == 5 and added.has_more is False
    first_page = await client.conversations.items.list(conversation.id, limit=2)
    assert [item.content[0].text for item in first_page.data] == ["m4", "m3"]
    assert first_page.has_more is True
    next_page = await client.conversations.items.list(conversation.id, limit=2, after=first_page.last_id)
    assert [item.content[0].text for item in next_page.data] == ["m2", "m1"]
    all_items = [item async for item in client.conversations.items.list(conversation.id, limit=2, order="asc")]
    assert [item.content[0].text for item in all_items] == ["m0", "m1", "m2", "m3", "m4"]
    one = await client.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    assert one.id == added.data[0].id
    after_delete = await client.conversations.items.delete(added.data[0].id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id
    with pytest.raises(openai.NotFoundError):
        await client.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    with pytest.raises(openai.BadRequestError):
        await client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}] * 21)


async def test_duplicate_item_is_400(client: openai.AsyncOpenAI) -> None:
    conversation = await client.conversations.create(items=[{"role": "user", "content": "hi"}])
    existing = (await client.conversations.items.list(conversation.id)).data[0]
    duplicate = {"id": existing.id, "type": "message", "role": "user", "content": "again"}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.conversations.items.create(conversation.id, items=[duplicate])
    assert caught.value.body["message"] == f"Duplicate item found with id {existing.id}."
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="m", input=[duplicate], conversation=conversation.id)
    assert caught.value.body["message"].startswith("Duplicate item found with id")


async def test_items_are_appended_only_after_completion(
    mclient: openai.AsyncOpenAI, memu: Emulator, clock: ManualClock
) -> None:
    memu.scripts["slow"] = Script([Rule(delay=2)])
    conversation = await mclient.conversations.create()
    response = await mclient.responses.create(
        model="m", input="hello", conversation=conversation.id, background=True, metadata={"agent": "slow"}
    )
    assert response.conversation is not None and response.conversation.id == conversation.id
    assert (await mclient.conversations.items.list(conversation.id)).data == []
    await clock.advance(2)
    await memu.wait_status(response.id, "completed")
    items = (await mclient.conversations.items.list(conversation.id, order="asc")).data
    assert [(item.type, item.role) for item in items] == [("message", "user"), ("message", "assistant")]


async def test_failed_or_cancelled_responses_append_nothing(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    conversation = await client.conversations.create()
    emu.faults.fail("server_error")
    failed = await client.responses.create(model="m", input="x", conversation=conversation.id)
    assert failed.status == "failed"
    assert (await client.conversations.items.list(conversation.id)).data == []


async def test_two_responses_on_one_conversation_is_locked(
    mclient: openai.AsyncOpenAI, memu: Emulator, clock: ManualClock
) -> None:
    memu.scripts["slow"] = Script([Rule(delay=5)])
    conversation = await mclient.conversations.create()
    first = await mclient.responses.create(
        model="m", input="one", conversation=conversation.id, background=True, metadata={"agent": "slow"}
    )
    with pytest.raises(openai.BadRequestError) as caught:
        await mclient.responses.create(model="m", input="two", conversation={"id": conversation.id})
    error = caught.value
    assert (error.code, error.param, error.body["message"], error.body["type"]) == (
        "conversation_locked",
        "conversation",
        LOCKED,
        "invalid_request_error",
    )
    await clock.advance(5)
    await memu.wait_status(first.id, "completed")
    second = await mclient.responses.create(model="m", input="two", conversation=conversation.id)
    assert second.status == "completed"


async def test_unanswered_function_call_sticks_the_conversation_until_answered(client: openai.AsyncOpenAI) -> None:
    tools = ask_tools("critic")
    conversation = await client.conversations.create()
    proxy = await client.responses.create(model="m", input="ask the critic", tools=tools, conversation=conversation.id)
    call_id = proxy.output[0].call_id
    for attempt in ("hello?", "anyone?"):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="m", input=attempt, tools=tools, conversation=conversation.id)
        assert caught.value.body["message"] == f"No tool output found for function call {call_id}."
    await client.conversations.items.create(
        conversation.id, items=[{"type": "function_call_output", "call_id": call_id, "output": "fine"}]
    )
    unstuck = await client.responses.create(model="m", input="thanks", tools=tools, conversation=conversation.id)
    assert unstuck.output_text == "You said: thanks"


async def test_tool_output_through_conversation(client: openai.AsyncOpenAI) -> None:
    tools = ask_tools("critic")
    conversation = await client.conversations.create()
    proxy = await client.responses.create(model="m", input="ask the critic", tools=tools, conversation=conversation.id)
    answer = await client.responses.create(
        model="m",
        input=[{"type": "function_call_output", "call_id": proxy.output[0].call_id, "output": "looks good"}],
        tools=tools,
        conversation=conversation.id,
    )
    assert answer.output_text == "Here is what the team found:\n- critic: looks good"
    kinds = [item.type for item in (await client.conversations.items.list(conversation.id, order="asc")).data]
    assert kinds == ["message", "function_call", "function_call_output", "message"]
