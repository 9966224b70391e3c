#!/usr/bin/env python3
"""What the publish hook costs (issue 17, "Speed"): with the publish hook on against a trivial
local backend, messages/s delivered and the added p50/p99, next to the same relay without it.

For each offered rate (--rates) and each mode (--modes), --repeats times, modes interleaved per
repeat (none, publish, none, publish, ...) so machine noise hits both alike:

  - a fresh trivial backend, benches/peers/hook-backend.js (Node's `http`, keep-alive, answers
    every POST at once with {"allow":true}), pinned with `taskset -c --backend-cpus`;
  - a fresh target/release/relay pinned to --server-cpus (TOKIO_WORKER_THREADS=1, the abuse
    limits off as compare.py turns them off, --memory unless --durable), with
    `--publish-hook http://127.0.0.1:PORT/publish` in mode "publish", nothing in mode "none";
  - target/release/loadgen pinned to --loadgen-cpus, fan-out shape (--clients in --rooms,
    64-byte texts, open loop at the rate, --duration, --drain);
  - then the relay's /metrics (relay_hook_requests_total, relay_hook_failures_total,
    relay_hook_duration_seconds) and the backend's own count of what it answered.

Pinning (defaults, two CPUs): relay alone on CPU 0; loadgen and backend share CPU 1, so what the
backend costs is paid by the generator's core, not the relay's. The backend runs (idle) in mode
"none" too. A run where the loadgen reports itself saturated measured the generator: it is
marked. Everything is on 127.0.0.1; every process gets a deadline and is stopped at the end.

Mode "webhook" (only when `relay --help` has --webhook-url; not in the default --modes):
`--webhook-url http://127.0.0.1:PORT/webhook` (plus --webhook-args), the same load; reports the
events the backend received per second and the batch size (events per request). For the
50,000 events/s question use a shape with many small rooms, e.g.
`--modes none,webhook --clients 1000 --rooms 500 --rates 20000,50000`.

    python3 benches/hooks.py --duration 2s --repeats 1 --rates 200,1000      (smoke, ~1 minute)
    python3 benches/hooks.py --out results/hooks-YYYYMMDD.md                  (default ladder, ~5 min)
    python3 benches/hooks.py --modes none,publish,webhook --webhook-args "--webhook-batch 1000"

Needs target/release/{relay,loadgen} built with the publish hook
(cargo build --release -p relay -p loadgen), node (18+) and taskset.
"""

import argparse
import json
import os
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
from compare import cpu_list, parse_seconds, relay_limit_flags  # noqa: E402  (shared with compare.py)
RELAY, LOADGEN = ROOT / "target/release/relay", ROOT / "target/release/loadgen"
BACKEND = ROOT / "benches/peers/hook-backend.js"
MODES = ("none", "publish", "webhook")
HOOK_OF = {"publish": "publish", "webhook": "webhook"}
CONNECT_RATE = 5000
CONNECT_TIMEOUT_S = 10.0  # loadgen's default --connect-timeout


def log(msg):
    print(f"[hooks] {msg}", file=sys.stderr, flush=True)


def first_line(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if r.returncode == 0 and text else None


def has_flag(help_text, flag):
    # Whole flags only: "--connection-rate" is a prefix of "--connection-rate-per-ip".
    return re.search(re.escape(flag) + r"(?![\w-])", help_text) is not None


# --- processes -------------------------------------------------------------------------------

def wait_http(port, path, proc, limit=15.0):
    end = time.time() + limit
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"did not answer on port {port} within {limit:g}s")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A pinned child process with its log; stop() is idempotent and bounded."""

    def __init__(self, name, cpus, cmd, env, logdir, ready_port, ready_path):
        self.name = name
        self.log = open(logdir / f"{name}.log", "ab")
        self.log.write(f"--- {time.strftime('%H:%M:%S')}: {shlex.join(cmd)}\n".encode())
        self.log.flush()
        self.proc = subprocess.Popen(["taskset", "-c", cpus, *cmd], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_http(ready_port, ready_path, self.proc)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError(f"{name} {e} (see {logdir / (name + '.log')})") from None

    def stop(self):
        """The exit status if it had already exited (crashed) before the stop, else None."""
        died = self.proc.poll()
        if died is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        return died


def clean_env(extra):
    # RELAY_* and TOKIO_* of the calling shell would change the relay's settings unrecorded.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "TOKIO_"))}
    env.update(NO_COLOR="1", **extra)
    return env


# --- metrics ---------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)$')


def scrape(port):
    """Every relay_hook_* and relay_webhook_* sample of the relay's /metrics: [(name, labels, value)]."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = []
    for line in text.splitlines():
        if not line.startswith(("relay_hook_", "relay_webhook_")):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            pass
    return out


def hook_numbers(samples, hook):
    """One hook's requests, failures by kind and latency histogram from a scrape."""
    mine = [(n, l, v) for n, l, v in samples if l.get("hook") == hook]
    requests = sum(v for n, _, v in mine if n == "relay_hook_requests_total")
    failures = {l.get("kind", "?"): v for n, l, v in mine if n == "relay_hook_failures_total" and v}
    buckets = sorted(((float("inf") if l["le"] == "+Inf" else float(l["le"]), v)
                      for n, l, v in mine if n == "relay_hook_duration_seconds_bucket" and "le" in l))
    count = next((v for n, _, v in mine if n == "relay_hook_duration_seconds_count"), 0.0)
    total = next((v for n, _, v in mine if n == "relay_hook_duration_seconds_sum"), 0.0)

    def quantile(q):
        # The upper bound of the bucket the q-th answer falls in (the histogram's resolution).
        for le, cum in buckets:
            if count and cum >= q * count:
                return le * 1000
        return None

    spread, previous = [], 0.0
    for le, cum in buckets:
        if cum > previous:
            spread.append(f"<= {'inf' if le == float('inf') else f'{le * 1000:g}'} ms: {int(cum - previous):,}")
        previous = cum
    return {"requests": requests, "failures": failures, "count": count,
            "mean_ms": total / count * 1000 if count else None,
            "p50_ms": quantile(0.5), "p99_ms": quantile(0.99), "spread": ", ".join(spread)}


def backend_stats(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


# --- one run ---------------------------------------------------------------------------------

class Bench:
    def __init__(self, a, raw):
        self.a, self.raw = a, raw
        self.logdir = raw / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)

    def relay_cmd(self, mode, port, backend_port, data_dir):
        a = self.a
        storage = ["--data-dir", str(data_dir)] if data_dir else ["--memory"]
        hook = []
        if mode == "publish":
            hook = ["--publish-hook", f"http://127.0.0.1:{backend_port}/publish"]
        elif mode == "webhook":
            hook = ["--webhook-url", f"http://127.0.0.1:{backend_port}/webhook", *a.webhook_args]
        return [str(RELAY), "--listen", f"127.0.0.1:{port}", *a.limit_flags, *storage, *hook, *a.relay_args]

    def once(self, mode, rate, rep):
        a = self.a
        tag = f"{mode}-{rate}-r{rep + 1}"
        out_json = self.raw / f"{tag}.json"
        relay_port = backend_port = free_port()
        while backend_port == relay_port:
            backend_port = free_port()
        data_dir = Path(tempfile.mkdtemp(prefix="chatrelay-hooks-")) if a.durable else None
        backend = relay = None
        s = {"mode": mode, "rate": rate}
        try:
            backend = Proc(f"backend-{tag}", a.backend_cpus, ["node", str(BACKEND)],
                           clean_env({"PORT": str(backend_port)}), self.logdir, backend_port, "/stats")
            relay = Proc(f"relay-{tag}", a.server_cpus, self.relay_cmd(mode, relay_port, backend_port, data_dir),
                         clean_env({"TOKIO_WORKER_THREADS": "1"}), self.logdir, relay_port, "/healthz")
            cmd = ["taskset", "-c", a.loadgen_cpus, str(LOADGEN), "--url", f"ws://127.0.0.1:{relay_port}/ws",
                   "--clients", str(a.clients), "--rooms", str(a.rooms), "--scenario", "fanout",
                   "--rate", str(rate), "--duration", a.duration, "--payload", "64",
                   "--threads", str(a.loadgen_threads), "--drain", a.drain, "--connect-rate", str(CONNECT_RATE),
                   "--server-pid", str(relay.proc.pid), "--no-progress", "--quiet", "--json", str(out_json)]
            limit = (a.clients / CONNECT_RATE + CONNECT_TIMEOUT_S + parse_seconds(a.duration)
                     + parse_seconds(a.drain) + 60)
            log(f"{tag}: $ {shlex.join(cmd)}")
            # loadgen warns about the relay's default abuse limits, which are off here: its
            # stderr goes to a log beside the servers' (read it when a run fails).
            with open(self.logdir / f"loadgen-{tag}.log", "wb") as lg_log:
                subprocess.run(cmd, check=True, timeout=limit, stdout=lg_log, stderr=subprocess.STDOUT)
            if mode == "webhook":
                settle(backend_port)
            s.update(sample_of(json.loads(out_json.read_text()), a))
            s["metrics"] = scrape(relay_port)
            s["backend"] = backend_stats(backend_port)
        except subprocess.TimeoutExpired:
            s["error"] = "loadgen did not finish in time"
        except subprocess.CalledProcessError as e:
            s["error"] = f"loadgen exited with {e.returncode}"
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            s["error"] = str(e)
        finally:
            died = relay.stop() if relay else None
            if backend:
                backend.stop()
            if data_dir:
                shutil.rmtree(data_dir, ignore_errors=True)
        if died is not None and "error" not in s:
            s = {"mode": mode, "rate": rate, "error": f"the relay exited during the run (status {died})"}
        if "error" in s:
            log(f"{tag}: {s['error']}")
        else:
            log(f"{tag}: {s['msgs_per_s']:,.0f} msg/s delivered (ratio {s['ratio']:.4f}), "
                f"p50 {s['p50']:.2f} ms, p99 {s['p99']:.2f} ms, saturated: {s['saturated']}")
        time.sleep(0.3)
        return s


def settle(port, limit=15.0):
    """Webhooks are delivered after the fact: wait until the backend stops hearing events."""
    end, last = time.time() + limit, None
    while time.time() < end:
        st = backend_stats(port)
        now = st and (st["requests"], st["events"])
        if now is not None and now == last:
            return
        last = now
        time.sleep(0.5)


def sample_of(r, a):
    m, lat, lg = r["messages"], r["latency_ms"], r["loadgen"]
    srv = r.get("server") or {}
    per_room = a.clients // a.rooms
    return {
        "deliveries_per_s": m["delivered_per_second"], "msgs_per_s": m["delivered_per_second"] / per_room,
        "sent": m["sent"], "ratio": m["delivered_ratio"], "p50": lat["p50"], "p99": lat["p99"], "max": lat["max"],
        "server_cpu": srv.get("cpu_percent"), "loadgen_cpu": lg["max_thread_cpu_percent"],
        "send_lag_p99": (r.get("send_lag_ms") or {}).get("p99"), "saturated": lg["saturated"], "saturation": lg["saturation"],
        "joined": r["connect"]["joined"], "clients": a.clients, "errors": r["server_events"]["errors"] or {},
        "closed": r["server_events"]["closed_by_server"],
    }


# --- report ----------------------------------------------------------------------------------

def med(vals):
    vals = [v for v in vals if v is not None]
    return (statistics.median(vals), min(vals), max(vals)) if vals else (None, None, None)


def fmt(v, spec=".2f", unit=""):
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def spread(vals, spec=".2f"):
    m, lo, hi = med(vals)
    if m is None:
        return "n/a"
    return fmt(m, spec) + ("" if lo == hi else f" ({lo:{spec}}-{hi:{spec}})")


def notes(runs):
    ok = [s for s in runs if "error" not in s]
    out = [s["error"] for s in runs if "error" in s]
    if n := sum(1 for s in ok if s["saturated"]):
        out.append(f"loadgen saturated in {n}/{len(runs)} ({next(s['saturation'] for s in ok if s['saturated'])})")
    errors = {}
    for s in ok:
        for k, v in s["errors"].items():
            errors[k] = errors.get(k, 0) + v
    if errors:
        out.append("server errors: " + ", ".join(f"{k} {v:,}" for k, v in sorted(errors.items())))
    if c := sum(s["closed"] for s in ok):
        out.append(f"{c} closed by the relay")
    if j := [s["joined"] for s in ok if s["joined"] < s["clients"]]:
        out.append(f"joined only {min(j):,}/{ok[0]['clients']:,}")
    return "; ".join(out)


def report(a, meta, runs):
    """runs: {(mode, rate): [sample, ...]} -> markdown lines."""
    per_room = a.clients // a.rooms
    lines = [f"## Hooks: what asking the backend costs, {meta['date']}", "",
             f"- Command: `{meta['command']}`",
             f"- Commit `{meta['commit']}`; {meta['relay']}; node {meta['node']}; {meta['cpu']}, "
             f"{os.cpu_count()} CPUs; load average {meta['load_start']} at start, {meta['load_end']} at the end",
             f"- relay on CPU {a.server_cpus} (TOKIO_WORKER_THREADS=1, abuse limits off, "
             f"{'history on disk (fresh --data-dir)' if a.durable else '--memory'}"
             f"{', ' + shlex.join(a.relay_args) if a.relay_args else ''}); loadgen on CPU {a.loadgen_cpus} "
             f"({a.loadgen_threads} thread(s)); backend (benches/peers/hook-backend.js, answers "
             f"`{{\"allow\":true}}` at once, keep-alive) on CPU {a.backend_cpus}, idle in mode `none`",
             f"- Fan-out: {a.clients:,} clients in {a.rooms} rooms of {per_room}, 64-byte texts, open loop; "
             f"{a.duration} per run, drain {a.drain}; {a.repeats} repeat(s) per point, modes interleaved, a fresh "
             f"relay and backend per run. Medians, (min-max) of the repeats when they differ.",
             f"- msg/s = chat messages delivered per second (deliveries/s / {per_room} members); "
             f"latency = send to delivery at every member, as loadgen measures it; send lag = how late the "
             f"generator sent against its schedule (a backend sharing the loadgen's CPU shows up here; loadgen "
             f"calls a run saturated past 10 ms)", ""]
    lines += ["### Delivered and latency", "",
              "| offered msg/s | mode | msg/s delivered | deliveries/s | delivered ratio | p50 ms | p99 ms | max ms | relay CPU | loadgen CPU | send lag p99 ms | notes |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for rate in a.rates:
        for mode in a.modes:
            rs = runs.get((mode, rate), [])
            ok = [s for s in rs if "error" not in s]
            lines.append(f"| {rate:,} | {mode} | {spread([s['msgs_per_s'] for s in ok], ',.0f')} | "
                         f"{spread([s['deliveries_per_s'] for s in ok], ',.0f')} | "
                         f"{spread([s['ratio'] for s in ok], '.4f')} | {spread([s['p50'] for s in ok])} | "
                         f"{spread([s['p99'] for s in ok])} | {spread([s['max'] for s in ok], '.1f')} | "
                         f"{fmt(med([s['server_cpu'] for s in ok])[0], '.0f', '%')} | "
                         f"{fmt(med([s['loadgen_cpu'] for s in ok])[0], '.0f', '%')} | "
                         f"{spread([s['send_lag_p99'] for s in ok], '.1f')} | {notes(rs)} |")
    for mode in [m for m in a.modes if m != "none"]:
        if "none" not in a.modes:
            break
        lines += ["", f"### Added by {'the publish hook' if mode == 'publish' else 'webhooks'}", "",
                  f"Median with {mode} minus median without; in brackets the range of the per-repeat differences "
                  f"(repeat i with against repeat i without, run back to back).", "",
                  "| offered msg/s | p50 none | p50 " + mode + " | added p50 | p99 none | p99 " + mode +
                  " | added p99 | msg/s " + mode + " / none |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for rate in a.rates:
            base = runs.get(("none", rate), [])
            with_ = runs.get((mode, rate), [])
            pairs = [(b, w) for b, w in zip(base, with_) if "error" not in b and "error" not in w]
            b_ok = [s for s in base if "error" not in s]
            w_ok = [s for s in with_ if "error" not in s]
            cells = []
            for key in ("p50", "p99"):
                b, w = med([s[key] for s in b_ok])[0], med([s[key] for s in w_ok])[0]
                d = [y[key] - x[key] for x, y in pairs]
                added = fmt(None if b is None or w is None else w - b, "+.2f")
                if len(d) > 1:
                    added += f" ({min(d):+.2f} to {max(d):+.2f})"
                cells += [fmt(b), fmt(w), added]
            bm, wm = med([s["msgs_per_s"] for s in b_ok])[0], med([s["msgs_per_s"] for s in w_ok])[0]
            share = fmt(wm / bm if bm and wm is not None else None, ".3f")
            lines.append(f"| {rate:,} | " + " | ".join(cells) + f" | {share} |")
    if "publish" in a.modes:
        lines += ["", "### The publish hook's own numbers (relay /metrics at the end of each run)", "",
                  "`relay_hook_duration_seconds{hook=\"publish\"}` has buckets from 0.25 ms: p50/p99 here are the "
                  "upper bound of the bucket they fall in; the mean is exact (sum / count).", "",
                  "| offered msg/s | messages sent | relay_hook_requests_total | backend answered | failures | "
                  "mean ms | p50 ms (bucket) | p99 ms (bucket) | buckets (last repeat) | backend connections |",
                  "|---:|---:|---:|---:|---|---:|---:|---:|---|---:|"]
        for rate in a.rates:
            ok = [s for s in runs.get(("publish", rate), []) if "error" not in s]
            h = [hook_numbers(s["metrics"], "publish") for s in ok]
            be = [s["backend"] or {} for s in ok]
            fails = {}
            for x in h:
                for k, v in x["failures"].items():
                    fails[k] = fails.get(k, 0) + v
            lines.append(f"| {rate:,} | {spread([s['sent'] for s in ok], ',.0f')} | "
                         f"{spread([x['requests'] for x in h], ',.0f')} | {spread([b.get('requests') for b in be], ',.0f')} | "
                         f"{', '.join(f'{k} {v:,.0f}' for k, v in sorted(fails.items())) or 'none'} | "
                         f"{spread([x['mean_ms'] for x in h], '.3f')} | {spread([x['p50_ms'] for x in h], 'g')} | "
                         f"{spread([x['p99_ms'] for x in h], 'g')} | {h[-1]['spread'] if h else 'n/a'} | "
                         f"{spread([b.get('connections') for b in be], ',.0f')} |")
    if "webhook" in a.modes:
        lines += ["", "### Webhooks (events the backend received)", "",
                  f"Relay flags: `--webhook-url http://127.0.0.1:PORT/webhook{(' ' + shlex.join(a.webhook_args)) if a.webhook_args else ''}`. "
                  "events/s = events counted at the backend (its `\"eventId\"` keys) over the time between its first and "
                  "last request; batch = events per request.", "",
                  "| offered msg/s | events at backend | events/s | requests | events/request | relay_hook_requests_total | "
                  "failures | mean request ms | other relay_webhook_* (last repeat) |",
                  "|---:|---:|---:|---:|---:|---:|---|---:|---|"]
        for rate in a.rates:
            ok = [s for s in runs.get(("webhook", rate), []) if "error" not in s]
            h = [hook_numbers(s["metrics"], "webhook") for s in ok]
            be = [s["backend"] or {} for s in ok]
            eps = [b["events"] / ((b["last_ms"] - b["first_ms"]) / 1000) for b in be
                   if b.get("events") and b.get("last_ms") and b["last_ms"] > b["first_ms"]]
            batch = [b["events"] / b["requests"] for b in be if b.get("requests")]
            fails = {}
            for x in h:
                for k, v in x["failures"].items():
                    fails[k] = fails.get(k, 0) + v
            other = ", ".join(f"{n}{('{' + ','.join(f'{k}={v}' for k, v in l.items()) + '}') if l else ''} {v:g}"
                              for n, l, v in (ok[-1]["metrics"] if ok else [])
                              if n.startswith("relay_webhook_") and not n.endswith("_bucket"))
            lines.append(f"| {rate:,} | {spread([b.get('events') for b in be], ',.0f')} | {spread(eps, ',.0f')} | "
                         f"{spread([b.get('requests') for b in be], ',.0f')} | {spread(batch, ',.1f')} | "
                         f"{spread([x['requests'] for x in h], ',.0f')} | "
                         f"{', '.join(f'{k} {v:,.0f}' for k, v in sorted(fails.items())) or 'none'} | "
                         f"{spread([x['mean_ms'] for x in h], '.2f')} | {other or 'n/a'} |")
    return lines + [""]


# --- main ------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="200,1000,2000,5000", help="offered chat messages/s, comma list (default 200,1000,2000,5000)")
    p.add_argument("--modes", help="comma list of none, publish, webhook (default none,publish; webhook needs a relay with --webhook-url)")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rooms", type=int, default=10)
    p.add_argument("--duration", default="10s", help="send phase per run (default 10s)")
    p.add_argument("--drain", default="2s", help="loadgen --drain (default 2s)")
    p.add_argument("--repeats", type=int, default=3, help="runs per point and mode, interleaved (default 3)")
    p.add_argument("--durable", action="store_true", help="history on disk (a fresh --data-dir per relay) instead of --memory")
    p.add_argument("--relay-args", default="", help='extra relay flags for every mode, e.g. "--hook-concurrency 128"')
    p.add_argument("--webhook-args", default="", help='extra relay flags for mode webhook, e.g. "--webhook-batch 1000"')
    p.add_argument("--server-cpus", default="0", help="taskset -c list for the relay (default 0)")
    p.add_argument("--loadgen-cpus", default="1", help="taskset -c list for the loadgen; --threads = its size (default 1)")
    p.add_argument("--backend-cpus", default="1", help="taskset -c list for the hook backend (default 1, beside the loadgen)")
    p.add_argument("--time-limit", default="45m", help="no new run starts after this long (default 45m); the report says what was skipped")
    p.add_argument("--raw", help="keep the loadgen JSON reports and the process logs in this folder (default: a temporary one, removed)")
    p.add_argument("--out", help="also write the markdown here")
    a = p.parse_args()

    for tool, path in (("relay", RELAY), ("loadgen", LOADGEN)):
        if not path.exists():
            raise SystemExit(f"{path} is missing: cargo build --release -p relay -p loadgen")
    for tool in ("taskset", "node"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required")
    help_text = subprocess.run([str(RELAY), "--help"], capture_output=True, text=True, timeout=30).stdout
    if not has_flag(help_text, "--publish-hook"):
        raise SystemExit(f"{RELAY} has no --publish-hook: rebuild it (cargo build --release -p relay -p loadgen)")
    webhook_ok = has_flag(help_text, "--webhook-url")
    a.modes = [m for m in (a.modes or "none,publish").split(",") if m]
    if bad := [m for m in a.modes if m not in MODES]:
        raise SystemExit(f"unknown mode(s) {bad}; choose from {', '.join(MODES)}")
    if "webhook" in a.modes and not webhook_ok:
        log("this relay has no --webhook-url: mode webhook skipped")
        a.modes.remove("webhook")
    a.rates = [int(r) for r in a.rates.split(",") if r]
    if a.repeats < 1 or a.clients % a.rooms or not a.rates or not a.modes:
        raise SystemExit("--repeats >= 1, --clients a multiple of --rooms, at least one rate and one mode")
    a.relay_args, a.webhook_args = shlex.split(a.relay_args), shlex.split(a.webhook_args)
    a.limit_flags = relay_limit_flags()
    a.loadgen_threads = len(os.sched_getaffinity(0) & set(cpu_list(a.loadgen_cpus))) or 1
    # The relay inherits the open-files limit: ~1 fd per client.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    per_run = a.clients / CONNECT_RATE + parse_seconds(a.duration) + parse_seconds(a.drain) + 2.5
    total = per_run * len(a.rates) * len(a.modes) * a.repeats
    deadline = time.time() + parse_seconds(a.time_limit)
    log(f"{len(a.rates) * len(a.modes) * a.repeats} runs, about {total / 60:.1f} min "
        f"(no run starts after {a.time_limit})")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "command": "python3 benches/hooks.py" + (" " + shlex.join(sys.argv[1:]) if len(sys.argv) > 1 else ""),
            "commit": (first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "unknown")
            + ("+dirty" if first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]) else ""),
            "relay": first_line([str(RELAY), "--version"]) or "?", "node": first_line(["node", "--version"]) or "?",
            "cpu": next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                         if l.startswith("model name")), "unknown CPU"),
            "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    runs, skipped = {}, 0
    with tempfile.TemporaryDirectory(prefix="chatrelay-hooks-raw-") as tmp:
        raw = Path(a.raw) if a.raw else Path(tmp)
        raw.mkdir(parents=True, exist_ok=True)
        bench = Bench(a, raw)
        for rate in a.rates:
            for rep in range(a.repeats):
                for mode in a.modes:
                    if time.time() > deadline:
                        skipped += 1
                        continue
                    runs.setdefault((mode, rate), []).append(bench.once(mode, rate, rep))
    meta["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = report(a, meta, runs)
    if skipped:
        lines += [f"**{skipped} run(s) not started: --time-limit {a.time_limit} reached.**", ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
        log(f"wrote {a.out}")


if __name__ == "__main__":
    main()
