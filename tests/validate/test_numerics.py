"""The emulating reference's rounding: ggml-cpu's own activation rounding, checked against the runtime
matmul it stands for (at real width, padded K-quant rows included) and against the algorithm it
implements."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from omnimodel import _runtime
from omnimodel.gguf.types import GGMLType
from omnimodel.gguf.writer import GGUFModelWriter
from omnimodel.quant.ggmlq import ggml_encode, padded_width
from omnimodel.validate.numerics import NumericsError, RuntimeNumerics, round_activations, vec_dot_type
from omnimodel.validate.reference import GGUFWeights

# ggml-cpu.c type_traits_cpu, for every type the allocator can pick (docs/parity.md's table)
VEC_DOT = {
    GGMLType.F32: GGMLType.F32, GGMLType.F16: GGMLType.F16, GGMLType.BF16: GGMLType.BF16,
    GGMLType.Q8_0: GGMLType.Q8_0, GGMLType.Q4_0: GGMLType.Q8_0, GGMLType.Q1_0: GGMLType.Q8_0,
    GGMLType.Q2_0: GGMLType.Q8_0, GGMLType.IQ4_NL: GGMLType.Q8_0, GGMLType.Q4_1: GGMLType.Q8_1,
    GGMLType.Q2_K: GGMLType.Q8_K, GGMLType.Q3_K: GGMLType.Q8_K, GGMLType.Q4_K: GGMLType.Q8_K,
    GGMLType.Q5_K: GGMLType.Q8_K, GGMLType.Q6_K: GGMLType.Q8_K, GGMLType.IQ1_M: GGMLType.Q8_K,
    GGMLType.IQ2_XXS: GGMLType.Q8_K, GGMLType.IQ2_XS: GGMLType.Q8_K, GGMLType.IQ2_S: GGMLType.Q8_K,
    GGMLType.IQ3_XXS: GGMLType.Q8_K, GGMLType.IQ3_S: GGMLType.Q8_K, GGMLType.IQ4_XS: GGMLType.Q8_K,
}


def test_vec_dot_types_are_ggmls() -> None:
    for weight, act in VEC_DOT.items():
        assert vec_dot_type(weight) == act, weight.name


def _q8_blocks(x: np.ndarray, block: int, signed_max: bool) -> np.ndarray:
    """ggml's quantize_row_q8_0 / q8_K_ref rounding written from their description, then decoded:
    Q8_0 scales by max|x|/127 (stored as F16); Q8_K scales by -max/127 of the signed largest value
    (F32) and clamps to 127; both round to nearest, ties to even (the AVX round / nearest_int's
    float-add trick)."""
    n = x.shape[-1]
    xp = np.pad(x.astype(np.float32), [(0, 0), (0, (-n) % block)]).reshape(x.shape[0], -1, block)
    out = np.zeros_like(xp)
    for r in range(xp.shape[0]):
        for b in range(xp.shape[1]):
            v = xp[r, b]
            i = int(np.argmax(np.abs(v)))
            if v[i] == 0:
                continue
            if signed_max:
                iscale = np.float32(-127.0) / v[i]
                q = np.minimum(127, np.round(iscale * v))
                out[r, b] = q * (np.float32(1.0) / iscale)
            else:
                d = np.float32(abs(v[i])) / np.float32(127.0)
                q = np.round(v * (np.float32(1.0) / d))
                out[r, b] = q * np.float32(np.float16(d))
    return out.reshape(x.shape[0], -1)[:, :n]


@pytest.mark.parametrize(("wtype", "block", "signed"), [(GGMLType.Q4_0, 32, False), (GGMLType.Q4_K, 256, True)])
def test_rounding_is_the_q8_algorithm(wtype: GGMLType, block: int, signed: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 576)).astype(np.float32)
    x[:, [3, 400]] *= 50  # outliers, one in the 576 -> 768 padded tail block
    got = round_activations(torch.from_numpy(x.astype(np.float64)), wtype).numpy()
    want = _q8_blocks(x, block, signed)
    assert np.allclose(got, want, rtol=1e-6, atol=0)  # the decode's product rounding only
    assert np.abs(got - x).max() > 1e-3  # and it is a real rounding


def test_half_precision_rounding_is_round_to_nearest_even() -> None:
    x = torch.tensor([[1.0 + 2**-11, 1.0 + 3 * 2**-11, 1.0 + 2**-9 + 2**-8]], dtype=torch.float64)
    assert round_activations(x, GGMLType.F16).tolist() == x.to(torch.float16).to(torch.float64).tolist()
    assert round_activations(x, GGMLType.BF16).tolist() == x.to(torch.bfloat16).to(torch.float64).tolist()
    assert round_activations(x, GGMLType.F32) is x


def _one_matmul_gguf(path, w: np.ndarray, t: GGMLType) -> None:
    n_out, n_in = w.shape
    with GGUFModelWriter(path, "omni-mlp") as g:
        g.add_uint32("omni-mlp.block_count", 1)
        g.add_string("omni-mlp.activation", "none")
        if t in (GGMLType.F16, GGMLType.Q8_0):
            g.add_tensor("layers.0.weight", w, t)
        else:  # stored zero-padded to the 256 block, as the quantizer writes 576-wide rows
            g.add_encoded("layers.0.weight", ggml_encode(w, t), t, (n_out, padded_width(n_in, t)), real_width=n_in)


@pytest.mark.parametrize("wtype", [GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.IQ4_XS, GGMLType.Q8_0, GGMLType.F16])
def test_runtime_matmul_is_the_emulation_at_real_width(tmp_path, wtype: GGMLType) -> None:
    """The Llama's 1536 x 576 up_proj shape with pretrained-like activations (three channels at 80x, one
    in the padded tail block): the runtime's matmul equals R's (activations rounded by ggml's from_float,
    zero-padded) to float32 summation order, while that rounding itself moves the result 1e5x more."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((1536, 576)) / 24).astype(np.float32)
    x = rng.standard_normal((64, 576)).astype(np.float32)
    x[:, [17, 300, 561]] *= 80
    path = tmp_path / "m.gguf"
    _one_matmul_gguf(path, w, wtype)
    weights = GGUFWeights(path).get("layers.0.weight").numpy().astype(np.float64)
    assert weights.shape == (1536, 576)
    with _runtime.Model(str(path), n_threads=2) as m:
        y = m.run({"x": x}, capture=["*"])["out"].astype(np.float64)
    r = round_activations(torch.from_numpy(x.astype(np.float64)), wtype).numpy() @ weights.T
    e = x.astype(np.float64) @ weights.T
    d = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))  # noqa: E731
    assert d(y, r) < 3e-7
    assert d(e, r) > 1e-4 and d(e, r) > 300 * d(y, r)


@dataclass(frozen=True)
class _Module:
    name: str
    knobs: dict[str, Any]


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    type: GGMLType


@dataclass(frozen=True)
class _Plan:
    modules: tuple = ()
    tensors: tuple = field(default_factory=tuple)


def test_numerics_from_plan_reads_types_and_attention_knobs() -> None:
    plan = _Plan(
        modules=(_Module("vision_backbone.featurizer", {"attn": "flash_f16"}), _Module("language_model.model", {"attn": "omni"})),
        tensors=(_Tensor("a.weight", (8, 64), GGMLType.Q4_K), _Tensor("a.bias", (8,), GGMLType.F32)),
    )
    num = RuntimeNumerics.from_plan(plan)
    assert dict(num.weight_types) == {"a.weight": GGMLType.Q4_K}  # matrices only
    assert num.attention_rounding("vision_backbone.featurizer.blocks.0.attn") == GGMLType.F16
    assert num.attention_rounding("language_model.model.layers.0.self_attn") is None
    assert num.summary() == {"Q8_K": 1}
    with pytest.raises(NumericsError, match="attn='tiled'"):
        RuntimeNumerics.from_plan(_Plan(modules=(_Module("m", {"attn": "tiled"}),)))


def test_attention_rounding_reaches_q_k_v(tmp_path) -> None:
    """A flash-attention knob makes R round the attention's q/k/v to F16; without it nothing changes."""
    from omnimodel.arch.openvla_oft.modeling import ViTAttention
    from omnimodel.validate.reference import rounding_points

    torch.manual_seed(0)
    attn = ViTAttention(64, 4).double()
    model = torch.nn.Module()
    model.blk = torch.nn.Module()
    model.blk.attn = attn
    x = torch.randn(1, 10, 64, dtype=torch.float64)
    exact = attn(x)
    seen = []
    flash = RuntimeNumerics({}, {"blk": GGMLType.F16})
    handles = rounding_points(model, flash, None)
    inner = attn.qkv_rounding
    attn.qkv_rounding = lambda q, k, v: seen.append(inner(q, k, v)) or seen[-1]
    y = attn(x)
    for h in handles:
        h.remove()
    assert attn.qkv_rounding is None
    q = seen[0][0]
    assert torch.equal(q, q.to(torch.float16).to(torch.float64))
    assert 0 < (y - exact).abs().max().item() < 1e-2
    assert math.isclose((attn(x) - exact).abs().max().item(), 0.0)
