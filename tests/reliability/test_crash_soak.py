"""The crash soak, small: the bot process (real engine, real Slack adapter over HTTP and Socket Mode, the console
path) is SIGKILLed a few times at random moments and restarted. The full run is `python -m benchmarks.crash_soak`."""

from __future__ import annotations

from benchmarks.crash_soak import CrashOptions, run_crash_soak


async def test_small_crash_soak_loses_and_duplicates_nothing():
    options = CrashOptions(kills=4, messages=36, seed=3, rate=0.1, conversations=6, concurrency=6, max_gap=0.8,
                           sub_seconds=0.1)
    report = await run_crash_soak(options)
    summary = "\n".join(report.lines())
    assert report.kills >= 4, summary
    assert report.sent == 36 and report.accepted == 36, summary
    assert report.lost == 0 and report.duplicated == 0, summary
    assert report.answered + report.failed_explicitly == report.accepted, summary
    assert report.unexpected_failures == 0 and report.misrouted == 0 and report.stray_messages == 0, summary
    assert report.problems == [], summary
