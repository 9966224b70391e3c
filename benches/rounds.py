#!/usr/bin/env python3
"""What the relay's flusher rounds did during one fan-out point (the fan-out tail issue, item 1).

Starts target/release/relay pinned to --server-cpus (one worker thread, abuse limits off, as
compare.py runs it), scrapes /metrics, runs one loadgen fan-out point pinned to --loadgen-cpus,
scrapes again and prints, as markdown, the loadgen's latency with the deltas of the
relay_flush_round_* histograms and the relay's own "slow flusher round" log lines. With --perf
the relay runs under `perf record -e cpu-clock -g` and the top of `perf report` is appended.

    python3 benches/rounds.py --rate 1000 --rate 5000          (build with cargo build --release first)
    python3 benches/rounds.py --rate 5000 --perf --out results/rounds-YYYYMMDD.md
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELAY, LOADGEN = ROOT / "target/release/relay", ROOT / "target/release/loadgen"
sys.path.insert(0, str(ROOT / "benches"))
from compare import relay_limit_flags  # noqa: E402  (the same limit-off flags as compare.py)
HISTOGRAMS = ("relay_flush_round_delay_seconds", "relay_flush_round_seconds", "relay_flush_round_connections")


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("relay_flush_round") or line.startswith("process_cpu_seconds_total"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def wait_up(port, deadline_s=10):
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"relay did not come up on port {port}")


def buckets(delta, name):
    """(upper bound, count in that bucket) for the non-empty buckets of one histogram's delta."""
    rows, previous = [], 0.0
    for key, cumulative in delta.items():
        m = re.fullmatch(name + r'_bucket\{le="([^"]+)"\}', key)
        if m:
            if cumulative > previous:
                rows.append((m.group(1), int(cumulative - previous)))
            previous = cumulative
    return rows


def cpu_per_delivery(delta, msgs):
    """The relay's CPU (user + system, all threads, connect and drain included) per delivery."""
    delivered = msgs.get("delivered") or 0
    return 1e6 * delta.get("process_cpu_seconds_total", 0) / delivered if delivered else float("nan")


def point(a, rate, port, work):
    log_path = work / f"relay-{rate}.log"
    perf_data = work / f"perf-{rate}.data"
    cmd = ["taskset", "-c", a.server_cpus, str(RELAY), "--listen", f"127.0.0.1:{port}", *relay_limit_flags(), *a.relay_args]
    if a.perf:
        cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-o", str(perf_data), "--", *cmd]
    env = dict(os.environ, TOKIO_WORKER_THREADS=str(a.workers), RUST_LOG="info", NO_COLOR="1")
    with open(log_path, "w") as log:
        relay = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_up(port)
        before = scrape(port)
        report = work / f"loadgen-{rate}.json"
        subprocess.run(["taskset", "-c", a.loadgen_cpus, str(LOADGEN), "--url", f"ws://127.0.0.1:{port}/ws",
                        "--clients", str(a.clients), "--rooms", str(a.rooms), "--scenario", "fanout",
                        "--rate", str(rate), "--duration", a.duration, "--payload", "64", "--threads", "1",
                        "--drain", "2s", "--no-progress", "--quiet", "--json", str(report)],
                       check=True, timeout=300)
        after = scrape(port)
    finally:
        relay.terminate()
        relay.wait(timeout=30)
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    lg = json.loads(report.read_text())
    lat, msgs = lg["latency_ms"], lg["messages"]
    per_room = a.clients // a.rooms
    out = [f"### {rate:,} msg/s offered ({rate * per_room:,} deliveries/s)", "",
           f"- loadgen: delivered {msgs['delivered_per_second']:,.0f}/s (ratio {msgs['delivered_ratio']:.4f}), "
           f"latency p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, max {lat['max']:.1f} ms",
           f"- relay CPU during the point: {delta.get('process_cpu_seconds_total', 0):.2f} s, "
           f"{cpu_per_delivery(delta, msgs):.2f} µs per delivery", ""]
    out += ["| histogram | rounds | mean | buckets (upper bound: rounds) |", "|---|---:|---:|---|"]
    for name in HISTOGRAMS:
        count, total = delta.get(name + "_count", 0), delta.get(name + "_sum", 0)
        unit = "" if name.endswith("connections") else " s"
        mean = f"{total / count:.6g}{unit}" if count else "-"
        spread = ", ".join(f"<= {le}: {n:,}" for le, n in buckets(delta, name))
        out.append(f"| `{name}` | {int(count):,} | {mean} | {spread} |")
    slow = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in log_path.read_text().splitlines()
            if "slow flusher round" in line]
    out += ["", f"Slow rounds logged (at most one line a second; `suppressed` counts the rest): {len(slow)}", ""]
    out += ["```", *[line.split("slow flusher round", 1)[1].strip() for line in slow[:12]], "```", ""]
    if a.perf:
        top = subprocess.run(["perf", "report", "-i", str(perf_data), "--stdio", "--no-children",
                              "--percent-limit", "1.5", "-g", "none", "--sort", "symbol"],
                             capture_output=True, text=True).stdout
        rows = [line.rstrip(" -") for line in top.splitlines() if line.strip() and not line.startswith("#")]
        out += ["`perf report --no-children --sort symbol` (cpu-clock, 999 Hz), symbols above 1.5%:", "",
                "```", *rows[:30], "```", ""]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, action="append", help="offered msg/s (repeatable; default 1000 and 5000)")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rooms", type=int, default=10)
    p.add_argument("--duration", default="10s")
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--workers", type=int, default=1, help="the relay's TOKIO_WORKER_THREADS (give --server-cpus as many CPUs)")
    p.add_argument("--loadgen-cpus", default="1")
    p.add_argument("--port", type=int, default=18290)
    p.add_argument("--relay-args", default="--memory", help="extra relay flags (default --memory)")
    p.add_argument("--perf", action="store_true", help="record the relay with perf (cpu-clock) and show the top symbols")
    p.add_argument("--out", help="also write the markdown here")
    a = p.parse_args()
    a.relay_args = a.relay_args.split()
    rates = a.rate or [1000, 5000]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines = [f"## Flusher rounds, {time.strftime('%Y-%m-%d %H:%M')}", "",
             f"- Command: `python3 benches/rounds.py {' '.join(sys.argv[1:])}`",
             f"- Commit `{commit}`; {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}",
             f"- relay on CPU {a.server_cpus} (TOKIO_WORKER_THREADS={a.workers}, limits off, `{' '.join(a.relay_args)}`), "
             f"loadgen on CPU {a.loadgen_cpus}; {a.clients:,} clients in {a.rooms} rooms, 64-byte texts, {a.duration} per point", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for i, rate in enumerate(rates):
            lines += point(a, rate, a.port + i, Path(tmp))
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
