"""Every fault kind, injected from Python, observed through the real SDK; plus the request log and counters."""

from __future__ import annotations

import openai
import pytest

from emulator import Emulator, ManualClock, Rule, Script, run_emulator
from tests.emulator.conftest import RETRY_AFTER


async def test_http_429_has_retry_headers_and_the_sdk_honours_them(emu: Emulator) -> None:
    emu.faults.http_error(429, method="POST", path="/v1/responses", count=2, retry_after=0.02)
    async with openai.AsyncOpenAI(base_url=emu.base_url, api_key="x", max_retries=0) as strict:
        with pytest.raises(openai.RateLimitError) as caught:
            await strict.responses.create(model="m", input="x")
    headers = caught.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("1", "20")
    assert headers["x-request-id"].startswith("req_")
    assert caught.value.code == "rate_limit_exceeded"
    async with openai.AsyncOpenAI(base_url=emu.base_url, api_key="x", max_retries=2) as patient:
        raw = await patient.responses.with_raw_response.create(model="m", input="x")
    assert raw.retries_taken == 1 and raw.http_response.status_code == 200
    assert [entry.status for entry in emu.log] == [429, 429, 200]
    assert [entry.fault for entry in emu.log] == ["http_error", "http_error", None]
    assert emu.faults.active == []


async def test_http_500_for_n_requests_matching_method_and_path_glob(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.faults.http_error(500, method="GET", path="/v1/conversations/*", count=2)
    conversation = await client.conversations.create()  # POST is not matched
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            await client.conversations.retrieve(conversation.id)
        assert caught.value.status_code == 500 and caught.value.body["type"] == "server_error"
    assert (await client.conversations.retrieve(conversation.id)).id == conversation.id
    assert emu.counters.faults["http_error"] == 2


@pytest.mark.parametrize("code", ["server_error", "rate_limit_exceeded", "invalid_prompt"])
async def test_fail_next_response_for_one_agent(client: openai.AsyncOpenAI, emu: Emulator, code: str) -> None:
    emu.faults.fail(code, agent="critic")
    other = await client.responses.create(model="m", input="x", metadata={"agent": "planner"})
    assert other.status == "completed"
    failed = await client.responses.create(model="m", input="x", metadata={"agent": "critic"})
    assert failed.status == "failed" and failed.error is not None and failed.error.code == code
    again = await client.responses.create(model="m", input="x", metadata={"agent": "critic"})
    assert again.status == "completed"
    assert emu.counters.responses["failed"] == 1


async def test_failed_stream_ends_with_response_failed(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.faults.fail("server_error", message="boom")
    stream = await client.responses.create(model="m", input="x", stream=True)
    events = [event async for event in stream]
    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "error",
        "response.failed",
    ]
    assert (events[2].code, events[2].message) == ("server_error", "boom")
    assert events[-1].response.error.message == "boom"
    assert [event.sequence_number for event in events] == [0, 1, 2, 3]


async def test_fail_after_seconds_on_the_clock(mclient: openai.AsyncOpenAI, memu: Emulator, clock: ManualClock) -> None:
    memu.faults.fail("server_error", after_seconds=30)
    created = await mclient.responses.create(model="m", input="x", background=True)
    await clock.advance(29)
    assert (await mclient.responses.retrieve(created.id)).status == "in_progress"
    await clock.advance(1)
    await memu.wait_status(created.id, "failed")


async def test_provider_cancel_after_a_delay(mclient: openai.AsyncOpenAI, memu: Emulator, clock: ManualClock) -> None:
    memu.scripts["critic"] = Script([Rule(delay=100)])
    memu.faults.cancel(agent="critic", after_seconds=10)
    created = await mclient.responses.create(model="m", input="x", background=True, metadata={"agent": "critic"})
    await clock.advance(10)
    await memu.wait_status(created.id, "cancelled")
    retrieved = await mclient.responses.retrieve(created.id)
    assert retrieved.status == "cancelled"
    assert memu.responses[created.id].cancelled_by == "provider"


async def test_provider_cancel_after_n_events_ends_the_stream(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.faults.cancel(after_events=3)
    stream = await client.responses.create(model="m", input="several words in this reply", stream=True)
    events = [event async for event in stream]
    assert [event.sequence_number for event in events] == [0, 1, 2]
    assert emu.responses[events[0].response.id].status == "cancelled"


async def test_provider_cancel_now_by_id(mclient: openai.AsyncOpenAI, memu: Emulator) -> None:
    memu.scripts["slow"] = Script([Rule(delay=100)])
    created = await mclient.responses.create(model="m", input="x", background=True, metadata={"agent": "slow"})
    memu.faults.cancel(created.id)
    assert (await mclient.responses.retrieve(created.id)).status == "cancelled"


async def test_dropped_stream_raises_connection_error_and_can_resume(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.faults.drop_stream(after_events=4, agent="critic")
    stream = await client.responses.create(
        model="m", input="a reply long enough", stream=True, background=True, metadata={"agent": "critic"}
    )
    received = []
    with pytest.raises(openai.APIConnectionError):
        async for event in stream:
            received.append(event)
    assert [event.sequence_number for event in received] == [0, 1, 2, 3]
    response_id = received[0].response.id
    await emu.wait_status(response_id, "completed")
    resumed = await client.responses.retrieve(response_id, stream=True, starting_after=received[-1].sequence_number)
    rest = [event async for event in resumed]
    assert rest[0].sequence_number == 4 and rest[-1].type == "response.completed"
    assert emu.log.filter(method="POST", template="/v1/responses")[0].fault == "drop_stream"


async def test_stay_queued_forever_until_cancelled(
    mclient: openai.AsyncOpenAI, memu: Emulator, clock: ManualClock
) -> None:
    memu.faults.stay_queued(agent="critic")
    created = await mclient.responses.create(model="m", input="x", background=True, metadata={"agent": "critic"})
    await clock.advance(3600)
    assert (await mclient.responses.retrieve(created.id)).status == "queued"
    assert (await mclient.responses.cancel(created.id)).status == "cancelled"


async def test_delete_conversation_behind_the_clients_back(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    conversation = await client.conversations.create()
    emu.faults.delete_conversation(conversation.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="m", input="x", conversation=conversation.id)
    second = await client.conversations.create()
    emu.faults.delete_conversation(agent="critic")
    ok = await client.responses.create(model="m", input="x", conversation=second.id, metadata={"agent": "planner"})
    assert ok.status == "completed"
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="m", input="x", conversation=second.id, metadata={"agent": "critic"})
    assert caught.value.param == "conversation"
    assert emu.conversations[second.id].deleted


async def test_counted_faults_wear_out_and_unlimited_ones_do_not(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    emu.faults.fail("server_error", agent="a", count=2)
    unlimited = emu.faults.fail("invalid_prompt", agent="b", count=None)
    statuses = [
        (await client.responses.create(model="m", input="x", metadata={"agent": agent})).status
        for agent in ("a", "a", "a", "b", "b")
    ]
    assert statuses == ["failed", "failed", "completed", "failed", "failed"]
    assert emu.faults.active == [unlimited]
    emu.faults.clear()
    assert (await client.responses.create(model="m", input="x", metadata={"agent": "b"})).status == "completed"


async def _soak(seed: int) -> tuple[list[str], list[tuple[str, bool]]]:
    async with run_emulator(seed=seed, retry_after=RETRY_AFTER) as emulator:
        emulator.faults.random(rate=0.4, seed=seed, kinds=["http_429", "http_500", "server_error", "cancel"])
        outcomes = []
        async with openai.AsyncOpenAI(base_url=emulator.base_url, api_key="x", max_retries=0) as sdk:
            for _ in range(30):
                try:
                    outcomes.append((await sdk.responses.create(model="m", input="x y z")).status)
                except openai.APIStatusError as error:
                    outcomes.append(str(error.status_code))
        return outcomes, [(injection.kind, injection.random) for injection in emulator.faults.injected]


async def test_random_mode_is_reproducible_and_reports_what_it_injected() -> None:
    first, injected = await _soak(seed=5)
    second, injected_again = await _soak(seed=5)
    assert first == second and injected == injected_again
    assert {"429", "500", "failed", "cancelled"} <= set(first)
    assert all(is_random for _, is_random in injected)
    assert len(injected) == sum(1 for outcome in first if outcome != "completed")
    other, _ = await _soak(seed=6)
    assert other != first


async def test_log_and_counters(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    created = await client.responses.create(model="m", input="x", metadata={"agent": "critic"})
    await client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve("resp_missing")
    assert emu.counters.requests[("POST", "/v1/responses")] == 1
    assert emu.counters.requests[("GET", "/v1/responses/{response_id}")] == 2
    assert emu.counters.statuses[404] == 1
    assert emu.counters.responses["completed"] == 1
    entry = emu.log[0]
    assert (entry.method, entry.path, entry.status, entry.agent, entry.object_id) == (
        "POST",
        "/v1/responses",
        200,
        "critic",
        created.id,
    )
    assert entry.t_start <= entry.t_end and entry.tick_start < entry.tick_end
    assert [e.agent for e in emu.log.filter(template="/v1/responses/{response_id}")] == ["critic", None]


async def test_unknown_route_is_an_openai_shaped_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.get("/nowhere", cast_to=object)
    assert caught.value.body == {
        "message": "Invalid URL (GET /v1/nowhere)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
