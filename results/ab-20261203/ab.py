#!/usr/bin/env python3
"""A/B: relay binaries side by side, interleaved, with benches/compare.py's pinning (server on
CPU 0 with TOKIO_WORKER_THREADS=1, loadgen on CPU 1 with one thread, every abuse limit off).

    ab.py fanout RATES REPEATS OUTDIR NAME=BIN[,FLAG...] ...   # 1,000 clients, 10 rooms, 10 s
    ab.py idle   -     REPEATS OUTDIR NAME=BIN[,FLAG...] ...   # 10,000 idle clients, 1,000 rooms

e.g. before=/tmp/relay-8937d84 after=target/release/relay,--memory

Loopback only; each run is bounded by the loadgen's duration and stops its server itself.
"""
import json, os, socket, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOADGEN = os.path.join(ROOT, "target/release/loadgen")
OFF = ["--message-rate", "0", "--command-rate", "0", "--max-connections-per-ip", "0",
       "--connection-rate", "0", "--connection-rate-per-ip", "0", "--http-request-rate", "0",
       "--ip-message-rate", "0", "--ip-command-rate", "0", "--frame-rate", "0", "--ip-rooms", "0"]

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def start(spec):
    binp, *extra = spec.split(",")
    port = free_port()
    env = dict(os.environ, TOKIO_WORKER_THREADS="1"); env.pop("RUST_LOG", None)
    srv = subprocess.Popen(["taskset", "-c", "0", binp, "--listen", f"127.0.0.1:{port}", *OFF, *extra],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close(); break
        except OSError:
            time.sleep(0.05)
    return srv, port

def main():
    mode, rates, repeats, outdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    bins = dict(a.split("=", 1) for a in sys.argv[5:])
    os.makedirs(outdir, exist_ok=True)
    points = [int(r) for r in rates.split(",")] if mode == "fanout" else [0]
    res = {}
    for rate in points:
        for rep in range(repeats):
            for name, binp in bins.items():
                srv, port = start(binp)
                out = os.path.join(outdir, f"{mode}-{name}-{rate}-{rep}.json")
                shape = (["--scenario", "fanout", "--clients", "1000", "--rooms", "10",
                          "--rate", str(rate), "--duration", "10s"] if mode == "fanout" else
                         ["--scenario", "idle", "--clients", "10000", "--rooms", "1000",
                          "--duration", "1s", "--connect-rate", "5000"])
                subprocess.run(["taskset", "-c", "1", LOADGEN, "--url", f"ws://127.0.0.1:{port}/ws",
                                "--payload", "64", "--threads", "1", "--drain", "2s",
                                "--server-pid", str(srv.pid), "--no-progress", "--quiet",
                                "--json", out, *shape], check=False)
                srv.terminate(); srv.wait()
                r = json.load(open(out))
                if mode == "fanout":
                    v = r["latency_ms"]["p99"]
                    extra = f"delivered ratio {r['messages']['delivered_ratio'] if 'messages' in r and 'delivered_ratio' in r['messages'] else '?'}"
                else:
                    v = r["server"]["memory_per_connection"]["bytes_per_connection"]
                    extra = f"rss {r['server']['rss_bytes']}"
                res.setdefault((rate, name), []).append(v)
                print(mode, name, rate, rep, round(v, 2), extra, flush=True)
    unit = "p99 ms" if mode == "fanout" else "B/conn"
    for (rate, name), v in sorted(res.items()):
        print(f"{mode} rate {rate} {name}: median {statistics.median(v):.2f} {unit}, runs {sorted(round(x, 2) for x in v)}")

main()
