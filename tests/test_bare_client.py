"""`benchmarks.bare_client`, the floor the peers benchmark subtracts, sends the peers workload as the engine does:
the proxy's first response asks the four sub-assistants, all at once, and the proxy answers with their results."""

from __future__ import annotations

import aiohttp

from benchmarks.bare_client import TEXT, BareClient
from benchmarks.common import make_team


async def test_the_bare_client_sends_each_turn_in_six_requests_the_first_too(emu):
    team = make_team(emu.base_url, ":memory:", subs=4)
    async with aiohttp.ClientSession() as session:
        client = BareClient(session, emu.base_url, team.proxy, {sub.name: sub for sub in team.subs})
        first = await client.turn(TEXT, None)
        await emu.wait_until(lambda: len(emu.log) >= 6)  # a request is logged once its handler has returned
        first_requests = len(emu.log)
        second = await client.turn(TEXT, first["id"])
        await emu.wait_until(lambda: len(emu.log) >= 12)
    creates = [e for e in emu.log if e.method == "POST" and e.path == "/v1/responses"]
    # proxy, four sub-assistants, proxy again, and nothing else: on the first turn too (chained, no conversations)
    assert first_requests == 6 and len(creates) == len(emu.log) == 12
    texts = [part["text"] for item in second["output"] if item["type"] == "message" for part in item["content"]]
    assert second["status"] == "completed" and texts and all(f"s{i}" in texts[0] for i in range(1, 5)), texts
