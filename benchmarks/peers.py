"""Switchboard against the frameworks people would pick instead, on one emulator process, in one run.

    python -m benchmarks.peers                 # full run (~6 minutes on 2 cores); writes docs/ and the README line
    python -m benchmarks.peers --quick         # fewer turns (~3 minutes); prints only
    python -m benchmarks.peers --systems switchboard,agents --no-docs

The workload: every turn asks the whole team, so the proxy calls its 4 sub-assistants at once, they answer, and
the proxy sums up (provider floor: proxy + sub-assistant + proxy latency). Systems (`benchmarks.peer_systems`):
Switchboard, the naive bot (`benchmarks.naive_bot`) and the OpenAI Agents SDK (`Agent.as_tool`, parallel tool
calls, `SQLiteSession`, tracing off; `pip install -e '.[bench]'`). Each measurement runs each system in its own
fresh process (so CPU and memory are its own), the systems taking turns in a rotating order, all against the same
emulator process. Raw results: benchmarks/results/peers.json; with docs on, the table goes into
docs/PERFORMANCE.md between its peers markers, the chart to docs/peers.png and the ratios into README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.bare_client import over_floor
from benchmarks.common import REPO, emulator_process, percentile
from benchmarks.load import conversations
from benchmarks.peer_systems import available, cpu_seconds, make
from benchmarks.performance import busy_seconds, machine, own_seconds

RESULTS = REPO / "benchmarks" / "results" / "peers.json"
DOC = REPO / "docs" / "PERFORMANCE.md"
README = REPO / "README.md"
CHART = REPO / "docs" / "peers.png"
START, END = "<!-- peers:start -->", "<!-- peers:end -->"
LINE_START, LINE_END = "<!-- peers-line:start -->", "<!-- peers-line:end -->"
TEXT = "ask the team to check the plan"
CRASH_TEXT = "slow: ask the team to check the plan"
RUN_CREATES = ("/v1/responses", "/v1/chat/completions")  # a run's request on the responses / chat backends
SETTLE = 0.2  # seconds: the emulator logs a request when its response has ended
WORKER_TIMEOUT = 600
NAMES = {"switchboard": "Switchboard", "switchboard_conversations": "Switchboard (conversations)",
         "switchboard_chat": "Switchboard (chat backend)", "agents": "OpenAI Agents SDK", "naive": "naive bot"}


# ---- the worker: one system, one measurement, in its own process ----


class Log:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.control = url.removesuffix("/v1") + "/_emulator"
        self.session = session

    async def entries(self, since: int = 0) -> list[dict[str, Any]]:
        async with self.session.get(self.control + "/log", params={"since": str(since)}) as response:
            return list((await response.json())["entries"])

    async def objects(self) -> dict[str, Any]:
        async with self.session.get(self.control + "/objects") as response:
            return dict(await response.json())


def provider_requests(entries: list[dict[str, Any]]) -> int:
    return sum(1 for entry in entries if entry["path"].startswith("/v1/"))


async def one_at_a_time(system: Any, log: Log, convs: int, turns: int) -> dict[str, Any]:
    """`convs` conversations one after another, `turns` turns each; every turn timed and its requests counted."""
    rows = []
    cursor = len(await log.entries())
    for conv in conversations(convs, "peers"):
        for index in range(turns):
            cpu, started = cpu_seconds(), time.perf_counter()
            kind = await system.turn(conv, TEXT)
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
            await asyncio.sleep(SETTLE)
            new = await log.entries(cursor)
            cursor += len(new)
            rows.append({"first": index == 0, "seconds": seconds, "cpu": cpu, "requests": provider_requests(new),
                         "kind": kind})
    return {"turns": rows}


async def concurrent(system: Any, log: Log, convs: int, turns: int, ramp: float) -> dict[str, Any]:
    """`convs` conversations at once, each sending its next message when the previous reply arrives."""
    rows: list[dict[str, Any]] = []
    cursor = len(await log.entries())

    async def conversation(index: int, conv: str) -> None:
        await asyncio.sleep(ramp * index / convs)
        for turn in range(turns):
            started = time.perf_counter()
            kind = await system.turn(conv, TEXT)
            rows.append({"first": turn == 0, "seconds": time.perf_counter() - started, "kind": kind})

    cpu, started = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(conversation(i, c) for i, c in enumerate(conversations(convs, "peers"))))
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    await asyncio.sleep(SETTLE)
    requests = provider_requests(await log.entries(cursor))
    return {"turns": rows, "wall": wall, "cpu": cpu, "requests": requests,
            "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


async def worker(params: dict[str, Any]) -> dict[str, Any]:
    system = make(params["system"], params["url"], Path(params["state_dir"]))
    async with aiohttp.ClientSession() as session:
        log = Log(params["url"], session)
        mode = params["mode"]
        if mode == "recover":
            answers = await system.recover(params["wait"])
            result: dict[str, Any] = {"answers": answers}
            if hasattr(system, "pending_in_session"):
                result["pending_in_session"] = await system.pending_in_session(params["conversation"])
            await system.stop()
            return result
        await system.start()
        try:
            if mode == "single":
                return await one_at_a_time(system, log, params["convs"], params["turns"])
            if mode == "concurrent":
                return await concurrent(system, log, params["convs"], params["turns"], params["ramp"])
            if mode == "crash":
                print("SENDING", flush=True)
                await system.turn(params["conversation"], CRASH_TEXT)  # killed before it returns
                return {"finished": True}
            raise ValueError(f"unknown mode {mode}")
        finally:
            await system.stop()


# ---- the driver ----


async def spawn(params: dict[str, Any]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.peers", "--worker", json.dumps(params), cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )


async def run_worker(params: dict[str, Any]) -> dict[str, Any]:
    proc = await spawn(params)
    out, _ = await asyncio.wait_for(proc.communicate(), WORKER_TIMEOUT)
    results = [line for line in out.decode().splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not results:
        raise RuntimeError(f"{params['system']} {params['mode']} failed with exit code {proc.returncode}")
    return dict(json.loads(results[-1].removeprefix("RESULT ")))


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def running(objects: dict[str, Any]) -> list[dict[str, Any]]:
    """The emulator's responses and chat completions (the `chat` backend's runs), with their agent and status."""
    return [*objects["responses"], *objects.get("chat_completions", [])]


async def crash_test(system: str, url: str, log: Log, wait: float) -> dict[str, Any]:
    """SIGKILL the system while its sub-assistants work on a turn, start it again on the same state, and see
    whether the turn is answered and whether sub-assistant work is done twice."""
    state_dir = tempfile.mkdtemp(prefix=f"peers-crash-{system}-")
    [conv] = conversations(1, "crash")
    params = {"system": system, "url": url, "state_dir": state_dir, "conversation": conv}
    before = {r["id"] for r in running(await log.objects())}
    proc = await spawn(params | {"mode": "crash"})
    deadline = time.perf_counter() + 60
    working: list[str] = []
    while not working:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{system}: the sub-assistants never started")
        await asyncio.sleep(0.05)
        working = [r["id"] for r in running(await log.objects()) if r["id"] not in before
                   and str(r["agent"] or "").startswith("s") and r["status"] in ("queued", "in_progress")]
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    cursor = len(await log.entries())
    restarted = time.time()
    recovered = await run_worker(params | {"mode": "recover", "wait": wait})
    await asyncio.sleep(SETTLE)
    after = [e for e in await log.entries(cursor) if e["t_start"] >= restarted]
    sub_creates = [e for e in after if e["method"] == "POST" and e["template"] in RUN_CREATES
                   and str(e.get("agent") or "").startswith("s")]
    return {"sub_runs_in_flight": len(working), "answered": bool(recovered["answers"]),
            "sub_runs_repeated": len(sub_creates), "requests_after_restart": provider_requests(after),
            "pending_in_session": recovered.get("pending_in_session")}


def summarise(single: list[dict[str, Any]], concurrent_runs: list[dict[str, Any]], floor: float) -> dict[str, Any]:
    follow = [t for run in single for t in run["turns"] if not t["first"]]
    first = [t for run in single for t in run["turns"] if t["first"]]
    many = [t for run in concurrent_runs for t in run["turns"] if not t["first"]]
    every = [t for run in concurrent_runs for t in run["turns"]]
    failed = sum(1 for t in [*follow, *first, *every] if t["kind"] != "answer")
    ms = [t["seconds"] * 1000 for t in follow]
    many_ms = [t["seconds"] * 1000 for t in many]
    return {
        "single_p50_ms": percentile(ms, 50), "single_p95_ms": percentile(ms, 95),
        "over_floor_p50_ms": percentile(ms, 50) - floor * 1000,
        "many_p50_ms": percentile(many_ms, 50), "many_p95_ms": percentile(many_ms, 95),
        "turns_per_second": sum(len(run["turns"]) for run in concurrent_runs)
        / sum(run["wall"] for run in concurrent_runs),
        "requests_first": sum(t["requests"] for t in first) / len(first),
        "requests_follow": sum(t["requests"] for t in follow) / len(follow),
        "cpu_ms_single": 1000 * sum(t["cpu"] for t in follow) / len(follow),
        "cpu_ms_many": 1000 * sum(run["cpu"] for run in concurrent_runs) / len(every),
        "rss_peak_mib": max(run["rss_peak_mib"] for run in concurrent_runs),
        "turns_single": len(follow) + len(first), "turns_many": len(every), "failed": failed,
    }


async def measure(args: argparse.Namespace, systems: list[str]) -> dict[str, Any]:
    floor = 2 * args.proxy_seconds + args.sub_seconds
    scripts: dict[str, Any] = {"proxy": [{"delay": args.proxy_seconds}]}
    scripts |= {f"s{i}": [{"match": "^slow", "delay": args.crash_seconds}, {"delay": args.sub_seconds}]
                for i in range(1, 5)}
    rounds = 1 if args.quick else args.rounds
    single: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    many: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    crash: dict[str, dict[str, Any]] = {}
    bare: list[float] = []  # seconds over the floor of the bare client's turns
    busy, own, started = busy_seconds(), own_seconds(), time.perf_counter()
    async with emulator_process(scripts) as url, aiohttp.ClientSession() as session:
        log = Log(url, session)
        order = list(systems)
        for index in range(rounds):
            for name in order:
                state_dir = tempfile.mkdtemp(prefix=f"peers-{name}-")
                base = {"system": name, "url": url, "state_dir": state_dir}
                say(f"round {index + 1}/{rounds}: {name}, one conversation at a time")
                single[name].append(await run_worker(base | {
                    "mode": "single", "convs": 2 if args.quick else 3, "turns": 3 if args.quick else 4}))
                say(f"round {index + 1}/{rounds}: {name}, {args.conversations} conversations at once")
                many[name].append(await run_worker(base | {
                    "mode": "concurrent", "convs": args.conversations, "turns": 3 if args.quick else 4,
                    "ramp": floor}))
            say(f"round {index + 1}/{rounds}: bare client (the floor this emulator allows)")
            bare += await over_floor(url, 4 if args.quick else 8, floor)
            order = order[1:] + order[:1]  # rotate: no system always runs first or last
        for name in systems:
            say(f"crash test: {name}")
            try:
                crash[name] = await crash_test(name, url, log, wait=args.crash_seconds + floor + 10)
            except (RuntimeError, TimeoutError) as exc:  # reported in the table; the measurements are kept
                say(f"crash test of {name} could not run: {exc}")
                crash[name] = {"error": str(exc), "answered": False, "sub_runs_in_flight": 0,
                               "sub_runs_repeated": 0, "requests_after_restart": 0, "pending_in_session": None}
    elapsed = time.perf_counter() - started
    foreign = max(0.0, ((busy_seconds() - busy) - (own_seconds() - own)) / elapsed)
    return {
        "machine": machine(), "systems": systems, "floor_seconds": floor, "proxy_seconds": args.proxy_seconds,
        "sub_seconds": args.sub_seconds, "crash_seconds": args.crash_seconds, "conversations": args.conversations,
        "rounds": rounds, "foreign_cpu": foreign, "elapsed_seconds": elapsed,
        "figures": {name: summarise(single[name], many[name], floor) | {"crash": crash[name]} for name in systems},
        "bare_over_floor_p50_ms": percentile([b * 1000 for b in bare], 50), "bare_turns": len(bare),
        "versions": versions(systems),
    }


def versions(systems: list[str]) -> dict[str, str]:
    import openai

    found = {"openai": openai.__version__}
    if "agents" in systems:
        from importlib.metadata import version

        found["openai-agents"] = version("openai-agents")
    return found


# ---- the report ----


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else ""


def rows(r: dict[str, Any]) -> list[list[str]]:
    f = r["figures"]
    names = r["systems"]
    n = r["conversations"]

    def crash(name: str) -> str:
        c = f[name]["crash"]
        if "error" in c:
            return f"not run ({c['error']})"
        answered = "answered" if c["answered"] else "never answered"
        repeated = f", {c['sub_runs_repeated']} sub-assistant runs repeated" if c["answered"] else ""
        return answered + repeated

    spec: list[tuple[str, Any, bool]] = [
        ("Turn time p50 / p95, one at a time", lambda x: f"{x['single_p50_ms']:,.0f} / {x['single_p95_ms']:,.0f} ms",
         True),
        ("Turn time p50 over the provider floor, one at a time", lambda x: f"{x['over_floor_p50_ms']:,.0f} ms",
         False),
        (f"Turn time p50 / p95, {n} conversations at once",
         lambda x: f"{x['many_p50_ms']:,.0f} / {x['many_p95_ms']:,.0f} ms", True),
        (f"p95 at {n} conversations / p95 one at a time", lambda x: f"{x['many_p95_ms'] / x['single_p95_ms']:.2f}",
         False),
        (f"Turns/s, {n} conversations", lambda x: f"{x['turns_per_second']:.1f}", True),
        ("Provider requests, first turn / follow-up turn",
         lambda x: f"{x['requests_first']:.1f} / {x['requests_follow']:.1f}", True),
        ("Client CPU per turn, one at a time", lambda x: f"{x['cpu_ms_single']:.1f} ms", True),
        (f"Client CPU per turn, {n} conversations", lambda x: f"{x['cpu_ms_many']:.1f} ms", True),
        (f"Peak RSS, {n} conversations", lambda x: f"{x['rss_peak_mib']:.0f} MiB", True),
        ("SIGKILL while sub-assistants work, restart", lambda x: "", False),
    ]
    keys = {0: "single_p50_ms", 2: "many_p50_ms", 4: "turns_per_second", 5: "requests_first", 6: "cpu_ms_single",
            7: "cpu_ms_many", 8: "rss_peak_mib"}
    out = []
    for index, (label, show, has_ratio) in enumerate(spec):
        cells = [crash(name) if index == len(spec) - 1 else show(f[name]) for name in names]
        ratios = []
        if has_ratio and "switchboard" in f:
            key = keys[index]
            ratios = [ratio(f["switchboard"][key], f[name][key]) for name in names
                      if not name.startswith("switchboard")]
        out.append([label, *cells, *ratios])
    return out


def table(r: dict[str, Any]) -> str:
    names = r["systems"]
    others = [name for name in names if not name.startswith("switchboard")]
    header = ["figure", *(NAMES[name] for name in names)]
    if "switchboard" in names:
        header += [f"Switchboard / {NAMES[name]}" for name in others]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows(r):
        row += [""] * (len(header) - len(row))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def notes(r: dict[str, Any]) -> str:
    m = r["machine"]
    f = r["figures"]
    lines = [
        f"- Run {m['date']}: `{r.get('command', 'python -m benchmarks.peers')}`, {m['cpu']} ({m['cores']} cores), "
        f"Python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".",
        f"- Latencies: proxy {r['proxy_seconds']:g} s per response, each sub-assistant {r['sub_seconds']:g} s; "
        f"provider floor of a turn {r['floor_seconds']:g} s. {r['rounds']} round(s), systems in rotating order; "
        f"one-at-a-time turn times are follow-up turns; at {r['conversations']} conversations every turn after "
        f"each conversation's first.",
        f"- Load: other processes on the machine used {r['foreign_cpu']:.2f} of its "
        f"{m['cores']} cores on average during the run (shared machine).",
        "- Client CPU is the process CPU time (user + system, all threads) of the system's own process; the "
        "emulator is another process.",
    ]
    if "bare_over_floor_p50_ms" in r:
        bare = r["bare_over_floor_p50_ms"]
        line = (f"- The floor this emulator allows: a bare client (`benchmarks.bare_client`: aiohttp, the same "
                f"requests, no storage, one event parsed per response) took {bare:.0f} ms over the provider floor "
                f"(p50 of {r['bare_turns']} follow-up turns in this run), the emulator's own work on the path")
        if "switchboard" in f:
            ours = f["switchboard"]["over_floor_p50_ms"]
            line += f"; Switchboard's turn time over the floor less that: {ours - bare:.0f} ms"
        lines.append(line + ".")
    for name in r["systems"]:
        c = f[name]["crash"]
        extra = ""
        if c.get("pending_in_session") is not None:
            extra = "; the user message was " + ("" if c["pending_in_session"] else "not ") + "in the session"
        lines.append(f"- Crash test, {NAMES[name]}: {c['sub_runs_in_flight']} sub-assistant runs in flight at "
                     f"SIGKILL; after restart {c['requests_after_restart']} provider requests, "
                     f"{c['sub_runs_repeated']} of them new sub-assistant runs{extra}.")
        if f[name]["failed"]:
            lines.append(f"- {NAMES[name]}: {f[name]['failed']} turns ended without an answer.")
    return "\n".join(lines)


def readme_line(r: dict[str, Any]) -> str:
    f = r["figures"]
    ours, theirs = f["switchboard"], f.get("agents")
    if theirs is None:
        return ""
    n = r["conversations"]
    chat = ""
    for name, label in (("switchboard_conversations", "with conversations"), ("switchboard_chat", "on `chat`")):
        if name in f:
            chat += f"; ours {label} {f[name]['requests_first']:.0f} / {f[name]['requests_follow']:.0f}"
    return (
        f"Against the OpenAI Agents SDK (agents as tools, parallel tool calls, `SQLiteSession`) on the same emulator "
        f"in the same run (`python -m benchmarks.peers`, {r['machine']['date']}): turn time p50 "
        f"{ours['single_p50_ms'] / theirs['single_p50_ms']:.2f}x one at a time, "
        f"{ours['turns_per_second'] / theirs['turns_per_second']:.2f}x the turns/s at {n} conversations, "
        f"{ours['cpu_ms_many'] / theirs['cpu_ms_many']:.2f}x the client CPU per turn, "
        f"{ours['rss_peak_mib'] / theirs['rss_peak_mib']:.2f}x the peak memory, "
        f"{ours['requests_first']:.0f} / {ours['requests_follow']:.0f} provider requests per first / follow-up turn "
        f"(theirs {theirs['requests_first']:.0f} / {theirs['requests_follow']:.0f}{chat}); after a SIGKILL mid-turn "
        f"Switchboard's turn was {'answered' if ours['crash']['answered'] else 'NOT answered'}, theirs "
        f"{'answered' if theirs['crash']['answered'] else 'never'}."
    )


def chart(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, names = r["figures"], r["systems"]
    n = r["conversations"]
    panels = [
        ("turn time p50, one at a time (s)", lambda x: x["single_p50_ms"] / 1000),
        (f"turn time p95, {n} conversations (s)", lambda x: x["many_p95_ms"] / 1000),
        (f"turns/s, {n} conversations", lambda x: x["turns_per_second"]),
        ("client CPU per turn (ms)", lambda x: x["cpu_ms_many"]),
        ("peak RSS (MiB)", lambda x: x["rss_peak_mib"]),
        ("provider requests, first turn", lambda x: x["requests_first"]),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    colours = {"switchboard": "#2a7ab9", "switchboard_conversations": "#0f4d7a", "switchboard_chat": "#56b4e9",
               "agents": "#e69f00", "naive": "#999999"}
    for ax, (title, value) in zip(axes.flat, panels, strict=True):
        values = [value(f[name]) for name in names]
        bars = ax.bar([NAMES[name] for name in names], values, color=[colours[name] for name in names])
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"4 sub-assistants per turn, one emulator, one run (provider floor {r['floor_seconds']:g} s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def replace_between(text: str, start: str, end: str, block: str) -> str:
    head, found, rest = text.partition(start)
    if not found:
        raise ValueError(f"marker {start} missing")
    _, _, tail = rest.partition(end)
    return head + start + "\n" + block + "\n" + end + tail


def write_docs(r: dict[str, Any]) -> None:
    block = "\n".join([table(r), "", notes(r), "", "![Switchboard and its peers](peers.png)"])
    DOC.write_text(replace_between(DOC.read_text(), START, END, block))
    line = readme_line(r)
    if line:
        README.write_text(replace_between(README.read_text(), LINE_START, LINE_END, line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="one round, fewer turns")
    parser.add_argument("--systems", help="comma-separated subset of: switchboard, switchboard_conversations, "
                                          "switchboard_chat, agents, naive")
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every measurement (quick: 1)")
    parser.add_argument("--proxy-seconds", type=float, default=0.5)
    parser.add_argument("--sub-seconds", type=float, default=1.0)
    parser.add_argument("--crash-seconds", type=float, default=4.0, help="sub-assistant latency in the crash test")
    parser.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None,
                        help="write docs/PERFORMANCE.md, docs/peers.png and README.md (default: on for a full run)")
    parser.add_argument("--report-only", action="store_true", help="no measuring: report the last saved results")
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(asyncio.run(worker(json.loads(args.worker)))), flush=True)
        os._exit(0)  # the naive bot's pool threads may still sit in a poll; nothing is left to flush
    if args.report_only:
        results = json.loads(RESULTS.read_text())
    else:
        wanted = args.systems.split(",") if args.systems else [
            "switchboard", "switchboard_conversations", "switchboard_chat", "agents", "naive"]
        missing = [name for name in wanted if name not in available()]
        if missing:
            parser.error(f"not installed: {', '.join(missing)} (pip install -e '.[bench]')")
        results = asyncio.run(measure(args, wanted))
        shown = [a for a in sys.argv[1:] if a not in ("--docs", "--no-docs")]
        results["command"] = " ".join(["python -m benchmarks.peers", *shown])
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1))
    print(table(results))
    print()
    print(notes(results))
    print()
    print(readme_line(results))
    docs = args.docs if args.docs is not None else (args.report_only or not (args.quick or args.systems))
    if docs:
        chart(results, CHART)
        write_docs(results)
        print(f"\nwrote {DOC.relative_to(REPO)}, {CHART.relative_to(REPO)} and the README line")


if __name__ == "__main__":
    main()
