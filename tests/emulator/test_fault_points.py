"""Faults bound to one request (`nth`, `template`, `agent`), the precise stream breaks, the request-level kinds
(`reset`, `timeout`, `lock`, container deletion), the ending kinds (`fail`/`cancel`/`incomplete`/`gone`/`expire`
after N events), per-phase faults on submit_tool_outputs, and the report of live objects and rejected requests:
what `benchmarks/fault_matrix.py` relies on, observed through the real SDK."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from emulator import Emulator, Fault
from tests.emulator.conftest import ask_tools

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RUNS = "/v1/threads/{thread_id}/runs"
SUBMIT = "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs"


async def _stream_types(stream: openai.AsyncStream) -> tuple[list[str], bool]:
    """The event types a stream delivered, and whether it broke (connection error) instead of ending."""
    seen: list[str] = []
    try:
        async for event in stream:
            seen.append(event.type if hasattr(event, "type") else event.event)
    except openai.APIConnectionError:
        return seen, True
    return seen, False


async def test_a_stream_breaks_after_exactly_k_events_for_every_k(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    reference, broke = await _stream_types(
        await client.responses.create(model="m", input="four words of text", stream=True, background=True)
    )
    assert not broke and reference[-1] == "response.completed"
    assert emu.log[-1].events == len(reference)
    for k in range(len(reference) + 1):  # 0: before the first event; len: right after the terminal event
        emu.faults.drop_stream(k, method="POST", template="/v1/responses")
        got, broke = await _stream_types(
            await client.responses.create(model="m", input="four words of text", stream=True, background=True)
        )
        assert broke and got == reference[:k]
        entry = emu.log[-1]
        assert (entry.status, entry.fault, entry.events) == (599, "drop_stream", k)


async def test_a_run_stream_breaks_after_its_terminal_event_before_done(
    client: openai.AsyncOpenAI, emu: Emulator
) -> None:
    critic = await client.beta.assistants.create(model="m", name="critic")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    full, _ = await _stream_types(await client.beta.threads.runs.create(thread.id, assistant_id=critic.id, stream=True))
    assert full[-1] == "thread.run.completed"
    emu.faults.drop_stream(len(full), method="POST", template=RUNS, agent="critic")
    got, broke = await _stream_types(
        await client.beta.threads.runs.create(thread.id, assistant_id=critic.id, stream=True)
    )
    assert broke and got == full  # the terminal event arrived; the `[DONE]` and the end of the body did not


async def test_nth_counts_matching_requests_of_one_agent_only(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.faults.http_error(503, method="POST", template="/v1/responses", agent="critic", nth=2)
    statuses = []
    for agent in ("critic", "planner", "planner", "critic", "critic"):
        try:
            await client.responses.create(model="m", input="x", metadata={"agent": agent})
            statuses.append("ok")
        except openai.InternalServerError as error:
            statuses.append(str(error.status_code))
    assert statuses == ["ok", "ok", "ok", "503", "ok"]
    [injection] = emu.faults.injected
    assert (injection.kind, injection.agent, injection.detail["nth"]) == ("http_error", "critic", 2)


async def test_reset_has_no_effect_timeout_takes_effect_unanswered(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.faults.connection_reset(method="POST", template="/v1/conversations")
    with pytest.raises(openai.APIConnectionError):
        await client.conversations.create()
    assert emu.conversations == {}
    emu.faults.timeout(method="POST", template="/v1/responses")
    with pytest.raises(openai.APIConnectionError):
        await client.responses.create(model="m", input="x", stream=True, background=True)
    [orphan] = emu.responses.values()  # created although the client never heard of it
    await emu.wait_status(orphan.id, "completed")
    assert [(e.status, e.fault) for e in emu.log] == [(599, "reset"), (599, "timeout")]


async def test_lock_errors_carry_the_platforms_exact_texts(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    conversation = await client.conversations.create()
    emu.faults.lock(method="POST", template="/v1/responses")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="m", input="x", conversation=conversation.id)
    assert (caught.value.code, caught.value.param) == ("conversation_locked", "conversation")
    assert caught.value.body["message"] == (
        "Another process is currently operating on this conversation. Please retry in a few seconds."
    )
    critic = await client.beta.assistants.create(model="m", name="critic")
    thread = await client.beta.threads.create()
    emu.faults.lock(method="POST", template=RUNS)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.runs.create(thread.id, assistant_id=critic.id)
    holder = emu.faults.injected[-1].detail["holder"]
    assert caught.value.body["message"] == f"Thread {thread.id} already has an active run {holder}."
    emu.faults.lock(method="POST", template="/v1/threads/{thread_id}/messages")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.messages.create(thread.id, role="user", content="hi")
    holder = emu.faults.injected[-1].detail["holder"]
    assert caught.value.body["message"] == f"Can't add messages to {thread.id} while a run {holder} is active."
    assert [e.fault for e in emu.log if e.status == 400] == ["lock", "lock", "lock"]
    assert emu.rejections() == []  # injected, so not a request the client got wrong


async def test_a_lock_fault_only_counts_requests_that_can_meet_a_lock(
    client: openai.AsyncOpenAI, emu: Emulator
) -> None:
    emu.faults.lock(nth=2)
    conversation = await client.conversations.create()  # cannot meet a lock: not counted
    await client.responses.create(model="m", input="x", conversation=conversation.id)
    await client.responses.create(model="m", input="x")  # no conversation: cannot meet a lock either
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model="m", input="y", conversation=conversation.id)


async def test_deleting_the_container_a_request_names(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    conversation = await client.conversations.create()
    emu.faults.delete_conversation(method="POST", template="/v1/responses")
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="m", input="x", conversation=conversation.id)
    assert caught.value.param == "conversation" and emu.conversations[conversation.id].deleted
    critic = await client.beta.assistants.create(model="m", name="critic")
    thread = await client.beta.threads.create()
    emu.faults.delete_thread(method="POST", template=RUNS)
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.runs.create(thread.id, assistant_id=critic.id)
    assert emu.threads[thread.id].deleted


@pytest.mark.parametrize(
    ("kind", "status"), [("fail", "failed"), ("cancel", "cancelled"), ("incomplete", "incomplete")]
)
async def test_a_response_ends_right_after_n_events(
    client: openai.AsyncOpenAI, emu: Emulator, kind: str, status: str
) -> None:
    emu.faults.add(Fault(kind, method="POST", template="/v1/responses", after_events=1))
    emu.faults.drop_stream(1, method="POST", template="/v1/responses")
    got, broke = await _stream_types(
        await client.responses.create(model="m", input="several words here", stream=True, background=True)
    )
    assert broke and got == ["response.created"]
    [record] = emu.responses.values()
    assert record.status == status
    retrieved = await client.responses.retrieve(record.id)
    assert retrieved.status == status
    if kind == "fail":
        assert retrieved.error is not None and retrieved.error.code == "server_error"
    if kind == "incomplete":
        assert retrieved.incomplete_details is not None and retrieved.incomplete_details.reason == "max_output_tokens"


async def test_a_gone_response_and_run_answer_404(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.faults.gone(1, method="POST", template="/v1/responses")
    emu.faults.drop_stream(1, method="POST", template="/v1/responses")
    stream = await client.responses.create(model="m", input="x", stream=True, background=True)
    await _stream_types(stream)
    [record] = emu.responses.values()
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.retrieve(record.id)
    assert caught.value.body["message"] == f"Response with id '{record.id}' not found."
    critic = await client.beta.assistants.create(model="m", name="critic")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    emu.faults.gone(1, method="POST", template=RUNS)
    run = await client.beta.threads.runs.create(thread.id, assistant_id=critic.id)
    await emu.wait_until(lambda: emu.runs[run.id].gone)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert caught.value.body["message"] == f"No run found with id '{run.id}'."
    assert emu.threads[thread.id].active_run is None  # a vanished run does not hold the thread


async def test_incomplete_at_the_outcome_keeps_half_the_text(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.faults.incomplete(agent="critic")
    response = await client.responses.create(model="m", input="abcdefgh", metadata={"agent": "critic"})
    full = "critic: done with 'abcdefgh'"
    assert response.status == "incomplete" and response.output_text == full[: len(full) // 2]
    critic = await client.beta.assistants.create(model="m", name="critic")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "abcdefgh"}])
    emu.faults.incomplete(agent="critic", api="assistants")
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=critic.id)
    assert run.status == "incomplete" and run.incomplete_details.reason == "max_completion_tokens"  # type: ignore[union-attr]


async def _waiting_run(client: openai.AsyncOpenAI) -> tuple[str, str, list[dict[str, str]]]:
    proxy = await client.beta.assistants.create(
        model="m", name="proxy", tools=[{"type": "function", "function": {"name": "ask_critic"}}]
    )
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "ask the critic"}])
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=proxy.id)
    assert run.status == "requires_action" and run.required_action is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    return thread.id, run.id, [{"tool_call_id": call.id, "output": "fine"} for call in calls]


async def test_faults_bound_to_a_submit_apply_to_the_phase_it_starts(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    thread_id, run_id, outputs = await _waiting_run(client)
    emu.faults.fail("server_error", method="POST", template=SUBMIT)
    await client.beta.threads.runs.submit_tool_outputs(run_id=run_id, thread_id=thread_id, tool_outputs=outputs)
    await emu.wait_status(run_id, "failed")
    assert emu.runs[run_id].last_error == {
        "code": "server_error",
        "message": "The model produced an error while processing the request. You can retry your request.",
    }
    thread_id, run_id, outputs = await _waiting_run(client)
    emu.faults.stay_queued(method="POST", template=SUBMIT)
    emu.faults.drop_stream(2, method="POST", template=SUBMIT)
    stream = await client.beta.threads.runs.submit_tool_outputs(
        run_id=run_id, thread_id=thread_id, tool_outputs=outputs, stream=True
    )
    got, broke = await _stream_types(stream)
    assert broke and got == ["thread.run.step.completed", "thread.run.queued"]
    assert (await client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)).status == "queued"


async def test_a_run_expires_right_after_n_events(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    critic = await client.beta.assistants.create(model="m", name="critic")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    emu.faults.expire(method="POST", template=RUNS, after_events=2)
    got, broke = await _stream_types(
        await client.beta.threads.runs.create(thread.id, assistant_id=critic.id, stream=True)
    )
    assert not broke and got == ["thread.run.created", "thread.run.queued", "thread.run.expired"]


async def test_live_objects_and_rejections(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    conversation = await client.conversations.create()
    emu.faults.stay_queued(agent="proxy")
    stuck = await client.responses.create(
        model="m", input="hello", background=True, conversation=conversation.id, metadata={"agent": "proxy"}
    )
    assert emu.live_objects() == [stuck.id]
    await client.responses.cancel(stuck.id)
    called = await client.responses.create(
        model="m", input="ask the critic", tools=ask_tools("critic"), conversation=conversation.id
    )
    assert emu.conversations[conversation.id].agent == "assistant"  # the agent of its latest response
    with pytest.raises(openai.BadRequestError):  # the call was never answered: the real API refuses this
        await client.responses.create(model="m", input="next", conversation=conversation.id)
    [rejected] = emu.rejections()
    assert rejected.error == f"No tool output found for function call {called.output[0].call_id}."  # type: ignore[union-attr]
    assert emu.live_objects() == []
    async with aiohttp.ClientSession() as http, http.get(f"{emu.control_url}/report") as answer:
        report = await answer.json()
    assert report["live"] == [] and [entry["error"] for entry in report["rejected"]] == [rejected.error]


async def test_bound_faults_over_the_control_api(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    body = {"kind": "http_error", "status": 502, "method": "POST", "template": "/v1/conversations", "nth": 2}
    async with aiohttp.ClientSession() as http, http.post(f"{emu.control_url}/faults", json=body) as answer:
        assert answer.status == 200 and (await answer.json())["nth"] == 2
    await client.conversations.create()
    with pytest.raises(openai.InternalServerError) as caught:
        await client.conversations.create()
    assert caught.value.status_code == 502
