#!/usr/bin/env python
"""Cost of the ActQuant quantization pass itself, stage by stage, and how it scales with model size.

Stages (python/omnimodel/quant; each is timed and its memory measured on its own):

    1 calibrate   forward hooks + one backward per sample: imatrix, Action-Mixed Fisher, HSIC features
    2 allocate    HSIC sensitivities + the layer-balanced greedy allocation (``plan_allocation``)
    3 scales      intra-tensor stored-scale optimisation (``quantize_matrices(..., "actquant")``)
    4 gguf        ``write_gguf(policy, path, "f16", encoded=result.tensors)``: the stage-3 blocks stored
                  as they are

Per stage: wall time, CPU time of the process, peak RSS above the stage's start (a background thread
samples /proc/self/statm every 10 ms; VmHWM cannot be reset) and the tracemalloc peak of the
Python / numpy allocations made during the stage (torch tensors are invisible to tracemalloc, so
calibration shows up in RSS only). Before each stage: gc.collect() and malloc_trim(0), so the RSS start
is not inflated by memory freed earlier.

Models: the shipped demo policy (``omnimodel.demo_assets``), then miniatures written by
``arch/openvla_oft/miniature.py`` with the same depths (ViT depth 3 -> 2 exported blocks per tower, 2
Llama layers) and growing widths (256, 512, 768: every K / IQ type fits the rows; 384: they are zero-padded
to 512). The time of each
stage is fitted against the parameter count of the quantized matrices (least squares on log-log, the
miniatures only) and extrapolated to OpenVLA-OFT 7B, whose quantized-matrix count is computed from the
real config (Llama-2-7B, DINOv2 ViT-L/14-reg4, SigLIP so400m/14 at 224 px) on the meta device.

    PYTHONPATH=python python benchmarks/quant_pass.py --out quant_pass.json
    PYTHONPATH=python python benchmarks/quant_pass.py --quick          # a smoke run, about a minute

``--real-width`` instead runs `omnimodel convert` on a real-width OpenVLA-OFT and measures peak memory
per stage, plus per-layer probes for a 7B estimate (``benchmarks/quant_pass_real.py``).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import ctypes
import gc
import json
import math
import platform
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Self

import numpy as np
import torch

STAGES = ("calibrate", "allocate", "scales", "gguf")
STAGE_LABEL = {
    "calibrate": "1 calibration fwd+bwd",
    "allocate": "2 sensitivity+allocation",
    "scales": "3 scale optimisation",
    "gguf": "4 GGUF write",
}

# (name, ViT width, Llama hidden, Llama FFN): 256-multiples so K / IQ blocks fit every row.
# mini-384's 384-wide rows take K / IQ types zero-padded to 512 (allocation padding "auto").
LADDER = (
    ("mini-256", 256, 256, 768),
    ("mini-384", 384, 384, 1280),
    ("mini-512", 512, 512, 1536),
    ("mini-768", 768, 768, 2304),
)
QUICK_LADDER = LADDER[:2]

_PAGE = os.sysconf("SC_PAGE_SIZE")
GIB = 1024.0**3
MIB = 1024.0**2


# ---------------------------------------------------------------------------------------------------
# measurement


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def vm_hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class StageMeter:
    """Wall / CPU time, peak RSS above start (10 ms sampling thread) and the tracemalloc peak of one stage."""

    def __init__(self, interval: float = 0.01, trace: bool = True) -> None:
        self.interval = interval
        self.trace = trace
        self.result: dict = {}

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            r = rss_bytes()
            self._peak = max(self._peak, r)
            self._n += 1

    def __enter__(self) -> Self:
        gc.collect()
        _malloc_trim()
        self._rss0 = rss_bytes()
        self._peak = self._rss0
        self._n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        if self.trace:
            tracemalloc.start()
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._t0
        cpu = time.process_time() - self._cpu0
        traced = tracemalloc.get_traced_memory()[1] if self.trace else None
        if self.trace:
            tracemalloc.stop()
        self._stop.set()
        self._thread.join()
        end = rss_bytes()
        self._peak = max(self._peak, end)
        self.result = {
            "wall_s": wall,
            "cpu_s": cpu,
            "rss_start_mib": self._rss0 / MIB,
            "rss_peak_increase_mib": (self._peak - self._rss0) / MIB,
            "rss_end_increase_mib": (end - self._rss0) / MIB,
            "tracemalloc_peak_mib": None if traced is None else traced / MIB,
            "rss_samples": self._n,
        }


# ---------------------------------------------------------------------------------------------------
# models and samples


def calib_episodes():
    from omnimodel.demo_assets import DEMO_CALIB_DIR
    from omnimodel.simbench.episodes import EpisodeDataset

    return list(EpisodeDataset(DEMO_CALIB_DIR).episodes("calib"))


def make_samples(policy, episodes, n: int):
    from omnimodel.quant import samples_from_episodes

    per_ep = max(1, math.ceil(n / max(len(episodes), 1)))
    return samples_from_episodes(
        episodes, policy.config.num_actions_chunk, steps_per_episode=per_ep, seed=0, max_samples=n
    )


def miniature_spec(vit: int, hidden: int, ffn: int, instructions: tuple[str, ...]):
    from omnimodel.arch.openvla_oft import MiniatureSpec

    tower = {"embed_dim": vit, "depth": 3, "num_heads": max(1, vit // 64), "mlp_hidden_dim": 4 * vit}
    return MiniatureSpec(
        seed=0,
        platform="metaworld",  # the calibration split's platform: 2 cameras of 56 px, 4-D actions / proprio
        image_size=56,
        dino=dict(tower),
        siglip=dict(tower),
        llm_hidden=hidden,
        llm_intermediate=ffn,
        llm_layers=2,
        llm_heads=max(1, hidden // 64),
        instructions=instructions,
    )


def openvla_7b_targets():
    """Quantized matrices of the real OpenVLA-OFT (LIBERO head) config, built on the meta device."""
    from omnimodel.arch.openvla_oft.config import VISION_OVERRIDES_KEY, build_config
    from omnimodel.arch.openvla_oft.modeling import OpenVLAOFT
    from omnimodel.demo_assets import DEMO_POLICY_DIR
    from omnimodel.quant import matrix_targets

    hf = json.loads((DEMO_POLICY_DIR / "config.json").read_text())
    hf.pop(VISION_OVERRIDES_KEY, None)  # -> the real timm tower dims (KNOWN_VITS)
    hf["image_sizes"] = [224, 224]
    # OpenVLA's text_config: everything else is a LlamaConfig default (4096 / 11008 / 32 layers)
    hf["text_config"] = {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16", "vocab_size": 32064}
    pre = json.loads((DEMO_POLICY_DIR / "preprocessor_config.json").read_text())
    cfg = build_config(
        hf,
        preprocessor_config=pre,
        dataset_key="libero_10_no_noops",
        stats_action_dim=7,
        head_action_dim=7,
        head_hidden_dim=4096,
        head_num_blocks=2,
        proprio_dim=8,
    )
    with torch.device("meta"):
        model = OpenVLAOFT(cfg)
    targets = matrix_targets(model)
    total = sum(p.numel() for p in model.parameters())
    return cfg, targets, int(total)


def layer_params(targets) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in targets:
        out[t.layer] = out.get(t.layer, 0) + t.numel
    return out


def seq_tokens(policy, sample) -> dict[str, int]:
    """Tokens the calibration forward runs per sample: ViT tokens per image, Llama sequence length."""
    cfg = policy.config
    prompt = len(policy.tokenizer.encode_prompt(sample.instruction))
    vit = cfg.vision.featurizer.num_patches + cfg.vision.featurizer.num_prefix_tokens
    llm = cfg.num_prefix_embeddings + prompt + cfg.num_action_slots + 1  # SequenceLayout.seq_len
    return {"vit_tokens_per_image": int(vit), "images": int(cfg.num_images), "llm_seq": int(llm)}


# ---------------------------------------------------------------------------------------------------
# one model through the four stages


def warm_up(policy, episodes, args) -> float:
    """One-time costs kept out of the first model's numbers: torch's first forward/backward, and ggml's
    lazy initialisation (the IQ grids) through one small optimise_tensor per candidate type."""
    from omnimodel.quant import calibrate
    from omnimodel.quant.allocate import DEFAULT_CANDIDATES
    from omnimodel.quant.scales import optimise_tensor

    t0 = time.perf_counter()
    calibrate(policy, make_samples(policy, episodes, 1), lam=args.lam, fisher=True)
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 256)) / 16).astype(np.float32)
    imp = rng.random((8, 256)).astype(np.float32)
    for t in DEFAULT_CANDIDATES:
        optimise_tensor(w, t, imp)
    return time.perf_counter() - t0


def run_model(name: str, policy, episodes, args, workdir: Path, log) -> dict:
    from omnimodel.arch.openvla_oft.export import write_gguf
    from omnimodel.quant import (
        calibrate,
        feasible_range,
        matrix_targets,
        matrix_weights,
        plan_allocation,
        quantize_matrices,
    )

    model = policy.model
    targets = matrix_targets(model)
    n_q = sum(t.numel for t in targets)
    n_total = sum(p.numel() for p in model.parameters())
    samples = make_samples(policy, episodes, args.samples)
    lo, hi = feasible_range(targets, padding=args.padding)
    budget = min(max(args.budget, lo), hi)
    rec: dict = {
        "model": name,
        "params_total": int(n_total),
        "params_quantized": int(n_q),
        "n_matrices": len(targets),
        "largest_matrix": int(max(t.numel for t in targets)),
        "shapes": sorted({tuple(t.shape) for t in targets}),
        "n_samples": len(samples),
        "tokens": seq_tokens(policy, samples[0]),
        "budget_requested_bpw": args.budget,
        "budget_bpw": budget,
        "feasible_bpw": [lo, hi],
        "stages": {},
    }
    log(
        f"\n== {name}: {n_q / 1e6:.3f}M quantized params in {len(targets)} matrices "
        f"({n_total / 1e6:.3f}M total), {len(samples)} samples, budget {budget:.3g} bpw"
        + ("" if budget == args.budget else f" (requested {args.budget:g}; feasible {lo:.3f}..{hi:.3f})")
    )
    weights = {k: v.numpy() for k, v in matrix_weights(model).items()}
    trace = not args.no_tracemalloc

    with StageMeter(trace=trace) as m:
        stats = calibrate(policy, samples, lam=args.lam, fisher=True, hessian=False)
    rec["stages"]["calibrate"] = dict(m.result, per_sample_s=m.result["wall_s"] / len(samples))
    log_stage(log, "calibrate", m.result, f"{m.result['wall_s'] / len(samples) * 1e3:.0f} ms/sample")

    with StageMeter(trace=trace) as m:
        allocation = plan_allocation(targets, weights, stats, budget, padding=args.padding)
    rec["stages"]["allocate"] = dict(m.result)
    rec["allocation"] = {
        "bpw": allocation.bpw,
        "types": allocation.type_histogram(),
        "padded": len(allocation.padded()),
    }
    log_stage(log, "allocate", m.result, f"bpw {allocation.bpw:.3f}")

    with StageMeter(trace=trace) as m:
        result = quantize_matrices(weights, allocation, "actquant", stats, importance=args.importance)
    rec["stages"]["scales"] = dict(m.result, per_mparam_s=m.result["wall_s"] / (n_q / 1e6))
    rec["winners"] = result.winners()
    rec["fisher_error"] = result.fisher_error()
    log_stage(log, "scales", m.result, f"{m.result['wall_s'] / (n_q / 1e6):.2f} s/Mparam")

    path = workdir / f"{name}.gguf"
    del stats
    with StageMeter(trace=trace) as m:
        try:
            write_gguf(policy, path, outtype="f16", encoded=result.tensors, method="actquant", target_bpw=budget)
            err = None
        except Exception as e:  # noqa: BLE001  (recorded, the other stages stay valid)
            err = f"{type(e).__name__}: {e}"
    del result
    rec["stages"]["gguf"] = dict(m.result, error=err, bytes=path.stat().st_size if path.exists() else None)
    log_stage(log, "gguf", m.result, err or f"{path.stat().st_size / MIB:.2f} MiB")
    if path.exists():
        path.unlink()
    return rec


def log_stage(log, stage: str, r: dict, extra: str) -> None:
    tm = "-" if r["tracemalloc_peak_mib"] is None else f"{r['tracemalloc_peak_mib']:.1f}"
    log(
        f"   {STAGE_LABEL[stage]:<26} wall {r['wall_s']:8.2f} s  cpu {r['cpu_s']:8.2f} s  "
        f"RSS +{r['rss_peak_increase_mib']:7.1f} MiB  tracemalloc {tm:>7} MiB   {extra}"
    )


# ---------------------------------------------------------------------------------------------------
# fit and extrapolation


def loglog_fit(x: list[float], y: list[float]) -> dict | None:
    if len(x) < 2:
        return None
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    A = np.stack([lx, np.ones_like(lx)], 1)
    (slope, icpt), *_ = np.linalg.lstsq(A, ly, rcond=None)
    pred = A @ np.array([slope, icpt])
    ss_res = float(((ly - pred) ** 2).sum())
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    return {"slope": float(slope), "intercept": float(icpt), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else None}


def extrapolate(runs: list[dict], n7: int) -> dict:
    """Per stage: the log-log fit over the miniatures, the 7B time it predicts, and the linear estimate
    (the largest miniature's seconds per parameter times the 7B count) for comparison."""
    minis = [r for r in runs if r["model"].startswith("mini-")]
    out: dict = {}
    big = max(minis, key=lambda r: r["params_quantized"]) if minis else None
    for s in STAGES:
        pts = [(r["params_quantized"], r["stages"][s]["wall_s"]) for r in minis if r["stages"][s]["wall_s"] > 0]
        fit = loglog_fit([p for p, _ in pts], [t for _, t in pts])
        e = {"fit": fit, "points": len(pts)}
        if fit is not None:
            e["fitted_7b_s"] = float(math.exp(fit["intercept"]) * n7 ** fit["slope"])
        if big is not None:
            e["linear_7b_s"] = big["stages"][s]["wall_s"] / big["params_quantized"] * n7
        out[s] = e
    return out


def fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    if "--real-width" in (sys.argv[1:] if argv is None else argv):
        # the real-width conversion's per-stage memory and the 7B estimate: benchmarks/quant_pass_real.py
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from quant_pass_real import main_real, parse_args

        return main_real(parse_args(argv))
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--quick", action="store_true", help="4 samples, demo + the 2 smallest miniatures")
    ap.add_argument("--samples", type=int, default=None, help="calibration samples per model (default 16, quick 4)")
    ap.add_argument("--budget", type=float, default=3.0, help="bpw budget (clamped to each model's feasible range)")
    ap.add_argument("--lam", type=float, default=0.5, help="Action-Mixed Fisher lambda")
    ap.add_argument("--padding", choices=("never", "auto"), default="auto", help="allocation padding (default auto)")
    ap.add_argument(
        "--importance", default="fisher", help="actquant per-element importance (default fisher, as quant/pipeline.py)"
    )
    ap.add_argument("--sizes", help="comma-separated subset of " + ",".join(n for n, *_ in LADDER))
    ap.add_argument("--no-demo", action="store_true", help="skip the demo policy")
    ap.add_argument("--no-tracemalloc", action="store_true", help="RSS sampling only (tracemalloc costs time)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)
    if args.samples is None:
        args.samples = 4 if args.quick else 16
    ladder = QUICK_LADDER if args.quick else LADDER
    if args.sizes:
        wanted = args.sizes.split(",")
        ladder = tuple(x for x in LADDER if x[0] in wanted)
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, flush=True)

    from omnimodel.arch.openvla_oft import load_policy, write_miniature
    from omnimodel.demo_assets import DEMO_POLICY_DIR

    log(
        f"quant_pass: torch {torch.__version__}, {args.threads} torch thread(s), {os.cpu_count()} CPUs, "
        f"loadavg {os.getloadavg()[0]:.2f}"
    )
    episodes = calib_episodes()
    instructions = tuple(sorted({ep.instruction for ep in episodes}))
    runs: list[dict] = []
    demo = load_policy(DEMO_POLICY_DIR)
    warm_s = warm_up(demo, episodes, args)
    log(f"warm-up (one calibrate sample + one small matrix per candidate type, not counted): {warm_s:.1f} s")
    with tempfile.TemporaryDirectory(prefix="quant_pass_") as tmp:
        work = Path(tmp)
        if not args.no_demo:
            runs.append(run_model("demo", demo, episodes, args, work, log))
        del demo
        for name, vit, hidden, ffn in ladder:
            ck = write_miniature(work / name, miniature_spec(vit, hidden, ffn, instructions))
            policy = load_policy(ck)
            rec = run_model(name, policy, episodes, args, work, log)
            rec["spec"] = {"vit_width": vit, "vit_depth": 3, "llm_hidden": hidden, "llm_ffn": ffn, "llm_layers": 2}
            runs.append(rec)
            del policy
            gc.collect()

    # ---- the 7B target and the extrapolation
    cfg7, targets7, total7 = openvla_7b_targets()
    n7 = sum(t.numel for t in targets7)
    per_domain: dict[str, int] = {}
    for t in targets7:
        d = t.name.split(".")[1] if t.name.startswith("vision_backbone.") else "language_model"
        per_domain[d] = per_domain.get(d, 0) + t.numel
    lp = layer_params(targets7)
    biggest_layer = max(lp.items(), key=lambda kv: kv[1])
    fisher_full = 4 * n7
    fisher_layer = 4 * biggest_layer[1]
    ext = extrapolate(runs, n7)
    seq7 = {
        "vit_tokens_per_image": cfg7.vision.featurizer.num_patches + cfg7.vision.featurizer.num_prefix_tokens,
        "images": cfg7.num_images,
        "llm_seq_without_prompt": cfg7.num_prefix_embeddings + cfg7.num_action_slots + 1,
    }

    log("\n== summary: wall time per stage, seconds (CPU seconds in brackets)\n")
    log("| model | quantized params | " + " | ".join(STAGE_LABEL[s][2:] for s in STAGES) + " | total |")
    log("|---|---:|" + "---:|" * (len(STAGES) + 1))
    for r in runs:
        st = r["stages"]
        cells = [f"{st[s]['wall_s']:.2f} ({st[s]['cpu_s']:.2f})" for s in STAGES]
        cells[0] += f", {st['calibrate']['per_sample_s'] * 1e3:.0f} ms/sample"
        total = sum(st[s]["wall_s"] for s in STAGES)
        log(f"| {r['model']} | {r['params_quantized']:,} | " + " | ".join(cells) + f" | {total:.2f} |")
    log("\n== summary: peak memory per stage, MiB: RSS increase above the stage's start / tracemalloc peak\n")
    log("| model | " + " | ".join(STAGE_LABEL[s][2:] for s in STAGES) + " |")
    log("|---|" + "---:|" * len(STAGES))
    for r in runs:
        st = r["stages"]
        cells = [
            f"{st[s]['rss_peak_increase_mib']:.1f} / "
            + ("-" if st[s]["tracemalloc_peak_mib"] is None else f"{st[s]['tracemalloc_peak_mib']:.1f}")
            for s in STAGES
        ]
        log(f"| {r['model']} | " + " | ".join(cells) + " |")
    log(
        f"\n== OpenVLA-OFT 7B: {n7:,} quantized-matrix parameters in {len(targets7)} matrices "
        f"({', '.join(f'{k} {v:,}' for k, v in per_domain.items())}); {total7:,} parameters in all"
    )
    log(
        "   log-log fit of wall time vs quantized params over the miniatures, extrapolated (CPU, this machine, 1 thread):"
    )
    for s in STAGES:
        e = ext[s]
        f = e["fit"]
        if f is None:
            log(f"   {STAGE_LABEL[s]:<26} (not enough points)")
            continue
        r2 = "-" if f["r2"] is None else f"{f['r2']:.3f}"
        log(
            f"   {STAGE_LABEL[s]:<26} slope {f['slope']:5.2f} (R^2 {r2})  fitted 7B {fmt_s(e['fitted_7b_s']):>9}   "
            f"linear from largest {fmt_s(e.get('linear_7b_s')):>9}"
        )
    fitted_all = all("fitted_7b_s" in ext[s] for s in STAGES)
    tot_fit = sum(ext[s]["fitted_7b_s"] for s in STAGES) if fitted_all else None
    tot_lin = sum(ext[s]["linear_7b_s"] for s in STAGES) if all("linear_7b_s" in ext[s] for s in STAGES) else None
    log(f"   {'total':<26} {'':>22} fitted 7B {fmt_s(tot_fit):>9}   linear from largest {fmt_s(tot_lin):>9}")
    n_cal = max((r["n_samples"] for r in runs), default=0)
    cal = ext["calibrate"]
    if cal.get("fitted_7b_s") is not None and n_cal:
        cal["fitted_7b_per_sample_s"] = cal["fitted_7b_s"] / n_cal
        cal["linear_7b_per_sample_s"] = cal["linear_7b_s"] / n_cal
        log(
            f"   calibration per sample ({n_cal} samples above): fitted {fmt_s(cal['fitted_7b_per_sample_s'])}, "
            f"linear {fmt_s(cal['linear_7b_per_sample_s'])}"
        )
    log(
        f"   Fisher accumulators (fp32, 4 B/param): all {len(targets7)} matrices at once {fisher_full / GIB:.1f} GiB; "
        f"one pass per layer (calibrate(only=...)) {fisher_layer / GIB:.2f} GiB for the largest layer "
        f"({biggest_layer[0]}, {biggest_layer[1]:,} params), plus the same again for that pass's gradients"
    )
    vit_here = runs[-1]["tokens"]["vit_tokens_per_image"] if runs else "-"
    log(
        f"   For 7B, calibration runs on a GPU (a CPU forward+backward of {total7 / 1e9:.1f}B parameters per sample "
        "is impractical); the calibration figure above is a CPU-time extrapolation at the miniatures' token counts "
        f"(ViT {vit_here} tokens/image here vs {seq7['vit_tokens_per_image']} at 224 px), so it is a lower bound "
        "for CPU."
    )

    elapsed = time.perf_counter() - t_start
    log(f"\nfinished in {elapsed:.1f} s; process VmHWM {vm_hwm_bytes() / MIB:.0f} MiB")
    out = {
        "benchmark": "quant_pass",
        "argv": sys.argv[1:],
        "settings": {
            "samples": args.samples,
            "budget_bpw": args.budget,
            "lam": args.lam,
            "padding": args.padding,
            "importance": args.importance,
            "outtype_for_other_tensors": "f16",
            "torch_threads": args.threads,
            "tracemalloc": not args.no_tracemalloc,
            "rss_sample_interval_s": 0.01,
        },
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "loadavg_end": os.getloadavg(),
        },
        "runs": runs,
        "openvla_7b": {
            "params_quantized": n7,
            "params_total": total7,
            "n_matrices": len(targets7),
            "per_domain": per_domain,
            "largest_layer": {"name": biggest_layer[0], "params": biggest_layer[1]},
            "fisher_fp32_all_bytes": fisher_full,
            "fisher_fp32_largest_layer_bytes": fisher_layer,
            "tokens": seq7,
            "extrapolation": ext,
            "fitted_total_s": tot_fit,
            "linear_total_s": tot_lin,
            "note": "CPU wall time on this machine, 1 torch thread; for 7B calibration would run on a GPU",
        },
        "warm_up_s": warm_s,
        "elapsed_s": elapsed,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, default=_json_default) + "\n")
        log(f"wrote {args.out}")
    return 0


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, tuple):
        return list(o)
    return str(o)


if __name__ == "__main__":
    raise SystemExit(main())
