#!/usr/bin/env python
"""Parity at real width: correct conversions pass, injected faults fail, and what Q4_K's deviation is.

The model: ``real_width_spec(pretrained=True)`` -- DINOv2-L/14-reg4 + SigLIP-so400m/14 at 224 px, two
images, SmolLM2-135M's pretrained Llama (576 wide, GQA 9/3, eps 1e-5, theta 1e5) -- at full depth (24/27
ViT blocks, 30 layers, 902M parameters) by default, or reduced (``--vision-depth``, ``--llm-layers``).
Every conversion is the real CLI in a child process (its peak RSS from wait4):

    correct   convert at f32, f16, bf16, q8_0; at Q4_K (an --allocation giving every quantized matrix
              Q4_K, --method rtn); at --bpw 2.5 (ActQuant); then `omnimodel validate` on each output
    faults    f16 conversions with one injected fault each (a --knob; image normalisation: the GGUF's
              metadata patched, then `omnimodel validate`): the first failing tensor, its error against
              its bound, and what the reflector did
    q4k       the Q4_K finding: per Llama layer d(exact, R), d(runtime, R) and the noise from the Q4_K
              report; the activations' outliers (largest |x| over the RMS of its 256-block) at each
              quantized matmul input; the same Q4_K conversion with the random-weight Llama as control

    python benchmarks/parity_realwidth.py --work runs/parity                       # full depth (lead)
    python benchmarks/parity_realwidth.py --vision-depth 4 --llm-layers 4 --work runs/parity4
    python benchmarks/parity_realwidth.py --only faults --vision-depth 3 --llm-layers 2 --work runs/p3

Results: WORK/parity_realwidth.json and markdown tables on stdout (docs/parity.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
GIB = 1024.0**3

# (name, how to inject, what it stands for)
FAULTS = (
    ("tanh GELU", ["vision_backbone.featurizer:gelu=tanh"], "DINOv2 MLP with the tanh GELU instead of erf"),
    ("causal vision mask", ["vision_backbone.featurizer:attn_mask=causal"], "DINOv2 attention masked causally"),
    ("norm eps 1e-6", ["language_model.model:norm_eps=1e-6"], "Llama RMSNorm eps 1e-6 instead of 1e-5"),
    ("rope theta 1e4", ["language_model.model:rope_theta=10000.0"], "Llama RoPE base 1e4 instead of 1e5"),
    ("GQA head mapping", ["language_model.model:kv_heads=interleaved"], "query head h reads kv head h % 3, not h // 3"),
    ("action read one slot off", ["openvla-oft:action_rows=at_slot"], "the head reads each slot's own row"),
    ("image normalisation", None, "SigLIP tower normalised with ImageNet mean/std (GGUF metadata)"),
)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def log(msg: str) -> None:
    print(msg, flush=True)


def run_cli(args: list[str], logfile: Path) -> dict:
    """`python -m omnimodel ARGS` in a child; its exit code, wall time and peak RSS (wait4)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "python") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    with open(logfile, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "omnimodel", *args], stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    return {"rc": os.waitstatus_to_exitcode(status), "wall_s": round(time.perf_counter() - t0, 1),
            "peak_rss_gib": round(usage.ru_maxrss * 1024 / GIB, 3), "log": str(logfile)}


def report_summary(out: Path) -> dict:
    rep = json.loads((out / "validation_report.json").read_text())
    res = rep["results"]
    fin = [r for r in res if isinstance(r["error"], float) and isinstance(r["bound"], float) and r["bound"] > 0]
    def of_bound(r: dict) -> float:  # by the rule that passed it (the local check's, where it did)
        if r["passed"] and isinstance(r.get("local_error"), float) and isinstance(r.get("local_bound"), float):
            return r["local_error"] / r["local_bound"]
        return r["error"] / r["bound"]

    worst = max(fin, key=of_bound) if fin else None
    act = next((r for r in res if r["name"] == "actions"), None)
    noise_ratio = [r["error"] / r["noise"] for r in fin if isinstance(r["noise"], float) and r["noise"] > 0]
    return {
        "passed": rep["passed"],
        "tensors": len(res),
        "first_failure": rep["first_failure"],
        "worst": worst["name"] if worst else None,
        "worst_of_bound": round(of_bound(worst), 3) if worst else None,
        "max_runtime_over_noise": round(max(noise_ratio), 3) if noise_ratio else None,
        "median_runtime_over_noise": round(float(np.median(noise_ratio)), 3) if noise_ratio else None,
        "p90_runtime_over_noise": round(float(np.percentile(noise_ratio, 90)), 3) if noise_ratio else None,
        "max_over_noise_tensor": max(fin, key=lambda r: r["error"] / r["noise"] if isinstance(r["noise"], float)
                                     and r["noise"] > 0 else 0.0)["name"] if noise_ratio else None,
        "passed_locally": sum(1 for r in res if r["passed"] and isinstance(r.get("local_error"), float)),
        "action_inherent": act["inherent"] if act else None,
        "action_noise": act["noise"] if act else None,
        "action_runtime": act["error"] if act else None,
        "rounding": rep.get("rounding"),
        "reflection": (rep.get("reflection") or {}).get("summary"),
    }


# ---------------------------------------------------------------------------------------------------
# inputs


def write_checkpoint(work: Path, args, pretrained: bool = True, name: str = "ckpt") -> Path:
    from omnimodel.arch.openvla_oft import real_width_spec, write_miniature

    ckpt = work / name
    if not (ckpt / "config.json").is_file():
        spec = real_width_spec(vision_depth=args.vision_depth, llm_layers=args.llm_layers, pretrained=pretrained,
                               log=log)
        write_miniature(ckpt, spec)
    return ckpt


def write_calibration(work: Path, ckpt: Path) -> Path:
    """A few episodes that match the checkpoint (cameras, image size, proprio/action dims, statistics key)."""
    from omnimodel.arch.openvla_oft import load_policy
    from omnimodel.simbench.episodes import Episode, write_dataset

    root = work / "calib"
    if (root / "dataset.json").is_file():
        return root
    pol = load_policy(ckpt)
    cfg = pol.config
    key = json.loads((ckpt / "dataset_statistics.json").read_text())
    rng = np.random.default_rng(0)
    eps = []
    for _ in range(2):
        n = 4
        eps.append(Episode(
            instruction="put the black bowl on the plate",
            images=rng.integers(0, 256, (n, cfg.num_images, cfg.vision.image_size, cfg.vision.image_size, 3), np.uint8),
            proprio=rng.uniform(-0.5, 0.5, (n, cfg.proprio_projector.proprio_dim)),
            actions=rng.uniform(-0.5, 0.5, (n, cfg.action_dim)),
            camera_names=tuple(f"cam{i}" for i in range(cfg.num_images)), task="bowl"))
    write_dataset(root, {"calib": eps, "train": eps}, next(iter(key)))
    return root


# ---------------------------------------------------------------------------------------------------
# the three parts


def correct(work: Path, ckpt: Path, args) -> dict:
    out: dict[str, dict] = {}
    alloc = work / "all_q4k.txt"
    alloc.write_text("*=Q4_K\n")
    calib = write_calibration(work, ckpt)
    jobs = [(t, ["--outtype", t]) for t in OUTTYPES]
    jobs.append(("q4_k", ["--allocation", str(alloc), "--method", "rtn", "--calib", str(calib)]))
    jobs.append(("actquant 2.5 bpw", ["--bpw", "2.5", "--calib", str(calib)]))
    for name, extra in jobs:
        d = work / ("out_" + name.replace(" ", "_").replace(".", ""))
        log(f"convert {name} ...")
        conv = run_cli(["convert", "openvla-oft", "--checkpoint", str(ckpt), "--out", str(d), "--force",
                        "--keep-failed", "--threads", str(args.threads), *extra], work / f"convert_{d.name}.log")
        rec = {"convert": conv}
        if (d / "validation_report.json").is_file():
            rec["report"] = report_summary(d)
            val = run_cli(["validate", str(d), "--threads", str(args.threads)], work / f"validate_{d.name}.log")
            rec["validate"] = val
            rec["validate_passed"] = val["rc"] == 0
        out[name] = rec
        r = rec.get("report", {})
        log(f"  {name}: convert rc {conv['rc']} in {conv['wall_s']} s, peak {conv['peak_rss_gib']} GiB; parity "
            f"{'passed' if r.get('passed') else 'FAILED'}; worst {r.get('worst')} at {r.get('worst_of_bound')} of "
            f"its bound; validate {'passed' if rec.get('validate_passed') else 'FAILED'}")
    return out


def patch_float_array(path: Path, key: str, values) -> None:
    """Overwrite a float32 metadata array in place (same length): the fault a wrong converter writes."""
    data = bytearray(path.read_bytes())
    needle = struct.pack("<Q", len(key)) + key.encode()
    p = data.find(needle)
    if p < 0:
        raise KeyError(key)
    p += len(needle)
    vtype, etype, n = struct.unpack_from("<IIQ", data, p)
    if vtype != 9 or etype != 6 or n != len(values):  # ARRAY of FLOAT32
        raise ValueError(f"{key}: not a float32 array of {len(values)}")
    struct.pack_into(f"<{n}f", data, p + 16, *values)
    path.write_bytes(bytes(data))


def faults(work: Path, ckpt: Path, args) -> dict:
    return {t: faults_at(work, ckpt, args, t) for t in args.fault_outtypes.split(",")}


def faults_at(work: Path, ckpt: Path, args, outtype: str) -> dict:
    out: dict[str, dict] = {}
    base = work / f"out_{outtype}"
    for name, knobs, what in FAULTS:
        d = work / (f"fault_{outtype}_" + name.replace(" ", "_"))
        log(f"fault {name} at {outtype} ...")
        rec: dict = {"what": what}
        if knobs is not None:
            conv = run_cli(["convert", "openvla-oft", "--checkpoint", str(ckpt), "--outtype", outtype, "--out", str(d),
                            "--force", "--keep-failed", "--threads", str(args.threads),
                            *[a for k in knobs for a in ("--knob", k)]], work / f"convert_{d.name}.log")
            rec["convert"] = conv
            text = Path(conv["log"]).read_text()
            line = next((ln.split("FAIL, first at ", 1)[1] for ln in text.splitlines() if "FAIL, first at " in ln), None)
            rec["first_failure"] = line.split(" (", 1)[0].strip() if line else None
            rec["first_reason"] = line.split(" (", 1)[1].rstrip(")") if line and " (" in line else None
            if (d / "validation_report.json").is_file():
                rep = json.loads((d / "validation_report.json").read_text())
                refl = rep.get("reflection") or {}
                rec["repaired"] = bool(rep["passed"] and refl.get("accepted"))
                rec["fix"] = refl["accepted"][-1]["knobs"] if refl.get("accepted") else None
                attempts = refl.get("attempts") or []
                rec["attempts"] = len(attempts)
                rec["summary"] = refl.get("summary")
        else:
            if not (base / "model.gguf").is_file():
                log(f"  needs the correct {outtype} output (run --only correct first)")
                continue
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(base, d, ignore=shutil.ignore_patterns("project"))
            patch_float_array(d / "model.gguf", "openvla-oft.vision.fused_featurizer.image_mean", IMAGENET[0])
            patch_float_array(d / "model.gguf", "openvla-oft.vision.fused_featurizer.image_std", IMAGENET[1])
            val = run_cli(["validate", str(d), "--threads", str(args.threads), "--json", str(d / "revalidated.json")],
                          work / f"validate_{d.name}.log")
            rec["validate"] = val
            rep = json.loads((d / "revalidated.json").read_text())
            rec["first_failure"] = rep["first_failure"]
            rec["repaired"] = False
            first = next(r for r in rep["results"] if r["name"] == rep["first_failure"])
            rec["first_reason"] = first["reason"]
        out[name] = rec
        log(f"  {name}: first failing tensor {rec.get('first_failure')}; repaired {rec.get('repaired')} "
            f"{rec.get('fix') or ''}")
    return out


def q4k(work: Path, ckpt: Path, args) -> dict:
    """The Q4_K finding: per-layer distances, activation outliers, and the random-weight control."""
    import torch

    from omnimodel.arch.openvla_oft import load_policy
    from omnimodel.gguf.types import GGMLType
    from omnimodel.validate.numerics import round_activations
    from omnimodel.validate.reference import (
        GGUFWeights,
        action_span,
        parity_observation,
        reference_inputs,
        run_reference,
    )

    res: dict = {}
    previous = (json.loads((work / "parity_realwidth.json").read_text()).get("q4k") or {}
                if (work / "parity_realwidth.json").is_file() else {})
    q = work / "out_q4_k"
    rep = json.loads((q / "validation_report.json").read_text())
    res["layers"] = [{k: r[k] for k in ("name", "inherent", "noise", "error", "bound")} for r in rep["results"]
                     if r["name"].startswith("language_model.model.layers.") and r["name"].count(".") == 3
                     or r["name"] in ("language_model.model.norm", "actions")]
    # the activations every Llama matmul gets, in the exact reference: block outliers and rounding error
    pol = load_policy(ckpt)
    x = reference_inputs(pol, *parity_observation(pol)[:1], "put the black bowl on the plate", parity_observation(pol)[1])
    stats: dict[str, dict] = {}
    handles = []
    for name, mod in pol.model.language_model.model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            def pre(_m, a, name=name):
                v = a[0].detach().to(torch.float64).reshape(-1, a[0].shape[-1])
                k = v.shape[-1]
                pad = (-k) % 256
                blocks = torch.nn.functional.pad(v, (0, pad)).reshape(v.shape[0], -1, 256)
                real = torch.nn.functional.pad(torch.ones(k), (0, pad)).reshape(-1, 256).sum(-1)
                rms = (blocks.pow(2).sum(-1) / real).sqrt().clamp_min(1e-30)
                peak = (blocks.abs().amax(-1) / rms).max().item()
                err = {t: (torch.linalg.norm(round_activations(v, GGMLType[t]) - v) / torch.linalg.norm(v)).item()
                       for t in ("Q4_K", "Q8_0", "F16")}
                s = stats.setdefault(name.rsplit(".", 1)[-1], {"peak_over_rms": 0.0, "q8k_err": [], "q8_0_err": [],
                                                                "f16_err": []})
                s["peak_over_rms"] = max(s["peak_over_rms"], peak)
                s["q8k_err"].append(err["Q4_K"]); s["q8_0_err"].append(err["Q8_0"]); s["f16_err"].append(err["F16"])
            handles.append(mod.register_forward_pre_hook(pre))
    try:
        run_reference(pol, x, weights=GGUFWeights(q / "model.gguf"), keep=lambda _n: False)
    finally:
        for h in handles:
            h.remove()
    # counterfactual: the same Q4_K weights with the activations rounded in Q8_0 blocks of 32 instead of
    # Q8_K blocks of 256 -- how much of the inherent deviation is the block size meeting the outliers
    from omnimodel.plan.plan import Plan
    from omnimodel.validate.numerics import RuntimeNumerics
    from omnimodel.validate.reference import DistanceSink, StoreSink

    plan = Plan.from_json((q / "plan.json").read_text())
    real = RuntimeNumerics.from_plan(plan)
    as_q8_0 = RuntimeNumerics({n: (GGMLType.Q4_0 if t == GGMLType.Q4_K else t) for n, t in real.weight_types.items()})
    w = GGUFWeights(q / "model.gguf")
    keep = {"language_model.model.norm", "actions", "vision_backbone"}.__contains__
    exact = StoreSink()
    run_reference(pol, x, weights=w, keep=keep, sink=exact)
    ref = exact.tensors()
    span = action_span(pol)
    res["block_size_counterfactual"] = {}
    for label, num in (("Q8_K blocks of 256 (ggml)", real), ("Q8_0 blocks of 32", as_q8_0)):
        sink = DistanceSink(ref)
        run_reference(pol, x, weights=w, numerics=num, keep=keep, sink=sink)
        res["block_size_counterfactual"][label] = {
            "language_model.model.norm": float(np.sqrt(sink.sq_err["language_model.model.norm"]
                                                       / sink.sq_ref["language_model.model.norm"])),
            "actions (of range)": float((sink.max_err["actions"] / span).max()),
        }
    res["activations"] = {k: {"peak_over_rms": round(v["peak_over_rms"], 1),
                              "q8k_rel_err": float(np.mean(v["q8k_err"])), "q8_0_rel_err": float(np.mean(v["q8_0_err"])),
                              "f16_rel_err": float(np.mean(v["f16_err"]))} for k, v in stats.items()}
    # control: the same conversion with random (outlier-free) Llama weights
    ctl = write_checkpoint(work, args, pretrained=False, name="ckpt_random")
    calib = write_calibration(work, ckpt)
    d = work / "out_q4_k_random"
    conv = previous.get("random_control", {}).get("convert") if (d / "validation_report.json").is_file() else None
    if conv is None:
        conv = run_cli(["convert", "openvla-oft", "--checkpoint", str(ctl), "--out", str(d), "--force", "--keep-failed",
                        "--allocation", str(work / "all_q4k.txt"), "--method", "rtn", "--calib", str(calib),
                        "--threads", str(args.threads)], work / "convert_out_q4_k_random.log")
    res["random_control"] = {"convert": conv, "report": report_summary(d) if (d / "validation_report.json").is_file()
                             else None}
    return res


# ---------------------------------------------------------------------------------------------------
# tables


def tables(result: dict) -> str:
    lines = []
    if "correct" in result:
        lines += ["| conversion | parity | validate | passed locally | closest tensor (of its bound) | runtime/noise "
                  "median / p90 / max (tensor) | actions: inherent d(E,R) | noise | runtime | convert wall | peak RSS |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in result["correct"].items():
            rep = r.get("report", {})
            lines.append(
                f"| {name} | {'pass' if rep.get('passed') else 'FAIL'} | {'pass' if r.get('validate_passed') else 'FAIL'} "
                f"| {rep.get('passed_locally')} | {rep.get('worst')} ({_pct(rep.get('worst_of_bound'))}) | "
                f"{rep.get('median_runtime_over_noise')} / {rep.get('p90_runtime_over_noise')} / "
                f"{rep.get('max_runtime_over_noise')} ({rep.get('max_over_noise_tensor')}) | "
                f"{_e(rep.get('action_inherent'))} | {_e(rep.get('action_noise'))} | {_e(rep.get('action_runtime'))} | "
                f"{r['convert']['wall_s']} s | {r['convert']['peak_rss_gib']} GiB |")
        lines.append("")
    for outtype, rows in result.get("faults", {}).items():
        lines += [f"| fault ({outtype}) | first failing tensor | error / bound | given the runtime's inputs | repaired | by |",
                  "|---|---|---|---|---|---|"]
        for name, r in rows.items():
            lines.append(f"| {name} ({r['what']}) | `{r.get('first_failure')}` | {_ratio(r.get('first_reason'))} | "
                         f"{_local_ratio(r.get('first_reason'))} | {'yes' if r.get('repaired') else 'no'} | "
                         f"{r.get('fix') or '-'} |")
        lines.append("")
    if "q4k" in result:
        lines += ["| tensor (Q4_K) | inherent d(E,R) | noise d(R',R) | runtime d(rt,R) |", "|---|---|---|---|"]
        for r in result["q4k"]["layers"]:
            lines.append(f"| {r['name']} | {_e(r['inherent'])} | {_e(r['noise'])} | {_e(r['error'])} |")
        lines += ["", "| matmul input | largest |x| / RMS of its 256-block | Q8_K rounding error | Q8_0 | F16 |",
                  "|---|---|---|---|---|"]
        for k, v in result["q4k"]["activations"].items():
            lines.append(f"| {k} | {v['peak_over_rms']} | {_e(v['q8k_rel_err'])} | {_e(v['q8_0_rel_err'])} | "
                         f"{_e(v['f16_rel_err'])} |")
        for label, v in (result["q4k"].get("block_size_counterfactual") or {}).items():
            lines.append(f"\nexact vs Q4_K weights with activations in {label}: final norm "
                         f"{_e(v['language_model.model.norm'])}, actions {_e(v['actions (of range)'])} of the range")
        ctl = (result["q4k"].get("random_control") or {}).get("report") or {}
        lines.append(f"\nrandom-weight Llama control at Q4_K: parity {'pass' if ctl.get('passed') else 'FAIL'}, "
                     f"actions inherent {_e(ctl.get('action_inherent'))}, runtime {_e(ctl.get('action_runtime'))}")
    return "\n".join(lines)


def _ratio(reason: str | None) -> str:
    """error / bound of the global rule from a failing tensor's reason ("error E ... > bound B ...")."""
    m = re.search(r"error ([0-9.e+-]+) [^;]*?> bound ([0-9.e+-]+)", reason or "")
    return f"{float(m.group(1)) / float(m.group(2)):.3g}x" if m else "-"


def _local_ratio(reason: str | None) -> str:
    """error / bound of the teacher-forced local check ("...; given the runtime's inputs: error E > bound B")."""
    m = re.search(r"given the runtime's inputs: error ([0-9.e+-]+) > bound ([0-9.e+-]+)", reason or "")
    return f"{float(m.group(1)) / float(m.group(2)):.3g}x" if m else "-"


def _e(x) -> str:
    return "-" if not isinstance(x, float) else f"{x:.2e}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="working directory (checkpoints, outputs, logs)")
    ap.add_argument("--vision-depth", type=int, default=None, help="blocks per tower (default: the real 24/27)")
    ap.add_argument("--llm-layers", type=int, default=None, help="Llama layers (default: all 30)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="correct,faults,q4k", help="comma-separated parts to run")
    ap.add_argument("--fault-outtypes", default="f32,f16", help="the conversions faults are injected into")
    args = ap.parse_args(argv)
    work = args.work.absolute()
    work.mkdir(parents=True, exist_ok=True)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    result_path = work / "parity_realwidth.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                         "threads": args.threads, "vision_depth": args.vision_depth or "real",
                         "llm_layers": args.llm_layers or "all"}
    ckpt = write_checkpoint(work, args)
    for part in parts:
        t0 = time.perf_counter()
        result[part] = {"correct": correct, "faults": faults, "q4k": q4k}[part](work, ckpt, args)
        log(f"{part}: {time.perf_counter() - t0:.0f} s")
        result_path.write_text(json.dumps(result, indent=2) + "\n")
    print(tables(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
