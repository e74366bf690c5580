"""Predict-action latency of a convert output: the runtime against the PyTorch reference (fp32, bf16).

All contenders get the same observation, the same preprocessed inputs and the same thread count. Times
are medians over ``runs`` after ``warmup`` runs. ``preprocess`` is the architecture's predict-action
preprocessing (images -> pixel values, prompt -> token ids, state normalisation; Python, shared by all);
the model's stages are the architecture's (``Architecture.bench_stages``, e.g. vision, llm, head).
``predict_action_ms`` = preprocess + model. PyTorch stages are timed with forward pre/post hooks;
the runtime's split comes from the ready times of captured stage outputs (``runtime_stage_ends``) in a
separate capturing run. The architecture comes from the GGUF's ``general.architecture``.

``memory`` (omnimodel.bench_memory): the peak RSS of the runtime's own predict_action (frames in,
actions out), measured in a fresh process that never imports torch, against the GGUF size and the
activation buffers. ``profile=True`` adds the runtime's per-op profile (omnimodel.profile).
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from .convert import MODEL_FILE, REPORT_FILE, ConvertError, _gguf_architecture, _load_policy
from .profile import format_profile


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    from omnimodel import _runtime

    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "omnimodel": _runtime.version(),
        "ggml": _runtime.ggml_version(),
    }


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e3, 3)


def _time(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _bench_torch(arch, policy, dtype, x, runs: int, warmup: int) -> dict[str, Any]:
    import torch

    model = copy.deepcopy(policy.model).to(dtype).eval()
    args = arch.model_args(model, x, dtype)
    stage_time: dict[str, float] = {}
    started: dict[str, float] = {}
    handles = []
    modules = dict(model.named_modules())
    for stage, names in arch.bench_stages.items():
        for name in names:
            m = modules.get(name)
            if m is None:
                continue

            def pre(_m, _a, name=name):
                started[name] = time.perf_counter()

            def post(_m, _a, _o, name=name, stage=stage):
                stage_time[stage] = stage_time.get(stage, 0.0) + time.perf_counter() - started[name]

            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    per_stage: dict[str, list[float]] = {s: [] for s in arch.bench_stages}

    @torch.no_grad()
    def once():
        stage_time.clear()
        model(*args)
        for s in per_stage:
            per_stage[s].append(stage_time.get(s, 0.0))

    try:
        samples = _time(once, runs, warmup)
    finally:
        for h in handles:
            h.remove()
    return {
        "model_ms": _median_ms(samples),
        "stages_ms": {s: _median_ms(v[warmup:]) for s, v in per_stage.items()},
        "samples_ms": [round(s * 1e3, 3) for s in samples],
    }


# The runtime computes one graph; capturing the last tensor of each stage and reading when it became
# ready (the CPU backend runs nodes in order) splits the compute into stages: each of the architecture's
# ``runtime_stage_ends`` closes its stage, and the last of ``bench_stages`` runs to the end of the graph.
def _runtime_stages(arch, m, inputs: dict[str, np.ndarray], runs: int, warmup: int) -> dict[str, float]:
    ends = arch.runtime_stage_ends
    stages = list(arch.bench_stages)
    per_stage: dict[str, list[float]] = {s: [] for s in stages}
    for i in range(warmup + runs):
        m.run(inputs, capture=list(ends.values()))
        t = m.timings()
        if i < warmup:
            continue
        start = 0.0
        for s in stages:
            end = t["ready_s"][ends[s]] if s in ends else t["compute_s"]
            per_stage[s].append(end - start)
            start = end
    return {k: _median_ms(v) for k, v in per_stage.items()}


def bench(out_dir: str | os.PathLike[str], *, runs: int = 10, warmup: int = 2, threads: int = 1,
          torch_dtypes: tuple[str, ...] = ("float32", "bfloat16"), profile: bool = False,
          memory: bool = True) -> dict[str, Any]:
    import torch

    from omnimodel import _runtime

    from .gguf.provenance import parameter_count
    from .gguf.reader import read_gguf
    from .validate.reference import parity_observation
    from .validate.report import ValidationReport

    out_dir = Path(out_dir).absolute()
    if not (out_dir / REPORT_FILE).is_file() or not (out_dir / MODEL_FILE).is_file():
        raise ConvertError(f"{out_dir}: needs {MODEL_FILE} and {REPORT_FILE} (a convert output directory)")
    if runs < 1 or threads < 1:
        raise ConvertError("--runs and --threads must be >= 1 (a fair comparison needs an explicit thread count)")
    rep = ValidationReport.read_json(out_dir / REPORT_FILE)
    checkpoint = Path(rep.checkpoint or "")
    if not checkpoint.is_absolute():
        checkpoint = out_dir / checkpoint
    arch = _gguf_architecture(out_dir / MODEL_FILE)
    if rep.graph.startswith("plugin:"):
        _runtime.load_plugin(str(out_dir / rep.graph.split(":", 1)[1]))

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        policy = _load_policy(checkpoint, arch=arch)
        images, proprio_raw = parity_observation(policy, rep.seed)
        instruction = rep.instruction

        def preprocess():
            return arch.prepare_inputs(policy, images, instruction, proprio_raw)

        pre_ms = _median_ms(_time(preprocess, runs, warmup))
        x = preprocess()
        inputs = arch.runtime_inputs(x)

        with _runtime.Model(str(out_dir / MODEL_FILE), n_threads=threads) as m:
            backend = m.backend_name
            rt = _time(lambda: m.run(inputs), runs, warmup)
            rt_stages = _runtime_stages(arch, m, inputs, runs, warmup)
            rt_profile = None
            if profile:
                from .profile import profile_runtime

                rt_profile = profile_runtime(m, inputs, runs=runs, warmup=0, stage_ends=arch.runtime_stage_ends,
                                             last_stage=list(arch.bench_stages)[-1])
        result: dict[str, Any] = {
            "machine": machine_description(),
            "threads": threads,
            "runs": runs,
            "warmup": warmup,
            "model": {
                "checkpoint": str(checkpoint),
                "outtype": rep.outtype,
                "graph": rep.graph,
                "gguf_bytes": (out_dir / MODEL_FILE).stat().st_size,
                # the GGUF's real weights, counted as `omnimodel inspect` counts them
                "parameters": parameter_count(read_gguf(out_dir / MODEL_FILE).tensors),
            },
            "preprocess_ms": pre_ms,
            "runtime": {
                "backend": backend,
                "model_ms": _median_ms(rt),
                "predict_action_ms": round(pre_ms + _median_ms(rt), 3),
                "stages_ms": rt_stages,
                "stages_note": "from the ready times of the captured stage outputs (a separate, capturing run)",
                "samples_ms": [round(s * 1e3, 3) for s in rt],
            },
        }
        if rt_profile is not None:
            result["runtime"]["profile"] = rt_profile.to_json()
            result["runtime"]["profile_text"] = format_profile(rt_profile)
        if memory:
            from .bench_memory import measure

            plugin = out_dir / rep.graph.split(":", 1)[1] if rep.graph.startswith("plugin:") else None
            result["runtime"]["memory"] = measure(out_dir / MODEL_FILE, plugin, images, instruction,
                                                  proprio_raw, threads=threads, runs=min(runs, 3),
                                                  graph_inputs=None if arch.runtime_preprocessing else inputs)
        for name in torch_dtypes:
            r = _bench_torch(arch, policy, getattr(torch, name), x, runs, warmup)
            r["predict_action_ms"] = round(pre_ms + r["model_ms"], 3)
            result[f"pytorch_{'fp32' if name == 'float32' else 'bf16' if name == 'bfloat16' else name}"] = r
    finally:
        torch.set_num_threads(previous)
    return result


def format_bench(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"{m['cpu']} ({m['logical_cpus']} logical CPUs), {result['threads']} thread(s), median of {result['runs']}",
        f"model: {result['model']['outtype']} {result['model']['graph']}, {result['model']['parameters']:,} parameters",
        "",
    ]
    stages = list(result["runtime"].get("stages_ms") or {})
    lines.append(f"{'':<16} {'predict_action':>15} {'model':>10} " + " ".join(f"{s:>9}" for s in stages) + "   (ms)")
    rows = [("runtime", result["runtime"])] + [(k, v) for k, v in result.items() if k.startswith("pytorch_")]
    for label, r in rows:
        st = r.get("stages_ms") or {}
        cell = lambda k: f"{st[k]:>9.3f}" if k in st else f"{'-':>9}"  # noqa: E731
        lines.append(f"{label:<16} {r['predict_action_ms']:>15.3f} {r['model_ms']:>10.3f} "
                     + " ".join(cell(s) for s in stages))
    lines.append(f"(predict_action = preprocess {result['preprocess_ms']:.3f} ms + model; runtime stages: "
                 f"{result['runtime']['stages_note']})")
    if "memory" in result["runtime"]:
        from .bench_memory import format_memory

        lines.append(format_memory(result["runtime"]["memory"]))
    if "profile_text" in result["runtime"]:
        lines += ["", "runtime profile (median per node over the runs):", result["runtime"]["profile_text"].rstrip("\n")]
    return "\n".join(lines) + "\n"


__all__ = ["bench", "format_bench", "machine_description"]
