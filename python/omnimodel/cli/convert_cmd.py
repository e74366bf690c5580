"""`omnimodel convert ARCH`: checkpoint -> GGUF + graph + parity report, in one output directory.

ARCH is a name of the architecture registry (``omnimodel.arch.registry``); every option means the same for
every architecture."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omnimodel.arch.registry import NameChoices
from omnimodel.cli.command import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    # metavar: argparse would list the choices while building the parser (importing every arch package)
    p.add_argument("architecture", choices=NameChoices(), metavar="ARCH",
                   help="the policy family: %(choices)s (docs/architectures.md)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="the policy's checkpoint directory, in its published layout")
    src.add_argument("--demo", action="store_true",
                     help="no checkpoint: convert the architecture's built-in demo policy (a tiny one trained on "
                     "Meta-World)")
    p.add_argument("--outtype", choices=["f32", "f16", "bf16", "q8_0"],
                   help="weight type (default f32; with --bpw: the type of the tensors left unquantized, default f16)")
    p.add_argument("--out", type=Path,
                   help="output directory (default: ./ARCH-<outtype>, or ./ARCH-<method>-<bpw>bpw)")
    q = p.add_argument_group(
        "quantization (ActQuant, docs/quantization.md)",
        "--bpw quantizes every vision and language matrix to an average bits-per-weight budget; without "
        "--checkpoint it runs on the demo policy and its bundled calibration episodes, with --checkpoint it "
        "needs --calib (the robot data the checkpoint was fine-tuned on; checked against the checkpoint first)")
    q.add_argument("--bpw", type=float, help="budget in bits per weight over the quantized matrices, e.g. 2.5")
    q.add_argument("--method", default="actquant",
                   choices=["actquant", "rtn", "imatrix", "gptq", "awq", "hbvla", "billm", "sign"],
                   help="actquant (default) or a baseline using the same allocation (rtn, imatrix, gptq, awq); "
                   "or a ~1-bit binarization (docs/hbvla.md): hbvla, billm (BiLLM-style residual), sign (sign x "
                   "alpha, Q1_0 round-to-nearest), whose knobs --bpw chooses")
    q.add_argument("--hbvla-ablation", metavar="NAME",
                   help="--method hbvla without one of its parts: no-permutation, l1-permutation, no-haar, "
                   "no-salient, no-shared-mean, no-feedback, no-policy-aware (docs/hbvla.md)")
    q.add_argument("--allocation", type=Path, metavar="FILE",
                   help="an allocation.json from an earlier run (used as is), or overrides 'pattern=TYPE' / "
                   "{pattern: type} applied on top of the solver's allocation (--bpw) or of F16")
    q.add_argument("--lambda", dest="lam", type=float, default=0.5,
                   help="Action-Mixed Fisher mix: lambda * L1 + (1 - lambda) * CE (default 0.5)")
    q.add_argument("--importance", default="fisher", choices=["fisher", "amf", "magnitude"],
                   help="actquant's per-element importance for the scale optimisation (default fisher)")
    q.add_argument("--no-hsic", dest="hsic", action="store_false",
                   help="allocate without the HSIC sensitivity (every matrix weighs the same)")
    q.add_argument("--hsic-tau", type=float, metavar="TAU",
                   help="temperature of the HSIC weights exp(S / TAU): larger is flatter, closer to --no-hsic "
                   "(default: the spread of S over the model; docs/quantization.md)")
    q.add_argument("--error-model", default="paper", choices=["paper", "measured", "encoder"],
                   help="what the allocation charges each candidate type: paper (default, ActQuant's "
                   "S*||W||^2*2^-2b by nominal bits), measured (the Fisher-weighted error after ggml's "
                   "quantizer) or encoder (after --method's own quantizer, what ships; one encode per matrix "
                   "and type; not for awq) (docs/quantization.md)")
    q.add_argument("--calib", type=Path, metavar="PATH",
                   help="calibration data, format detected: a LeRobot v2.x/v3.0 dataset folder, a LIBERO "
                   "*_demo.hdf5 file or folder of them, or an omnimodel episode dataset (required with "
                   "--checkpoint; the demo's bundled split with --demo)")
    q.add_argument("--calib-cameras", metavar="KEY,KEY",
                   help="the data's cameras in the policy's order, third-person first (default: all RGB cameras, "
                   "wrist views last; LIBERO HDF5: agentview_rgb,eye_in_hand_rgb)")
    q.add_argument("--calib-state", metavar="KEY", help="LeRobot: the state feature used as proprio "
                   "(default: the first of observation.state, state, ...)")
    q.add_argument("--calib-action", metavar="KEY", help="LeRobot: the action feature (default: action or actions)")
    q.add_argument("--calib-split", help="episode dataset split (default: 'calib' if present, else the first) or "
                   "LeRobot split of meta/info.json")
    q.add_argument("--calib-episodes", type=int, default=16, metavar="N",
                   help="episodes calibrated on, spread over the tasks, when the data has more (default 16)")
    q.add_argument("--calib-steps", type=int, default=4, help="samples taken per calibration episode (default 4)")
    q.add_argument("--calib-seed", type=int, default=0, metavar="N",
                   help="seed of the calibration draw: which episodes (when the data has more than "
                   "--calib-episodes) and which of their steps (default 0); another seed is another draw "
                   "of the same data, to measure how much a result depends on it")
    q.add_argument("--device", default="cpu", help="device for calibration: cpu or cuda (default cpu)")
    q.add_argument("--calib-memory", type=float, metavar="GIB",
                   help="most GiB of fp32 Fisher accumulators per calibration pass; larger models calibrate "
                   "in passes over groups of layers (default: the model's own size in bf16)")
    q.add_argument("--bias-correction", action="store_true",
                   help="after quantizing, subtract the quantized policy's mean action shift on the calibration "
                   "samples (per action dimension) from the action head's output bias; off by default; not for "
                   "the binarization methods or flow-matching families (docs/quantization.md)")
    q.add_argument("--fisher-score", action="store_true",
                   help="also compute the Action-Mixed Fisher for a method that does not need it (rtn, imatrix, "
                   "gptq, awq), to report its Fisher-weighted error as actquant's is")
    p.add_argument("--unnorm-key", metavar="KEY",
                   help="the checkpoint's dataset statistics entry to un-normalise with (needed when "
                   "dataset_statistics.json holds several, unless the --calib data's name picks one)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for validation (0: all)")
    p.add_argument("--reference-dtype", default="auto", choices=["auto", "float32", "float64"],
                   help="precision of the PyTorch references (auto: float64 unless one module's float64 "
                        "weights exceed 2 GiB; the model itself stays in its dtype, see docs/parity.md)")
    p.add_argument("--knob", action="append", default=[], metavar="MODULE:KNOB=VALUE",
                   help="override a planned knob of the generated graph, e.g. vision_backbone.featurizer:gelu=tanh "
                   "(repeatable; parity is still checked and the reflector may undo it)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--keep-failed", action="store_true", help="write the output even if parity fails")


def _run(args: argparse.Namespace) -> int:
    from omnimodel.arch import registry
    from omnimodel.convert import ParityFailure, convert
    from omnimodel.errors import UsageError

    arch = registry.get(args.architecture)
    arch.require_convert()  # one line naming what is missing, before any other check
    quantized = args.bpw is not None or args.allocation is not None
    if args.checkpoint is None and not args.demo:
        if not quantized:
            raise UsageError("give --checkpoint DIR (or --demo to try it on the built-in demo policy)")
        args.demo = True  # `convert ARCH --bpw 2.5` alone: the demo policy, as documented
    outtype = args.outtype or ("f16" if quantized else "f32")
    quant = None
    if quantized:
        from omnimodel.quant.pipeline import QuantOptions

        quant = QuantOptions(
            bpw=args.bpw, method=args.method, allocation=args.allocation, lam=args.lam,
            importance=args.importance, hsic=args.hsic, hsic_tau=args.hsic_tau, error_model=args.error_model,
            calib=args.calib, split=args.calib_split,
            calib_cameras=_camera_list(args.calib_cameras), calib_state=args.calib_state,
            calib_action=args.calib_action, calib_episodes=args.calib_episodes,
            steps_per_episode=args.calib_steps, seed=args.calib_seed, device=args.device,
            max_accumulator_bytes=None if args.calib_memory is None else int(args.calib_memory * (1 << 30)),
            fisher_score=args.fisher_score, ablation=args.hbvla_ablation, bias_correction=args.bias_correction,
        )
        if quant.bias_correction:  # before asking for data it could not use
            from omnimodel.quant.pipeline import check_bias_correction

            quant.check()
            check_bias_correction(arch, quant)
        if quant.needs_calibration and quant.calib is None and not args.demo:
            from omnimodel.convert import NO_CALIB_MESSAGE

            raise UsageError(NO_CALIB_MESSAGE)
    elif args.hbvla_ablation is not None:
        raise UsageError("--hbvla-ablation applies to a binarized conversion (--method hbvla --bpw B)")
    elif args.bias_correction:
        raise UsageError("--bias-correction applies to quantized conversions (--bpw or --allocation)")
    elif args.error_model != "paper":
        raise UsageError("--error-model applies to quantized conversions (--bpw)")
    elif args.hsic_tau is not None:
        raise UsageError("--hsic-tau applies to quantized conversions (--bpw)")
    elif any(v is not None for v in (args.calib, args.calib_cameras, args.calib_state, args.calib_action)):
        raise UsageError("--calib and its options apply to quantized conversions (--bpw or --allocation)")
    knobs = [_parse_knob(k) for k in args.knob]
    if args.out is not None:
        out = args.out
    elif quantized:
        budget = f"{args.bpw:g}bpw" if args.bpw is not None else "alloc"
        method = args.method + (f"-{args.hbvla_ablation}" if args.hbvla_ablation else "")
        method += "-biascorr" if args.bias_correction else ""
        method += f"-{args.error_model}" if args.error_model != "paper" else ""
        method += f"-tau{args.hsic_tau:g}" if args.hsic_tau is not None else ""
        out = Path(f"{arch.name}-{method}-{budget}{'-demo' if args.demo else ''}")
    else:
        out = Path(f"{arch.name}-{outtype}{'-demo' if args.demo else ''}")
    try:
        res = convert(
            arch.name, out, checkpoint=args.checkpoint, demo=args.demo, outtype=outtype,
            threads=args.threads, force=args.force, keep_failed=args.keep_failed,
            reference_dtype=args.reference_dtype, knobs=knobs, quant=quant, unnorm_key=args.unnorm_key,
        )
    except ParityFailure as e:
        sys.stdout.write("\n" + e.report.format_table())
        raise
    print()
    sys.stdout.write(res.report.format_table())
    if res.quant is not None:
        print()
        sys.stdout.write(format_quant_summary(res.quant, res.out_dir))
    if res.report.reflection and res.report.reflection.get("attempts"):
        print(f"reflector: {res.report.reflection['summary']}")
    print(f"\n{res.out_dir}/")
    project: list[int] = []
    for name, size in res.files.items():
        if name.startswith("project/"):  # dozens of runtime sources: one line for the whole project
            project.append(size)
            continue
        print(f"  {name:<40} {_size(size):>10}")
    if project:
        print(f"  {'project/ (' + str(len(project)) + ' files, standalone CMake project)':<40} {_size(sum(project)):>10}")
    if res.demo:
        print("  demo_checkpoint/                         (the demo policy the demo converted)")
    print(f"\ngraph: {res.graph} (the runtime ran {res.report.graph_source or 'an unknown graph'})")
    print("stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in res.stage_seconds.items()))
    if res.demo:
        print("DEMO: the built-in tiny trained demo policy; pass --checkpoint DIR for a real one")
    if not res.report.passed:
        print("convert: parity FAILED (output kept because of --keep-failed)", file=sys.stderr)
        return 1
    print(f"convert: parity passed ({res.report.outtype}), output in {res.out_dir}")
    hint = _speed_hint(outtype, quantized)
    if hint:
        print(hint)
    print(f"robot: cmake -S {res.out_dir}/project -B build && cmake --build build -j "
          "(see docs/robot_integration.md)")
    return 0


def _speed_hint(outtype: str, quantized: bool = False) -> str | None:
    """On a CPU with AVX512-BF16, BF16 weights run at about twice the F16/F32 matmul rate (the runtime's
    BF16 GEMM: docs/benchmarks.md); say so when the user picked, or a quantized conversion defaulted to, a
    float type that is slower here. (The default stays F16 rather than following the converting machine's
    CPU: the file is made for the robot's.)"""
    from omnimodel.cpu import cpu_features

    f = cpu_features() or {}
    if outtype not in ("f32", "f16") or not f.get("avx512_bf16"):
        return None
    if quantized:
        return (f"speed: the matrices left unquantized (projector, patch embeddings, action head) are {outtype}; "
                "this CPU has AVX512-BF16, where --outtype bf16 multiplies them about 2x faster; "
                "see docs/benchmarks.md")
    return (f"speed: this CPU has AVX512-BF16, where --outtype bf16 runs about 2x faster than {outtype} "
            "(and matches PyTorch bf16); see docs/benchmarks.md")


def format_quant_summary(outcome, out_dir: Path) -> str:
    """Per-tensor types, achieved bits per weight (quantized part and whole model), size against F16."""
    from omnimodel.gguf import provenance
    from omnimodel.gguf.reader import read_gguf
    from omnimodel.gguf.report import build_report
    from omnimodel.gguf.types import GGMLType
    from omnimodel.plan.types import tensor_type

    r = outcome.report
    winners = {t["name"]: t["chosen"] for t in r["tensors"]}
    rows = outcome.allocation.tensors
    width = max(len(t.name) for t in rows)
    lines = [f"   {'quantized matrix':<{width}} {'shape':<10} {'type':<8} {'stored':>6} {'bpw':>6}  chosen by"]
    lines.append("-" * len(lines[0]))
    for t in rows:
        shape = f"{t.shape[0]}x{t.shape[1]}"
        stored = str(t.pad_to) if t.pad_to != t.shape[1] else ""
        lines.append(f"   {t.name:<{width}} {shape:<10} {t.type:<8} {stored:>6} {t.bpw:>6.3f}  {winners.get(t.name, '')}")
    gf = read_gguf(out_dir / "model.gguf")
    g = build_report(gf).totals
    # what `--outtype f16` stores: matrices F16, norms / biases / position embeddings F32
    f16_bytes = sum(
        t.n_weights * (2 if tensor_type(t.name, tuple(t.shape), "f16") == GGMLType.F16 else 4) for t in gf.tensors
    )
    size = gf.file_size
    budget = outcome.allocation.budget_bpw
    lines += [
        "",
        f"method {r['method']}, {len(rows)} quantized matrices (vision + language, padding counted); bits per "
        f"weight: {provenance.BpwFigures(g.bpw_quantized, g.bpw_matrices, g.bpw_total).describe(budget)}",
        "types: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in outcome.allocation.type_histogram().items()),
        f"model.gguf {_size(size)}; the same model with F16 matrices would be {_size(f16_bytes)} "
        f"({size / f16_bytes:.2f}x)",
    ]
    if outcome.bias_correction is not None:
        lines.append(outcome.bias_correction.describe())
    if "fisher_error" in r:
        lines.append(f"Fisher-weighted weight error (sum F (w - w_q)^2): {r['fisher_error']:.4g}")
    if r.get("rows_won"):
        lines.append("scale optimisation, rows won per candidate: "
                     + ", ".join(f"{k} {v}" for k, v in r["rows_won"].items()))
    return "\n".join(lines) + "\n"


def _camera_list(text: str | None) -> tuple[str, ...] | None:
    from omnimodel.errors import UsageError

    if text is None:
        return None
    cams = tuple(c.strip() for c in text.split(",") if c.strip())
    if not cams:
        raise UsageError(f"--calib-cameras {text!r}: expected KEY[,KEY...]")
    return cams


def _parse_knob(text: str) -> tuple[str, str, object]:
    """'module:knob=value'; the value is read as JSON when it parses (1e-5, true, 3), else as a string."""
    import json

    from omnimodel.errors import UsageError

    head, sep, raw = text.partition("=")
    module, sep2, knob = head.rpartition(":")
    if not sep or not sep2 or not module or not knob:
        raise UsageError(f"--knob {text!r}: expected MODULE:KNOB=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return module, knob, value


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


COMMAND = Command(
    name="convert",
    help="convert a VLA checkpoint to GGUF + runtime graph and prove parity with PyTorch",
    add_arguments=_add_arguments,
    run=_run,
    description="Convert a policy checkpoint: analyze -> plan -> GGUF -> render/build the graph -> validate "
    "every intermediate against the PyTorch reference (repairing a failing generated graph automatically) -> "
    "write project/, a standalone CMake project for the robot. The output directory appears only when "
    "everything succeeded.",
)
