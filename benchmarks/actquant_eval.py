#!/usr/bin/env python3
"""ActQuant against its baselines on a demo policy, closed loop and open loop, through the CLI only.

Every configuration is two commands a user could type:

    omnimodel convert ARCH --demo --bpw B --method M [flags] --out RUNS/<config>/model
    omnimodel eval --policy RUNS/<config>/model --data HELDOUT --reference DEMO --episodes E --json ...

so the numbers are what `convert` ships and what the compiled runtime does with it (the converted
model runs in the runtime, not in PyTorch). ARCH is a registered family that ships a demo policy (default:
the default demo family, OpenVLA-OFT); ``--policy CKPT --calib DATA`` runs another trained checkpoint
instead (``convert ARCH --checkpoint CKPT --calib DATA``, ARCH from its config.json). HELDOUT is a fresh
expert dataset collected with a seed the policy never trained or calibrated on (`collect-demos --train 0
--calib 5 --seed 7000` at the policy's image size); ``--closed-loop-only`` leaves the open loop out.

    python benchmarks/actquant_eval.py grid --runs runs/actquant          # methods x budgets + FP
    python benchmarks/actquant_eval.py ablation --runs runs/actquant      # paper Table 4 on the demo
    python benchmarks/actquant_eval.py report --runs runs/actquant --doc docs/quantization_results.md
    python benchmarks/actquant_eval.py grid --arch pi05 --runs runs/actquant-pi05 --bpw 4,3,2.5
    python benchmarks/actquant_eval.py grid --policy runs/oft_mt9/final --calib data/mw9 --tasks mt9 \
        --episodes 25 --bpw 4,3,2.5,2 --closed-loop-only --runs runs/grid-mt9 --only fp32,rtn-3

Every configuration runs the same ``--seed`` and ``--episodes`` (paired: the same layouts), so the report's
retention intervals are paired bootstraps. Configurations whose eval.json exists are skipped, so an
interrupted run resumes; ``--only`` runs just the named keys. ``--workers 2`` runs two configurations at
once (each single-threaded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

METHODS = ("actquant", "rtn", "imatrix", "gptq", "awq")
BUDGETS = (4.0, 3.5, 3.0, 2.5, 2.0)
HELDOUT_ARGS = ["--train", "0", "--calib", "5", "--seed", "7000"]  # + the policy's --image-size

# Paper Table 4's ladder on the demo: each row adds one ingredient to the one above it.
ABLATION = (
    ("RTN", "rtn", ["--no-hsic"]),
    ("+ magnitude-weighted scales", "actquant", ["--importance", "magnitude", "--no-hsic"]),
    ("+ action-only Fisher (lambda 1)", "actquant", ["--importance", "fisher", "--lambda", "1.0", "--no-hsic"]),
    ("+ Action-Mixed Fisher (lambda 0.5)", "actquant", ["--importance", "fisher", "--lambda", "0.5", "--no-hsic"]),
    ("+ HSIC allocation (= ActQuant)", "actquant", ["--importance", "fisher", "--lambda", "0.5"]),
    ("ActQuant, METHODS 1d element importance", "actquant", ["--importance", "amf", "--lambda", "0.5"]),
)
ABLATION_BUDGETS = (3.0, 2.5)


@dataclass(frozen=True)
class Config:
    key: str  # directory name under --runs
    method: str | None  # None: the full-precision reference (no convert)
    bpw: float | None
    flags: tuple[str, ...] = ()
    label: str = ""


def omnimodel(*args: str) -> list[str]:
    return [sys.executable, "-m", "omnimodel.cli.main", *args]


@dataclass(frozen=True)
class EvalOptions:
    """What every configuration's convert and eval share."""

    episodes: int = 10  # closed-loop episodes per task
    seed: int = 0  # eval --seed: the episode layouts, the same for every configuration
    open_loop: bool = True  # the held-out action L1 (eval --data HELDOUT --reference FP)
    calib_episodes: int | None = None  # convert --calib-episodes (None: convert's default)
    extra_eval_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Subject:
    """The policy under test and how `convert` is pointed at it."""

    arch: str  # registered family name
    policy: Path  # the full-precision checkpoint (also the open-loop reference)
    source_args: tuple[str, ...]  # convert's: --demo, or --checkpoint CKPT --calib DATA
    image_size: int
    tasks: tuple[str, ...]  # closed-loop tasks (the policy's training set); () = eval's default set


def subject(arch: str | None, policy: str | None, calib: str | None, tasks: str | None) -> Subject:
    from omnimodel.arch import registry
    from omnimodel.simbench.policies import load_eval_policy
    from omnimodel.simbench.train import checkpoint_architecture

    if policy is None:
        family = registry.get(arch) if arch else registry.demo_family()
        if family.demo_checkpoint is None:
            raise SystemExit(f"{family.name} ships no demo policy: pass --policy CKPT --calib DATA")
        ckpt, source = Path(family.demo_checkpoint), ("--demo",)
    else:
        if calib is None:
            raise SystemExit("--policy needs --calib DATA (the calibration data convert uses)")
        ckpt = Path(policy)
        family = checkpoint_architecture(ckpt)
        source = ("--checkpoint", str(ckpt), "--calib", calib)
    info = load_eval_policy(str(ckpt)).describe()
    return Subject(family.name, ckpt, source, int(info["image_size"]), tuple(tasks.split(",")) if tasks else ())


def ensure_heldout(path: Path, sub: Subject) -> Path:
    if (path / "dataset.json").is_file():
        return path
    print(f"collecting the held-out dataset into {path} ...", flush=True)
    tasks = ("--tasks", ",".join(sub.tasks)) if sub.tasks else ()
    subprocess.run(omnimodel("collect-demos", str(path), *HELDOUT_ARGS, "--image-size", str(sub.image_size),
                             *tasks, "--quiet"), check=True)
    return path


def run_config(c: Config, sub: Subject, runs: Path, heldout: Path | None, opts: EvalOptions) -> dict:
    d = runs / c.key
    result_path = d / "eval.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    d.mkdir(parents=True, exist_ok=True)
    log = open(d / "log.txt", "w")
    t0 = time.perf_counter()
    policy = str(sub.policy)
    quant = None
    if c.method is not None:
        model = d / "model"
        # --keep-failed: a configuration whose parity misses the bound is still evaluated (the table
        # shows its min cosine); only a crash or a refused conversion stops it
        # baselines need no Fisher; --fisher-score still computes it so every method is scored on it
        score = ("--fisher-score",) if c.method != "actquant" else ()
        calib = ("--calib-episodes", str(opts.calib_episodes)) if opts.calib_episodes else ()
        cmd = omnimodel("convert", sub.arch, *sub.source_args, "--bpw", f"{c.bpw:g}", "--method", c.method,
                        *c.flags, *score, *calib, "--out", str(model), "--force", "--keep-failed")
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
        if r.returncode != 0 and not (model / "validation_report.json").is_file():
            log.close()
            raise RuntimeError(f"{c.key}: convert failed, see {d / 'log.txt'}")
        quant = json.loads((model / "quant_report.json").read_text())
        parity = json.loads((model / "validation_report.json").read_text())
        policy = str(model)
    t_convert = time.perf_counter() - t0
    tasks = ("--tasks", ",".join(sub.tasks)) if sub.tasks else ()
    open_loop = ("--data", str(heldout), "--reference", str(sub.policy)) if heldout is not None else ()
    cmd = omnimodel("eval", "--policy", policy, *open_loop, "--episodes", str(opts.episodes), "--seed",
                    str(opts.seed), *tasks, "--json", str(d / "eval.tmp.json"), "--quiet", *opts.extra_eval_args)
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    if r.returncode != 0:
        raise RuntimeError(f"{c.key}: eval failed, see {d / 'log.txt'}")
    ev = json.loads((d / "eval.tmp.json").read_text())
    out = {
        "config": {"key": c.key, "method": c.method, "bpw": c.bpw, "flags": list(c.flags), "label": c.label,
                   "arch": sub.arch, "policy": str(sub.policy)},
        "eval": ev,
        "seconds": {"convert": t_convert, "total": time.perf_counter() - t0},
    }
    if quant is not None:
        out["quant"] = {k: quant[k] for k in ("vision_llm_bpw", "vla_bpw", "total_bytes", "types", "rows_won")
                        if k in quant}
        out["quant"]["fisher_error"] = quant.get("fisher_error")
        out["parity"] = {"passed": parity["passed"], "min_cosine": parity["min_cosine"]}
    tmp = d / "eval.json.tmp"
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(result_path)
    (d / "eval.tmp.json").unlink(missing_ok=True)
    return out


def select(configs: list[Config], only: str | None) -> list[Config]:
    """The configurations ``--only`` names (all without it); an unknown key is an error naming the known."""
    if not only:
        return configs
    wanted = set(only.split(","))
    known = {c.key for c in configs}
    if not wanted <= known:
        raise SystemExit(f"--only: unknown configuration(s) {', '.join(sorted(wanted - known))}; "
                         f"known: {', '.join(c.key for c in configs)}")
    return [c for c in configs if c.key in wanted]


def eval_options(args: argparse.Namespace) -> EvalOptions:
    # hbvla_eval.py shares run_all with a narrower command line: what it lacks takes the default
    return EvalOptions(episodes=args.episodes, seed=getattr(args, "seed", 0),
                       open_loop=not getattr(args, "closed_loop_only", False),
                       calib_episodes=getattr(args, "calib_episodes", None),
                       extra_eval_args=tuple(getattr(args, "eval_args", ())))


def run_all(configs: list[Config], args: argparse.Namespace) -> None:
    runs = Path(args.runs)
    opts = eval_options(args)
    sub = subject(getattr(args, "arch", None), getattr(args, "policy", None), getattr(args, "calib", None),
                  getattr(args, "tasks", None))
    print(f"{sub.arch}: {sub.policy} ({' '.join(sub.source_args)}); {opts.episodes} episodes per task, seed "
          f"{opts.seed}", flush=True)
    heldout = None
    if opts.open_loop:
        heldout = ensure_heldout(Path(args.heldout) if args.heldout else runs / "heldout", sub)

    def one(c: Config):
        t0 = time.perf_counter()
        try:
            r = run_config(c, sub, runs, heldout, opts)
        except RuntimeError as e:
            print(f"  {c.key}: FAILED ({e})", flush=True)
            return
        s = summary(r)
        print(f"  {c.key:<34} success {s['success']:5.1f}%  L1 gt {s['l1_gt']:.4f}  L1 fp {s['l1_fp']:.4f}  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        list(pool.map(one, configs))


def summary(r: dict) -> dict:
    ev = r["eval"]
    cl = ev.get("closed_loop") or {}
    ol = ev.get("open_loop") or {}
    return {
        "success": 100.0 * cl.get("average_success_rate", float("nan")),
        "l1_gt": ol.get("l1_to_ground_truth", float("nan")),
        "l1_fp": ol.get("l1_to_reference", float("nan")),
        "tasks": {k: v["successes"] for k, v in cl.get("tasks", {}).items()},
        "episodes": sum(v["episodes"] for v in cl.get("tasks", {}).values()),
    }


# A method name with any of these suffixes runs the method with their flags (``--methods actquant+bc``);
# they combine, in any order (``actquant+enc+bc``).
VARIANTS = {
    "+bc": (("--bias-correction",), "bias correction"),
    "+enc": (("--error-model", "encoder"), "encoder-measured error model"),
    "+nohsic": (("--no-hsic",), "no HSIC in the allocation"),
    # flatter HSIC weights exp(S / tau) than the default tau (the spread of S; convert --hsic-tau)
    "+tau1": (("--hsic-tau", "1"), "HSIC weights at tau 1"),
    "+tau2": (("--hsic-tau", "2"), "HSIC weights at tau 2"),
    # the Action-Mixed Fisher's mix (lambda 0.5 by default) and the calibration size (4 steps an episode)
    "+lam0": (("--lambda", "0"), "lambda 0 (CE-only Fisher)"),
    "+lam1": (("--lambda", "1"), "lambda 1 (action-only Fisher)"),
    "+steps2": (("--calib-steps", "2"), "half the calibration samples"),
    "+steps8": (("--calib-steps", "8"), "twice the calibration samples"),
    # other calibration draws of the same data: how much a row depends on which samples it calibrated on
    "+s1": (("--calib-seed", "1"), "calibration draw 1"),
    "+s2": (("--calib-seed", "2"), "calibration draw 2"),
}


def method_config(m: str, b: float) -> Config:
    base, variants = m, []
    while True:
        suffix = next((s for s in VARIANTS if base.endswith(s)), None)
        if suffix is None:
            break
        base = base[: -len(suffix)]
        variants.insert(0, VARIANTS[suffix])
    flags = tuple(f for fl, _ in variants for f in fl)
    label = " + ".join([base, *(what for _, what in variants)])
    return Config(f"{m}-{b:g}", base, b, flags, label)


def grid_configs(methods, budgets) -> list[Config]:
    out = [Config("fp32", None, None, label="full precision (PyTorch)")]
    # budgets outermost, ActQuant first: with two workers the headline comparisons finish first
    for b in budgets:
        for m in methods:
            out.append(method_config(m, b))
    return out


def ablation_key(i: int, b: float) -> str:
    """The directory of ABLATION's step ``i`` at ``b`` bpw: steps that are a grid row share its directory
    (the action-only Fisher without HSIC is ``actquant+nohsic+lam1``, the Action-Mixed one
    ``actquant+nohsic``, the full method ``actquant``), so they run once."""
    shared = {2: "actquant+nohsic+lam1", 3: "actquant+nohsic", 4: "actquant"}
    return f"{shared.get(i, f'ablation{i}')}-{b:g}"


def ablation_configs(budgets) -> list[Config]:
    return [Config(ablation_key(i, b), method, b, tuple(flags), label)
            for b in budgets for i, (label, method, flags) in enumerate(ABLATION)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["grid", "ablation", "report"])
    p.add_argument("--runs", default="runs/actquant", help="one directory per configuration")
    p.add_argument("--arch", help="a registered family whose shipped demo policy to use (default: the default "
                   "demo family's)")
    p.add_argument("--policy", help="another trained checkpoint instead of a shipped demo (needs --calib)")
    p.add_argument("--calib", help="calibration data for --policy")
    p.add_argument("--tasks", help="the policy's task set, for the held-out data and the closed loop (default: "
                   "eval's default set)")
    p.add_argument("--heldout", help="held-out episode dataset (default: RUNS/heldout, collected if missing)")
    p.add_argument("--episodes", type=int, default=10, help="closed-loop episodes per task")
    p.add_argument("--seed", type=int, default=0, help="eval --seed, shared by every configuration (default: 0)")
    p.add_argument("--closed-loop-only", action="store_true", help="no held-out open loop (no held-out data)")
    p.add_argument("--calib-episodes", type=int, help="convert --calib-episodes (default: convert's)")
    p.add_argument("--only", help="comma-separated configuration keys to run (fp32, rtn-3, ...); default: all")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--bpw", default=",".join(f"{b:g}" for b in BUDGETS))
    p.add_argument("--doc", help="report: markdown file to write the tables into")
    p.add_argument("--plot", help="report: PNG plot path")
    p.add_argument("--tag", help="report: the doc block's marker (default: the family's, e.g. actquant_eval:pi05)")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    budgets = [float(b) for b in args.bpw.split(",")]
    if args.what == "grid":
        run_all(select(grid_configs(args.methods.split(","), budgets), args.only), args)
    elif args.what == "ablation":
        configs = ablation_configs([b for b in budgets if b in ABLATION_BUDGETS] or ABLATION_BUDGETS)
        run_all(select(configs, args.only), args)
    else:
        from actquant_report import write_report  # noqa: PLC0415  (benchmarks/ sibling)

        write_report(Path(args.runs), args.doc, args.plot, args.tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
