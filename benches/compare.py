#!/usr/bin/env python3
"""Side-by-side benchmark: chatrelay vs the Node.js `ws` and Bun peers.

Each server runs pinned to core 0 (taskset -c 0), the load generator on core 1, one fresh server
process per measurement. For every server: one idle run (server memory per connection, as the
RSS slope between half and all clients joined) and one fanout run per offered rate.
Writes results/compare-<date>.md (table), results/compare-<date>.svg (p99 vs delivered/s)
and the raw loadgen JSON reports under results/compare-<date>-raw/.

Short run:  python3 benches/compare.py --rates 2000,8000 --duration 3s --clients 500
Full run:   python3 benches/compare.py
"""

import argparse
import datetime as dt
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benches" / "peers"
BUN = PEERS / "bun" / "node_modules" / "@oven" / "bun-linux-x64" / "bin" / "bun"
LOADGEN = ROOT / "target" / "release" / "loadgen"
RELAY = ROOT / "target" / "release" / "relay"
COLORS = {"relay": "#d62728", "node-ws": "#1f77b4", "bun": "#2ca02c"}


def log(msg):
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kw)


def install(skip):
    if skip:
        return
    for peer in ("node-ws", "bun"):
        d = PEERS / peer
        if (d / "node_modules").is_dir():
            continue
        run(["npm", "ci" if (d / "package-lock.json").exists() else "install"], cwd=d)


def build(skip):
    if not skip:
        run(["cargo", "build", "--release", "-p", "relay", "-p", "loadgen"], cwd=ROOT)


def relay_cmd(port):
    cmd = [str(RELAY), "--listen", f"127.0.0.1:{port}"]
    # Benchmarks run with the abuse limits off (rates, per-IP and new-connection caps) when
    # the relay has them: thousands of loopback clients from one address, sending fast.
    help_text = subprocess.run([str(RELAY), "--help"], capture_output=True, text=True).stdout
    for flag in ("--message-rate", "--command-rate", "--max-connections-per-ip", "--connection-rate"):
        if flag in help_text:
            cmd += [flag, "0"]
    return cmd, ROOT


def server_cmd(name, port):
    if name == "relay":
        return relay_cmd(port)
    if name == "node-ws":
        return ["node", "server.js"], PEERS / "node-ws"
    if name == "bun":
        return [str(BUN), "server.ts"], PEERS / "bun"
    raise SystemExit(f"unknown server {name}")


def wait_port(port, proc, limit=15.0):
    end = time.time() + limit
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {limit}s")


class Server:
    def __init__(self, name, port, logdir):
        self.name, self.port = name, port
        cmd, cwd = server_cmd(name, port)
        env = dict(os.environ, PORT=str(port), RELAY_LISTEN=f"127.0.0.1:{port}")
        self.log = open(logdir / f"{name}-{port}.log", "ab")
        self.proc = subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=cwd, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(port, self.proc)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def loadgen(args, port, pid, out_json, extra, clients=None):
    cmd = ["taskset", "-c", "1", str(LOADGEN), "--url", f"ws://127.0.0.1:{port}/ws",
           "--clients", str(clients or args.clients), "--rooms", str(args.rooms), "--payload", str(args.payload),
           "--connect-rate", str(args.connect_rate), "--drain", args.drain,
           "--server-pid", str(pid), "--no-progress", "--quiet", "--json", str(out_json), *extra]
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    with open(out_json) as f:
        return json.load(f)


def measure(args, name, port, raw, logdir):
    rows = []
    srv = Server(name, port, logdir)
    try:
        idle = loadgen(args, port, srv.proc.pid, raw / f"{name}-idle.json",
                       ["--scenario", "idle", "--duration", "1s"], clients=args.idle_clients)
    finally:
        srv.stop()
    mem = (idle.get("server") or {}).get("memory_per_connection") or {}
    per_conn = mem.get("bytes_per_connection")
    for rate in args.rates:
        srv = Server(name, port, logdir)
        try:
            r = loadgen(args, port, srv.proc.pid, raw / f"{name}-{rate}.json",
                        ["--rate", str(rate), "--duration", args.duration])
        finally:
            srv.stop()
        m, lat, lg = r["messages"], r["latency_ms"], r["loadgen"]
        rows.append({
            "server": name, "rate": rate, "delivered_per_s": m["delivered_per_second"],
            "ratio": m["delivered_ratio"], "missing": m["missing"], "p50": lat["p50"], "p99": lat["p99"],
            "max": lat["max"], "rss_per_conn": per_conn,
            "server_cpu": (r.get("server") or {}).get("cpu_percent"),
            "saturated": lg["saturated"], "loadgen_cpu": lg["max_thread_cpu_percent"],
            "joined": r["connect"]["joined"], "closed": r["server_events"]["closed_by_server"],
        })
        log(f"{name} @ {rate}/s: delivered {m['delivered_per_second']:.0f}/s, p99 {lat['p99']:.2f} ms, "
            f"ratio {m['delivered_ratio']:.4f}, loadgen saturated: {lg['saturated']}")
    return rows


def svg_plot(rows, path, title):
    W, H, L, R, T, B = 820, 500, 80, 150, 40, 60
    pw, ph = W - L - R, H - T - B
    xs = [r["delivered_per_s"] for r in rows] or [1]
    ys = [max(r["p99"], 0.01) for r in rows] or [1]
    xmax = max(xs) * 1.1 or 1
    ylo, yhi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)) + 1e-9)
    if yhi <= ylo:
        yhi = ylo + 1
    sx = lambda x: L + x / xmax * pw
    sy = lambda y: T + ph - (math.log10(max(y, 0.01)) - ylo) / (yhi - ylo) * ph
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="22" text-anchor="middle" font-size="15">{title}</text>']
    for e in range(ylo, yhi + 1):
        y = sy(10 ** e)
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L+pw}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{L-6}" y="{y+4:.1f}" text-anchor="end">{10**e:g}</text>')
    for i in range(6):
        x = xmax * i / 5
        out.append(f'<line x1="{sx(x):.1f}" y1="{T}" x2="{sx(x):.1f}" y2="{T+ph}" stroke="#eee"/>'
                   f'<text x="{sx(x):.1f}" y="{T+ph+18}" text-anchor="middle">{x/1e6:.2f}M</text>')
    out.append(f'<text x="{L+pw/2}" y="{H-15}" text-anchor="middle">delivered messages/s</text>')
    out.append(f'<text x="18" y="{T+ph/2}" text-anchor="middle" transform="rotate(-90 18 {T+ph/2})">p99 latency (ms, log)</text>')
    for k, name in enumerate(sorted({r["server"] for r in rows})):
        pts = sorted((r["delivered_per_s"], r["p99"]) for r in rows if r["server"] == name)
        c = COLORS.get(name, "#777")
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                   + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts) + '"/>')
        for x, y in pts:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{c}"/>')
        out.append(f'<rect x="{L+pw+20}" y="{T+20*k}" width="12" height="12" fill="{c}"/>'
                   f'<text x="{L+pw+38}" y="{T+20*k+11}">{name}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def markdown(args, rows, md, svg, started):
    fmt = lambda v, f: "n/a" if v is None else format(v, f)
    lines = [f"# chatrelay vs peers ({started:%Y-%m-%d %H:%M})", "",
             f"Servers pinned to core 0, loadgen to core 1 (`taskset`); a fresh server per row. "
             f"{args.clients} clients in {args.rooms} rooms ({args.clients // args.rooms} per room, "
             f"so deliveries = {args.clients // args.rooms} x offered rate), payload {args.payload} B, "
             f"{args.duration} per rate + {args.drain} drain. Latency is from each message's schedule "
             f"slot to its arrival (open loop). RSS/conn: slope of server RSS between half and all of "
             f"{args.idle_clients} idle clients joined.", "",
             f"Command: `python3 benches/compare.py {' '.join(sys.argv[1:])}`", "",
             "| server | offered msg/s | delivered/s | delivered ratio | p50 ms | p99 ms | max ms | RSS/conn | server CPU | loadgen CPU saturated? |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        sat = "**yes**" if r["saturated"] else "no"
        rss = "n/a" if r["rss_per_conn"] is None else f"{r['rss_per_conn']/1024:.1f} KiB"
        lines.append(f"| {r['server']} | {r['rate']:,} | {r['delivered_per_s']:,.0f} | {r['ratio']:.4f} | "
                     f"{r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} | {rss} | {fmt(r['server_cpu'], '.0f')}% | "
                     f"{sat} ({r['loadgen_cpu']:.0f}%) |")
    lines += ["", f"![p99 latency vs delivered rate]({svg.name})", "",
              "A delivered ratio below 1 means messages were lost or still queued when the drain ended; "
              "rows where the loadgen was saturated measure the generator, not the server.", ""]
    md.write_text("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default="relay,node-ws,bun", help="comma list of relay,node-ws,bun")
    p.add_argument("--rates", default="5000,20000,50000,100000",
                   help="offered chat messages/s (each is delivered to every room member)")
    p.add_argument("--clients", type=int, default=2000)
    p.add_argument("--rooms", type=int, default=100)
    p.add_argument("--idle-clients", type=int, default=5000)
    p.add_argument("--duration", default="10s")
    p.add_argument("--drain", default="2s")
    p.add_argument("--payload", type=int, default=64)
    p.add_argument("--connect-rate", type=float, default=5000)
    p.add_argument("--port", type=int, default=18090)
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--skip-install", action="store_true")
    args = p.parse_args()
    args.rates = [int(r) for r in args.rates.split(",") if r]
    if shutil.which("taskset") is None:
        raise SystemExit("taskset (util-linux) is required")
    started = dt.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M")
    results = ROOT / "results"
    raw = results / f"compare-{stamp}-raw"
    raw.mkdir(parents=True, exist_ok=True)
    install(args.skip_install)
    build(args.skip_build)
    rows = []
    for i, name in enumerate(s for s in args.servers.split(",") if s):
        try:
            rows += measure(args, name, args.port + i, raw, raw)
        except (RuntimeError, subprocess.CalledProcessError) as e:
            log(f"{name}: skipped: {e}")
    md, svg = results / f"compare-{stamp}.md", results / f"compare-{stamp}.svg"
    svg_plot(rows, svg, f"p99 latency vs delivered rate ({args.clients} clients, {args.rooms} rooms)")
    markdown(args, rows, md, svg, started)
    print(md)


if __name__ == "__main__":
    main()
