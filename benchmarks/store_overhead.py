"""Engine overhead per turn on PostgreSQL versus SQLite, in one run: the performance suite's steady-state phase
(200 conversations, each with one turn always in flight) once per store, each in a fresh process.

    python -m benchmarks.store_overhead                 # 200 conversations, 2 s provider latency
    python -m benchmarks.store_overhead --count 50 --rounds 3

Overhead is a turn's time minus the time the emulator spent serving its requests (benchmarks/phases.py). The
PostgreSQL server is a throwaway local one (fakes/pg_cluster.py) with fsync on; the bot runs as one instance with
its conversation leases (the multi-instance code path), the SQLite bot as shipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from benchmarks.common import REPO
from fakes.pg_cluster import PgCluster


async def phase(params: dict[str, float], db: str | None) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if db is not None:
        env["SWITCHBOARD_BENCH_DB"] = db
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "benchmarks.phases", "steady", json.dumps(params),
                                                cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    for line in out.decode().splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]))
    raise RuntimeError(f"the steady phase printed no result (exit {proc.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="conversations with a turn in flight")
    parser.add_argument("--provider", type=float, default=2.0, help="provider latency per response, seconds")
    parser.add_argument("--rounds", type=float, default=5.0, help="measured time, in provider latencies")
    parser.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True,
                        help="PostgreSQL flushes each commit to disk (as in production)")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    args = parser.parse_args()
    params = {"count": args.count, "provider": args.provider, "rounds": args.rounds}
    cluster = PgCluster.start(fsync=args.fsync)
    try:
        results = {store: asyncio.run(phase(params, None if store == "sqlite" else cluster.create_database("bench")))
                   for store in args.stores}
    finally:
        cluster.stop()
    for store, r in results.items():
        print(f"{store:9} {args.count} conversations: overhead p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  "
              f"({r['rate']:.0f} turns/s, engine CPU {r['engine_cpu_ms_per_turn']:.2f} ms/turn)", flush=True)


if __name__ == "__main__":
    main()
