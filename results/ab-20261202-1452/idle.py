#!/usr/bin/env python3
import json, os, socket, subprocess, sys, time, statistics
LOADGEN = "/work/main/target/release/loadgen"
OFF_OLD = ["--message-rate","0","--command-rate","0","--max-connections-per-ip","0","--connection-rate","0"]
OFF_NEW = OFF_OLD + ["--connection-rate-per-ip","0","--http-request-rate","0","--ip-message-rate","0",
                     "--ip-command-rate","0","--frame-rate","0","--ip-rooms","0"]
BINS = sys.argv[2].split(",")
REPEATS = int(sys.argv[1])
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
res = {}
for rep in range(REPEATS):
    for binp in BINS:
        port = free_port()
        help_ = subprocess.run([binp, "--help"], capture_output=True, text=True).stdout
        flags = OFF_NEW if "--ip-rooms" in help_ else OFF_OLD
        flags = [f for i, f in enumerate(flags) if True]
        env = dict(os.environ, TOKIO_WORKER_THREADS="1"); env.pop("RUST_LOG", None)
        srv = subprocess.Popen(["taskset","-c","0",binp,"--listen",f"127.0.0.1:{port}",*flags],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try: socket.create_connection(("127.0.0.1", port), 0.1).close(); break
            except OSError: time.sleep(0.05)
        out = f"/tmp/ab/idle-{os.path.basename(binp)}-{rep}.json"
        subprocess.run(["taskset","-c","1",LOADGEN,"--url",f"ws://127.0.0.1:{port}/ws","--clients","10000",
                        "--payload","64","--threads","1","--drain","2s","--server-pid",str(srv.pid),
                        "--no-progress","--quiet","--json",out,"--scenario","idle","--rooms","1000",
                        "--duration","1s","--connect-rate","5000"], check=False)
        srv.terminate(); srv.wait()
        r = json.load(open(out))
        b = r["server"]["memory_per_connection"]["bytes_per_connection"]
        res.setdefault(binp, []).append(b)
        print(os.path.basename(binp), rep, round(b), r["server"]["rss_bytes"], flush=True)
for b, v in res.items():
    print(f"{os.path.basename(b)}: median {statistics.median(v):.0f} B/conn, runs {sorted(round(x) for x in v)}")
