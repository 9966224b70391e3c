#!/usr/bin/env python3
"""A/B: two relay binaries side by side, interleaved, same pinning as benches/compare.py."""
import json, os, socket, subprocess, sys, time, statistics
LOADGEN = "/work/main/target/release/loadgen"
BINS = {"before": "/tmp/ab/relay-fb42e59", "after": "/work/main/target/release/relay"}
OFF_OLD = ["--message-rate","0","--command-rate","0","--max-connections-per-ip","0","--connection-rate","0"]
OFF_NEW = OFF_OLD + ["--connection-rate-per-ip","0","--http-request-rate","0","--ip-message-rate","0",
                     "--ip-command-rate","0","--frame-rate","0","--ip-rooms","0"]
RATES = [int(r) for r in sys.argv[1].split(",")]
REPEATS = int(sys.argv[2])
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
res = {}
for rate in RATES:
    for rep in range(REPEATS):
        for name, binp in BINS.items():
            port = free_port()
            flags = OFF_NEW if name == "after" else OFF_OLD
            env = dict(os.environ, TOKIO_WORKER_THREADS="1")
            env.pop("RUST_LOG", None)
            srv = subprocess.Popen(["taskset","-c","0",binp,"--listen",f"127.0.0.1:{port}",*flags],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close(); break
                except OSError: time.sleep(0.05)
            out = f"/tmp/ab/{name}-{rate}-{rep}.json"
            subprocess.run(["taskset","-c","1",LOADGEN,"--url",f"ws://127.0.0.1:{port}/ws","--clients","1000",
                            "--payload","64","--threads","1","--drain","2s","--server-pid",str(srv.pid),
                            "--no-progress","--quiet","--json",out,"--scenario","fanout","--rooms","10",
                            "--rate",str(rate),"--duration","10s"], check=False)
            srv.terminate(); srv.wait()
            r = json.load(open(out))
            p99 = r["latency_ms"]["p99"]
            res.setdefault((rate, name), []).append((p99, r))
            print(name, rate, rep, p99, flush=True)
for (rate, name), v in sorted(res.items()):
    p = [x[0] for x in v if x[0] is not None]
    print(f"rate {rate} {name}: p99 median {statistics.median(p):.2f} ms, runs {sorted(round(x,2) for x in p)}")
