"""The work behind test_parity_realwidth.py, run in a child process (a loaded graph plugin stays
registered for the whole process, and the faulty graphs must not leak into other tests).

    python realwidth_job.py WORKDIR  ->  WORKDIR/result.json

A real-width OpenVLA-OFT (DINOv2-L + SigLIP-so400m at 224 px, two images, a 576-wide GQA Llama with
injected outlier channels; 2 blocks per tower, 1 run, and 2 Llama layers), one generated graph (it does
not depend on the weight types), and:

    correct   GGUFs at f32, f16, every quantized matrix Q4_K (RTN; 576-wide rows padded to 768), and
              a mix of the allocator's low-bit types (every vec_dot path: Q8_0 blocks for Q1_0, Q2_0,
              Q4_0, IQ4_NL; Q8_K for the K and IQ types): ParityCheck on each. bf16 and q8_0 (one
              more rounding each, F16-like and Q8_0-like) run in benchmarks/parity_realwidth.py.
    faults    the f32 model (where nothing rounds, so the smallest faults show) with one fault each:
              the knobs and mechanisms new at real width (eps, theta, GQA mapping, action slot, image
              normalisation in the GGUF metadata); tanh GELU and causal masks are also in
              test_fault_injection.py, every fault at f32 and f16 in the benchmark
    out_f16   a convert-style output directory for `omnimodel validate`
"""

from __future__ import annotations

import copy
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import torch

from omnimodel import _runtime
from omnimodel.analyze import analyze
from omnimodel.arch.openvla_oft import load_policy, real_width_spec, write_miniature
from omnimodel.arch.openvla_oft.export import write_gguf
from omnimodel.build import build_plugin
from omnimodel.codegen.render import render
from omnimodel.gguf.types import GGMLType
from omnimodel.plan import make_plan
from omnimodel.quant.rtn import quantize_rtn
from omnimodel.quant.targets import matrix_targets, matrix_weights
from omnimodel.validate.parity import ParityCheck

MIX = (GGMLType.Q2_K, GGMLType.IQ3_S, GGMLType.Q1_0, GGMLType.IQ4_XS, GGMLType.Q2_0, GGMLType.Q3_K,
       GGMLType.IQ2_XXS, GGMLType.IQ4_NL, GGMLType.Q4_0, GGMLType.Q5_K, GGMLType.Q6_K)
KNOB_FAULTS = {
    "norm eps 1e-6": ("language_model.model", "norm_eps", 1e-6),
    "rope theta 1e4": ("language_model.model", "rope_theta", 10000.0),
    "GQA head mapping": ("language_model.model", "kv_heads", "interleaved"),
    "action read one slot off": ("openvla-oft", "action_rows", "at_slot"),
}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def patch_float_array(path: Path, key: str, values) -> None:
    """Overwrite a float32 metadata array of a GGUF in place (same length)."""
    data = bytearray(path.read_bytes())
    needle = struct.pack("<Q", len(key)) + key.encode()
    p = data.find(needle)
    assert p >= 0, key
    p += len(needle)
    vtype, etype, n = struct.unpack_from("<IIQ", data, p)
    assert (vtype, etype, n) == (9, 6, len(values))  # ARRAY of FLOAT32
    struct.pack_into(f"<{n}f", data, p + 16, *values)
    path.write_bytes(bytes(data))


def summary(report) -> dict:
    first = report.first_failure
    worst = report.worst
    return {"passed": report.passed, "n": len(report.results), "first_failure": first.name if first else None,
            "first_reason": first.reason if first else None, "first_ratio": first.ratio if first else None,
            "worst": worst.name if worst else None, "worst_ratio": worst.ratio if worst else None,
            "names": [r.name for r in report.results]}


def build(plan, where: Path) -> Path:
    render(plan, where / "src")
    so = build_plugin(where / "src", where / "build")
    _runtime.load_plugin(str(so))
    return so


def main(work: Path) -> None:
    torch.set_num_threads(2)
    ckpt = write_miniature(work / "ckpt", real_width_spec(vision_depth=2, llm_layers=2, outlier_channels=4))
    policy = load_policy(ckpt)
    desc = analyze(ckpt)
    result: dict = {"correct": {}, "faults": {}}

    base = make_plan(desc, "f16")
    so = build(base, work / "graph")
    checks = {}
    for outtype in ("f32", "f16"):
        gguf = work / f"{outtype}.gguf"
        write_gguf(policy, gguf, outtype)
        checks[outtype] = ParityCheck(policy, gguf, threads=2)
        result["correct"][outtype] = summary(checks[outtype].run(make_plan(desc, outtype)))

    weights = matrix_weights(policy.model)
    for name, types in (("q4_k", None), ("mix", MIX)):
        encoded = {}
        for i, t in enumerate(matrix_targets(policy.model)):
            encoded[t.name] = quantize_rtn(weights[t.name], types[i % len(types)] if types else GGMLType.Q4_K)
        gguf = work / f"{name}.gguf"
        write_gguf(policy, gguf, "f16", encoded=encoded)
        plan = base.with_tensor_types({n: q.ggml_type for n, q in encoded.items()}, outtype="mixed")
        result["correct"][name] = {**summary(ParityCheck(policy, gguf, threads=2).run(plan)),
                                   "padded": sorted({n for n, q in encoded.items() if q.pad_to != weights[n].shape[1]})[:3],
                                   "types": sorted({q.ggml_type.name for q in encoded.values()})}

    # a convert-style output directory, for `omnimodel validate`
    out = work / "out_f16"
    (out / "plugin").mkdir(parents=True)
    shutil.copy2(work / "f16.gguf", out / "model.gguf")
    shutil.copy2(so, out / "plugin" / so.name)
    (out / "plan.json").write_text(base.to_json() + "\n")
    check = checks["f16"]
    report = checks["f16"].run(base, graph=f"plugin:plugin/{so.name}", checkpoint=str(ckpt))
    report.write_json(out / "validation_report.json")

    check, f32 = checks["f32"], make_plan(desc, "f32")
    for fault, (module, knob, value) in KNOB_FAULTS.items():
        plan = f32.with_knob(module, knob, value)
        build(plan, work / f"fault_{knob}")
        result["faults"][fault] = summary(check.run(plan))

    # wrong image normalisation: the converter wrote ImageNet statistics for the SigLIP tower
    bad = work / "bad_norm.gguf"
    shutil.copy2(work / "f32.gguf", bad)
    for key, values in zip(("image_mean", "image_std"), IMAGENET):
        patch_float_array(bad, f"openvla-oft.vision.fused_featurizer.{key}", values)
    _runtime.load_plugin(str(so))
    wrong = copy.copy(check)  # the same weights: the references stay valid
    wrong.gguf = bad
    result["faults"]["image normalisation"] = summary(wrong.run(f32))
    # the references do not depend on the graph: every fault above reused the f32 check's one set
    result["f32_reference_sets"] = len(check._references)
    (work / "result.json").write_text(json.dumps(result, indent=2, default=float) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main(Path(sys.argv[1]))
