"""Peak memory of predict_action in the runtime, measured apart from PyTorch.

``measure(out_dir, ...)`` starts a fresh Python process that imports only the runtime (no torch), loads
the convert output's plugin and GGUF, and calls ``Model.predict_action`` (raw frames, instruction and
proprio in; tokenizer, preprocessing and graph in C++) ``runs`` times. It reports, from the child's
/proc/self/status:

    base_rss      VmRSS before the model is loaded (interpreter, numpy, the runtime library)
    rss_after_load VmRSS once the model is loaded, before the first predict_action: the runtime's fixed
                  state (backend, thread pool, graph metadata space; the weights are mapped, not read)
    peak_rss      VmHWM after the runs: the process's peak resident set
    runtime_peak  peak_rss - base_rss: what loading and running the model added at its peak
    rss_file/anon RssFile (mapped file pages: the mmapped weights) and RssAnon (allocations: compute
                  buffers, repacked weights, results) at the end

against the GGUF's size and the activation buffers (the scheduler's compute buffers and the CPU
backend's work buffer: ``compute_buffer_bytes``), so the target
``runtime_peak <= 1.1 x GGUF + activations`` is checked directly. Linux only (/proc); elsewhere the
numbers are None.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _status_kib() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def _child(args: dict[str, Any]) -> dict[str, Any]:
    from omnimodel import _runtime

    data = np.load(args["inputs"])
    images = [data[f"image{i}"] for i in range(int(data["n_images"]))]
    proprio = data["proprio"] if "proprio" in data else None
    graph_inputs = {k[len(_GRAPH_INPUT):]: data[k] for k in data.files if k.startswith(_GRAPH_INPUT)}
    before = _status_kib()
    if args.get("plugin"):
        _runtime.load_plugin(args["plugin"])
    with _runtime.Model(args["gguf"], n_threads=int(args["threads"])) as m:
        loaded = _status_kib()
        for _ in range(int(args["runs"])):
            if graph_inputs:  # a family without the runtime's own preprocessing: the graph alone
                m.run(graph_inputs)
            else:
                m.predict_action(images, args["instruction"], proprio)
        end = _status_kib()
        stats = m.run_stats()
    kib = 1024
    if not before:
        return {"available": False, **stats}
    return {
        "available": True,
        "base_rss": before["VmRSS"] * kib,
        "rss_after_load": loaded["VmRSS"] * kib,
        "peak_rss": end["VmHWM"] * kib,
        "runtime_peak": (end["VmHWM"] - before["VmRSS"]) * kib,
        "rss_file": end.get("RssFile", 0) * kib,
        "rss_anon": end.get("RssAnon", 0) * kib,
        **stats,
    }


_GRAPH_INPUT = "graph_input:"


def measure(gguf: Path, plugin: Path | None, images: list[np.ndarray], instruction: str, proprio: np.ndarray | None,
            *, threads: int, runs: int = 3, graph_inputs: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Run predict_action in a fresh process without torch; see the module docstring for the keys.
    ``graph_inputs``: run the graph on these prepared inputs instead (an architecture whose preprocessing
    the runtime does not have yet)."""
    with tempfile.TemporaryDirectory(prefix="omnimodel-rss-") as tmp:
        arrays = {f"image{i}": np.ascontiguousarray(im) for i, im in enumerate(images)}
        arrays.update({_GRAPH_INPUT + k: np.ascontiguousarray(v) for k, v in (graph_inputs or {}).items()})
        arrays["n_images"] = np.array(len(images))
        if proprio is not None:
            arrays["proprio"] = np.asarray(proprio, np.float32)
        np.savez(Path(tmp) / "inputs.npz", **arrays)
        args = {"gguf": str(gguf), "plugin": str(plugin) if plugin else "", "inputs": str(Path(tmp) / "inputs.npz"),
                "instruction": instruction, "threads": threads, "runs": runs}
        proc = subprocess.run([sys.executable, "-m", "omnimodel.bench_memory", json.dumps(args)], capture_output=True,
                              text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"the memory probe failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    size = Path(gguf).stat().st_size
    result["gguf_bytes"] = size
    if result.get("available"):
        budget = 1.1 * size + result["compute_buffer_bytes"]
        result["target_bytes"] = int(budget)
        result["within_target"] = result["runtime_peak"] <= budget
    return result


def format_memory(mem: dict[str, Any]) -> str:
    mib = 2**20
    if not mem.get("available"):
        return "memory: not measured (no /proc on this system)"
    return (f"memory (predict_action in a fresh process without torch): peak RSS {mem['peak_rss'] / mib:.1f} MiB = "
            f"{mem['base_rss'] / mib:.1f} MiB interpreter + runtime library, + {mem['runtime_peak'] / mib:.1f} MiB "
            f"model; GGUF {mem['gguf_bytes'] / mib:.1f} MiB, activations {mem['compute_buffer_bytes'] / mib:.1f} MiB, "
            f"repacked {mem['repacked_bytes'] / mib:.1f} MiB, fixed runtime state "
            f"{(mem['rss_after_load'] - mem['base_rss']) / mib:.1f} MiB; target 1.1 x GGUF + activations = "
            f"{mem['target_bytes'] / mib:.1f} MiB: {'met' if mem['within_target'] else 'MISSED'} "
            f"(at the end: {mem['rss_file'] / mib:.1f} MiB mapped file, {mem['rss_anon'] / mib:.1f} MiB anonymous)")


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))


__all__ = ["measure", "format_memory"]
