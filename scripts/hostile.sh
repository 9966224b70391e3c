#!/usr/bin/env bash
# The hostile-load suite, full form: builds the release relay and loadgen, runs every attack
# for 30 s against a fresh relay with default flags (attacker and victim on this machine),
# and writes results/hostile-YYYYMMDD-HHMM.{md,json} with the command, the machine and the
# commit. Exits with the suite's status (1 when any attack FAILs). Extra arguments go to
# the `hostile` binary (e.g. `--attack ping-flood --duration 10s`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p relay -p loadgen

stamp=$(date -u +%Y%m%d-%H%M)
mkdir -p results
json="results/hostile-$stamp.json"
md="results/hostile-$stamp.md"
cmd=(target/release/hostile --relay-bin target/release/relay --attack all --duration 30s
     --json "$json" "$@")

commit=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain --untracked-files=no | grep -q . && echo " (with uncommitted changes)" || true)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

set +e
table=$("${cmd[@]}")
status=$?
set -e
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

{
  echo "# Hostile-load suite, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- command: \`${cmd[*]}\` (via \`scripts/hostile.sh\`)"
  echo "- commit: $commit$dirty"
  echo "- machine: $(nproc) cores, $(free -m | awk '/^Mem:/ {print $2}') MiB memory," \
       "kernel $(uname -r); load average before $load_before, after $load_after"
  echo "- relay: release build, default flags (\`--listen 127.0.0.1:PORT\` only), fresh per attack"
  echo "- exit status: $status ($( [ "$status" = 0 ] && echo 'all PASS' || echo 'some FAIL'))"
  echo
  echo "$table"
} > "$md"
cat "$md"
echo "wrote $md and $json" >&2
exit "$status"
