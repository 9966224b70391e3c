#!/usr/bin/env python3
"""Resident memory per idle WebSocket connection, plain TCP beside TLS.

Starts the relay binary (release build) on a loopback port, once plain and once with a
throw-away self-signed certificate (openssl), opens N idle WebSocket connections to it,
and reads the relay's VmRSS from /proc/PID/status before and after:

    cargo build --release -p relay
    python3 scripts/idle_rss.py [--count 2000] [--relay target/release/relay]

Loopback only, a bounded number of connections, and it stops the relay itself.
"""

import argparse
import asyncio
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every abuse limit off, as benches/compare.py runs it: one address opens all the clients.
NO_LIMITS = [
    "--message-rate", "0", "--command-rate", "0", "--ip-message-rate", "0",
    "--ip-command-rate", "0", "--frame-rate", "0", "--ip-rooms", "0",
    "--max-connections-per-ip", "0", "--connection-rate", "0",
    "--connection-rate-per-ip", "0", "--http-request-rate", "0",
    # Memory per connection does not depend on where history lives; this leaves no data dir.
    "--memory",
]

UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def self_signed(directory: str) -> tuple:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    return cert, key


async def wait_listening(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("the relay did not start listening")


async def open_one(port: int, tls):
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None
    )
    writer.write(UPGRADE)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"no upgrade: {head[:40]!r}")
    return reader, writer


async def measure(relay: str, count: int, tls_files) -> dict:
    port = free_port()
    args = [relay, "--listen", f"127.0.0.1:{port}", *NO_LIMITS]
    if tls_files:
        args += ["--tls-cert", tls_files[0], "--tls-key", tls_files[1]]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_listening(port, time.monotonic() + 10)
        tls = None
        if tls_files:
            tls = ssl.create_default_context()
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        # Warm-up: the worker threads' scratch buffers and the allocator's first pages are
        # not per connection.
        warm = [await open_one(port, tls) for _ in range(50)]
        for _, writer in warm:
            writer.close()
        await asyncio.sleep(1)
        before = rss_bytes(proc.pid)
        conns = []
        for start in range(0, count, 100):
            conns += await asyncio.gather(
                *(open_one(port, tls) for _ in range(min(100, count - start)))
            )
        # Let the relay finish what the upgrades started (its tasks spawn after the 101).
        await asyncio.sleep(2)
        after = rss_bytes(proc.pid)
        for _, writer in conns:
            writer.close()
        return {"before": before, "after": after, "per_conn": (after - before) / count}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="idle connections per transport (at most 9000)")
    parser.add_argument("--relay", default=os.path.join(ROOT, "target", "release", "relay"))
    args = parser.parse_args()
    if not 1 <= args.count <= 9000:
        sys.exit("--count must be between 1 and 9000")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = self_signed(tmp)
        for name, tls_files in (("plain", None), ("tls", files)):
            results[name] = asyncio.run(measure(args.relay, args.count, tls_files))
    print(f"{'transport':<10} {'connections':>11} {'RSS before':>12} {'RSS after':>12} {'bytes/conn':>11}")
    for name, r in results.items():
        print(f"{name:<10} {args.count:>11} {r['before']:>12} {r['after']:>12} {r['per_conn']:>11.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
