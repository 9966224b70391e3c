#!/usr/bin/env python3
"""Instruction-count regression guard for the relay's hot paths.

Wall-clock benchmarks on shared machines swing by 2x; instruction counts under valgrind's
callgrind do not. For each path the driver (src/bin/instr_driver.rs) runs with 0 and with N
iterations; (Ir(N) - Ir(0)) / N is the cost of one operation, start-up and set-up cancelled.

    python3 benches/instr_guard.py            # compare with benches/baseline/instructions.json
    python3 benches/instr_guard.py --update   # rewrite the baseline (say why in the commit)

Fails (exit 1) when any path costs more than --tolerance (default 10%) over its baseline.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(ROOT, "benches", "baseline", "instructions.json")
DRIVER = os.path.join(ROOT, "target", "release", "instr-driver")

# path -> (iterations, what one operation is)
PATHS = {
    "fanout": (200, "one message published to a room of 1,000 and written to every member's socket by the flusher round"),
    "fanout-ref": (200, "the same with a unique ref on every message: de-duplicated, remembered, and acknowledged to the sender"),
    "encode": (20000, "one 64-byte message event encoded and framed"),
    "decode": (20000, "five typical client commands decoded"),
}


def instructions(path: str, iterations: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", DRIVER, path, str(iterations)],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            sys.exit(f"instr-driver {path} {iterations} failed:\n{run.stderr}")
        match = re.search(r"Collected\s*:\s*(\d+)", run.stderr)
        if not match:
            sys.exit(f"no instruction count in callgrind output:\n{run.stderr}")
        return int(match.group(1))


def measure() -> dict:
    result = {}
    for path, (iterations, _) in PATHS.items():
        base = instructions(path, 0)
        total = instructions(path, iterations)
        result[path] = round((total - base) / iterations)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="write the measured counts as the new baseline")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed growth, as a fraction (0.10 = 10%%)")
    parser.add_argument("--no-build", action="store_true", help="use the existing target/release/instr-driver")
    args = parser.parse_args()

    if not args.no_build:
        # The bench profile (release settings) shares its build with `cargo bench`.
        subprocess.run(["cargo", "build", "--profile", "bench", "-q", "-p", "benches", "--bin", "instr-driver"], cwd=ROOT, check=True)
    measured = measure()

    if args.update:
        os.makedirs(os.path.dirname(BASELINE), exist_ok=True)
        with open(BASELINE, "w") as f:
            json.dump(
                {"instructions_per_op": measured, "ops": {p: d for p, (_, d) in PATHS.items()}},
                f,
                indent=2,
                sort_keys=True,
            )
            f.write("\n")
        print(f"baseline written to {os.path.relpath(BASELINE, ROOT)}: {measured}")
        return 0

    with open(BASELINE) as f:
        baseline = json.load(f)["instructions_per_op"]
    failed = False
    print(f"{'path':<8} {'baseline':>12} {'now':>12} {'change':>8}")
    for path, now in measured.items():
        before = baseline.get(path)
        if before is None:
            print(f"{path:<8} {'-':>12} {now:>12}   (no baseline: run with --update)")
            failed = True
            continue
        change = (now - before) / before
        verdict = "FAIL" if change > args.tolerance else "ok"
        failed |= change > args.tolerance
        print(f"{path:<8} {before:>12} {now:>12} {change:>+7.1%}  {verdict}")
    if failed:
        print(f"instruction-count guard: a hot path grew more than {args.tolerance:.0%}", file=sys.stderr)
        return 1
    print("instruction-count guard: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
