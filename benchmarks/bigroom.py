"""Big rooms: 10,000 conversations in flight in one engine process, and what that costs.

    python -m benchmarks.bigroom                     # 10,000 conversations, 60 s provider latency (~4 minutes)
    python -m benchmarks.bigroom --conversations 2000 --provider-seconds 20

Runs `benchmarks.phases steady` in a fresh process (its own emulator process beside it): every conversation always
has one turn in flight, first messages spread over one provider latency. Prints peak RSS of the engine process,
accept -> thinking indicator p99, and starvation: the slowest turn's time over its own provider time (goal <= 2)
and how many turns took more than twice their provider time.
"""

from __future__ import annotations

import argparse
import json

from benchmarks.performance import run_phase

RSS_GOAL_MIB = 1024
INDICATOR_GOAL_MS = 100
STARVATION_GOAL = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--provider-seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=float, default=1.0, help="measured window, in provider latencies")
    parser.add_argument("--json", action="store_true", help="print the raw phase result too")
    args = parser.parse_args()
    r = run_phase("steady", {"count": args.conversations, "provider": args.provider_seconds, "rounds": args.rounds})
    rows = [
        ("conversations in flight (mean / min)", f"{r['in_flight_mean']:,.0f} / {r['in_flight_min']:,}", ""),
        ("turns measured", f"{r['n']:,} ({r['rate']:.0f} turns/s)", ""),
        ("peak RSS, engine process", f"{r['rss_peak_mib']:,.0f} MiB", f"<= {RSS_GOAL_MIB} MiB"),
        ("accepted -> indicator p99", f"{r['indicator']['p99']:.1f} ms", f"<= {INDICATOR_GOAL_MS} ms"),
        ("handed to accept -> indicator p99", f"{r['indicator_from_sent']['p99']:.1f} ms", "(the accept's write too)"),
        ("overhead p50 / p99", f"{r['p50']:.1f} / {r['p99']:.1f} ms", ""),
        ("slowest turn / its provider time", f"{r.get('slowest_over_provider', float('nan')):.3f}",
         f"<= {STARVATION_GOAL}"),
        ("turns over 2x their provider time", f"{r.get('over_twice_provider', 0)}", "0"),
        ("engine CPU per turn", f"{r['engine_cpu_ms_per_turn']:.2f} ms", ""),
        ("other processes' load meanwhile", f"{r['foreign_cpu']:.2f} cores of 2", ""),
    ]
    for label, value, goal in rows:
        print(f"{label:40} {value:>24}   {goal}")
    if args.json:
        print(json.dumps({k: v for k, v in r.items() if k != "rss_series"}))


if __name__ == "__main__":
    main()
