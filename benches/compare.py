#!/usr/bin/env python3
"""Side-by-side benchmark: chatrelay vs the Bun and Node.js `ws` peers, on the five targets of
the performance issue, in one run.

Each server runs pinned to core 0 (`taskset -c 0`; the relay with TOKIO_WORKER_THREADS=1 and its
abuse limits off), the load generator on core 1, and every measurement gets a fresh server
process. Every point is run --repeats times (default 3), servers interleaved per point (relay,
bun, node-ws, relay, bun, ...) so machine noise hits all of them alike; tables show the median
and the spread (min-max) of the repeats.

Targets (--targets, default all; ratios, not absolute times):
  1  fan-out: --clients 1000 in --rooms 10 (100 members each), 64-byte messages, open loop, a
     ladder of offered rates (--rates). Figure: the highest delivered/s with p99 < 50 ms.
     Target: relay >= 2x Bun's and >= 20x Node ws's.
  2  one big room: --broadcast-clients 10000 members, `--scenario broadcast`, --broadcast-rates.
     Figure: the highest delivered/s with p99 < 100 ms. Target: relay >= 2x Bun's.
  3  light load: --light-rate 200 msg/s in the fan-out shape (20,000 deliveries/s).
     Target: relay p99 <= Bun's p99.
  4  memory: RSS per joined idle connection, the slope of the server's RSS between half and all
     of --idle-clients 10000 joined (rooms of --idle-room-size 10). Target: relay <= 1.25 KiB.
  5  connect storm: --storm-clients 10000 at --storm-connect-rate 50000; connections accepted
     and joined per second. Target: relay >= Bun's.

A point counts toward a figure only if its median p99 is under the limit, nothing was lost
(median delivered ratio >= 0.99, no connection closed by the server) and every client joined.
A point where the loadgen was saturated in any repeat (report.loadgen.saturated; for target 5:
the ramp used > 90% of the generator's cores) partly measures the generator: it is marked, and a
saturated generator only makes the server look worse, so on targets 1 and 2 such a point that
still qualifies counts as a lower bound on the server's figure, while its failure does not count.
On two cores the generator cannot outrun any server at fan-out (each passes 3M deliveries/s with
the generator saturated): --server-cpu-quota 0.5 caps every server alike at half a CPU in the
ladders (a cgroup with a 2 ms CFS period) so they reach each server's ceiling; targets 3-5 run
uncapped. Each target ends in PASS, FAIL or INCONCLUSIVE (with
the reason); a run whose settings differ from the target's (e.g. --quick) is INCONCLUSIVE and
says what it would have been. A server's ladder (targets 1 and 2) stops after two consecutive
points where it delivered < 90% of the offered deliveries or its p99 was > 1 s, or after a point
where not every client could join, or after two clean points in a row that fail the limit (its
figure is then settled).

Writes results/compare-<stamp>.md (header with command, date, commit, CPU, kernel, versions and
pinning; one section per target), results/compare-<stamp>.svg (target 1: p99 against delivered/s)
and, with target 2, results/compare-<stamp>-broadcast.svg; the raw loadgen JSON reports and the
server logs go to results/compare-<stamp>-raw/.

Smoke run (a few minutes, small scale):  python3 benches/compare.py --quick --repeats 1
Subset:     python3 benches/compare.py --targets 3,4 --repeats 5
Full run:   python3 benches/compare.py      (about half an hour on two cores; needs them to itself)
Extra relay flags (recorded in the markdown): --relay-args "--event-interval 256"
Every repeat must hold (fan-out tail): python3 benches/compare.py --targets 1,3,4 --repeats 5 --every-repeat

The relay runs its default, history on disk (a fresh --data-dir per process, removed after);
"relay-memory" is the same binary with --memory. With both in --servers, targets 1 and 3 also
compare them (the durable store's targets: fan-out >= 80% of memory's, light-load p99 within
2 ms of it):
            python3 benches/compare.py --targets 1,3 --servers relay,relay-memory,bun

"relay-ref" is the relay (history on disk) driven with loadgen --with-ref: every message carries
a `ref`, so the relay acknowledges and de-duplicates each one. With "relay" beside it, target 1
also checks acknowledged sends' own target (fan-out >= 90% of the run without) and target 3
shows their light-load p99; targets 4 and 5 skip it (the same server as "relay").
"""

import argparse
import atexit
import datetime as dt
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benches" / "peers"
BUN = PEERS / "bun" / "node_modules" / "@oven" / "bun-linux-x64" / "bin" / "bun"
LOADGEN = ROOT / "target" / "release" / "loadgen"
RELAY = ROOT / "target" / "release" / "relay"
COLORS = {"relay": "#d62728", "relay-memory": "#ff7f0e", "relay-ref": "#9467bd", "node-ws": "#1f77b4",
          "bun": "#2ca02c"}
SERVERS = ("relay", "relay-memory", "relay-ref", "bun", "node-ws")
# Acknowledged sends (relay-ref) against plain ones (relay), target 1.
REF_FANOUT_SHARE = 0.9
# The durable store against memory (targets 1 and 3 when both relays run).
DURABLE_FANOUT_SHARE = 0.8
DURABLE_LIGHT_P99_MS = 2.0

# The targets' fixed numbers (the performance issue).
T1_P99_MS, T1_VS_BUN, T1_VS_NODE = 50.0, 2.0, 20.0
T1_EVERY_REPEAT_VS_BUN = 1.5  # the fan-out tail issue: with --every-repeat
T2_P99_MS, T2_VS_BUN = 100.0, 2.0
T4_MAX_BYTES = 1.25 * 1024
# What a point must show to count toward a figure, and the ladder's stop rule.
MIN_DELIVERED_RATIO = 0.99
STOP_RATIO, STOP_P99_MS, STOP_AFTER = 0.90, 1000.0, 2
DECIDED_AFTER = 2
CONNECT_TIMEOUT_S = 10.0  # loadgen's default --connect-timeout

# Per-setting defaults: (full run, --quick). Explicit flags always win.
DEFAULTS = {
    "rates": ("500,1000,2000,5000,10000,15000,20000,30000", "200,1000"),
    "clients": (1000, 200),
    "rooms": (10, 2),
    "duration": ("10s", "1s"),
    "drain": ("2s", "1s"),
    "broadcast_clients": (10000, 500),
    "broadcast_rates": ("20,50,100,200", "5,20"),
    "light_rate": (200, 200),
    "idle_clients": (10000, 2000),
    "idle_room_size": (10, 10),
    "storm_clients": (10000, 2000),
    "storm_connect_rate": (50000.0, 50000.0),
}


def log(msg):
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kw)


def output(cmd, cwd=None):
    """First line of a command's output, or None when it cannot run."""
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if r.returncode == 0 and text else None


def output_all(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None


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


def parse_seconds(s):
    s = s.strip()
    for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if s.endswith(suffix) and s[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(s[: -len(suffix)]) * mult
    return float(s)


def cpu_list(spec):
    """taskset -c syntax ("1", "2-9", "0,2") -> list of CPU numbers."""
    cpus = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus += range(int(lo), int(hi or lo) + 1)
    return cpus


# --- servers -------------------------------------------------------------------------------

_relay_help = None


def relay_limit_flags():
    # Benchmarks run with the abuse limits off (rates, per-IP and new-connection caps) when
    # the relay has them: thousands of loopback clients from one address, sending fast.
    global _relay_help
    if _relay_help is None:
        _relay_help = output_all([str(RELAY), "--help"]) or ""
    flags = []
    for flag in ("--message-rate", "--command-rate", "--max-connections-per-ip", "--connection-rate",
                 "--connection-rate-per-ip", "--http-request-rate", "--ip-message-rate",
                 "--ip-command-rate", "--frame-rate", "--ip-rooms"):
        # Whole flags only: "--connection-rate" is a prefix of "--connection-rate-per-ip".
        if re.search(re.escape(flag) + r"(?![\w-])", _relay_help):
            flags += [flag, "0"]
    return flags


def server_cmd(name, port, relay_args, data_dir=None):
    """(argv, cwd, extra env) of one server."""
    if name in ("relay", "relay-memory", "relay-ref"):
        storage = ["--memory"] if name == "relay-memory" else ["--data-dir", str(data_dir)]
        return ([str(RELAY), "--listen", f"127.0.0.1:{port}", *relay_limit_flags(), *storage, *relay_args],
                ROOT, {"TOKIO_WORKER_THREADS": "1", "RELAY_LISTEN": f"127.0.0.1:{port}"})
    if name == "node-ws":
        return ["node", "server.js"], PEERS / "node-ws", {}
    if name == "bun":
        return [str(BUN), "server.ts"], PEERS / "bun", {}
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


class CpuQuota:
    """A cgroup that caps its processes at `share` of one CPU (CFS bandwidth control).

    On two cores the generator has one core and each server the other, and a generator that
    receives what a server sends costs about what the server does: every server outruns it, so
    no fan-out ladder reaches a server's ceiling (all of them pass at 3M deliveries/s, with the
    generator saturated). Capping every server alike at a share of its core lets one generator
    core drive each of them past its ceiling; the ratios between servers are per CPU time, as
    before. The period is short (2 ms, or longer where the kernel's 1 ms minimum quota needs it),
    so a throttled server waits at most about a millisecond, not the 100 ms of the default period,
    which would be a tail of its own."""

    def __init__(self, share):
        self.share = share
        self.period_us = max(2000, math.ceil(1000 / share))
        self.quota_us = int(self.period_us * share)
        name = f"chatrelay-compare-{os.getpid()}"
        # v2: a child of the root gets the cpu controller only if the root hands it down.
        v2 = Path("/sys/fs/cgroup/cgroup.subtree_control")
        if v2.exists() and "cpu" in v2.read_text().split():
            root, limits = Path("/sys/fs/cgroup"), {"cpu.max": f"{self.quota_us} {self.period_us}"}
        elif Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists():
            # v1: the period first, so the quota is never checked against the old one.
            root, limits = Path("/sys/fs/cgroup/cpu"), {"cpu.cfs_period_us": str(self.period_us),
                                                        "cpu.cfs_quota_us": str(self.quota_us)}
        else:
            raise SystemExit("--server-cpu-quota needs the cgroup cpu controller (v1 or v2) writable")
        self.dir = root / name
        self.dir.mkdir(exist_ok=True)
        atexit.register(self.remove)
        for file, value in limits.items():
            (self.dir / file).write_text(value)
        self.procs = self.dir / "cgroup.procs"

    def enter(self):
        """preexec_fn: the child joins the cgroup before it execs, so every thread it starts is capped."""
        self.procs.write_text(str(os.getpid()))

    def describe(self):
        return (f"{self.share:.0%} of a CPU (cgroup CFS quota {self.quota_us} us per {self.period_us} us "
                f"period, `{self.dir}`)")

    def remove(self):
        try:
            self.dir.rmdir()
        except OSError:
            pass


QUOTA = None  # --server-cpu-quota: a CpuQuota every server starts in


class Server:
    def __init__(self, name, port, logdir, cpus, relay_args, quota=None):
        self.name, self.port = name, port
        # The durable relay starts from an empty history each time, like every other server.
        self.data_dir = Path(tempfile.mkdtemp(prefix="chatrelay-compare-")) if name in ("relay", "relay-ref") else None
        cmd, cwd, extra = server_cmd(name, port, relay_args, self.data_dir)
        # RELAY_* variables of the calling shell would change the relay's settings unrecorded.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "TOKIO_"))}
        env.update(PORT=str(port), NO_COLOR="1", **extra)
        self.log = open(logdir / f"{name}.log", "ab")
        self.log.write(f"--- {dt.datetime.now():%H:%M:%S} port {port}: {' '.join(cmd)}\n".encode())
        self.log.flush()
        self.proc = subprocess.Popen(["taskset", "-c", cpus, *cmd], cwd=cwd, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=quota.enter if quota else None)
        try:
            wait_port(port, self.proc)
        except RuntimeError:
            self.stop()
            raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


# --- one loadgen run -----------------------------------------------------------------------

def sample_of(r):
    """The numbers compare.py uses from one loadgen JSON report."""
    m, lat, lg, conn = r["messages"], r["latency_ms"], r["loadgen"], r["connect"]
    srv = r.get("server") or {}
    mem = srv.get("memory_per_connection") or {}
    usable = max(1, min(lg["usable_cores"], lg["threads"] * lg["processes"]))
    return {
        "delivered_per_s": m["delivered_per_second"], "ratio": m["delivered_ratio"],
        "p50": lat["p50"], "p99": lat["p99"], "max": lat["max"],
        "server_cpu": srv.get("cpu_percent"), "mem_per_conn": mem.get("bytes_per_connection"),
        "saturated": lg["saturated"], "saturation": lg["saturation"],
        "loadgen_cpu": lg["max_thread_cpu_percent"],
        "ramp_bound": lg["ramp_cpu_percent"] > 90.0 * usable, "ramp_cpu": lg["ramp_cpu_percent"],
        "joined": conn["joined"], "failed": conn["failed"]["total"],
        "connect_per_s": conn["per_second"], "ramp_s": conn["ramp_s"], "connect_p99": conn["time_ms"]["p99"],
        "closed": r["server_events"]["closed_by_server"],
    }


class Bench:
    def __init__(self, args, raw):
        self.args, self.raw = args, raw
        self.logdir = raw / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.runs = 0
        # Set around the fan-out ladders only (targets 1 and 2): a throttled server's light-load
        # tail, memory or connect rate would measure the throttle.
        self.capped = False
        self.broken = {}  # server -> why it could not be started

    def port(self):
        # A new port per server start: no listener or TIME_WAIT left over from the last run.
        self.runs += 1
        return self.args.port + self.runs % 2000

    def loadgen_cmd(self, port, pid, clients, extra, out_json):
        a = self.args
        return ["taskset", "-c", a.loadgen_cpus, str(LOADGEN), "--url", f"ws://127.0.0.1:{port}/ws",
                "--clients", str(clients), "--payload", str(a.payload),
                "--threads", str(len(cpu_list(a.loadgen_cpus))), "--drain", a.drain,
                "--server-pid", str(pid), "--no-progress", "--quiet", "--json", str(out_json), *extra]

    def once(self, name, tag, clients, extra, connect_rate):
        """One fresh server, one loadgen run: a sample dict, or {"error": ...}."""
        if name in self.broken:
            return {"error": self.broken[name]}
        a = self.args
        out_json = self.raw / f"{tag}.json"
        port = self.port()
        try:
            srv = Server(name, port, self.logdir, a.server_cpus, a.relay_args,
                         QUOTA if self.capped else None)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            self.broken[name] = f"could not start: {e}"
            log(f"{name}: {self.broken[name]} (skipped from now on; see {self.logdir / (name + '.log')})")
            return {"error": self.broken[name]}
        with_ref = ["--with-ref"] if name == "relay-ref" else []
        cmd = self.loadgen_cmd(port, srv.proc.pid, clients,
                               [*extra, *with_ref, "--connect-rate", str(connect_rate)], out_json)
        limit = (clients / connect_rate + CONNECT_TIMEOUT_S + parse_seconds(a.duration)
                 + parse_seconds(a.drain) + 60)
        log(f"{tag}: $ " + " ".join(cmd))
        try:
            subprocess.run(cmd, check=True, timeout=limit, stdout=subprocess.DEVNULL)
            with open(out_json) as f:
                s = sample_of(json.load(f))
        except subprocess.TimeoutExpired:
            s = {"error": f"loadgen did not finish within {limit:.0f}s"}
        except subprocess.CalledProcessError as e:
            s = {"error": f"loadgen exited with {e.returncode}"}
        except (OSError, ValueError, KeyError) as e:
            s = {"error": f"no usable report: {e}"}
        finally:
            # A server that is gone before we stop it crashed or was killed from outside (some
            # other process's `pkill`): its run did not measure it.
            died = srv.proc.poll()
            srv.stop()
        if died is not None and "error" not in s:
            s = {"error": f"the server exited during the run (status {died}; see {self.logdir.name}/{name}.log)"}
        time.sleep(0.3)
        if "error" in s:
            log(f"{tag}: {s['error']}")
        else:
            log(f"{tag}: joined {s['joined']}/{clients}, delivered {s['delivered_per_s']:,.0f}/s "
                f"(ratio {s['ratio']:.4f}), p99 {s['p99']:.2f} ms, connect {s['connect_per_s']:,.0f}/s"
                + (f", mem/conn {s['mem_per_conn']:,.0f} B" if s["mem_per_conn"] is not None else "")
                + f", saturated: {s['saturated']}")
        return s


# --- points: medians of the repeats ----------------------------------------------------------

def med(samples, key):
    vals = [s[key] for s in samples if s.get(key) is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def point(server, samples, clients, offered=None, rate=None):
    ok = [s for s in samples if "error" not in s]
    p = {"server": server, "rate": rate, "offered": offered, "clients": clients,
         "repeats": len(samples), "ok": len(ok), "errors": [s["error"] for s in samples if "error" in s]}
    for key in ("delivered_per_s", "ratio", "p50", "p99", "max", "server_cpu", "loadgen_cpu",
                "mem_per_conn", "connect_per_s", "ramp_s", "connect_p99", "ramp_cpu"):
        p[key], p[key + "_min"], p[key + "_max"] = med(ok, key)
    p["saturated"] = sum(1 for s in ok if s["saturated"])
    p["saturation"] = next((s["saturation"] for s in ok if s["saturated"]), None)
    p["ramp_bound"] = sum(1 for s in ok if s["ramp_bound"])
    p["joined_min"] = min((s["joined"] for s in ok), default=0)
    p["failed_max"] = max((s["failed"] for s in ok), default=0)
    p["closed_max"] = max((s["closed"] for s in ok), default=0)
    # Complete: every repeat produced a report. Clean: and none measured the generator.
    p["complete"] = bool(ok) and len(ok) == len(samples)
    p["clean"] = p["complete"] and p["saturated"] == 0
    p["all_joined"] = bool(ok) and p["joined_min"] >= clients
    return p


# --every-repeat: a point's p99 counts by its worst repeat, not the median, and a repeat
# without a report fails it (the "wins in every repeat" rule of the fan-out tail issue).
EVERY_REPEAT = False


def p99_of(p):
    """The p99 a point is judged by: the median of its repeats, or the worst with --every-repeat."""
    return p["p99_max"] if EVERY_REPEAT else p["p99"]


def qualifies(p, limit):
    """Whether a point counts toward 'highest delivered/s with p99 < limit' (saturation aside)."""
    return (p["ok"] > 0 and p["all_joined"] and p99_of(p) < limit
            and (not EVERY_REPEAT or p["ok"] == p["repeats"])
            and p["ratio"] >= MIN_DELIVERED_RATIO and p["closed_max"] == 0)


def why_not(p, limit):
    if p["ok"] == 0:
        return "no report"
    if not p["all_joined"]:
        return f"joined {p['joined_min']:,}/{p['clients']:,}"
    if EVERY_REPEAT and p["ok"] < p["repeats"]:
        return f"{p['repeats'] - p['ok']} repeat(s) without a report"
    if p99_of(p) >= limit:
        return f"p99 >= {limit:g} ms" + (" in a repeat" if EVERY_REPEAT else "")
    if p["ratio"] < MIN_DELIVERED_RATIO:
        return f"lost {100 * (1 - p['ratio']):.1f}%"
    if p["closed_max"]:
        return f"{p['closed_max']} closed by server"
    return ""


def bad_for_ladder(p):
    if p["ok"] == 0 or not p["all_joined"]:
        return True
    return p["ratio"] < STOP_RATIO or p["p99"] > STOP_P99_MS


def ladder(bench, target, servers, rates, clients, extra_of, offered_of, connect_rate, limit=math.inf):
    """Runs rates low to high, repeats interleaved across servers; returns {server: [points]}.
    A server also leaves the ladder after DECIDED_AFTER clean points in a row that fail `limit`:
    its figure is settled (a server that fails at a rate is assumed to fail above it), and the
    points above would only cost time."""
    R = bench.args.repeats
    active, streak, points = list(servers), {s: 0 for s in servers}, {s: [] for s in servers}
    failed = {s: 0 for s in servers}
    for rate in rates:
        active = [s for s in active if s not in bench.broken]
        if not active:
            break
        samples = {s: [] for s in active}
        for rep in range(R):
            for s in active:
                samples[s].append(bench.once(s, f"t{target}-{s}-{rate}-r{rep + 1}", clients,
                                             extra_of(rate), connect_rate))
        for s in list(active):
            p = point(s, samples[s], clients, offered_of(rate), rate)
            points[s].append(p)
            streak[s] = streak[s] + 1 if bad_for_ladder(p) else 0
            failed[s] = failed[s] + 1 if p["clean"] and not qualifies(p, limit) else 0
            if p["ok"] and not p["all_joined"]:
                p["stopped"] = f"not every client joined: ladder stopped"
            elif streak[s] >= STOP_AFTER:
                p["stopped"] = (f"{STOP_AFTER} points in a row with < {STOP_RATIO:.0%} delivered "
                                f"or p99 > {STOP_P99_MS / 1000:g} s: ladder stopped")
            elif p["ok"] == 0:
                p["stopped"] = "no report: ladder stopped"
            elif failed[s] >= DECIDED_AFTER:
                p["stopped"] = f"{DECIDED_AFTER} clean points in a row failed: figure settled, ladder stopped"
            if "stopped" in p:
                active.remove(s)
                log(f"{s}: {p['stopped']} after {rate}/s")
    return points


def single(bench, target, servers, clients, extra, connect_rate):
    R = bench.args.repeats
    samples = {s: [] for s in servers}
    for rep in range(R):
        for s in servers:
            samples[s].append(bench.once(s, f"t{target}-{s}-r{rep + 1}", clients, extra, connect_rate))
    return {s: point(s, samples[s], clients) for s in servers}


# --- verdicts --------------------------------------------------------------------------------

def reach(p):
    """What a point could show at most: its offered deliveries/s (or more, if it delivered more)."""
    return max(p["offered"] or 0, p["delivered_per_s"] or 0)


def figure(points, limit):
    """The highest median delivered/s among complete qualifying points (`value`), with the range
    the true figure lies in at the ladder's resolution: up to `hi` (inf when no clean point above
    it failed, i.e. the ladder ended or only saturated points follow).

    A saturated generator only adds to what is measured against the server (late sends count
    from their schedule slot, slow reads back up the server's queues, a shortfall shows in the
    delivered ratio), so a point that qualifies with it saturated is a lower bound on the server's
    figure and counts toward `value`; a point that fails with it saturated says nothing about the
    server, so only a clean failure bounds the figure from above."""
    pts = sorted(points, key=lambda p: p["rate"])
    good = [p for p in pts if p["complete"] and qualifies(p, limit)]
    best = max(good, key=lambda p: p["delivered_per_s"], default=None)
    above = [p for p in pts if best is None or p["rate"] > best["rate"]]
    fail = next((p for p in above if p["clean"] and not qualifies(p, limit)), None)
    # Points between the figure and the first clean failure measured the generator (or nothing):
    # the server may have qualified there. Assumed: a server that fails at a rate fails above it.
    unknown = [p for p in above if fail is None or p["rate"] < fail["rate"]]
    value = best["delivered_per_s"] if best else 0.0
    if fail is None:
        hi = math.inf
    else:
        hi = max([value] + [reach(p) for p in unknown])
    return {"value": value, "at": best, "next": fail, "unknown": unknown, "hi": hi,
            "measured": any(p["ok"] for p in pts),
            # With no qualifying point at all, the true figure is below the first failing one.
            "ceiling": reach(fail) if fail is not None and hi == 0 else None}


def unclean(points):
    return "loadgen saturated or no report at " + ", ".join(f"{p['rate']:,}" for p in points) + " msg/s"


def bounds(f):
    if f["hi"] == math.inf:
        why = (unclean(f["unknown"]) + " above" if f["unknown"] else "the ladder ended: extend it")
        return f">= {f['value']:,.0f} (no clean failing point above: {why})"
    if f["hi"] > f["value"]:
        return f"{f['value']:,.0f} to {f['hi']:,.0f} ({unclean(f['unknown'])})"
    if f["ceiling"] is not None:
        return f"< {f['ceiling']:,.0f} (no point qualified)"
    return f"{f['value']:,.0f} (at the ladder's resolution)"


def ratio_verdict(relay, peer, need, peer_name):
    """PASS/FAIL/INCONCLUSIVE of relay/peer >= need from two figures: (verdict, ratio text, why).
    PASS needs relay's figure >= need x the most the peer's could be; FAIL needs the most the
    relay's could be < need x the peer's figure."""
    for name, f in (("relay", relay), (peer_name, peer)):
        if f is None or not f["measured"]:
            return "INCONCLUSIVE", None, f"{name} not measured"
    peer_hi = peer["ceiling"] if peer["ceiling"] is not None else peer["hi"]
    if peer["value"] > 0:
        text = f"{relay['value'] / peer['value']:.2f}x"
    elif peer["ceiling"]:
        text = f">= {relay['value'] / peer['ceiling']:.2f}x ({peer_name} had no qualifying point)"
    else:
        text = None
    if peer_hi != math.inf and relay["value"] >= need * peer_hi and relay["value"] > 0:
        return "PASS", text, ""
    if peer["value"] > 0 and relay["hi"] < need * peer["value"]:
        return "FAIL", text, ""
    why = []
    if peer["value"] == 0 and peer["ceiling"] is not None:
        why.append(f"{peer_name} had no qualifying point (below {peer['ceiling']:,.0f}/s): add lower rates")
    for name, f in (("relay", relay), (peer_name, peer)):
        if f["hi"] > f["value"]:
            why.append(f"{name}'s figure is {bounds(f)}")
    return "INCONCLUSIVE", text, "; ".join(why) or "undecided"


def combine(verdicts):
    kinds = [v for v, _, _ in verdicts]
    if "FAIL" in kinds:
        return "FAIL"
    return "PASS" if kinds and all(k == "PASS" for k in kinds) else "INCONCLUSIVE"


def quick_dev(a):
    return ["--quick (smoke-sized runs)"] if a.quick else []


def final(verdict, deviations):
    """A run off the target's setting cannot decide it: say what it would have been."""
    if deviations:
        return f"**INCONCLUSIVE** (setting differs from the target: {'; '.join(deviations)}; at this setting: {verdict})"
    return f"**{verdict}**"


# --- markdown --------------------------------------------------------------------------------

def fmt(v, f):
    return "n/a" if v is None else format(v, f)


def spread(p, key, f, unit=""):
    v = p.get(key)
    if v is None:
        return "n/a"
    lo, hi = p[key + "_min"], p[key + "_max"]
    if p["ok"] > 1 and lo != hi:
        return f"{v:{f}}{unit} ({lo:{f}}-{hi:{f}})"
    return f"{v:{f}}{unit}"


def notes(p):
    n = []
    if p["saturated"]:
        n.append(f"**loadgen saturated** in {p['saturated']}/{p['ok']} ({p['saturation']}): "
                 "a pass is a lower bound, a failure is not counted")
    if p["ramp_bound"]:
        n.append(f"**loadgen ramp-bound** in {p['ramp_bound']}/{p['ok']} (ramp CPU {p['ramp_cpu']:.0f}%): not counted")
    if p["ok"] and not p["all_joined"]:
        n.append(f"joined {p['joined_min']:,}/{p['clients']:,} (failed up to {p['failed_max']:,})")
    if p["closed_max"]:
        n.append(f"{p['closed_max']} closed by server")
    for e in sorted(set(p["errors"])):
        n.append(f"error in {p['errors'].count(e)}/{p['repeats']}: {e}")
    if p.get("stopped"):
        n.append(p["stopped"])
    return "; ".join(n)


def rate_table(points_by_server, limit, per_msg):
    counts_label = "counts?" if limit == math.inf else f"p99 < {limit:g} ms counts?"
    lines = [f"| server | offered msg/s | offered deliveries/s | delivered/s | delivered ratio | p50 ms | "
             f"p99 ms | max ms | server CPU | loadgen busiest thread | {counts_label} | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for s, pts in points_by_server.items():
        for p in pts:
            if p["ok"] == 0:
                counts = "no (no report)"
            elif qualifies(p, limit):
                counts = "yes" if p["clean"] else "yes, as a lower bound (loadgen saturated)"
            else:
                counts = f"no ({why_not(p, limit)})"
            lines.append(
                f"| {s} | {p['rate']:,} | {p['rate'] * per_msg:,} | {spread(p, 'delivered_per_s', ',.0f')} | "
                f"{fmt(p['ratio'], '.4f')} | {fmt(p['p50'], '.2f')} | {spread(p, 'p99', '.2f')} | "
                f"{fmt(p['max'], '.1f')} | {fmt(p['server_cpu'], '.0f')}% | {fmt(p['loadgen_cpu'], '.0f')}% | "
                f"{counts} | {notes(p)} |")
    return lines


def figure_table(figs, limit):
    lines = [f"| server | highest delivered/s with p99 < {limit:g} ms | at offered msg/s | "
             f"true figure (ladder resolution) | first clean point above that fails |", "|---|---:|---:|---|---|"]
    for s, f in figs.items():
        at, nxt = f["at"], f["next"]
        up = "none" if nxt is None else f"{nxt['rate']:,} msg/s: {why_not(nxt, limit)}"
        lines.append(f"| {s} | {f['value']:,.0f} | {at['rate']:,} | {bounds(f)} | {up} |" if at
                     else f"| {s} | none | - | {bounds(f)} | {up} |")
    return lines


def header(args, started, finished, meta):
    a = args
    relay_cmd = " ".join(["TOKIO_WORKER_THREADS=1", "taskset", "-c", a.server_cpus, "target/release/relay",
                          "--listen", "127.0.0.1:PORT", *relay_limit_flags(), *a.relay_args])
    lg_threads = len(cpu_list(a.loadgen_cpus))
    return [
        f"# chatrelay vs peers: the five performance targets ({started:%Y-%m-%d %H:%M})", "",
        f"- **Command:** `{meta['command']}`",
        f"- **Date:** {started:%Y-%m-%d %H:%M:%S} to {finished:%H:%M:%S} ({(finished - started).total_seconds() / 60:.1f} min); "
        f"load average at start {meta['load_start']}, at end {meta['load_end']}",
        f"- **Commit:** `{meta['commit']}` "
        + ("(--skip-build: relay and loadgen as found in target/release)" if a.skip_build
           else "(relay and loadgen built from it, release profile)"),
        f"- **Machine:** {meta['cpu']} x {os.cpu_count()} CPUs, kernel {platform.release()}",
        f"- **Versions:** {meta['relay_version'] or 'relay ?'}; Bun {meta['bun'] or 'not installed'}; "
        f"Node.js {meta['node'] or 'not installed'} with ws {meta['ws'] or '?'}",
        f"- **Pinning:** every server on CPU(s) `{a.server_cpus}`"
        + (f" (in targets 1 and 2 capped at {QUOTA.describe()})" if QUOTA else "") + ", a fresh process per measurement:",
        f"  - relay: `{relay_cmd}`",
        f"  - bun: `taskset -c {a.server_cpus} {BUN.relative_to(PEERS / 'bun')} server.ts` (in benches/peers/bun, `PORT` from the environment)",
        f"  - node-ws: `taskset -c {a.server_cpus} node server.js` (in benches/peers/node-ws, `PORT` from the environment)",
        f"  - loadgen: `taskset -c {a.loadgen_cpus} target/release/loadgen --threads {lg_threads} --payload {a.payload} "
        f"--drain {a.drain} --server-pid PID ...`",
        f"- **Relay flags beyond the defaults:** {('`' + ' '.join(a.relay_args) + '`') if a.relay_args else 'none'} "
        f"(plus the limit-off flags above)",
        f"- **Repeats:** {a.repeats} per point, servers interleaved per point ({', '.join(a.servers)}, {', '.join(a.servers)}, ...); "
        f"tables show the median and the spread (min-max) of the repeats.",
        f"- **Counted points:** {'p99 under the target limit in every repeat (--every-repeat)' if a.every_repeat else 'median p99 under the target limit'}, median delivered ratio >= {MIN_DELIVERED_RATIO}, "
        f"nothing closed by the server, every client joined; a point where the loadgen was saturated in a repeat "
        f"counts only as a lower bound when it qualifies, and its failure does not count. "
        f"Latency is from each message's schedule slot to its arrival (open loop). Raw reports: `{meta['raw']}/`.",
        "",
    ]


def svg_plot(points_by_server, path, title, limit):
    W, H, L, R, T, B = 820, 500, 80, 150, 40, 60
    pw, ph = W - L - R, H - T - B
    pts_all = [p for pts in points_by_server.values() for p in pts if p["ok"]]
    xs = [p["delivered_per_s"] for p in pts_all] or [1]
    ys = [max(p["p99"], 0.01) for p in pts_all] + [limit]
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
    out.append(f'<line x1="{L}" y1="{sy(limit):.1f}" x2="{L+pw}" y2="{sy(limit):.1f}" stroke="#999" stroke-dasharray="6,4"/>'
               f'<text x="{L+pw-4}" y="{sy(limit)-4:.1f}" text-anchor="end" fill="#666">p99 {limit:g} ms</text>')
    out.append(f'<text x="{L+pw/2}" y="{H-15}" text-anchor="middle">delivered messages/s (median of repeats; hollow: loadgen saturated)</text>')
    out.append(f'<text x="18" y="{T+ph/2}" text-anchor="middle" transform="rotate(-90 18 {T+ph/2})">p99 latency (ms, log)</text>')
    for k, name in enumerate(points_by_server):
        pts = sorted((p for p in points_by_server[name] if p["ok"]), key=lambda p: p["delivered_per_s"])
        c = COLORS.get(name, "#777")
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                   + " ".join(f"{sx(p['delivered_per_s']):.1f},{sy(p['p99']):.1f}" for p in pts) + '"/>')
        for p in pts:
            fill = c if p["clean"] else "white"
            out.append(f'<circle cx="{sx(p["delivered_per_s"]):.1f}" cy="{sy(p["p99"]):.1f}" r="3.5" '
                       f'fill="{fill}" stroke="{c}" stroke-width="1.5"/>')
        out.append(f'<rect x="{L+pw+20}" y="{T+20*k}" width="12" height="12" fill="{c}"/>'
                   f'<text x="{L+pw+38}" y="{T+20*k+11}">{name}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


# --- the five targets ------------------------------------------------------------------------

def target1(bench, a, md_base):
    per_room = a.clients // a.rooms
    bench.capped = True
    pts = ladder(bench, 1, a.servers, a.rates, a.clients,
                 lambda r: ["--scenario", "fanout", "--rooms", str(a.rooms), "--rate", str(r), "--duration", a.duration],
                 lambda r: r * per_room, a.connect_rate, T1_P99_MS)
    bench.capped = False
    figs = {s: figure(p, T1_P99_MS) for s, p in pts.items()}
    svg = md_base.with_suffix(".svg")
    svg_plot(pts, svg, f"fan-out: p99 vs delivered/s ({a.clients} clients, {a.rooms} rooms of {per_room})", T1_P99_MS)
    dev = quick_dev(a)
    if (a.clients, a.rooms) != (1000, 10):
        dev.append(f"{a.clients} clients in {a.rooms} rooms, not 1,000 in 10 rooms of 100")
    if a.payload != 64:
        dev.append(f"payload {a.payload} B, not 64")
    verdicts = []
    lines = [f"## Target 1: fan-out, highest delivered/s with p99 < {T1_P99_MS:g} ms", "",
             f"{a.clients:,} clients in {a.rooms} rooms ({per_room} members each; a message is delivered to every member, "
             f"the sender included, so deliveries = {per_room} x offered msg/s), {a.payload}-byte texts, {a.duration} "
             f"send phase per run. Target: relay >= {T1_VS_BUN:g}x Bun's and >= {T1_VS_NODE:g}x Node ws's.", "",
             *rate_table(pts, T1_P99_MS, per_room), "", *figure_table(figs, T1_P99_MS), ""]
    for peer, need in (("bun", T1_VS_BUN), ("node-ws", T1_VS_NODE)):
        if peer not in a.servers:
            continue
        v = ratio_verdict(figs.get("relay"), figs.get(peer), need, peer)
        verdicts.append(v)
        lines.append(f"- relay / {peer}: {v[1] or 'n/a'} (need >= {need:g}x): {v[0]}{(': ' + v[2]) if v[2] else ''}")
    if EVERY_REPEAT and "bun" in a.servers:
        # The fan-out tail issue's own rule: every repeat under the limit, 1.5x Bun's.
        v = ratio_verdict(figs.get("relay"), figs.get("bun"), T1_EVERY_REPEAT_VS_BUN, "bun")
        lines.append(f"- every repeat under {T1_P99_MS:g} ms, relay / bun: {v[1] or 'n/a'} "
                     f"(need >= {T1_EVERY_REPEAT_VS_BUN:g}x): {v[0]}{(': ' + v[2]) if v[2] else ''}")
    if "relay-memory" in a.servers:
        # The durable store's own target: not a peer comparison, so not in the verdict above.
        v = ratio_verdict(figs.get("relay"), figs.get("relay-memory"), DURABLE_FANOUT_SHARE, "relay-memory")
        lines.append(f"- history on disk / in memory (relay / relay-memory): {v[1] or 'n/a'} "
                     f"(need >= {DURABLE_FANOUT_SHARE:g}x): {v[0]}{(': ' + v[2]) if v[2] else ''}")
    if "relay-ref" in a.servers:
        # Acknowledged sends' own target (issue 15), beside the peers' verdict.
        v = ratio_verdict(figs.get("relay-ref"), figs.get("relay"), REF_FANOUT_SHARE, "relay")
        lines.append(f"- every message with a ref / without (relay-ref / relay): {v[1] or 'n/a'} "
                     f"(need >= {REF_FANOUT_SHARE:g}x): {v[0]}{(': ' + v[2]) if v[2] else ''}")
    lines += ["", f"Verdict: {final(combine(verdicts), dev)}", "", f"![p99 latency vs delivered rate]({svg.name})", ""]
    return lines


def target2(bench, a, md_base):
    n = a.broadcast_clients
    bench.capped = True
    pts = ladder(bench, 2, a.servers, a.broadcast_rates, n,
                 lambda r: ["--scenario", "broadcast", "--rate", str(r), "--duration", a.duration],
                 lambda r: r * n, a.connect_rate, T2_P99_MS)
    bench.capped = False
    figs = {s: figure(p, T2_P99_MS) for s, p in pts.items()}
    svg = md_base.with_name(md_base.name + "-broadcast.svg")
    svg_plot(pts, svg, f"one room of {n:,}: p99 vs delivered/s", T2_P99_MS)
    dev = quick_dev(a) + ([] if n == 10000 else [f"{n:,} members, not 10,000"])
    v = ratio_verdict(figs.get("relay"), figs.get("bun"), T2_VS_BUN, "bun")
    return [f"## Target 2: one room of {n:,}, highest delivered/s with p99 < {T2_P99_MS:g} ms", "",
            f"`--scenario broadcast`: all {n:,} clients join `room-0` (each join is announced to every member already "
            f"there: about n^2/2 = {n * (n - 1) // 2:,} `user_joined` events during the ramp, without user lists past 100 "
            f"members) and share the offered rate; each message goes to all {n:,}. {a.duration} per run, ramp at "
            f"{a.connect_rate:g} connections/s. Target: relay >= {T2_VS_BUN:g}x Bun's.", "",
            *rate_table(pts, T2_P99_MS, n), "", *figure_table(figs, T2_P99_MS), "",
            f"- relay / bun: {v[1] or 'n/a'} (need >= {T2_VS_BUN:g}x): {v[0]}{(': ' + v[2]) if v[2] else ''}", "",
            f"Verdict: {final(v[0], dev)}", "", f"![broadcast p99 vs delivered rate]({svg.name})", ""]


def target3(bench, a):
    per_room = a.clients // a.rooms
    deliveries = a.light_rate * per_room
    pts = ladder(bench, 3, a.servers, [a.light_rate], a.clients,
                 lambda r: ["--scenario", "fanout", "--rooms", str(a.rooms), "--rate", str(r), "--duration", a.duration],
                 lambda r: r * per_room, a.connect_rate)
    dev = quick_dev(a)
    if (a.clients, a.rooms) != (1000, 10):
        dev.append(f"{a.clients} clients in {a.rooms} rooms, not target 1's 1,000 in 10 rooms of 100")
    if per_room != 100 or deliveries != 20000:
        dev.append(f"{a.light_rate} msg/s x {per_room} members = {deliveries:,} deliveries/s, not 200 x 100 = 20,000")
    if a.payload != 64:
        dev.append(f"payload {a.payload} B, not 64")
    r, b = (pts.get("relay") or [None])[0], (pts.get("bun") or [None])[0]
    if r is None or b is None or not r["ok"] or not b["ok"]:
        verdict, why = "INCONCLUSIVE", "relay or bun not measured"
    else:
        problems = [f"{p['server']}: {why_not(p, math.inf) or notes(p)}" for p in (r, b)
                    if not p["clean"] or why_not(p, math.inf)]
        verdict = "INCONCLUSIVE" if problems else ("PASS" if r["p99"] <= b["p99"] else "FAIL")
        why = "; ".join(problems)
        if not problems and r["ok"] > 1 and b["ok"] > 1 and r["p99_min"] <= b["p99_max"] and b["p99_min"] <= r["p99_max"]:
            why = "the spreads of the repeats overlap: the medians decide, but the difference is within the noise"
    ratio = f"{r['p99'] / b['p99']:.2f}" if r and b and r["ok"] and b["ok"] and b["p99"] else "n/a"
    return [f"## Target 3: light load, {deliveries:,} deliveries/s", "",
            f"Fan-out shape: {a.clients:,} clients in {a.rooms} rooms of {per_room}, {a.light_rate} msg/s offered, "
            f"{a.duration} per run. Target: relay p99 <= Bun's p99.", "",
            *rate_table(pts, math.inf, per_room), "",
            f"- p99 relay {fmt(r and r['p99'], '.2f')} ms, bun {fmt(b and b['p99'], '.2f')} ms; relay / bun = {ratio} "
            f"(need <= 1){(': ' + why) if why else ''}", "",
            f"Verdict: {final(verdict, dev)}", "", *durable_light(pts), *ref_light(pts)]


def ref_light(pts):
    """Target 3's line for acknowledged sends against plain ones (relay-ref ran)."""
    f, d = (pts.get("relay-ref") or [None])[0], (pts.get("relay") or [None])[0]
    if f is None:
        return []
    if d is None or not d["ok"] or not f["ok"]:
        return ["- every message with a ref against without: one of them was not measured", ""]
    return [f"- every message with a ref against without: p99 {f['p99']:.2f} ms against {d['p99']:.2f} ms "
            f"({f['p99'] - d['p99']:+.2f} ms)", ""]


def durable_light(pts):
    """Target 3's line for the durable store against memory (both relays ran)."""
    d, m = (pts.get("relay") or [None])[0], (pts.get("relay-memory") or [None])[0]
    if m is None:
        return []
    if d is None or not d["ok"] or not m["ok"]:
        return ["- history on disk against in memory: INCONCLUSIVE: one of them was not measured", ""]
    diff = d["p99"] - m["p99"]
    verdict = "PASS" if diff <= DURABLE_LIGHT_P99_MS else "FAIL"
    return [f"- history on disk against in memory: p99 {d['p99']:.2f} ms against {m['p99']:.2f} ms, "
            f"{diff:+.2f} ms (need <= +{DURABLE_LIGHT_P99_MS:g} ms): {verdict}", ""]


def target4(bench, a):
    n, size = a.idle_clients, a.idle_room_size
    rooms = max(1, n // size)
    pts = single(bench, 4, [s for s in a.servers if s != "relay-ref"], n, ["--scenario", "idle", "--rooms", str(rooms), "--duration", "1s"], a.connect_rate)
    lines = [f"## Target 4: memory per joined idle connection", "",
             f"`--scenario idle --clients {n} --rooms {rooms}` (rooms of {size}, so presence traffic stays small) at "
             f"{a.connect_rate:g} connections/s: the slope of the server's RSS between half ({n // 2:,}) and all ({n:,}) "
             f"clients joined (loadgen `server.memory_per_connection`). Target: relay <= {T4_MAX_BYTES:g} B "
             f"({T4_MAX_BYTES / 1024:g} KiB).", "",
             "| server | RSS per connection | KiB | joined | server CPU | notes |", "|---|---:|---:|---:|---:|---|"]
    for s, p in pts.items():
        lines.append(f"| {s} | {spread(p, 'mem_per_conn', ',.0f', ' B')} | "
                     f"{fmt(p['mem_per_conn'] and p['mem_per_conn'] / 1024, '.2f')} | {p['joined_min']:,}/{n:,} | "
                     f"{fmt(p['server_cpu'], '.0f')}% | {notes(p) or ('no slope in the report' if p['ok'] and p['mem_per_conn'] is None else '')} |")
    r = pts.get("relay")
    dev = quick_dev(a) + ([] if n == 10000 else [f"{n:,} clients (slope {n // 2:,} to {n:,}), not 5,000 to 10,000"])
    if r is None or not r["ok"] or r["mem_per_conn"] is None:
        verdict, why = "INCONCLUSIVE", "relay not measured"
    elif not r["clean"] or not r["all_joined"]:
        verdict, why = "INCONCLUSIVE", notes(r)
    else:
        verdict, why = ("PASS" if r["mem_per_conn"] <= T4_MAX_BYTES else "FAIL"), ""
    b = pts.get("bun")
    if r and b and r["mem_per_conn"] and b["mem_per_conn"]:
        lines += ["", f"- relay / bun: {r['mem_per_conn'] / b['mem_per_conn']:.2f}x"]
    lines += ["", f"Verdict: {final(verdict, dev)}{(' (' + why + ')') if why else ''}", ""]
    return lines


def target5(bench, a):
    n, cr = a.storm_clients, a.storm_connect_rate
    rooms = max(1, n // a.idle_room_size)
    pts = single(bench, 5, [s for s in a.servers if s != "relay-ref"], n, ["--scenario", "idle", "--rooms", str(rooms), "--duration", "1s"], cr)
    lines = [f"## Target 5: connect storm", "",
             f"`--scenario idle --clients {n} --rooms {rooms} --connect-rate {cr:g}`: how many connections per second the "
             f"server accepts, upgrades and joins (loadgen `connect.per_second` = joined / ramp time). Target: relay >= Bun's.", "",
             "| server | joined/s | ramp s | joined | failed | connect time p99 | loadgen ramp CPU | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for s, p in pts.items():
        lines.append(f"| {s} | {spread(p, 'connect_per_s', ',.0f')} | "
                     f"{fmt(p['ramp_s'], '.2f')} | {p['joined_min']:,}/{n:,} | "
                     f"{p['failed_max']:,} | {fmt(p['connect_p99'], '.1f')} ms | {fmt(p['ramp_cpu'], '.0f')}% | {notes(p)} |")
    r, b = pts.get("relay"), pts.get("bun")
    dev = quick_dev(a) + ([] if n >= 10000 else [f"{n:,} clients, not 10,000"])
    if r is None or b is None or not r["ok"] or not b["ok"]:
        verdict, why = "INCONCLUSIVE", "relay or bun not measured"
    else:
        problems = [f"{p['server']}: {notes(p)}" for p in (r, b)
                    if not p["clean"] or p["ramp_bound"] or not p["all_joined"]]
        if b["connect_per_s"] >= 0.9 * cr:
            problems.append(f"bun reached the offered {cr:g}/s: raise --storm-connect-rate")
        verdict = "INCONCLUSIVE" if problems else ("PASS" if r["connect_per_s"] >= b["connect_per_s"] else "FAIL")
        why = "; ".join(problems)
        lines += ["", f"- relay / bun: {r['connect_per_s'] / b['connect_per_s']:.2f}x (need >= 1)"]
    lines += ["", f"Verdict: {final(verdict, dev)}{(' (' + why + ')') if why else ''}", ""]
    return lines


# --- main ------------------------------------------------------------------------------------

def meta_info(raw):
    commit = output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT) or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ws = json.loads((PEERS / "node-ws" / "node_modules" / "ws" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        ws = None
    return {
        "command": "python3 benches/compare.py" + ("" if len(sys.argv) < 2 else " " + shlex.join(sys.argv[1:])),
        "commit": commit + ("+dirty" if dirty else ""), "cpu": cpu,
        "relay_version": output([str(RELAY), "--version"]), "bun": output([str(BUN), "--version"]),
        "node": output(["node", "--version"]), "ws": ws, "raw": raw.relative_to(ROOT),
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="1,2,3,4,5", help="comma list of the targets to measure (1-5)")
    p.add_argument("--servers", default="relay,bun,node-ws", help="comma list of relay (history on disk), relay-memory (--memory), relay-ref (the relay, every message with a ref), bun, node-ws")
    p.add_argument("--repeats", type=int, default=3, help="runs per point, each on a fresh server; the median counts")
    p.add_argument("--every-repeat", action="store_true",
                   help="targets 1 and 2: a rate counts only if its p99 is under the limit in every repeat "
                        "(and every repeat reported), not by the median (use with --repeats 5)")
    p.add_argument("--quick", action="store_true",
                   help="smoke-sized run: 200 clients, rooms of 100, 500-member broadcast, 2,000 idle/storm "
                        "clients, 1 s per run (explicit flags still win)")
    p.add_argument("--rates", help="target 1: offered chat messages/s, low to high "
                   f"(default {DEFAULTS['rates'][0]}; quick {DEFAULTS['rates'][1]})")
    p.add_argument("--clients", type=int, help="targets 1 and 3: clients (default 1000; quick 200)")
    p.add_argument("--rooms", type=int, help="targets 1 and 3: rooms (default 10; quick 2)")
    p.add_argument("--duration", help="send phase per run, targets 1-3 (default 10s; quick 1s)")
    p.add_argument("--drain", help="loadgen --drain (default 2s; quick 1s)")
    p.add_argument("--payload", type=int, default=64)
    p.add_argument("--broadcast-clients", type=int, help="target 2: members of the one room (default 10000; quick 500)")
    p.add_argument("--broadcast-rates", help="target 2: offered msg/s, low to high "
                   f"(default {DEFAULTS['broadcast_rates'][0]}; quick {DEFAULTS['broadcast_rates'][1]})")
    p.add_argument("--light-rate", type=int, help="target 3: offered msg/s (default 200, i.e. 20,000 deliveries/s in rooms of 100)")
    p.add_argument("--idle-clients", type=int, help="target 4: idle clients (default 10000; quick 2000)")
    p.add_argument("--idle-room-size", type=int, help="targets 4 and 5: members per room (default 10)")
    p.add_argument("--storm-clients", type=int, help="target 5: clients (default 10000; quick 2000)")
    p.add_argument("--storm-connect-rate", type=float, help="target 5: loadgen --connect-rate (default 50000)")
    p.add_argument("--connect-rate", type=float, default=5000, help="loadgen --connect-rate for targets 1-4")
    p.add_argument("--relay-args", default="", help='extra relay flags, e.g. "--event-interval 256" (recorded in the markdown); '
                        'one word alone needs the = form: --relay-args=--flag')
    p.add_argument("--server-cpus", default="0", help="taskset -c list for the servers (default 0)")
    p.add_argument("--server-cpu-quota", type=float, metavar="SHARE",
                   help="targets 1 and 2: cap every server at SHARE (0.05-1) of one CPU through a cgroup, e.g. 0.5: "
                        "on two cores this lets the one generator core drive each server past its fan-out "
                        "ceiling (default: no cap)")
    p.add_argument("--loadgen-cpus", default="1", help="taskset -c list for the loadgen; --threads = its size (default 1)")
    p.add_argument("--port", type=int, default=18090, help="first port; each server start takes the next one")
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--skip-install", action="store_true")
    args = p.parse_args()
    global EVERY_REPEAT, QUOTA
    EVERY_REPEAT = args.every_repeat
    if args.server_cpu_quota is not None:
        if not 0.05 <= args.server_cpu_quota <= 1.0:
            raise SystemExit("--server-cpu-quota must be between 0.05 and 1")
        try:
            QUOTA = CpuQuota(args.server_cpu_quota)
        except OSError as e:
            raise SystemExit(f"--server-cpu-quota: cannot set up the cgroup: {e}")
    for key, (full, quick) in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.rates = [int(r) for r in str(args.rates).split(",") if r]
    args.broadcast_rates = [int(r) for r in str(args.broadcast_rates).split(",") if r]
    args.servers = [s for s in args.servers.split(",") if s]
    args.relay_args = shlex.split(args.relay_args)
    targets = sorted({int(t) for t in args.targets.split(",") if t})
    if bad := [t for t in targets if t not in range(1, 6)] + [s for s in args.servers if s not in SERVERS]:
        raise SystemExit(f"unknown target or server: {bad}")
    if args.repeats < 1 or args.clients % args.rooms:
        raise SystemExit("--repeats must be >= 1 and --clients a multiple of --rooms")
    if shutil.which("taskset") is None:
        raise SystemExit("taskset (util-linux) is required")
    # The servers inherit this process's open-files limit: ~1 fd per client.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    biggest = max(args.clients, args.broadcast_clients, args.idle_clients, args.storm_clients)
    if hard < biggest + 100:
        log(f"warning: open-files limit {hard} is below {biggest} clients + 100")

    started = dt.datetime.now()
    results = ROOT / "results"
    stamp = started.strftime("%Y%m%d-%H%M")
    if (results / f"compare-{stamp}.md").exists():
        stamp = started.strftime("%Y%m%d-%H%M%S")
    raw = results / f"compare-{stamp}-raw"
    raw.mkdir(parents=True, exist_ok=True)
    install(args.skip_install)
    build(args.skip_build)
    meta = meta_info(raw)
    bench = Bench(args, raw)
    md_base = results / f"compare-{stamp}"
    sections = []
    for t in targets:
        log(f"=== target {t} ===")
        if t == 1:
            sections += target1(bench, args, md_base)
        elif t == 2:
            sections += target2(bench, args, md_base)
        elif t == 3:
            sections += target3(bench, args)
        elif t == 4:
            sections += target4(bench, args)
        else:
            sections += target5(bench, args)
    meta["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = header(args, started, dt.datetime.now(), meta)
    if bench.broken:
        lines += [f"**Not measured:** {s}: {why}" for s, why in bench.broken.items()] + [""]
    md = results / f"compare-{stamp}.md"
    md.write_text("\n".join(lines + sections))
    print(md)


if __name__ == "__main__":
    main()
