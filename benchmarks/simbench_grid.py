#!/usr/bin/env python3
"""Issue #14's grid on a closed-loop task set: full precision, then methods x budgets, paired seeds.

Every configuration is the commands a user would type, one configuration at a time (single-threaded):

    omnimodel eval --policy CKPT --tasks SET --episodes E --seed S --json RUNS/fp.json
    omnimodel convert ARCH --checkpoint CKPT --bpw B --method M --calib CALIB \\
        --calib-episodes 18 --out RUNS/M-B/model
    omnimodel eval --policy RUNS/M-B/model --tasks SET --episodes E --seed S --baseline RUNS/fp.json \\
        --json RUNS/M-B.json

so every quantized row runs the converted model in the compiled runtime on the same episode seeds as
the full-precision row, and its JSON holds the paired bootstrap retention interval. After each
configuration RUNS/table.md (success with Wilson 95% intervals, retention with its interval, successes
per task) and RUNS/grid.json (what ran, with its wall time) are rewritten. A configuration whose JSON
exists is skipped, so an interrupted grid resumes; ``--only rtn-3`` runs just the named ones.

    python benchmarks/simbench_grid.py --checkpoint runs/oft/final --calib data/mw9 --tasks mt9 \\
        --episodes 25 --runs runs/grid
    python benchmarks/simbench_grid.py --runs runs/grid --report-only     # rewrite table.md only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

METHODS = ("actquant", "rtn", "imatrix", "gptq", "awq")
BUDGETS = (4.0, 3.0, 2.5, 2.0)


@dataclass(frozen=True)
class Config:
    key: str  # file stem under --runs: fp, or METHOD-BPW
    method: str | None  # None: full precision (the PyTorch checkpoint itself)
    bpw: float | None


def grid(methods: list[str], budgets: list[float]) -> list[Config]:
    # budgets outermost, so a grid cut short by time has every method at the higher budgets
    return [Config("fp", None, None)] + [Config(f"{m}-{b:g}", m, b) for b in budgets for m in methods]


def omnimodel(*args: str) -> list[str]:
    return [sys.executable, "-m", "omnimodel.cli.main", *args]


def run_logged(cmd: list[str], log: Path) -> int:
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode


def family(checkpoint: Path) -> str:
    """The registered family of the checkpoint (ARCH above), from its config.json."""
    from omnimodel.simbench.train import checkpoint_architecture

    return checkpoint_architecture(checkpoint).name


def run_config(c: Config, args: argparse.Namespace) -> dict:
    runs = Path(args.runs)
    result = runs / f"{c.key}.json"
    log = runs / f"{c.key}.log"
    eval_args = ["--tasks", args.tasks, "--episodes", str(args.episodes), "--seed", str(args.seed),
                 "--threads", "1", "--quiet"]
    t0 = time.perf_counter()
    seconds = {}
    if c.method is None:
        policy = str(args.checkpoint)
    else:
        model = runs / c.key / "model"
        # --keep-failed: a model whose parity misses the bound is still evaluated (the table shows it)
        rc = run_logged(omnimodel("convert", family(args.checkpoint), "--checkpoint", str(args.checkpoint), "--bpw", f"{c.bpw:g}",
                                  "--method", c.method, "--calib", str(args.calib),
                                  "--calib-episodes", str(args.calib_episodes), "--out", str(model),
                                  "--threads", "1", "--force", "--keep-failed"), log)
        if rc != 0 and not (model / "validation_report.json").is_file():
            raise RuntimeError(f"convert failed (exit {rc}), see {log}")
        seconds["convert"] = round(time.perf_counter() - t0, 1)
        policy = str(model)
        eval_args += ["--baseline", str(runs / "fp.json")]
    tmp = runs / f"{c.key}.tmp.json"
    t1 = time.perf_counter()
    rc = run_logged(omnimodel("eval", "--policy", policy, *eval_args, "--json", str(tmp)), log)
    if rc != 0:
        raise RuntimeError(f"eval failed (exit {rc}), see {log}")
    seconds["eval"] = round(time.perf_counter() - t1, 1)
    doc = json.loads(tmp.read_text())
    doc["grid"] = {"key": c.key, "method": c.method, "bpw": c.bpw, "seconds": seconds}
    if c.method is not None:
        quant = json.loads((runs / c.key / "model" / "quant_report.json").read_text())
        doc["grid"]["vla_bpw"] = quant.get("vla_bpw")
        doc["grid"]["vision_llm_bpw"] = quant.get("vision_llm_bpw")
        parity = json.loads((runs / c.key / "model" / "validation_report.json").read_text())
        doc["grid"]["parity"] = {"passed": parity.get("passed"), "min_cosine": parity.get("min_cosine")}
    result.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.unlink()
    return doc


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def table(runs: Path, configs: list[Config]) -> str:
    """The Markdown table of every configuration that has a result, in grid order."""
    docs = [(c, json.loads((runs / f"{c.key}.json").read_text())) for c in configs if (runs / f"{c.key}.json").is_file()]
    if not docs:
        return "(no configuration has run yet)\n"
    tasks = list(docs[0][1]["closed_loop"]["tasks"])
    head = ["configuration", "bpw (vision+LLM)", "success [95% CI]", "retention [95% CI]", *tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c, doc in docs:
        cl = doc["closed_loop"]
        lo, hi = cl["success_ci95"]
        rate = f"{cl['successes']}/{cl['episodes']} = {_pct(cl['successes'] / cl['episodes'])} % [{_pct(lo)}, {_pct(hi)}]"
        ret = doc.get("retention")
        if ret is None:
            retention = "(baseline)" if c.method is None else ""
        elif ret["ratio"] is None:
            retention = "undefined"
        else:
            ci = ret.get("ci95")
            retention = f"{_pct(ret['ratio'])} %" + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")
        bpw = doc["grid"].get("vision_llm_bpw")
        name = "full precision (PyTorch)" if c.method is None else f"{c.method} {c.bpw:g}"
        per_task = [f"{cl['tasks'][t]['successes']}/{cl['tasks'][t]['episodes']}" for t in tasks]
        lines.append("| " + " | ".join([name, f"{bpw:.2f}" if bpw else "", rate, retention, *per_task]) + " |")
    first = docs[0][1]["closed_loop"]["config"]
    note = (f"\n{first['episodes_per_task']} episodes per task, seed {first['seed']} (paired: every row ran the same "
            "layouts); success: Wilson 95% interval; retention: success / full precision's, paired task-stratified "
            "bootstrap 95% interval.\n")
    return "\n".join(lines) + "\n" + note


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, type=Path, help="one JSON (+ log, + converted model) per configuration")
    p.add_argument("--checkpoint", type=Path, help="the full-precision checkpoint (any registered family; ARCH is its config.json's)")
    p.add_argument("--calib", type=Path, help="episode dataset with a calib split (convert --calib)")
    p.add_argument("--calib-episodes", type=int, default=18,
                   help="convert --calib-episodes, drawn round-robin over the tasks (default: %(default)s)")
    p.add_argument("--tasks", default="mt9", help="task set or comma list (default: %(default)s)")
    p.add_argument("--episodes", type=int, default=25, help="closed-loop episodes per task (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="eval --seed, shared by every configuration (default: 0)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--bpw", default=",".join(f"{b:g}" for b in BUDGETS))
    p.add_argument("--only", help="comma list of configuration keys to run (fp, rtn-3, ...); default: all")
    p.add_argument("--report-only", action="store_true", help="rewrite table.md from the JSONs, run nothing")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    configs = grid(args.methods.split(","), [float(b) for b in args.bpw.split(",")])
    args.runs.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        if args.checkpoint is None or args.calib is None:
            p.error("--checkpoint and --calib are needed to run configurations")
        wanted = set(args.only.split(",")) if args.only else None
        if wanted is not None and not wanted <= {c.key for c in configs}:
            p.error(f"--only: unknown configuration(s) {sorted(wanted - {c.key for c in configs})}")
        record_path = args.runs / "grid.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else {"ran": []}
        for c in configs:
            if (wanted is not None and c.key not in wanted) or (args.runs / f"{c.key}.json").is_file():
                continue
            if c.method is not None and not (args.runs / "fp.json").is_file():
                p.error("the full-precision result fp.json must exist first (run the grid with fp included)")
            t0 = time.perf_counter()
            try:
                doc = run_config(c, args)
                status = f"{doc['closed_loop']['successes']}/{doc['closed_loop']['episodes']}"
            except RuntimeError as e:
                status = f"FAILED: {e}"
            elapsed = round(time.perf_counter() - t0, 1)
            print(f"{c.key:<14} {status} ({elapsed:.0f} s)", flush=True)
            record["ran"].append({"key": c.key, "status": status, "seconds": elapsed,
                                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            record_path.write_text(json.dumps(record, indent=2) + "\n")
            (args.runs / "table.md").write_text(table(args.runs, configs))
    (args.runs / "table.md").write_text(table(args.runs, configs))
    print((args.runs / "table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
