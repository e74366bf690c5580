from __future__ import annotations

import json

import numpy as np
import pytest
from omnimodel.gguf.types import GGMLType
from omnimodel.quant.allocate import (
    DEFAULT_CANDIDATES,
    Allocation,
    AllocationError,
    allocate,
    feasible_range,
    load_allocation,
    option_for,
    paper_errors,
    tensor_options,
)
from omnimodel.quant.sensitivity import sensitivities, sensitivity_weights
from omnimodel.quant.targets import MatrixTarget


def _errors(cal, **kw):
    sens = sensitivity_weights(sensitivities(cal.stats))
    norms = {t.name: float(np.square(cal.weights[t.name].astype(np.float64)).sum()) for t in cal.targets}
    return paper_errors(cal.targets, norms, sens, **kw)


def _objective(alloc: Allocation) -> float:
    per_layer: dict[str, float] = {}
    for t in alloc.tensors:
        per_layer[t.layer] = per_layer.get(t.layer, 0.0) + t.error
    return sum(v * v for v in per_layer.values())


@pytest.mark.parametrize("budget", [4.0, 3.0, 2.5])
def test_budget_met_within_tolerance(calibrated, budget):
    a = allocate(calibrated.targets, _errors(calibrated), budget)
    assert budget - 0.02 <= a.bpw <= budget + 1e-9
    # bits are counted honestly: recompute from the stored row bytes
    from omnimodel.gguf.types import type_info

    n = sum(t.shape[0] * t.shape[1] for t in a.tensors)
    bits = sum(t.shape[0] * type_info(t.type).row_bytes(t.pad_to) * 8 for t in a.tensors)
    assert abs(bits / n - a.bpw) < 1e-9
    # low budgets need the IQ types
    if budget < 2.6:
        assert any(t.type.startswith("IQ") for t in a.tensors)


def test_greedy_beats_uniform_allocations_at_the_same_bits(calibrated):
    errs = _errors(calibrated)
    a = allocate(calibrated.targets, errs, 3.0)
    # any single-type allocation (with the cheapest fallback where it does not fit) within the budget is worse
    for t in (GGMLType.IQ2_S, GGMLType.Q2_K, GGMLType.IQ3_XXS):
        tensors = []
        for tg in calibrated.targets:
            o = option_for(tg.n_in, t, "auto")
            if o is None or o.bpw >= 16:
                o = tensor_options(tg.n_in)[0]
            from omnimodel.quant.allocate import TensorAllocation

            tensors.append(
                TensorAllocation(tg.name, tg.shape, tg.layer, o.type.name, o.pad_to, o.bpw, errs[tg.name][o.type])
            )
        uni = Allocation(tuple(tensors), 3.0)
        if uni.bpw <= 3.0:
            assert _objective(a) < _objective(uni)


def test_infeasible_budget_names_the_range(calibrated):
    lo, hi = feasible_range(calibrated.targets)
    with pytest.raises(AllocationError, match=rf"between {lo:.4f} and {hi:.4f} bpw"):
        allocate(calibrated.targets, _errors(calibrated), 0.5)
    with pytest.raises(AllocationError, match="infeasible"):
        allocate(calibrated.targets, _errors(calibrated), hi + 1.0)


def test_block_fit_and_padding_count_bits_honestly():
    # SigLIP So400m: 1152 fits 32-blocks but not 256; 4304 fits neither
    assert option_for(1152, "Q8_0").pad_to == 1152 and option_for(1152, "Q8_0").bpw == 8.5
    o = option_for(1152, "Q4_K")
    assert o.pad_to == 1280 and abs(o.bpw - 4.5 * 1280 / 1152) < 1e-12
    assert option_for(4304, "Q4_K").pad_to == 4352 and option_for(4304, "IQ4_NL").pad_to == 4320
    assert option_for(1152, "Q4_K", padding="never") is None
    never = tensor_options(4304, padding="never")
    assert [x.type for x in never] == [GGMLType.F16]
    assert tensor_options(4096)[0].type == GGMLType.Q1_0
    assert [o.type for o in tensor_options(4096)[:2]] == [GGMLType.Q1_0, GGMLType.IQ1_M]


def test_real_oft_shapes_feasible_range():
    """The 7B policy's matrix shapes: the ranges the CLI will quote (no weights needed)."""
    tg = []
    for i in range(24):  # DINOv2 ViT-L used blocks
        L = f"vision_backbone.featurizer.blocks.{i}"
        tg += [
            MatrixTarget(f"{L}.{n}", s, L)
            for n, s in (("qkv", (3072, 1024)), ("proj", (1024, 1024)), ("fc1", (4096, 1024)), ("fc2", (1024, 4096)))
        ]
    for i in range(26):  # SigLIP So400m used blocks
        L = f"vision_backbone.fused_featurizer.blocks.{i}"
        tg += [
            MatrixTarget(f"{L}.{n}", s, L)
            for n, s in (("qkv", (3456, 1152)), ("proj", (1152, 1152)), ("fc1", (4304, 1152)), ("fc2", (1152, 4304)))
        ]
    for i in range(32):
        L = f"language_model.model.layers.{i}"
        tg += [
            MatrixTarget(f"{L}.{n}", s, L)
            for n, s in (
                ("q", (4096, 4096)),
                ("k", (4096, 4096)),
                ("v", (4096, 4096)),
                ("o", (4096, 4096)),
                ("g", (11008, 4096)),
                ("u", (11008, 4096)),
                ("d", (4096, 11008)),
            )
        ]
    lo, hi = feasible_range(tg)
    # Q1_0 (1.125 bpw) fits every width but SigLIP's 4304 (padded to 4352 there)
    assert 1.125 < lo < 1.13 and hi == 16.0
    no_small = [c for c in DEFAULT_CANDIDATES if c not in (GGMLType.Q1_0, GGMLType.Q2_0)]
    lo_iq, _ = feasible_range(tg, no_small)
    assert 1.75 < lo_iq < 1.8  # IQ1_M, padded where 256 does not divide the row
    lo_never, _ = feasible_range(tg, padding="never")
    assert lo_never > lo  # SigLIP's fc2 can only be F16 without padding
    errs = {t.name: {o.type: t.numel * 2.0 ** (-2 * o.nominal_bpw) for o in tensor_options(t.n_in)} for t in tg}
    for b in (2.0, 2.5, 3.0, 4.0):
        a = allocate(tg, errs, b)
        assert b - 0.02 <= a.bpw <= b


def test_json_round_trip(calibrated, tmp_path):
    a = allocate(calibrated.targets, _errors(calibrated), 2.5, error_model="paper")
    p = a.save(tmp_path / "alloc.json")
    b = load_allocation(p, calibrated.targets)
    assert b.types() == a.types() and b.padded() == a.padded() and abs(b.bpw - a.bpw) < 1e-12
    assert b.error_model == "paper"
    assert [t.error for t in b.tensors] == [t.error for t in a.tensors]
    # a hand edit is honoured, and an edit that breaks the model's shapes is refused
    d = json.loads(p.read_text())
    d["tensors"][0]["type"] = "F16"
    d["tensors"][0]["pad_to"] = d["tensors"][0]["shape"][1]
    d["tensors"][0].pop("bpw")
    p.write_text(json.dumps(d))
    c = load_allocation(p, calibrated.targets)
    assert c.tensors[0].type == "F16" and c.tensors[0].bpw == 16.0
    d["tensors"][0]["shape"] = [1, 1]
    p.write_text(json.dumps(d))
    with pytest.raises(AllocationError, match="shape"):
        load_allocation(p, calibrated.targets)


def test_override_lists(calibrated, tmp_path):
    base = allocate(calibrated.targets, _errors(calibrated), 3.0)
    txt = tmp_path / "ov.txt"
    txt.write_text(
        "# keep attention outputs high\nlanguage_model.model.layers.*.self_attn.o_proj.weight = Q8_0\n"
        "vision_backbone.fused_featurizer.*=Q4_0\n"
    )
    a = load_allocation(txt, calibrated.targets, base=base)
    ty = a.types()
    assert ty["language_model.model.layers.0.self_attn.o_proj.weight"] == GGMLType.Q8_0
    assert ty["vision_backbone.fused_featurizer.blocks.0.attn.qkv.weight"] == GGMLType.Q4_0
    assert a.padded()["vision_backbone.fused_featurizer.blocks.0.attn.qkv.weight"] == 64  # 48 columns padded
    js = tmp_path / "ov.json"
    js.write_text(json.dumps([{"name": "language_model.*", "type": "q4_k"}]))
    b = load_allocation(js, calibrated.targets)  # no base: everything else stays F16
    assert {str(t.type) for t in b.tensors if t.name.startswith("vision")} == {"F16"}
    assert all(t.type == "Q4_K" for t in b.tensors if t.name.startswith("language_model"))
    js.write_text(json.dumps({"nothing.matches": "Q4_K"}))
    with pytest.raises(AllocationError, match="matches no"):
        load_allocation(js, calibrated.targets)
    js.write_text(json.dumps({"language_model.*": "Q9_K"}))
    with pytest.raises(AllocationError, match="unknown GGML type"):
        load_allocation(js, calibrated.targets)
    from omnimodel.quant.allocate import apply_overrides

    with pytest.raises(AllocationError, match="not a multiple"):
        apply_overrides(base, [("vision_backbone.fused_featurizer.*", "Q4_K")], padding="never")


def _demo_shapes() -> list[MatrixTarget]:
    """Rows of 64, 128, 256 and 336, like the demo policy's matrices (no weights needed)."""
    tg = []
    for i in range(2):
        L = f"vision_backbone.featurizer.blocks.{i}"
        tg += [
            MatrixTarget(f"{L}.{n}", s, L)
            for n, s in (("qkv", (192, 64)), ("proj", (64, 64)), ("fc1", (256, 64)), ("fc2", (64, 256)))
        ]
    for i in range(2):
        L = f"language_model.model.layers.{i}"
        tg += [
            MatrixTarget(f"{L}.{n}", s, L)
            for n, s in (("q", (128, 128)), ("o", (128, 128)), ("g", (336, 128)), ("u", (336, 128)), ("d", (128, 336)))
        ]
    return tg


def test_small_block_types_open_low_budgets_on_demo_shapes():
    tg = _demo_shapes()
    assert {t.n_in for t in tg} == {64, 128, 256, 336}
    lo, hi = feasible_range(tg)
    assert lo < 2.0 and hi == 16.0
    # without Q1_0 / Q2_0 the 256-block types only fit padded and the floor is far higher
    no_small = [c for c in DEFAULT_CANDIDATES if c not in (GGMLType.Q1_0, GGMLType.Q2_0)]
    assert feasible_range(tg, no_small)[0] > 3.0
    # rows of 64 take Q2_0 unpadded; 336 pads to 384 (Q1_0 and Q2_0 alike)
    assert option_for(64, "Q2_0").pad_to == 64 and option_for(64, "Q2_0").bpw == 2.25
    assert option_for(336, "Q2_0").pad_to == 384 and option_for(336, "Q1_0").pad_to == 384
    errs = {t.name: {o.type: t.numel * 2.0 ** (-2 * o.nominal_bpw) for o in tensor_options(t.n_in)} for t in tg}
    a = allocate(tg, errs, 2.5)
    assert 2.5 - 0.02 <= a.bpw <= 2.5
    assert {"Q1_0", "Q2_0"} & {t.type for t in a.tensors}
