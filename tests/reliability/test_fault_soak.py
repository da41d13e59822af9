"""The fault soak, small: every entry point (Slack over signed HTTP, Slack over Socket Mode, the console's
Bot.accept) against the emulator in seeded random fault mode, on the default backend and on `chat`. The full run is
`python -m benchmarks.soak` (`--backend chat`)."""

from __future__ import annotations

import pytest

from benchmarks.soak import SoakOptions, run_soak


@pytest.mark.parametrize("backend", ["responses", "chat"])
async def test_small_fault_soak_loses_and_duplicates_nothing(backend):
    options = SoakOptions(messages=90, rate=0.3, seed=7, conversations=9, concurrency=6, emulator_process=False,
                          backend=backend)
    report = await run_soak(options)
    summary = "\n".join(report.lines())
    assert report.sent == 90 and report.accepted == 90, summary
    assert report.lost == 0 and report.duplicated == 0, summary
    assert report.answered + report.failed_explicitly == report.accepted, summary
    assert report.unexpected_failures == 0, summary  # explicit failures only for invalid_prompt or a spent budget
    assert report.misrouted == 0 and report.stray_messages == 0, summary
    assert report.faulted_share >= 0.2 and len(report.injected_by_kind) >= 5, summary
    assert report.problems == [], summary
    assert report.platform_retries_sent + report.twins_sent > 0, summary
