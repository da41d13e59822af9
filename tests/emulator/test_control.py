"""The HTTP control endpoint under /_emulator/: the same powers as the Python API, over plain HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from emulator import Emulator, ManualClock


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as response:
        assert response.headers["x-request-id"].startswith("req_")
        return response.status, await response.json()


async def test_health(http: aiohttp.ClientSession, emu: Emulator) -> None:
    assert await _call(http, "GET", f"{emu.control_url}/health") == (200, {"ok": True, "base_url": emu.base_url})


async def test_arm_list_and_remove_http_faults(
    http: aiohttp.ClientSession, emu: Emulator, client: openai.AsyncOpenAI
) -> None:
    status, fault = await _call(
        http, "POST", f"{emu.control_url}/faults", {"kind": "http_error", "status": 429, "retry_after": 0.5}
    )
    assert status == 200 and fault["kind"] == "http_error" and fault["id"] >= 1
    with pytest.raises(openai.RateLimitError) as caught:
        await client.conversations.create()
    assert caught.value.response.headers["retry-after-ms"] == "500"
    _, listing = await _call(http, "GET", f"{emu.control_url}/faults")
    assert listing["active"] == [] and listing["injected"][0]["kind"] == "http_error"
    _, second = await _call(http, "POST", f"{emu.control_url}/faults", {"kind": "stay_queued", "agent": "x"})
    assert await _call(http, "DELETE", f"{emu.control_url}/faults/{second['id']}") == (200, {"removed": second["id"]})
    status, _ = await _call(http, "DELETE", f"{emu.control_url}/faults/{second['id']}")
    assert status == 404


async def test_invalid_fault_is_400(http: aiohttp.ClientSession, emu: Emulator) -> None:
    status, body = await _call(http, "POST", f"{emu.control_url}/faults", {"kind": "meteor"})
    assert status == 400 and "unknown fault kind" in body["error"]["message"]
    status, body = await _call(http, "POST", f"{emu.control_url}/faults", {"kind": "fail", "colour": "red"})
    assert status == 400


async def test_fail_by_agent_and_cancel_now_over_http(
    http: aiohttp.ClientSession, memu: Emulator, mclient: openai.AsyncOpenAI
) -> None:
    await _call(http, "POST", f"{memu.control_url}/faults", {"kind": "fail", "code": "invalid_prompt", "agent": "c"})
    failed = await mclient.responses.create(model="m", input="x", metadata={"agent": "c"})
    assert failed.error is not None and failed.error.code == "invalid_prompt"
    await _call(http, "POST", f"{memu.control_url}/faults", {"kind": "stay_queued"})
    queued = await mclient.responses.create(model="m", input="x", background=True)
    status, body = await _call(http, "POST", f"{memu.control_url}/faults", {"kind": "cancel", "target_id": queued.id})
    assert status == 200 and body == {"applied": "cancel", "target_id": queued.id}
    assert (await mclient.responses.retrieve(queued.id)).status == "cancelled"
    status, _ = await _call(http, "POST", f"{memu.control_url}/faults", {"kind": "cancel", "target_id": "resp_x"})
    assert status == 404


async def test_delete_conversation_now_over_http(
    http: aiohttp.ClientSession, emu: Emulator, client: openai.AsyncOpenAI
) -> None:
    conversation = await client.conversations.create()
    body = {"kind": "delete_conversation", "target_id": conversation.id}
    assert (await _call(http, "POST", f"{emu.control_url}/faults", body))[0] == 200
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conversation.id)


async def test_clock_advance(
    http: aiohttp.ClientSession, memu: Emulator, mclient: openai.AsyncOpenAI, clock: ManualClock
) -> None:
    start = clock.now()
    _, body = await _call(http, "GET", f"{memu.control_url}/clock")
    assert body == {"now": start, "manual": True}
    await _call(http, "PUT", f"{memu.control_url}/scripts/slow", {"rules": [{"delay": 7}]})
    created = await mclient.responses.create(model="m", input="x", background=True, metadata={"agent": "slow"})
    assert await _call(http, "POST", f"{memu.control_url}/clock/advance", {"seconds": 7}) == (
        200,
        {"now": start + 7, "manual": True},
    )
    await memu.wait_status(created.id, "completed")
    status, _ = await _call(http, "POST", f"{memu.control_url}/clock/advance", {"seconds": -1})
    assert status == 400


async def test_clock_advance_needs_a_manual_clock(http: aiohttp.ClientSession, emu: Emulator) -> None:
    status, body = await _call(http, "POST", f"{emu.control_url}/clock/advance", {"seconds": 1})
    assert status == 400 and "ManualClock" in body["error"]["message"]


async def test_log_counters_objects_and_reset(
    http: aiohttp.ClientSession, emu: Emulator, client: openai.AsyncOpenAI
) -> None:
    created = await client.responses.create(model="m", input="x", metadata={"agent": "critic"})
    _, log = await _call(http, "GET", f"{emu.control_url}/log")
    assert [(entry["method"], entry["template"], entry["agent"]) for entry in log["entries"]] == [
        ("POST", "/v1/responses", "critic")
    ]
    _, later = await _call(http, "GET", f"{emu.control_url}/log?since=1")
    assert later["entries"] == []
    _, counters = await _call(http, "GET", f"{emu.control_url}/counters")
    assert counters["requests"] == [{"method": "POST", "path": "/v1/responses", "count": 1}]
    assert counters["responses"] == {"created": 1, "completed": 1}
    _, objects = await _call(http, "GET", f"{emu.control_url}/objects")
    assert objects["responses"][0]["id"] == created.id and objects["responses"][0]["status"] == "completed"
    assert await _call(http, "POST", f"{emu.control_url}/reset") == (200, {"reset": True})
    assert emu.responses == {} and len(emu.log) == 0 and not emu.counters.requests
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)


async def test_scripts_over_http(http: aiohttp.ClientSession, emu: Emulator, client: openai.AsyncOpenAI) -> None:
    status, _ = await _call(
        http, "PUT", f"{emu.control_url}/scripts/critic", {"rules": [{"match": "hi", "reply": "HI {input}"}]}
    )
    assert status == 200
    reply = await client.responses.create(model="m", input="hi there", metadata={"agent": "critic"})
    assert reply.output_text == "HI hi there"
    await _call(http, "DELETE", f"{emu.control_url}/scripts/critic")
    reply = await client.responses.create(model="m", input="hi there", metadata={"agent": "critic"})
    assert reply.output_text == "critic: done with 'hi there'"
    status, body = await _call(http, "PUT", f"{emu.control_url}/scripts/critic", {"rules": [{"bogus": 1}]})
    assert status == 400 and "bogus" in body["error"]["message"]


async def test_random_mode_over_http(http: aiohttp.ClientSession, emu: Emulator) -> None:
    body = {"rate": 1.0, "seed": 3, "kinds": ["http_500"]}
    status, state = await _call(http, "POST", f"{emu.control_url}/faults/random", body)
    assert status == 200 and state["random"] == {"rate": 1.0, "seed": 3, "kinds": ["http_500"]}
    async with http.post(f"{emu.base_url}/responses", json={"model": "m", "input": "x"}) as response:
        assert response.status == 500
    await _call(http, "DELETE", f"{emu.control_url}/faults")
    async with http.post(f"{emu.base_url}/responses", json={"model": "m", "input": "x"}) as response:
        assert response.status == 200
    status, _ = await _call(http, "POST", f"{emu.control_url}/faults/random", {"rate": 2, "seed": 1})
    assert status == 400
