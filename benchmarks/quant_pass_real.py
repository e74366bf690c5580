#!/usr/bin/env python
"""Memory and time of `omnimodel convert` on a real-width OpenVLA-OFT, per stage, and a 7B estimate.

    python benchmarks/quant_pass.py --real-width --vision-depth 4 --llm-layers 4   # iterate (reduced depth)
    python benchmarks/quant_pass.py --real-width --out rw.json                     # full depth: 902M params

The model is ``real_width_spec()`` (arch/openvla_oft/miniature.py): DINOv2-L/14-reg4 and SigLIP-so400m/14
towers at 224 px with two images, a 576-wide 30-layer SmolLM2-shaped GQA Llama, random weights, the
LIBERO platform (8-D proprio, 7-D actions, chunk 8) and bf16 safetensors like the released checkpoints.
``--vision-depth`` / ``--llm-layers`` cut the depth (default full: 24 / 27 tower blocks, 30 layers).

Calibration data: the demo's calibration split (Meta-World, 56 px, 4-D proprio) does not fit this
checkpoint, so the benchmark writes a SYNTHETIC episode dataset in the project's format
(``simbench/episodes.py``) that matches it: 2 cameras at 224 px of random pixels, proprio and actions
drawn uniformly inside the checkpoint's own dataset statistics, the checkpoint's dataset key. It has no
task content: it exercises memory and time only (the statistics it yields mean nothing).

Each conversion runs alone in a child process (the checkpoint and dataset are written by other
processes first), whose sampling thread reads /proc/self/status every 20 ms. Per stage of `convert`
(checkpoint load, calibrate, allocate, gguf = quantize + GGUF write streamed matrix by matrix,
render+build, reference, validate, reflect, project) it records the wall time, the peak RSS of the
process and its anonymous / file-backed split at that peak (file-backed = the memory-mapped checkpoint's
pages, which the kernel can drop), and the size of the staging directory (the spilled Fisher). The C++
compiler the render+build stage runs is a separate process and not counted.

Runs: ``convert --bpw 2.5`` (ActQuant: calibration with the Fisher, the solver, the scale optimisation)
and ``convert --allocation '*=Q4_K' --method rtn`` (a complete fixed allocation: no calibration at all).
The bound checked is the issue's: peak RSS <= 2 x the model's bf16 size + 1 GB, per stage.

The 7B estimate (``layer_probe``): one block of each kind at its real width -- a DINOv2-L block, a
SigLIP-so400m block, a SmolLM2 layer and a Llama-2-7B layer (4096 / 11008, 32 heads) -- each alone in a
child process with random bf16 weights and inputs of OFT's token counts, timed for calibration
(forward + backward with the fp32 Fisher accumulation and the imatrix hooks calibration uses, per sample)
and for quantization (ActQuant and RTN of its matrices in the solver's own 2.5 bpw type mix), with the
memory its activations keep for backward. Per-layer costs times the layer counts of OpenVLA-OFT 7B
(23 + 26 tower blocks that run, 32 Llama layers) give the estimate; the same sum for the real-width
model is printed next to its measured totals as a check of the method.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

GB = 1e9
MIB = 1024.0**2
HERE = Path(__file__).resolve()
RSS_INTERVAL_S = 0.02


# ---------------------------------------------------------------------------------------------------
# measurement inside a child


def read_status() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM of this process in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class StageSampler:
    """Samples the process's RSS every ``interval`` s and attributes each sample to the current stage."""

    def __init__(self, interval: float = RSS_INTERVAL_S) -> None:
        self.interval = interval
        self.stages: dict[str, dict] = {}
        self.current: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, first: str) -> None:
        self.enter(first)
        self._thread.start()

    def enter(self, stage: str, **extra) -> None:
        now = time.perf_counter()
        st = read_status()
        with self._lock:
            if self.current is not None:
                self.stages[self.current]["wall_s"] = now - self.stages[self.current]["t0"]
            self.current = stage
            self.stages[stage] = {"t0": now, "rss_start": st["VmRSS"], "peak": st["VmRSS"],
                                  "peak_anon": st["RssAnon"], "peak_file": st["RssFile"], **extra}

    def _sample(self) -> None:
        st = read_status()
        with self._lock:
            s = self.stages[self.current]
            if st["VmRSS"] > s["peak"]:
                s.update(peak=st["VmRSS"], peak_anon=st["RssAnon"], peak_file=st["RssFile"])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict[str, dict]:
        self._sample()
        self.enter("(end)")
        self._stop.set()
        self._thread.join()
        self.stages.pop("(end)")
        for s in self.stages.values():
            s.pop("t0", None)
        return self.stages


class _StopHere(Exception):
    """Raised from the stage hook to end a conversion early (convert removes its staging directory)."""


def _dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0


def child_convert(spec: dict) -> dict:
    """One `convert` with per-stage memory (runs in its own process)."""
    import torch

    from omnimodel.convert import _stage_dir, convert_openvla_oft
    from omnimodel.quant.pipeline import QuantOptions

    out = Path(spec["out"])
    staging = _stage_dir(out)
    sampler = StageSampler()
    sampler.start("(start)")
    quant = QuantOptions(**{k: (Path(v) if k in ("calib", "allocation") and v else v) for k, v in spec["quant"].items()})
    log_lines: list[str] = []

    def log(msg: str) -> None:
        log_lines.append(msg)
        print(msg, flush=True)

    stop_before = spec.get("stop_before")

    def on_stage(name: str) -> None:
        sampler.enter(name, staging_bytes_at_start=_dir_bytes(staging))
        if name == stop_before:
            raise _StopHere(name)

    t0 = time.perf_counter()
    try:
        result = convert_openvla_oft(out, checkpoint=spec["checkpoint"], outtype="f16", threads=spec["threads"],
                                     force=True, keep_failed=True, quant=quant, log=log, on_stage=on_stage)
    except _StopHere:
        result = None
    wall = time.perf_counter() - t0
    stages = sampler.stop()
    stages.pop("(start)", None)
    if result is None:
        stages.pop(stop_before, None)
        return {"wall_s": wall, "vm_hwm": read_status()["VmHWM"], "stages": stages, "stopped_before": stop_before}
    rep = result.report
    return {
        "wall_s": wall,
        "vm_hwm": read_status()["VmHWM"],
        "stages": stages,
        "quantize_s": (result.quant.seconds or {}).get("quantize") if result.quant else None,
        "gguf_bytes": (out / "model.gguf").stat().st_size,
        "bpw": result.quant.allocation.bpw if result.quant else None,
        "types": result.quant.allocation.type_histogram() if result.quant else None,
        "parity_passed": bool(rep.passed),
        "first_failure": rep.first_failure.name if rep.first_failure else None,
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------------
# checkpoint, data


def write_checkpoint(out: Path, vision_depth: int | None, llm_layers: int | None) -> Path:
    """The real-width checkpoint, written by a child process (its writer holds an fp32 state dict)."""
    if (out / "config.json").is_file():
        return out
    code = (
        "import sys; from omnimodel.arch.openvla_oft import real_width_spec, write_miniature; "
        "vd = None if sys.argv[2] == 'None' else int(sys.argv[2]); ll = None if sys.argv[3] == 'None' else int(sys.argv[3]); "
        "write_miniature(sys.argv[1], real_width_spec(vision_depth=vd, llm_layers=ll))"
    )
    subprocess.run([sys.executable, "-c", code, str(out), str(vision_depth), str(llm_layers)], check=True)
    return out


def write_synthetic_calib(checkpoint: Path, out: Path, episodes: int, steps: int, seed: int = 0) -> Path:
    """SYNTHETIC calibration episodes matching ``checkpoint`` (cameras, 224 px, proprio / action dims,
    dataset key); random pixels, proprio and actions uniform inside the checkpoint's statistics."""
    from omnimodel.arch.openvla_oft.checkpoint import read_checkpoint_header
    from omnimodel.simbench.episodes import Episode, write_dataset

    if (out / "dataset.json").is_file():
        return out
    h = read_checkpoint_header(checkpoint)
    cfg = h.config
    stats = h.all_stats[h.dataset_key]
    rng = np.random.default_rng(seed)
    size = cfg.vision.image_size

    def uniform(part: str) -> np.ndarray:
        lo, hi = np.asarray(stats[part]["q01"], np.float64), np.asarray(stats[part]["q99"], np.float64)
        return (lo + (hi - lo) * rng.uniform(0.05, 0.95, size=(steps, lo.shape[0]))).astype(np.float32)

    eps = [
        Episode(
            instruction="put the black bowl on the plate",
            images=rng.integers(0, 256, size=(steps, cfg.num_images, size, size, 3), dtype=np.uint8),
            proprio=uniform("proprio"),
            actions=uniform("action"),
            camera_names=tuple(f"cam{i}" for i in range(cfg.num_images)),
            task="synthetic",
            source="synthetic (quant_pass_real.py: memory and time only)",
        )
        for _ in range(episodes)
    ]
    write_dataset(out, {"calib": eps}, h.dataset_key, created_by={"tool": "benchmarks/quant_pass_real.py",
                                                                   "synthetic": True})
    return out


def run_child(kind: str, spec: dict, workdir: Path, log) -> dict:
    """Run ``kind`` ('convert' or 'probe') in a fresh process; its stdout goes to ``log``."""
    spec_path = workdir / f"{kind}-{int(time.time() * 1e3)}.json"
    result_path = spec_path.with_suffix(".result.json")
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(spec.get("threads", 2)))
    proc = subprocess.Popen([sys.executable, str(HERE), "--child", kind, str(spec_path), str(result_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        log("    | " + line.rstrip())
    if proc.wait() != 0:
        raise RuntimeError(f"{kind} child failed (exit {proc.returncode}); see the log above")
    return json.loads(result_path.read_text())


# ---------------------------------------------------------------------------------------------------
# per-layer probes for the 7B estimate


def probe_modules(kind: str):
    """(module in bf16 with random weights, a callable giving one sample's input, sequence facts)."""
    import torch

    from omnimodel.arch.openvla_oft.modeling import LlamaDecoderLayer, ViTBlock, rope_cos_sin

    seq_llm = 2 * 256 + 1 + 16 + 56 + 1  # OFT: 2 x 256 patches + proprio token, prompt, 56 action slots, stop
    if kind in ("dinov2-l", "siglip-so400m"):
        vit = _vit_config(kind)
        block = ViTBlock(vit)
        tokens = vit.num_patches + vit.num_prefix_tokens

        def make_input(gen):
            return (torch.randn(2, tokens, vit.embed_dim, generator=gen, dtype=torch.bfloat16),)

        return block, make_input, {"tokens_per_sample": 2 * tokens, "width": vit.embed_dim}
    llm = _llm_config(kind)
    layer = LlamaDecoderLayer(llm)
    cos, sin = rope_cos_sin(torch.arange(seq_llm), llm.head_dim, llm.rope_theta, torch.bfloat16)

    def make_input(gen):
        return (torch.randn(1, seq_llm, llm.hidden_size, generator=gen, dtype=torch.bfloat16), cos, sin)

    return layer, make_input, {"tokens_per_sample": seq_llm, "width": llm.hidden_size}


def _vit_config(kind: str):
    from omnimodel.arch.openvla_oft.config import _vit_from_id

    tid = {"dinov2-l": "vit_large_patch14_reg4_dinov2", "siglip-so400m": "vit_so400m_patch14_siglip_224"}[kind]
    return _vit_from_id(tid, 224, {}, "probe")


def _llm_config(kind: str):
    from omnimodel.arch.openvla_oft.config import LlamaConfig
    from omnimodel.arch.openvla_oft.miniature import REAL_LLMS

    f = REAL_LLMS["smollm2" if kind == "smollm2" else "llama2-7b"]
    return LlamaConfig(
        vocab_size=32064, hidden_size=f["llm_hidden"], intermediate_size=f["llm_intermediate"], num_hidden_layers=1,
        num_attention_heads=f["llm_heads"], num_key_value_heads=f["llm_kv_heads"] or f["llm_heads"],
        rms_norm_eps=f.get("rms_norm_eps") or 1e-6, rope_theta=f.get("rope_theta") or 1e4,
        max_position_embeddings=2048,
    )


def child_probe(spec: dict) -> dict:
    """Per-layer costs of one block kind (runs in its own process)."""
    import torch
    from torch import nn

    from omnimodel.quant.allocate import TensorAllocation
    from omnimodel.quant.quantize import plan_allocation, quantize_matrix
    from omnimodel.quant.targets import MatrixTarget

    torch.set_num_threads(spec["threads"])
    gen = torch.Generator().manual_seed(0)
    before = read_status()["VmRSS"]
    module, make_input, facts = probe_modules(spec["kind"])
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.02 if p.ndim > 1 else 1.0))
    module = module.to(torch.bfloat16)
    linears = {n: m for n, m in module.named_modules() if isinstance(m, nn.Linear)}
    n_params = sum(p.numel() for p in module.parameters())
    n_q = sum(m.weight.numel() for m in linears.values())
    weights_rss = read_status()["VmRSS"] - before

    # calibration: forward with the imatrix / pooled-feature hooks, backward into fp32 accumulators
    acc = {n: torch.zeros(m.weight.shape) for n, m in linears.items()}
    sq = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in linears.items()}

    def fwd_hook(name):
        def hook(_m, args, out):
            flat = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sq[name] += (flat * flat).sum(0)
            out.detach().float().reshape(-1, out.shape[-1]).mean(0)
        return hook

    def grad_hook(name):
        def hook(p):
            g = p.grad.float()
            acc[name] += g * g
            p.grad = None
        return hook

    for p in module.parameters():
        p.requires_grad_(False)
    handles = []
    for n, m in linears.items():
        m.weight.requires_grad_(True)
        handles.append(m.register_forward_hook(fwd_hook(n)))
        handles.append(m.weight.register_post_accumulate_grad_hook(grad_hook(n)))
    times = []
    param_ptrs = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        # what autograd keeps for backward, by storage (weights excluded: they are the model's anyway)
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_ptrs:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    fwd_times = []
    for i in range(spec["samples"] + 1):  # the first is a warm-up
        args = make_input(gen)
        x = args[0].requires_grad_(True)  # the gradient flows on to the layer below, as in the model
        saved.clear()
        t0 = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = module(*args)
        t1 = time.perf_counter()
        tangent = torch.randn(out.shape, generator=gen, dtype=out.dtype)
        (out.float() * tangent.float()).sum().backward()
        dt = time.perf_counter() - t0
        del x, out
        if i:
            times.append(dt)
            fwd_times.append(t1 - t0)
    peak_act = sum(saved.values())
    for h in handles:
        h.remove()
    calib_rss = read_status()["VmRSS"] - before

    if spec.get("no_quantize"):
        return {"kind": spec["kind"], **facts, "params": n_params, "params_quantized": n_q,
                "calib_s_per_sample": float(np.median(times)), "forward_s_per_sample": float(np.median(fwd_times)),
                "activation_bytes_per_sample": int(peak_act)}
    # quantization: the solver's 2.5 bpw mix over this layer's matrices, then each matrix by ActQuant / RTN
    targets = [MatrixTarget(n + ".weight", tuple(m.weight.shape), "layer") for n, m in linears.items()]
    weights = {t.name: linears[t.name[:-7]].weight.detach().float().numpy() for t in targets}
    alloc = plan_allocation(targets, weights, None, spec["bpw"], hsic=False)
    q_s = {"actquant": 0.0, "rtn": 0.0}
    del weights  # quantization reads one matrix at a time, as convert's gguf stage does
    weights = {t.name: None for t in targets}
    sampler = StageSampler()
    sampler.start("quantize")
    q_base = read_status()["VmRSS"]
    for ta in alloc.tensors:
        weights[ta.name] = linears[ta.name[:-7]].weight.detach().float().numpy()
        w = weights[ta.name]
        fisher = acc[ta.name[:-7]].numpy() / max(1, len(times))
        stats = _FisherOnly(ta.name, fisher)
        for method in q_s:
            t0 = time.perf_counter()
            quantize_matrix(w, ta, method, stats if method == "actquant" else None, importance="fisher")
            q_s[method] += time.perf_counter() - t0
        weights[ta.name] = None
    q_peak = sampler.stop()["quantize"]["peak"] - q_base
    assert all(isinstance(t, TensorAllocation) for t in alloc.tensors)
    return {
        "kind": spec["kind"],
        **facts,
        "params": n_params,
        "params_quantized": n_q,
        "calib_s_per_sample": float(np.median(times)),
        "forward_s_per_sample": float(np.median(fwd_times)),
        "activation_bytes_per_sample": int(peak_act),
        "weights_rss_bytes": int(weights_rss),
        "calib_rss_bytes": int(calib_rss),
        "types": alloc.type_histogram(),
        "bpw": alloc.bpw,
        "quantize_s": q_s,
        "quantize_peak_bytes": int(q_peak),  # above the layer's own weights, for its largest matrix
        "largest_matrix": max(t.numel for t in targets),
    }


class _FisherOnly:
    """The one-matrix statistics ``quantize_matrix`` reads for ActQuant."""

    def __init__(self, name: str, fisher: np.ndarray) -> None:
        self.fisher = {name: fisher}
        self.hessian: dict = {}
        self.imatrix: dict = {}


# ---------------------------------------------------------------------------------------------------
# driver


def model_facts(checkpoint: Path) -> dict:
    from omnimodel.arch.openvla_oft.checkpoint import locate_files, scan_vla_tensors

    refs = scan_vla_tensors(locate_files(checkpoint))
    n = sum(math.prod(r.shape) for r in refs.values())
    return {"params_safetensors": n, "bf16_bytes": 2 * n}


def table(rows: list[list[str]], head: list[str]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def stage_table(run: dict, bound: float) -> str:
    rows = []
    for name, s in run["stages"].items():
        rows.append([
            name, f"{s.get('wall_s', 0):.1f}", f"{s['peak'] / GB:.2f}", f"{s['peak_anon'] / GB:.2f}",
            f"{s['peak_file'] / GB:.2f}", "yes" if s["peak"] <= bound else "**no**",
            f"{s.get('staging_bytes_at_start', 0) / GB:.2f}",
        ])
    return table(rows, ["stage", "wall s", "peak RSS GB", "anon GB", "file GB", "<= bound", "staging dir GB at start"])


def main_real(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(msg, flush=True)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="quant_pass_real_"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"quant_pass --real-width: work dir {work}, loadavg {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    results: dict = {"benchmark": "quant_pass --real-width", "argv": sys.argv[1:], "runs": {}, "probes": {}}
    if not args.probes_only:
        depth = f"v{args.vision_depth or 'full'}-l{args.llm_layers or 'full'}"
        t0 = time.perf_counter()
        ck = write_checkpoint(Path(args.checkpoint) if args.checkpoint else work / f"ck-{depth}",
                              args.vision_depth, args.llm_layers)
        log(f"checkpoint {ck} ({time.perf_counter() - t0:.0f} s)")
        facts = model_facts(ck)
        bound = 2 * facts["bf16_bytes"] + 1 * GB
        results.update(model=facts, bound_bytes=bound, checkpoint=str(ck))
        log(f"{facts['params_safetensors'] / 1e6:.1f}M parameters, bf16 {facts['bf16_bytes'] / GB:.2f} GB -> bound "
            f"{bound / GB:.2f} GB")
        calib = write_synthetic_calib(ck, work / f"calib-{depth}", args.episodes, args.steps)
        alloc = work / "q4k.txt"
        alloc.write_text("*=Q4_K\n")
        runs = {
            "bpw": {"bpw": args.budget, "calib": str(calib), "steps_per_episode": args.steps_per_episode},
            "rtn-fixed": {"allocation": str(alloc), "method": "rtn", "calib": str(calib)},
        }
        for name in [r for r in args.runs.split(",") if r]:
            log(f"\n== {name}: convert with {runs[name]}")
            spec = {"out": str(work / f"out-{name}"), "checkpoint": str(ck), "threads": args.threads,
                    "quant": runs[name], "stop_before": args.stop_before}
            r = run_child("convert", spec, work, log)
            results["runs"][name] = r
            if "stopped_before" in r:
                end = f"stopped before {r['stopped_before']} (--stop-before)"
            else:
                end = (f"model.gguf {r['gguf_bytes'] / GB:.2f} GB, parity "
                       + ("passed" if r["parity_passed"] else f"FAILED at {r['first_failure']}"))
            log(f"\n{name}: {r['wall_s']:.0f} s, VmHWM {r['vm_hwm'] / GB:.2f} GB (bound {bound / GB:.2f} GB), {end}")
            log(stage_table(r, bound))
    if args.probes_from:
        results["probes"] = json.loads(Path(args.probes_from).read_text())["probes"]
        log(f"\nper-layer probes from {args.probes_from}: {', '.join(results['probes'])}")
    if args.probes:
        for kind in args.probes.split(","):
            log(f"\n== probe {kind}")
            results["probes"][kind] = run_child(
                "probe", {"kind": kind, "threads": args.threads, "samples": args.probe_samples, "bpw": args.budget,
                          "no_quantize": args.probe_no_quantize}, work, log)
            log(json.dumps(results["probes"][kind], indent=1))
    if results["probes"]:
        results["estimate"] = estimate(results, args)
        log("\n== estimate from the per-layer probes (CPU, this machine)\n" + estimate_table(results["estimate"]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        log(f"wrote {args.out}")
    return 0


# OFT runs depth - 1 blocks of each tower (it reads the second-to-last); the Llama runs every layer
LAYER_COUNTS = {
    "openvla-oft-7b": {"dinov2-l": 23, "siglip-so400m": 26, "llama2-7b": 32},
    "real-width": {"dinov2-l": 23, "siglip-so400m": 26, "smollm2": 30},
}
DEFAULT_BASE_RSS = 0.4 * GB  # python + torch + omnimodel + ggml before the checkpoint, when not measured


def total_params(model: str, results: dict, args) -> int | None:
    """Every parameter of the checkpoint: OpenVLA-OFT 7B from its config on the meta device (quant_pass.py);
    the real-width model from the checkpoint converted here, with the blocks a reduced depth left out
    added back at the probes' per-block counts (None without a conversion)."""
    if model == "openvla-oft-7b":
        sys.path.insert(0, str(HERE.parent))
        from quant_pass import openvla_7b_targets

        return openvla_7b_targets()[2]
    facts = results.get("model")
    if not facts:
        return None
    from omnimodel.arch.openvla_oft.miniature import REAL_LLMS, REAL_TOWERS

    p = results["probes"]
    vd, ll = args.vision_depth, args.llm_layers
    missing = {
        "dinov2-l": REAL_TOWERS["dino"]["depth"] - (vd or REAL_TOWERS["dino"]["depth"]),
        "siglip-so400m": REAL_TOWERS["siglip"]["depth"] - (vd or REAL_TOWERS["siglip"]["depth"]),
        "smollm2": REAL_LLMS["smollm2"]["llm_layers"] - (ll or REAL_LLMS["smollm2"]["llm_layers"]),
    }
    return facts["params_safetensors"] + sum(n * p[k]["params"] for k, n in missing.items())


def estimate(results: dict, args) -> dict:
    """Per-layer probe costs x layer counts, for OpenVLA-OFT 7B and, as a check against what the
    conversion measured, the real-width model.

    Calibration per sample and pass: every layer's forward + backward plus one more forward (the
    recomputation), an upper bound for passes after the first (their backward stops at their first
    layer). Passes: ``balanced_groups`` over the layers' fp32 Fisher under the default cap (the model's
    bf16 size). Peak RSS: calibrate = base + the bf16 model + the largest pass's accumulators + one
    block's recomputed activations + every block's saved input; gguf = base + the bf16 model + the
    quantizer's working set for the largest matrix (measured by the probe)."""
    from omnimodel.quant.pipeline import balanced_groups

    p = results["probes"]
    bpw_run = results.get("runs", {}).get("bpw", {}).get("stages", {})
    base = bpw_run.get("checkpoint", {}).get("rss_start", DEFAULT_BASE_RSS)
    samples = args.episodes * args.steps_per_episode
    out = {"base_rss_bytes": base, "samples": samples}
    for model, layers in LAYER_COUNTS.items():
        if not all(k in p for k in layers):
            continue
        total = total_params(model, results, args)
        if total is None:
            continue
        bf16 = 2 * total
        order = [k for k in layers for _ in range(layers[k])]  # towers first, as the model runs them
        fisher = [4 * p[k]["params_quantized"] for k in order]
        passes = balanced_groups(fisher, bf16)
        accum = max(sum(fisher[i] for i in g) for g in passes)
        per_sample = sum(n * (p[k]["calib_s_per_sample"] + p[k]["forward_s_per_sample"]) for k, n in layers.items())
        saved_inputs = sum(n * p[k]["tokens_per_sample"] * p[k]["width"] * 2 for k, n in layers.items())
        act = max(p[k]["activation_bytes_per_sample"] for k in layers)
        e = {
            "layers": layers,
            "params_total": total,
            "params_quantized": sum(n * p[k]["params_quantized"] for k, n in layers.items()),
            "bf16_bytes": bf16,
            "bound_bytes": 2 * bf16 + GB,
            "fisher_bytes": sum(fisher),
            "passes": len(passes),
            "largest_pass_bytes": accum,
            "calib_s_per_sample_per_pass": per_sample,
            "calib_s": per_sample * len(passes) * samples,
            "quantize_s": {m: sum(n * p[k]["quantize_s"][m] for k, n in layers.items()) for m in ("actquant", "rtn")},
            "calibrate_peak_bytes": base + bf16 + accum + act + saved_inputs,
            "gguf_peak_bytes": base + bf16 + max(p[k]["quantize_peak_bytes"] for k in layers),
            "keeping_activations_instead_bytes": sum(n * p[k]["activation_bytes_per_sample"] for k, n in layers.items()),
        }
        out[model] = e
    return out


def estimate_table(est: dict) -> str:
    rows = []
    for model in LAYER_COUNTS:
        e = est.get(model)
        if e is None:
            continue
        rows.append([
            model, f"{e['params_total'] / 1e9:.3f}", f"{e['bf16_bytes'] / GB:.1f}", f"{e['bound_bytes'] / GB:.1f}",
            f"{e['passes']} x {e['largest_pass_bytes'] / GB:.1f}", f"{e['calibrate_peak_bytes'] / GB:.1f}",
            f"{e['gguf_peak_bytes'] / GB:.1f}", f"{e['calib_s_per_sample_per_pass']:.0f}",
            f"{e['quantize_s']['actquant'] / 60:.0f}", f"{e['quantize_s']['rtn'] / 60:.1f}",
        ])
    return table(rows, ["model", "params (B)", "bf16 GB", "bound GB", "passes x Fisher GB", "calibrate peak GB",
                        "gguf peak GB", "calib s / sample / pass", "actquant min", "rtn min"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real-width", action="store_true")
    ap.add_argument("--vision-depth", type=int, help="blocks per tower (default the real 24 / 27)")
    ap.add_argument("--llm-layers", type=int, help="Llama layers (default the real 30)")
    ap.add_argument("--checkpoint", help="reuse a real-width checkpoint written earlier")
    ap.add_argument("--workdir", help="keep checkpoints, data and outputs here (default a temp dir)")
    ap.add_argument("--budget", type=float, default=2.5)
    ap.add_argument("--episodes", type=int, default=4, help="synthetic calibration episodes")
    ap.add_argument("--steps", type=int, default=12, help="steps per synthetic episode")
    ap.add_argument("--steps-per-episode", type=int, default=4, help="calibration samples taken per episode")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default="bpw,rtn-fixed", help="which conversions: bpw, rtn-fixed")
    ap.add_argument("--stop-before", help="end each conversion when this stage starts (e.g. reference: the "
                    "validator's stages are measured at reduced depth)")
    ap.add_argument("--probes", default="", help="per-layer probes for the 7B estimate, e.g. "
                    "dinov2-l,siglip-so400m,smollm2,llama2-7b")
    ap.add_argument("--probes-only", action="store_true", help="skip the conversions")
    ap.add_argument("--probe-samples", type=int, default=3)
    ap.add_argument("--probes-from", help="take the probes from an earlier run's JSON instead of running them")
    ap.add_argument("--probe-no-quantize", action="store_true", help="probes time calibration only")
    ap.add_argument("--out", help="write the results as JSON here")
    return ap.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        kind, spec_file, result_file = sys.argv[2:]
        spec = json.loads(Path(spec_file).read_text())
        res = child_convert(spec) if kind == "convert" else child_probe(spec)
        Path(result_file).write_text(json.dumps(res, indent=1))
        raise SystemExit(0)
    raise SystemExit(main_real(parse_args()))
