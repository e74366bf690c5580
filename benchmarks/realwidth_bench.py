#!/usr/bin/env python3
"""Real-width speed: every weight type against PyTorch bf16, and the Llama stage against llama.cpp.

Builds the benchmark models on demand in a work directory (never committed), converts each to every
contender, times them all in one run with `omnimodel bench` at each thread count, times llama.cpp's
`llama-bench` on the exported Llama backbone (`omnimodel export-llm`) of the same files at the same
sequence length, and writes JSON plus a markdown table for docs/benchmarks.md.

Models (``--models``, default all three):
  smollm2      OpenVLA-OFT at real width: DINOv2-L/14-reg4 (24 blocks) + SigLIP-so400m/14 (27) at 224 px,
               two images, the 30-layer SmolLM2-shaped GQA Llama (576 wide); random weights, or SmolLM2's
               pretrained ones with --pretrained. 902M parameters at full depth.
  llama2-slice the same towers (--slice-vision-depth blocks, default 3) and a Llama-2-7B-width backbone
               (4096 / 11008, 32 heads) with --slice-llm-layers layers (default 2).
  demo         the shipped demo policy (convert --demo); its bundled calibration split.

Contenders: F32 (demo only), F16, BF16 (--outtype), Q8_0, Q4_0, Q4_K, IQ4_XS (an --allocation file giving
every quantized matrix that type, --method rtn), ActQuant at 4.5 and 2.5 bpw, HBVLA (--method hbvla at 1.4
bpw, 2 on the demo). The quantized contenders keep their unquantized matrices BF16 on a CPU with
AVX512-BF16 (about twice F16's matmul rate there), else F16. The quantized converts
calibrate (ActQuant needs it; RTN runs the same pass); the real-width models have no episodes, so a small
dataset is synthesised in the project's episode format (224 px, 2 cameras, LIBERO's 8-D proprio and 7-D
actions; random smooth images, random actions). It is synthetic and for speed only: the resulting
models' accuracy means nothing.

Timing: `omnimodel bench OUT --threads T --runs R` per contender, PyTorch fp32/bf16 timed once per thread
count (with the first contender), the runtime's Llama-stage time from bench's per-stage split (the ready
time of `language_model.model.norm` minus that of `projector`, in a capturing run). llama-bench runs the
exported backbone with `-p N -n 0 -b N -ub N` where N is the Llama sequence length of bench's prompt
(benchmarks/llama_bench.py builds it from the pinned source). Peak RSS: what `omnimodel bench` reports for
predict_action when it reports one, and the maximum RSS of every step's process (convert, bench).

    python benchmarks/realwidth_bench.py --quick                       # reduced depth, proves the script
    nice -n 19 python benchmarks/realwidth_bench.py --runs 5           # the full run (quiet machine)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import llama_bench  # noqa: E402  (benchmarks/llama_bench.py, next to this script)

ALL_MODELS = ("smollm2", "llama2-slice", "demo")


@dataclass(frozen=True)
class Contender:
    name: str
    args: tuple[str, ...]  # convert arguments
    allocation: str | None = None  # the --allocation override file's content
    calibrates: bool = False
    llama_bench: bool = True  # time the exported backbone in llama-bench too


def allocation_contender(spec: str) -> Contender:
    """``NAME=FILE``: a contender converted with ``--method rtn --allocation FILE`` where FILE is an
    allocation.json an earlier convert wrote (e.g. an ActQuant run's): the same GGML type per matrix, so
    the same kernels and the same speed, without re-running calibration and the scale optimisation (the
    stored values are RTN's, which only matters for accuracy, not for what is timed here)."""
    name, sep, path = spec.partition("=")
    if not sep or not Path(path).is_file():
        raise SystemExit(f"--allocation-contender wants NAME=FILE with an existing allocation.json, got {spec!r}")
    return Contender(name, ("--method", "rtn", "--outtype", _keep_outtype()), allocation=Path(path).read_text())


def _keep_outtype() -> str:
    """The type of the matrices a quantized contender leaves unquantized (projector, patch embeddings,
    action head): BF16 where the CPU multiplies it natively (AVX512-BF16: about 2x F16's rate, 204 against
    90 GFLOP/s on this project's machine), else F16."""
    from omnimodel.cpu import cpu_features

    return "bf16" if (cpu_features() or {}).get("avx512_bf16") else "f16"


def contenders(model: str) -> list[Contender]:
    keep = _keep_outtype()
    out = [Contender("F32", ("--outtype", "f32"))] if model == "demo" else []
    out += [Contender("F16", ("--outtype", "f16")), Contender("BF16", ("--outtype", "bf16"))]
    for t in ("Q8_0", "Q4_0", "Q4_K", "IQ4_XS"):
        out.append(Contender(t, ("--method", "rtn", "--outtype", keep), allocation=f"*={t}\n", calibrates=True))
    for bpw in ("4.5", "2.5"):
        out.append(Contender(f"ActQuant {bpw}", ("--bpw", bpw, "--method", "actquant", "--outtype", keep),
                             calibrates=True))
    # HBVLA at its natural budget: ~1.2-1.4 bpw at real width; the demo's 64-wide towers take its fallback
    # type, so the least it reaches there with a salient part is about 1.85 (docs/hbvla.md)
    hb_bpw = "2" if model == "demo" else "1.4"
    out.append(Contender("HBVLA", ("--bpw", hb_bpw, "--method", "hbvla", "--outtype", keep), calibrates=True))
    return out


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark model: how to write its checkpoint (None: the demo) and its label."""

    name: str
    llm: str | None
    vision_depth: int | None  # None: the real 24 / 27
    llm_layers: int | None  # None: all
    pretrained: bool = False

    def describe(self) -> str:
        if self.llm is None:
            return "demo policy (shipped)"
        vd = "24/27 (full)" if self.vision_depth is None else f"{self.vision_depth} per tower"
        ll = "all" if self.llm_layers is None else str(self.llm_layers)
        return f"{self.llm} backbone, {ll} layers, vision {vd} blocks, 224 px" + (", pretrained" if self.pretrained else "")


def model_specs(args: argparse.Namespace) -> list[ModelSpec]:
    specs = []
    for m in args.models:
        if m == "smollm2":
            vd, ll = (args.vision_depth, args.llm_layers) if not args.quick else (args.vision_depth or 2, args.llm_layers or 2)
            specs.append(ModelSpec("smollm2", "smollm2", vd, ll, args.pretrained))
        elif m == "llama2-slice":
            vd, ll = (args.slice_vision_depth, args.slice_llm_layers) if not args.quick else (2, 1)
            specs.append(ModelSpec("llama2-slice", "llama2-7b", vd, ll))
        elif m == "demo":
            specs.append(ModelSpec("demo", None, None, None))
    return specs


# ---------------------------------------------------------------------------------------------- steps


@dataclass
class Step:
    """A child process's wall time and maximum resident set size."""

    cmd: list[str]
    wall_s: float
    max_rss_mib: float
    returncode: int


def run_step(cmd: list[str], logfile: Path, *, check: bool = True) -> Step:
    """Run ``cmd`` with its output in ``logfile``; its peak RSS comes from wait4's rusage."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    shown = [a if "\n" not in a else "<script>" for a in cmd]  # inline `python -c` scripts stay readable
    print(f"  $ {shlex.join(shown)}", flush=True)
    t0 = time.perf_counter()
    with logfile.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    step = Step(cmd, round(time.perf_counter() - t0, 2), round(usage.ru_maxrss / 1024, 1), proc.returncode)
    if check and step.returncode != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-12:])
        raise RuntimeError(f"step failed (exit {step.returncode}, log {logfile}):\n{tail}")
    return step


def omnimodel_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "omnimodel", *args]


_WRITE_CHECKPOINT = """
import sys
from omnimodel.arch.openvla_oft import real_width_spec, write_miniature
llm, vd, ll, pre, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5]
spec = real_width_spec(llm, vision_depth=None if vd == "-" else int(vd), llm_layers=None if ll == "-" else int(ll),
                       pretrained=pre, log=print)
write_miniature(out, spec)
"""


def build_checkpoint(spec: ModelSpec, work: Path) -> tuple[Path, Step | None]:
    """The spec's checkpoint in ``work`` (written in a child process, so its memory is returned)."""
    ckpt = work / "checkpoint"
    stamp = work / "checkpoint.json"
    want = asdict(spec)
    if ckpt.is_dir() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return ckpt, None
    cmd = [sys.executable, "-c", _WRITE_CHECKPOINT, spec.llm or "", "-" if spec.vision_depth is None else str(spec.vision_depth),
           "-" if spec.llm_layers is None else str(spec.llm_layers), "1" if spec.pretrained else "0", str(ckpt)]
    if ckpt.exists():
        import shutil

        shutil.rmtree(ckpt)
    step = run_step(cmd, work / "logs" / "checkpoint.log")
    stamp.write_text(json.dumps(want) + "\n")
    return ckpt, step


_WRITE_CALIB = """
import sys
import numpy as np
from omnimodel.arch.openvla_oft.checkpoint import read_checkpoint_header
from omnimodel.simbench.episodes import Episode, write_dataset
ckpt, out, n_eps, n_steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg = read_checkpoint_header(ckpt).config
size = cfg.vision.image_size
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:size, 0:size] / size
episodes = []
for e in range(n_eps):
    imgs = np.empty((n_steps, cfg.num_images, size, size, 3), np.uint8)
    for t in range(n_steps):
        for c in range(cfg.num_images):
            f = rng.uniform(1, 6, size=(3, 2)); p = rng.uniform(0, 6.3, size=3)
            img = np.stack([np.sin(2 * np.pi * (f[k, 0] * xx + f[k, 1] * yy) + p[k]) for k in range(3)], -1)
            imgs[t, c] = np.clip(127.5 * (img + 1) + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    episodes.append(Episode(
        instruction="put the black bowl on the plate", images=imgs,
        proprio=rng.uniform(-0.5, 0.5, (n_steps, cfg.proprio_projector.proprio_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n_steps, cfg.action_dim)).astype(np.float32),
        camera_names=tuple(f"camera{c}" for c in range(cfg.num_images)), task=f"synthetic-{e}", seed=e,
        source="synthetic (realwidth_bench.py; for speed only)"))
write_dataset(out, {"calib": episodes}, "synthetic_realwidth", created_by={"tool": "benchmarks/realwidth_bench.py",
              "note": "synthetic random observations and actions, for timing only"})
"""


def build_calibration(ckpt: Path, work: Path, episodes: int, steps: int) -> Path:
    """A small synthetic episode dataset that fits the checkpoint (cameras, image size, proprio/action dims)."""
    out = work / "calib"
    stamp = work / "calib.json"
    want = {"episodes": episodes, "steps": steps}
    if (out / "dataset.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return out
    run_step([sys.executable, "-c", _WRITE_CALIB, str(ckpt), str(out), str(episodes), str(steps)],
             work / "logs" / "calib.log")
    stamp.write_text(json.dumps(want) + "\n")
    return out


def convert(spec: ModelSpec, c: Contender, ckpt: Path | None, calib: Path | None, work: Path, args) -> tuple[Path, Step | None]:
    out = work / "out" / c.name.replace(" ", "-").lower()
    stamp = out / "omnimodel-bench-args.json"
    cmd = omnimodel_cmd("convert", "openvla-oft")
    cmd += ["--demo"] if ckpt is None else ["--checkpoint", str(ckpt)]
    # --keep-failed: a model the validator refuses is still timed; its verdict goes in the table
    cmd += [*c.args, "--threads", str(args.convert_threads), "--force", "--keep-failed", "--out", str(out)]
    if c.allocation is not None:
        alloc = work / "allocations" / f"{c.name}.txt"
        alloc.parent.mkdir(parents=True, exist_ok=True)
        alloc.write_text(c.allocation)
        cmd += ["--allocation", str(alloc)]
    if c.calibrates and calib is not None:
        cmd += ["--calib", str(calib), "--calib-steps", str(args.calib_steps)]
    key = {"cmd": cmd[3:], "allocation": c.allocation}
    if not args.reconvert and (out / "model.gguf").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == key:
        return out, None
    step = run_step(cmd, work / "logs" / f"convert-{out.name}.log")
    stamp.write_text(json.dumps(key) + "\n")
    return out, step


def parity_verdict(out_dir: Path) -> str:
    """'pass', or 'FAIL at <first failing tensor>', from the convert's validation_report.json."""
    path = out_dir / "validation_report.json"
    if not path.is_file():
        return "-"
    rep = json.loads(path.read_text())
    if rep.get("passed"):
        return "pass"
    first = next((r for r in rep.get("results", []) if not r.get("passed", True)), None)
    return f"FAIL at {first['name']}" if first else "FAIL"


def llm_sequence_length(out_dir: Path) -> int:
    """The Llama sequence `omnimodel bench` runs: patches of every image, proprio token, BOS + prompt
    (bench's instruction), action slots, EOS -- read from the checkpoint's header and tokenizer."""
    from omnimodel.arch.openvla_oft.checkpoint import read_checkpoint_header
    from omnimodel.arch.openvla_oft.modeling import SequenceLayout
    from omnimodel.arch.openvla_oft.tokenizer import load_prompt_tokenizer

    rep = json.loads((out_dir / "validation_report.json").read_text())
    ckpt = Path(rep["checkpoint"])
    if not ckpt.is_absolute():
        ckpt = out_dir / ckpt
    cfg = read_checkpoint_header(ckpt).config
    tok = load_prompt_tokenizer(ckpt, cfg.prompt, cfg.bos_token_id)
    layout = SequenceLayout(len(tok.encode_prompt(rep["instruction"])), cfg.num_prefix_embeddings,
                            cfg.num_action_slots, cfg.use_proprio)
    return layout.seq_len


def find_peak_rss(runtime: dict[str, Any]) -> float | None:
    """The predict_action peak RSS (VmHWM of a fresh process running the runtime alone) that
    `omnimodel bench` reports in its runtime section, in MiB; None when it did not measure it."""
    mem = runtime.get("memory") or {}
    peak = mem.get("peak_rss")
    return None if peak is None else round(float(peak) / (1 << 20), 1)


# ---------------------------------------------------------------------------------------------- run


@dataclass
class Row:
    contender: str
    threads: int
    gguf_mib: float
    predict_action_ms: float
    model_ms: float
    stages_ms: dict[str, float]
    peak_rss_mib: float | None  # as bench reports it for predict_action
    bench_process_rss_mib: float  # the whole bench process (PyTorch model included)
    llama_bench_ms: float | None = None
    llama_bench_note: str = ""
    convert: dict[str, Any] = field(default_factory=dict)
    # the stages come from a separate capturing run: their sum over the plain run's model time says how
    # far that split can be trusted (1.0: the capturing run took as long as the timed one)
    split_over_model: float | None = None


def bench_model(spec: ModelSpec, args, binary: Path | None) -> dict[str, Any]:
    work = args.work / spec.name
    work.mkdir(parents=True, exist_ok=True)
    print(f"== {spec.name}: {spec.describe()}", flush=True)
    ckpt = calib = None
    ckpt_step = None
    if spec.llm is not None:
        ckpt, ckpt_step = build_checkpoint(spec, work)
        calib = build_calibration(ckpt, work, args.calib_episodes, args.calib_steps_per_episode)
    cs = [c for c in contenders(spec.name) if not args.contenders or c.name in args.contenders]
    cs += [allocation_contender(a) for a in args.allocation_contender]
    outs: dict[str, Path] = {}
    converts: dict[str, Any] = {}
    for c in cs:
        try:
            outs[c.name], step = convert(spec, c, ckpt, calib, work, args)
        except RuntimeError as e:
            print(f"  {c.name}: convert failed, skipped: {e}", flush=True)
            converts[c.name] = {"error": str(e)}
            continue
        converts[c.name] = {**(asdict(step) if step else {"cached": True}), "parity": parity_verdict(outs[c.name])}
    if not outs:
        return {"model": asdict(spec), "error": "no contender converted"}
    first = next(iter(outs.values()))
    seq = llm_sequence_length(first)

    # backbones for llama-bench (refused where rows are padded: say so in the table)
    backbones: dict[str, Path | str] = {}
    if binary is not None:
        for c in cs:
            if c.name not in outs or not c.llama_bench:
                continue
            llm = outs[c.name] / "llm.gguf"
            proc = subprocess.run(omnimodel_cmd("export-llm", str(outs[c.name]), "--out", str(llm)),
                                  capture_output=True, text=True)
            backbones[c.name] = llm if proc.returncode == 0 else " ".join(proc.stderr.split())

    rows: list[Row] = []
    torch_rows: list[dict[str, Any]] = []
    parameters = None
    for threads in args.threads:
        for i, c in enumerate(cs):
            if c.name not in outs:
                continue
            out = outs[c.name]
            js = work / "bench" / f"{out.name}-t{threads}.json"
            js.parent.mkdir(parents=True, exist_ok=True)
            cmd = omnimodel_cmd("bench", str(out), "--threads", str(threads), "--runs", str(args.runs),
                                "--warmup", str(args.warmup), "--json", str(js))
            with_torch = not any(r["threads"] == threads for r in torch_rows)
            if not with_torch:
                cmd.append("--no-torch")
            step = run_step(cmd, work / "logs" / f"bench-{out.name}-t{threads}.log")
            res = json.loads(js.read_text())
            parameters = res["model"]["parameters"]
            if with_torch:
                for k in ("pytorch_fp32", "pytorch_bf16"):
                    if k in res:
                        torch_rows.append({"contender": k, "threads": threads, **{x: res[k][x] for x in
                                           ("predict_action_ms", "model_ms", "stages_ms")}})
            rt = res["runtime"]
            row = Row(c.name, threads, round((out / "model.gguf").stat().st_size / 2**20, 1), rt["predict_action_ms"],
                      rt["model_ms"], rt.get("stages_ms", {}), find_peak_rss(rt), step.max_rss_mib,
                      convert=converts.get(c.name, {}))
            if row.stages_ms and row.model_ms:
                row.split_over_model = round(sum(row.stages_ms.values()) / row.model_ms, 3)
            bb = backbones.get(c.name)
            if isinstance(bb, Path):
                try:
                    t = llama_bench.run_prompt(binary, bb, seq, threads, args.llama_reps)
                    row.llama_bench_ms = t.median_ms
                    row.llama_bench_note = f"flash_attn={t.settings.get('flash_attn')} repack={t.settings.get('use_repack')}"
                except llama_bench.BenchError as e:
                    row.llama_bench_note = str(e)[:200]
            elif isinstance(bb, str):
                row.llama_bench_note = bb[:200]
            rows.append(row)
            print(f"  t={threads} {c.name}: predict_action {row.predict_action_ms:.1f} ms, llm "
                  f"{row.stages_ms.get('llm', float('nan')):.1f} ms, llama-bench "
                  f"{row.llama_bench_ms if row.llama_bench_ms is not None else '-'} ms", flush=True)
    return {
        "model": asdict(spec), "description": spec.describe(), "llm_sequence_length": seq,
        "checkpoint_step": asdict(ckpt_step) if ckpt_step else None,
        "parameters": parameters, "torch": torch_rows, "rows": [asdict(r) for r in rows],
    }


# ---------------------------------------------------------------------------------------------- report


def _fmt(v: float | None, nd: int = 0) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def markdown(result: dict[str, Any]) -> str:
    lines = []
    for m in result["models"]:
        if "rows" not in m:
            continue
        lines += [f"### {m['model']['name']}: {m['description']}", "",
                  f"Parameters: {_fmt(m['parameters'])}; Llama sequence length {m['llm_sequence_length']}.", ""]
        for threads in result["threads"]:
            torch_ms = {r["contender"]: r for r in m["torch"] if r["threads"] == threads}
            bf16 = torch_ms.get("pytorch_bf16", {}).get("predict_action_ms")
            lines += [f"{threads} thread(s), medians of {result['runs']} runs (ms):", "",
                      "| contender | GGUF MiB | predict_action | speed vs PyTorch bf16 | vision | llm | llama-bench pp | "
                      "llm / llama-bench | peak RSS MiB (bench) | RSS / GGUF | parity |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
            for name in ("pytorch_bf16", "pytorch_fp32"):
                r = torch_ms.get(name)
                if r:
                    st = r["stages_ms"]
                    lines.append(f"| PyTorch {name.split('_')[1]} | - | {_fmt(r['predict_action_ms'], 1)} | "
                                 f"{_fmt(bf16 / r['predict_action_ms'] if bf16 else None, 2)}x | {_fmt(st.get('vision'), 1)} | "
                                 f"{_fmt(st.get('llm'), 1)} | - | - | - | - | - |")
            for r in (r for r in m["rows"] if r["threads"] == threads):
                st = r["stages_ms"]
                llm = st.get("llm")
                lb = r["llama_bench_ms"]
                lb_cell = _fmt(lb, 1) if lb is not None else ("padded rows" if "zero-padded" in r["llama_bench_note"] else "-")
                rss = r["peak_rss_mib"]
                lines.append(
                    f"| runtime {r['contender']} | {_fmt(r['gguf_mib'], 1)} | {_fmt(r['predict_action_ms'], 1)} | "
                    f"{_fmt(bf16 / r['predict_action_ms'] if bf16 else None, 2)}x | {_fmt(st.get('vision'), 1)} | "
                    f"{_fmt(llm, 1)} | {lb_cell} | {_fmt(llm / lb if llm and lb else None, 2)}{'x' if llm and lb else ''} | "
                    f"{_fmt(rss, 0)} | {_fmt(rss / r['gguf_mib'] if rss else None, 2)} | "
                    f"{r['convert'].get('parity', '-')} |")
            lines.append("")
    lines += ["speed vs PyTorch bf16 = PyTorch bf16 predict_action time / this contender's (higher is faster); "
              "llm / llama-bench = the runtime's Llama-stage time / llama-bench's prompt-processing time on the "
              "exported backbone of the same file (lower is faster; 'padded rows': the file stores zero-padded "
              "rows llama.cpp cannot express). Peak RSS: as `omnimodel bench` reports it for predict_action "
              "(- where it does not).", ""]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "load_average_start": os.getloadavg(),
            "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=ALL_MODELS, default=list(ALL_MODELS))
    ap.add_argument("--contenders", nargs="+", help="only these (e.g. F16 Q4_0 'ActQuant 2.5')")
    ap.add_argument("--quick", action="store_true",
                    help="reduced depth (2 blocks per tower, 2 / 1 Llama layers), 2 runs: proves the script end to end")
    ap.add_argument("--vision-depth", type=int, help="smollm2 model: blocks per tower (default the real 24/27)")
    ap.add_argument("--llm-layers", type=int, help="smollm2 model: Llama layers (default 30)")
    ap.add_argument("--slice-vision-depth", type=int, default=3)
    ap.add_argument("--slice-llm-layers", type=int, default=2)
    ap.add_argument("--pretrained", action="store_true", help="SmolLM2-135M's pretrained Llama weights")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--runs", type=int, help="timed runs per contender (default 5; 2 with --quick)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--llama-reps", type=int, help="llama-bench repetitions (default --runs)")
    ap.add_argument("--no-llama-bench", action="store_true", help="skip llama.cpp (no build)")
    ap.add_argument("--allocation-contender", action="append", default=[], metavar="NAME=FILE",
                    help="also time NAME: --method rtn with FILE, an allocation.json of an earlier convert "
                    "(the same types per matrix as that run, hence its speed); repeatable")
    ap.add_argument("--convert-threads", type=int, default=2)
    ap.add_argument("--calib-episodes", type=int, default=2)
    ap.add_argument("--calib-steps-per-episode", type=int, default=4, help="steps per synthetic episode")
    ap.add_argument("--calib-steps", type=int, default=2, help="samples taken per episode (convert --calib-steps)")
    ap.add_argument("--reconvert", action="store_true", help="convert again even where a matching output exists")
    ap.add_argument("--work", type=Path, default=llama_bench.cache_root() / "realwidth-bench",
                    help="work directory for checkpoints, converts and logs (default ~/.cache/omnimodel/realwidth-bench)")
    ap.add_argument("--json", type=Path, help="results JSON (default WORK/results.json)")
    ap.add_argument("--markdown", type=Path, help="markdown tables (default WORK/results.md)")
    args = ap.parse_args(argv)
    if args.runs is None:
        args.runs = 2 if args.quick else 5
    args.llama_reps = args.llama_reps or args.runs
    if args.quick and args.work == ap.get_default("work"):
        args.work = args.work.with_name("realwidth-bench-quick")
    args.work.mkdir(parents=True, exist_ok=True)

    binary = None
    if not args.no_llama_bench:
        binary = llama_bench.ensure_llama_bench()
    t0 = time.time()
    result: dict[str, Any] = {
        "command": shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(), "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
        "llama_bench": str(binary) if binary else None, "models": [],
    }
    js = args.json or args.work / "results.json"
    md = args.markdown or args.work / "results.md"
    for spec in model_specs(args):
        result["models"].append(bench_model(spec, args, binary))
        result["wall_s"] = round(time.time() - t0, 1)
        result["machine"]["load_average_end"] = os.getloadavg()
        js.write_text(json.dumps(result, indent=2) + "\n")  # after each model: a long run keeps what it has
        md.write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
