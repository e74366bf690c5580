#!/usr/bin/env python
"""The sanitizer run: the C misuse catalogue and fuzz mutants through an ASan + UBSan build.

Needs the sanitizer build (docs/building.md):

    cmake -S . -B build/asan -G Ninja -DOMNIMODEL_SANITIZE=ON -DOMNIMODEL_BUILD_TESTS=ON \\
          -DOMNIMODEL_BUILD_PYTHON=OFF -DOMNIMODEL_GGML_DIR=~/.cache/omnimodel/ggml-0.25.3-*/ggml
    cmake --build build/asan -j
    nice -n 19 python benchmarks/sanitize_replay.py --build build/asan --demo-dir demo_out --n 3000

Runs build/asan/cpp/tests/omnimodel_c_api_tests on a toy and the demo, then writes --n mutants (the
same generator as benchmarks/fuzz_gguf.py, its own seed) in batches and replays each batch with
omnimodel_replay (one forked child per file; stderr scanned for sanitizer reports). Reports inside
ggml's own kernels are listed apart (ubsan.supp suppresses the known ones; see docs/robustness.md).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUPPRESSIONS = HERE.parent / "cpp" / "tests" / "ubsan.supp"


def sanitizer_env() -> dict[str, str]:
    return {
        **os.environ,
        "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
        "UBSAN_OPTIONS": f"print_stacktrace=1:halt_on_error=0:suppressions={SUPPRESSIONS}",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, default=Path("build/asan"))
    ap.add_argument("--demo-dir", type=Path, required=True, help="a convert output of the demo (model.gguf + plugin/)")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=77)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()

    from omnimodel.fuzz import misuse
    from omnimodel.fuzz import seeds as seed_files
    from omnimodel.fuzz.mutate import apply, parse, random_case

    tests = args.build / "cpp" / "tests"
    work = Path(tempfile.mkdtemp(prefix="omnimodel-asan-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    env = misuse.toy_env(work)
    plugin = str(sorted((args.demo_dir / "plugin").glob("*.so"))[-1])
    proc = subprocess.run([str(tests / "omnimodel_c_api_tests"), str(env.toy), str(args.demo_dir / "model.gguf"), plugin],
                          capture_output=True, text=True, errors="replace", env=sanitizer_env(), timeout=3600)
    reports = [line for line in proc.stderr.splitlines() if "Sanitizer" in line or "runtime error:" in line]
    print(f"C API tests: {proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else '(no summary)'}; "
          f"exit {proc.returncode}; sanitizer reports: {len(reports)}")
    for line in proc.stderr.splitlines():
        if line.startswith("FAIL") or "Sanitizer" in line or "runtime error:" in line:
            print("   ", line[:300])

    seeds = seed_files.toy_seeds() + [seed_files.convert_output_seed(args.demo_dir)]
    layouts = {s.name: parse(s.data) for s in seeds}
    rng = random.Random(args.seed)
    counts: collections.Counter = collections.Counter()
    findings = []
    done = 0
    while done < args.n:
        batch = []
        for i in range(min(args.batch, args.n - done)):
            s = rng.choice(seeds)
            ops = random_case(layouts[s.name], len(s.data), rng)
            path = work / f"m{done + i:05d}-{s.name}.gguf"
            path.write_bytes(apply(s.data, ops, layouts[s.name]))
            batch.append((path, ops))
        out = subprocess.run([str(tests / "omnimodel_replay"), "--plugin", plugin, "--timeout", "60",
                              *[str(p) for p, _ in batch]], capture_output=True, text=True, errors="replace",
                             env=sanitizer_env())
        ops_of = {str(p): ops for p, ops in batch}
        for line in out.stdout.splitlines():
            outcome, path, detail = (line.split("\t") + ["", ""])[:3]
            if outcome == "sanitizer":  # whose code: ours (cpp/ of this repository) or ggml's
                outcome = "sanitizer-omnimodel" if str(HERE.parent / "cpp") in detail else "sanitizer-ggml"
            counts[outcome] += 1
            if outcome not in ("ok", "rejected"):
                findings.append((outcome, Path(path).name, ops_of.get(path), detail))
        for p, _ in batch:
            p.unlink(missing_ok=True)
        done += len(batch)
        print(f"{done}/{args.n}: {dict(counts)}", file=sys.stderr, flush=True)
    print(f"replayed {done} mutants under ASan+UBSan: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for f in findings[:30]:
        print("   FINDING", f)
    return 1 if findings or proc.returncode != 0 or reports else 0


if __name__ == "__main__":
    sys.exit(main())
