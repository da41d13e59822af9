"""The several-instances soak, small: 3 real processes on one real PostgreSQL, the provider's random faults armed,
one instance SIGKILLed and restarted twice while messages go to random live instances. The full run (50 kills) is
`python -m benchmarks.instances_soak`."""

from __future__ import annotations

from benchmarks.instances_soak import options, run_soak


async def test_instances_killed_and_restarted_lose_and_duplicate_nothing():
    result = await run_soak(options("--kills", "2", "--interval", "4", "--lease-seconds", "1", "--conversations",
                                    "20", "--send-rate", "6", "--settle", "60", "--provider-latency", "0.2"))
    assert result.kills == 2
    assert result.acknowledged > 20
    assert (result.lost, result.duplicated, result.never_acknowledged) == (0, 0, 0)
