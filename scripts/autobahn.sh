#!/usr/bin/env bash
# Autobahn conformance of the relay's own WebSocket framing (relay/src/ws/): runs the Autobahn
# cases with PyPI's kosoku (a runner of Autobahn's case files; no Docker) against
# relay/examples/echo.rs, an echo server built on that framing code, as fastwebsockets and
# tokio-tungstenite gate their CI. Sections 1-7, 9 and 10 must all be OK, NON-STRICT or
# INFORMATIONAL; 12 and 13 need permessage-deflate, which the relay does not offer.
# Writes results/autobahn-summary.md; the per-case reports stay in target/autobahn/reports.
#
#   scripts/autobahn.sh            # debug build of the example (what `cargo test` built)
#   AUTOBAHN_RELEASE=1 scripts/autobahn.sh
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU_VERSION=0.1.0
venv=target/autobahn-venv
out=target/autobahn
summary=results/autobahn-summary.md
sections=(1 2 3 4 5 6 7 9 10)
parallelism=4

if [ ! -x "$venv/bin/kosoku" ] || ! "$venv/bin/pip" show kosoku 2>/dev/null | grep -qx "Version: $KOSOKU_VERSION"; then
  # Debian's python3 has no venv module (nor ensurepip) without python3-venv.
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
fi

if [ "${AUTOBAHN_RELEASE:-0}" = 1 ]; then
  cargo build -q -p relay --example echo --release
  echo_bin=target/release/examples/echo
  build=release
else
  cargo build -q -p relay --example echo
  echo_bin=target/debug/examples/echo
  build=debug
fi

rm -rf "$out"
mkdir -p "$out" results
# Port 0: the example binds a free port and prints it, so nothing can race for the port.
"$echo_bin" >"$out/echo.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/^listening on //p' "$out/echo.log")
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$out/echo.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "autobahn: the echo example did not start" >&2; exit 1; }

args=(-m fuzzingclient "$addr" -x '12.*' -x '13.*' -p "$parallelism" -o "$out/reports")
for section in "${sections[@]}"; do
  args+=(-i "$section.*")
done
started=$(date +%s)
set +e
"$venv/bin/kosoku" "${args[@]}" >"$out/kosoku.log" 2>&1
kosoku_rc=$?
set -e
elapsed=$(($(date +%s) - started))
if [ ! -f "$out/reports/index.json" ]; then
  cat "$out/kosoku.log" >&2
  echo "autobahn: kosoku wrote no index.json (exit $kosoku_rc)" >&2
  exit 1
fi

command_line="kosoku ${args[*]}"
command_line=${command_line//"$addr"/127.0.0.1:PORT}
commit=$(git rev-parse --short HEAD)
if ! git diff --quiet HEAD -- relay/src relay/examples 2>/dev/null; then
  commit="$commit (with uncommitted changes to relay/)"
fi
python3 - "$out/reports/index.json" "$summary" "$command_line" "$commit" "$elapsed" "$build" "$kosoku_rc" "${sections[@]}" <<'EOF'
"""Counts behaviours per section and writes the summary; exits 1 on a failed case."""
import collections
import datetime
import json
import os
import platform
import sys

index_path, summary_path, command, commit, elapsed, build, kosoku_rc = sys.argv[1:8]
required = set(sys.argv[8:])
index = json.load(open(index_path))
# index.json: {agent: {case id: {"behavior": ..., "behaviorClose": ..., ...}}}, as Autobahn's.
cases = {}
for agent_cases in index.values():
    cases.update(agent_cases)

def case_key(case_id):
    return tuple(int(part) for part in case_id.split("."))

ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
passing = {"OK", "NON-STRICT", "INFORMATIONAL"}
counts = collections.Counter()
per_section = collections.defaultdict(collections.Counter)
bad, notable = [], []
for case_id in sorted(cases, key=case_key):
    result = cases[case_id]
    behavior = result.get("behavior", "MISSING")
    close = result.get("behaviorClose", "")
    counts[behavior] += 1
    section = case_id.split(".")[0]
    per_section[section][behavior] += 1
    if behavior != "OK" or close not in ("OK", ""):
        notable.append((case_id, behavior, close, result.get("remoteCloseCode")))
    if section in required and (behavior not in passing or close not in passing | {""}):
        bad.append(case_id)
missing = sorted(required - set(per_section))

lines = [
    "# Autobahn conformance: relay framing (relay/examples/echo.rs)",
    "",
    "Written by `scripts/autobahn.sh` (PyPI `kosoku` 0.1.0, Autobahn's case files) against the",
    "echo example, which frames with `relay::ws` (the reader and writer the chat connection",
    "uses). Required: sections " + ", ".join(sorted(required, key=int)) + " all OK, NON-STRICT or",
    "INFORMATIONAL. Not run: 12 and 13 (permessage-deflate, not offered by the relay).",
    "",
    f"- command: `{command}`",
    f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
    f"- commit: {commit}",
    f"- machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}",
    f"- echo example build: {build}; kosoku wall time: {elapsed} s; kosoku exit status: {kosoku_rc}",
    f"- cases: {len(cases)}",
    "",
]
table_start = len(lines)
lines += [
    "| section | " + " | ".join(ORDER) + " |",
    "|---|" + "---|" * len(ORDER),
]
for section in sorted(per_section, key=int):
    lines.append(f"| {section} | " + " | ".join(str(per_section[section][b]) for b in ORDER) + " |")
lines.append("| **all** | " + " | ".join(f"**{counts[b]}**" for b in ORDER) + " |")
table_end = len(lines)
others = sorted(set(counts) - set(ORDER))
if others:
    lines.append("")
    lines.append("Other behaviours: " + ", ".join(f"{b}: {counts[b]}" for b in others))
# Why the cases known not to be plain OK are what they are (Autobahn's own descriptions in
# its case files, and relay/src/ws/reader.rs).
WHY = {
    "6.4.": "a frame's UTF-8 is checked once the whole frame has arrived (fragments are "
            "checked one by one as each arrives), not byte by byte: when a frame arrives in "
            "TCP chops, the 1007 close comes at its end instead of at the first bad byte",
    "7.1.6": "informational by definition: a 256 KiB message, a close and a ping sent back to "
             "back; records what was echoed before the close",
    "7.13.": "informational by definition: close codes 5000+ (outside every RFC range) are "
             "failed with 1002",
}
lines += ["", "## Cases that are not plain OK", ""]
if notable:
    lines += ["| case | behavior | close behavior | close code from the server | why |", "|---|---|---|---|---|"]
    for case_id, behavior, close, code in notable:
        # A key ending in "." is a prefix; any other names one case.
        why = next((text for key, text in WHY.items()
                    if case_id == key or (key.endswith(".") and case_id.startswith(key))), "")
        lines.append(f"| {case_id} | {behavior} | {close} | {code if code is not None else ''} | {why} |")
else:
    lines.append("None.")
if missing:
    lines += ["", "Required sections with no result: " + ", ".join(missing)]
lines += ["", f"Verdict: {'FAILED: ' + ', '.join(bad + missing) if bad or missing else 'pass'}", ""]
open(summary_path, "w").write("\n".join(lines))
print("\n".join(lines[table_start:table_end]))
print(f"autobahn: {len(cases)} cases in {elapsed} s; "
      + ", ".join(f"{b} {counts[b]}" for b in ORDER)
      + f"; summary in {summary_path}")
if bad or missing:
    print("autobahn: not conforming: " + ", ".join(bad + missing), file=sys.stderr)
    sys.exit(1)
EOF
