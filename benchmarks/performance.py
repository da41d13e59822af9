"""The performance suite: every figure of docs/PERFORMANCE.md, measured against the emulator, in one run.

    python -m benchmarks.performance                 # full run (~7 minutes on 2 cores); writes docs/
    python -m benchmarks.performance --quick         # smaller and shorter (~3 minutes); prints only
    python -m benchmarks.performance --phases single,fan_out --no-docs
    python -m benchmarks.performance --report-only   # table, chart and docs again from the last saved results

Each measurement runs in a fresh process (`benchmarks.phases`) with its own emulator process, one after another
(the machine has 2 cores: one for the engine, one for the emulator). The raw results go to
benchmarks/results/latest.json (a run of some `--phases`, or a `--quick` one, to partial.json, so it never
replaces the full run the docs quote); with docs on (the default for a full run) the table is written into
docs/PERFORMANCE.md between its result markers and the chart to docs/performance.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import REPO

RESULTS = REPO / "benchmarks" / "results" / "latest.json"
#: where a run of some phases, or a quick one, saves its figures: never over the full run the docs quote
PARTIAL_RESULTS = REPO / "benchmarks" / "results" / "partial.json"
DOC = REPO / "docs" / "PERFORMANCE.md"
CHART = REPO / "docs" / "performance.png"
START, END = "<!-- results:start -->", "<!-- results:end -->"
PHASES = ("single", "steady200", "burst200", "steady1000", "burst1000", "throughput", "fan_out", "compare",
          "restart", "delegated_cpu", "bigroom", "single_chat", "throughput_chat", "fan_out_chat")
# The `chat` backend (Chat Completions; threads in our SQLite, the whole thread sent per run) beside `responses`.
CHAT_PHASES = {"single_chat": "single", "throughput_chat": "throughput", "fan_out_chat": "fan_out"}
PHASE_TIMEOUT = 480  # seconds: no single phase may run longer
MAX_TOTAL_WAIT = 300.0  # seconds of waiting for a quiet machine, over the whole run


def plan(args: argparse.Namespace) -> dict[str, tuple[str, dict[str, Any]]]:
    """phase key -> (phase function in benchmarks.phases, its parameters)."""
    quick = args.quick
    rate = args.rate
    phases = {
        "single": ("single", {"provider": args.single_seconds, "follow": 15 if quick else 40,
                              "first": 5 if quick else 20}),
        "steady200": ("steady", {"count": 200, "provider": 200 / rate, "rounds": 2 if quick else 5}),
        "burst200": ("burst", {"count": 200, "provider": 200 / rate, "bursts": 1 if quick else 3}),
        "steady1000": ("steady", {"count": 1000, "provider": 1000 / rate, "rounds": 1 if quick else 2}),
        "burst1000": ("burst", {"count": 1000, "provider": 1000 / rate, "bursts": 1}),
        "throughput": ("throughput", {"count": 32, "seconds": 4.0 if quick else 10.0}),
        "fan_out": ("fan_out", {"sub_seconds": args.fan_out_seconds, "rounds": 3 if quick else 5}),
        "compare": ("compare", {"provider": args.proxy_seconds or (0.5 if quick else 1.0),
                                "sub_seconds": args.sub_seconds or (2.0 if quick else 5.0),
                                "turns": 1 if quick else 3, "naive_count": 1 if quick else 2}),
        "restart": ("restart", {"turns": 100, "sub_seconds": 10.0 if quick else 20.0}),
        "delegated_cpu": ("delegated_cpu", {"turns": 15 if quick else 30}),
        # big rooms (benchmarks.bigroom): every conversation with a turn in flight, first messages over one latency
        "bigroom": ("steady", {"count": 2000 if quick else 10_000, "provider": 20.0 if quick else 60.0,
                               "rounds": 1.0}),
    }
    for key, function in CHAT_PHASES.items():  # the same measurement, on the chat backend
        phases[key] = (function, {**phases[function][1], "backend": "chat"})
    return phases


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def own_seconds() -> float:
    """CPU seconds of this process and of its finished children (the phase processes and theirs)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def wait_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (up to `max_wait` s) until other processes use less than `threshold` of a core; returns the wait."""
    started = time.perf_counter()
    while time.perf_counter() - started < max_wait:
        busy = busy_seconds()
        time.sleep(2.0)
        if (busy_seconds() - busy) / 2.0 < threshold:
            break
    return time.perf_counter() - started


def run_phase(function: str, params: dict[str, Any], priority: int = 0) -> dict[str, Any]:
    """Run one phase in a fresh process (lowered niceness by `priority` when allowed); adds `foreign_cpu`: cores
    used by other processes meanwhile."""
    busy, own, started = busy_seconds(), own_seconds(), time.perf_counter()

    def renice() -> None:
        if priority:
            try:
                os.nice(-priority)
            except OSError:
                pass

    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.phases", function, json.dumps(params)],
        cwd=REPO, stdout=subprocess.PIPE, timeout=PHASE_TIMEOUT, check=False, text=True, preexec_fn=renice,
    )
    elapsed = time.perf_counter() - started
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not results:
        raise RuntimeError(f"phase {function} failed with exit code {proc.returncode}")
    result = dict(json.loads(results[-1].removeprefix("RESULT ")))
    foreign = ((busy_seconds() - busy) - (own_seconds() - own)) / elapsed
    result["foreign_cpu"] = max(0.0, foreign)
    result["phase_seconds"] = elapsed
    return result


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sqlite3

    import aiohttp
    import openai

    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "openai": openai.__version__, "aiohttp": aiohttp.__version__, "sqlite": sqlite3.sqlite_version,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


# ---- the table ----


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "**missed**")


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, ours, target, verdict, naive, ratio) rows for whatever phases are in `r`."""
    out: list[tuple[str, str, str, str, str, str]] = []

    def overhead(key: str, label: str, target: tuple[float, float] | None = None) -> None:
        if key not in r:
            return
        x = r[key]
        ok = None if target is None else (x["p50"] <= target[0] and x["p99"] <= target[1])
        goal = "" if target is None else f"<= {target[0]:g} / {target[1]:g} ms"
        out.append((label, f"{fmt(x['p50'], 2)} / {fmt(x['p99'], 2)} ms", goal, verdict(ok), "", ""))

    for key, on in (("single", ""), ("single_chat", ", chat backend")):
        if key in r:
            s = r[key]
            out.append((f"Overhead p50 / p99, 1 conversation (follow-up turns{on})",
                        f"{fmt(s['follow']['p50'], 2)} / {fmt(s['follow']['p99'], 2)} ms", "", "", "", ""))
            out.append((f"Overhead p50 / p99, 1 conversation (first turns{on})",
                        f"{fmt(s['first']['p50'], 2)} / {fmt(s['first']['p99'], 2)} ms", "", "", "", ""))
    overhead("steady200", "Overhead p50 / p99, 200 concurrent (steady state)", (5, 25))
    overhead("burst200", "Overhead p50 / p99, 200 concurrent (burst: all in the same instant)")
    overhead("steady1000", "Overhead p50 / p99, 1,000 concurrent (steady state)")
    overhead("burst1000", "Overhead p50 / p99, 1,000 concurrent (burst)")
    for key, on in (("fan_out", ""), ("fan_out_chat", ", chat backend")):
        for k, value in r[key]["k"].items() if key in r else ():
            if k == "1":
                continue
            ok = value["ratio"] <= 1.2 if k == "4" else None
            out.append((f"Fan-out ratio k={k} (turn time / turn time with k=1{on})", fmt(value["ratio"], 3),
                        "<= 1.2" if k == "4" else "", verdict(ok), "", ""))
    for key, on in (("throughput", ""), ("throughput_chat", ", chat backend")):
        if key in r:
            t = r[key]
            out.append((f"Throughput, zero provider latency, one process{on}",
                        f"{fmt(t['turns_per_second'], 0)} turns/s", ">= 100 turns/s",
                        verdict(t["turns_per_second"] >= 100), "", ""))
    if "steady1000" in r:
        peak = r["steady1000"]["rss_peak_mib"]
        out.append(("Peak RSS, 1,000 conversations in flight", f"{fmt(peak, 0)} MiB", "<= 200 MB",
                    verdict(peak * 1.048576 <= 200), "", ""))
    if "bigroom" in r:
        x = r["bigroom"]
        n = f"{x['conversations']:,}"
        out.append((f"Peak RSS, {n} conversations in flight", f"{fmt(x['rss_peak_mib'], 0)} MiB", "<= 1 GiB",
                    verdict(x["rss_peak_mib"] <= 1024), "", ""))
        out.append((f"Accepted -> thinking indicator requested p99, {n} conversations (steady)",
                    f"{fmt(x['indicator']['p99'], 2)} ms", "<= 100 ms", verdict(x["indicator"]["p99"] <= 100), "", ""))
    if "delegated_cpu" in r:
        x = r["delegated_cpu"]
        out.append((f"Engine CPU per delegated turn ({x['subs']} sub-assistants, streamed, zero latency)",
                    f"{fmt(x['cpu_ms_per_turn'], 1)} ms", "<= 20 ms", verdict(x["cpu_ms_per_turn"] <= 20), "", ""))
    if "steady200" in r:
        p99 = r["steady200"]["indicator"]["p99"]
        out.append(("Accepted -> thinking indicator requested p99, 200 concurrent (steady)", f"{fmt(p99, 2)} ms",
                    "<= 100 ms", verdict(p99 <= 100), "", ""))
    if "burst200" in r:
        p99 = r["burst200"]["indicator"]["p99"]
        out.append(("Accepted -> thinking indicator requested p99, 200 concurrent (burst)", f"{fmt(p99, 2)} ms",
                    "", "", "", ""))
    if "restart" in r:
        x = r["restart"]
        seconds = x["all_running_seconds"]
        out.append((f"Restart: process start -> {x['turns']} interrupted turns all running again",
                    f"{fmt(seconds, 2)} s", "<= 2 s", verdict(seconds <= 2 and not x["missing"]), "", ""))
    if "compare" in r:
        c = r["compare"]
        names = {"plain": "plain answer", "one": "one delegation", "four": "four delegations"}
        for name, x in c["scenarios"].items():
            ours, naive = x["ours"], x["naive"]
            req_ratio = ours["requests"] / naive["requests"]
            target = "<= 1/5 of naive" if name == "four" else ""
            first = fmt(x["ours_first"]["requests"], 0)
            out.append((f"Provider requests per turn, {names[name]} (our first turn: {first})",
                        fmt(ours["requests"], 1), target, verdict(req_ratio <= 0.2) if name == "four" else "",
                        fmt(naive["requests"], 1), fmt(req_ratio, 3)))
            out.append((f"Polling requests per turn, {names[name]}", fmt(ours["polls"], 1), "", "",
                        fmt(naive["polls"], 1), ""))
        for name, x in c["scenarios"].items():
            ours, naive = x["ours"], x["naive"]
            ratio = ours["seconds"] / naive["seconds"]
            target = "<= 1/3 of naive" if name == "four" else ""
            out.append((f"Turn time, {names[name]}", f"{fmt(ours['seconds'], 2)} s", target,
                        verdict(ratio <= 1 / 3) if name == "four" else "", f"{fmt(naive['seconds'], 2)} s",
                        fmt(ratio, 3)))
    return out


def table(r: dict[str, Any]) -> str:
    header = ("figure", "Switchboard", "target", "", "naive bot", "ratio")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(r)]
    return "\n".join(lines)


def settings(r: dict[str, Any]) -> str:
    """One line per phase: the latencies and sizes it ran with."""
    lines = []
    if "single" in r:
        lines.append(f"- 1 conversation: provider latency {r['single']['provider_seconds']:g} s per response, "
                     f"{r['single']['follow']['n']} follow-up turns, {r['single']['first']['n']} first turns.")
    for key in ("steady200", "steady1000", "bigroom"):
        if key in r:
            x = r[key]
            lines.append(f"- {x['conversations']} concurrent, steady state: provider latency "
                         f"{x['provider_seconds']:g} s, {x['rate']:.0f} turns/s, {x['in_flight_mean']:.0f} turns in "
                         f"flight on average (min {x['in_flight_min']}), {x['n']} turns measured; engine CPU "
                         f"{x['engine_cpu_ms_per_turn']:.1f} ms per turn.")
    for key in ("burst200", "burst1000"):
        if key in r:
            x = r[key]
            lines.append(f"- {x['conversations']} concurrent, burst: provider latency {x['provider_seconds']:g} s, "
                         f"{x['n']} turns measured (follow-up turns; all messages handed to `accept` at once).")
    if "throughput" in r:
        x = r["throughput"]
        lines.append(f"- throughput: {x['conversations']} conversations in a closed loop for {x['seconds']:.0f} s, "
                     f"zero latency: engine CPU {x['engine_cpu_ms_per_turn']:.2f} ms per turn, engine process at "
                     f"{x['engine_cpu_share'] * 100:.0f}% of a core, emulator at {x['emulator_cpu_share'] * 100:.0f}%.")
    if "fan_out" in r:
        lines.append(f"- fan-out: each sub-assistant takes {r['fan_out']['sub_seconds']:g} s, proxy 0 s; "
                     + ", ".join(f"k={k} {v['turn_p50_ms']:.0f} ms" for k, v in r["fan_out"]["k"].items()) + " (p50).")
    if "compare" in r:
        x = r["compare"]
        lines.append(f"- naive comparison: proxy {x['provider_seconds']:g} s per response, each sub-assistant "
                     f"{x['sub_seconds']:g} s; ours on follow-up turns of one conversation, the naive bot chaining "
                     "`previous_response_id` (it has no first-turn cost).")
    if "restart" in r:
        x = r["restart"]
        lines.append(f"- restart: {x['turns']} turns interrupted by SIGKILL ({x['interrupted_states']}; "
                     f"{x['active_runs']} remote runs in flight); fresh process: imports done "
                     f"{x['imported_seconds']:.2f} s, store open and turns kicked {x['started_seconds']:.2f} s, "
                     f"all turns running {x['all_running_seconds']:.2f} s (p50 {x['running_p50_seconds']:.2f} s), "
                     f"all {x['delivered']} answered {x['all_delivered_seconds']:.1f} s after start "
                     f"(the slow runs take {x['sub_seconds']:g} s).")
    if r.get("priority"):
        lines.append(f"- the phases ran with niceness -{r['priority']} (`--priority`), ahead of other processes.")
    busy = [(k, v["foreign_cpu"]) for k, v in r.items() if isinstance(v, dict) and "foreign_cpu" in v]
    if busy:
        lines.append("- other processes on the machine used, on average, this many cores while each phase ran: "
                     + ", ".join(f"{k} {cores:.2f}" for k, cores in busy) + " (of 2).")
    return "\n".join(lines)


# ---- chart ----


def chart(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    fig.suptitle("Switchboard against the emulator (2 cores: engine and emulator one process each)")

    ax = axes[0][0]
    labels, p50, p99 = [], [], []
    for key, label in (("single", "1"), ("steady200", "200\nsteady"), ("burst200", "200\nburst"),
                       ("steady1000", "1,000\nsteady"), ("burst1000", "1,000\nburst")):
        if key in r:
            x = r[key]["follow"] if key == "single" else r[key]
            labels.append(label)
            p50.append(x["p50"])
            p99.append(x["p99"])
    if labels:
        pos = range(len(labels))
        ax.bar([p - 0.2 for p in pos], p50, 0.4, label="p50")
        ax.bar([p + 0.2 for p in pos], p99, 0.4, label="p99")
        ax.set_yscale("log")
        ax.set_xticks(list(pos), labels)
        ax.axhline(5, color="green", ls="--", lw=1, label="target p50 (200 steady)")
        ax.axhline(25, color="red", ls="--", lw=1, label="target p99 (200 steady)")
        ax.set_title("Engine overhead per turn (ms, log scale)")
        ax.set_xlabel("concurrent conversations")
        ax.legend(fontsize=8)

    ax = axes[0][1]
    if "fan_out" in r:
        ks = [int(k) for k in r["fan_out"]["k"]]
        ax.plot(ks, [v["ratio"] for v in r["fan_out"]["k"].values()], "o-", label="Switchboard (parallel)")
        ax.plot(ks, ks, ":", color="gray", label="one after another (k x)")
        ax.axhline(1.2, color="red", ls="--", lw=1, label="target at k=4")
        ax.set_ylim(0.9, max(ks) + 0.5)
        ax.set_xticks(ks)
        ax.set_title(f"Fan-out: turn time / turn time with k=1 (subs {r['fan_out']['sub_seconds']:g} s each)")
        ax.set_xlabel("sub-assistants asked at once (k)")
        ax.legend(fontsize=8)

    for ax, field, title, unit in ((axes[0][2], "seconds", "Turn time, ours vs naive", "s"),
                                    (axes[1][0], "requests", "Provider requests per turn, ours vs naive", "")):
        if "compare" not in r:
            continue
        sc = r["compare"]["scenarios"]
        names = list(sc)
        pos = range(len(names))
        ours = [sc[n]["ours"][field] for n in names]
        naive = [sc[n]["naive"][field] for n in names]
        ax.bar([p - 0.2 for p in pos], ours, 0.4, label="Switchboard")
        ax.bar([p + 0.2 for p in pos], naive, 0.4, label="naive (sequential, polls every 0.5 s)")
        for p, a, b in zip(pos, ours, naive, strict=True):
            ax.annotate(f"{a / b:.2f}x", (p - 0.2, a), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(pos), [{"plain": "plain", "one": "1 delegation", "four": "4 delegations"}[n] for n in names])
        ax.set_title(f"{title} (proxy {r['compare']['provider_seconds']:g} s, subs {r['compare']['sub_seconds']:g} s)")
        if unit:
            ax.set_ylabel(unit)
        ax.legend(fontsize=8)

    ax = axes[1][1]
    for key, label in (("steady200", "200 steady"), ("burst200", "200 burst")):
        if key in r:
            ind = r[key]["indicator"]
            ax.bar([label], [ind["p99"]], label=f"{label}: p99 {ind['p99']:.1f} ms (p50 {ind['p50']:.1f})")
    if "steady200" in r or "burst200" in r:
        ax.axhline(100, color="red", ls="--", lw=1, label="target p99")
        ax.set_yscale("log")
        ax.set_title("Accepted -> thinking indicator requested, p99 (ms, log scale)")
        ax.legend(fontsize=8)

    ax = axes[1][2]
    if "steady1000" in r:
        series = r["steady1000"]["rss_series"]
        ax.plot([t for t, _ in series], [m for _, m in series], label="1,000 in flight (steady)")
        ax.axhline(200 / 1.048576, color="red", ls="--", lw=1, label="target 200 MB")
        ax.set_ylim(0, 220)
        ax.set_xlabel("seconds")
        ax.set_ylabel("MiB")
        title = "Engine process RSS"
        if "restart" in r:
            title += f"; restart: all running in {r['restart']['all_running_seconds']:.2f} s"
        ax.set_title(title)
        ax.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_doc(r: dict[str, Any], command: str) -> None:
    m = r["machine"]
    block = "\n".join([
        START,
        f"Last full run: {m['date']}, `{command}`, {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), "
        f"{m['os']}, Python {m['python']}, openai {m['openai']}, aiohttp {m['aiohttp']}, "
        f"SQLite {m.get('sqlite', '?')}.",
        "",
        table(r),
        "",
        settings(r),
        "",
        "![performance chart](performance.png)",
        END,
    ])
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(head + block + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer turns and shorter latencies")
    parser.add_argument("--phases", help="comma-separated subset of: " + ", ".join(PHASES))
    parser.add_argument("--rate", type=float, default=100.0,
                        help="turns/s offered in the steady-state runs: provider latency = conversations / rate")
    parser.add_argument("--single-seconds", type=float, default=0.5, help="provider latency, 1-conversation run")
    parser.add_argument("--fan-out-seconds", type=float, default=0.5, help="each sub-assistant's latency (fan-out)")
    parser.add_argument("--proxy-seconds", type=float, help="proxy latency per response, vs naive (1; quick: 0.5)")
    parser.add_argument("--sub-seconds", type=float, help="sub-assistant latency, vs naive (5; quick: 2)")
    parser.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None,
                        help="write docs/PERFORMANCE.md and docs/performance.png (default: on for a full run)")
    parser.add_argument("--wait-quiet", type=float, default=60.0,
                        help="before each phase, wait up to this many seconds (300 in all) for other processes to go"
                             " quiet")
    parser.add_argument("--priority", type=int, default=0,
                        help="run the phases this much less nice than other processes (needs root or CAP_SYS_NICE),"
                             " so a busy neighbour on a shared machine moves the figures less")
    parser.add_argument("--report-only", action="store_true", help="no measuring: report the last saved results")
    args = parser.parse_args()
    # what reproduces the figures: the measuring flags, not the reporting ones
    shown = [a for a in sys.argv[1:] if a not in ("--docs", "--no-docs", "--report-only")]
    command = "python -m benchmarks.performance " + " ".join(shown)
    if args.report_only:
        results = json.loads(RESULTS.read_text())
        command = results.get("command", command).replace(" --no-docs", "").replace(" --docs", "")
    else:
        phases = plan(args)
        wanted = args.phases.split(",") if args.phases else list(phases)
        results = {"machine": machine(), "command": command.strip(), "priority": args.priority}
        saved = PARTIAL_RESULTS if args.phases or args.quick else RESULTS
        saved.parent.mkdir(exist_ok=True)
        waited_total = 0.0
        for key in wanted:
            function, params = phases[key]
            started = time.perf_counter()
            waited = wait_quiet(min(args.wait_quiet, max(0.0, MAX_TOTAL_WAIT - waited_total)))
            waited_total += waited
            print(f"== {key}: {function} {json.dumps(params)}" + (f" (waited {waited:.0f} s for a quiet machine)"
                  if waited > 3 else ""), file=sys.stderr, flush=True)
            results[key] = run_phase(function, params, args.priority)
            print(f"   done in {time.perf_counter() - started - waited:.0f} s; other processes used "
                  f"{results[key]['foreign_cpu']:.2f} cores meanwhile", file=sys.stderr, flush=True)
            saved.write_text(json.dumps(results, indent=1))  # after every phase: a stopped run keeps its figures
    print(table(results))
    print()
    print(settings(results))
    docs = args.docs if args.docs is not None else (args.report_only or not (args.quick or args.phases))
    if docs:
        chart(results, CHART)
        write_doc(results, command.strip())
        print(f"\nwrote {DOC.relative_to(REPO)} and {CHART.relative_to(REPO)}")


if __name__ == "__main__":
    main()
