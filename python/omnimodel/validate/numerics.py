"""The runtime's numerics, as the emulating reference reproduces them.

The runtime computes in float32, but not everywhere: ggml-cpu converts the activation input of every
matmul to its weight type's ``vec_dot_type`` before multiplying (ggml-cpu.c ``type_traits_cpu``):

    weight type                                   activations become
    F32                                           F32 (no rounding)
    F16 / BF16                                    F16 / BF16 (round to nearest even)
    Q8_0, Q4_0, Q5_0, Q1_0, Q2_0, IQ4_NL, MXFP4   Q8_0: blocks of 32, scale max|x|/127 stored as F16
    Q4_1, Q5_1                                    Q8_1: the same with a block sum
    K-quants, IQ1..IQ3, IQ4_XS, TQ*               Q8_K: blocks of 256, scale -max/127 in F32

(``vec_dot_type`` asks ggml for the table instead of copying it.) A matrix whose rows are zero-padded to
the type's block gets a zero-padded activation (the graph's ``ggml_pad``), so blocks start at column 0
and the padding never changes a block's scale. ``round_activations`` calls ggml-cpu's own ``from_float``
through the extension, so the emulating reference rounds bit for bit as the runtime does.

Knobs that change numerics only (not the model's function) are honoured too: a skill's ``attn`` knob
maps to the rounding of the attention's q/k/v in ``ATTENTION_ROUNDING`` (docs/parity.md, "Runtime
numerics"): ``naive`` (matmul, softmax, matmul), ``flash`` (ggml_flash_attn_ext on F32 K/V) and ``omni``
(whole score rows, exact softmax) compute in float32 -- no rounding point, only summation order;
``flash_f16`` converts K and V to F16, and ggml's kernel then converts Q to K's vec_dot_type, F16. (That
kernel also accumulates the output over F16 V rows in F16, which is not emulated.) A knob value missing
there is an error, never silently ignored: a fast path whose rounding the reference does not know would
otherwise be judged against the wrong arithmetic. Other speed knobs (a vectorised erf, a BF16 GEMM that
rounds activations to BF16 as ggml's vec_dot_type does, a Q1_0/Q2_0/Q4_0/IQ4_NL GEMM that rounds them to Q8_0
with ggml-cpu's own from_float, and to Q8_K bit for bit as ggml does for Q4_K/IQ4_XS) add no rounding point.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from omnimodel.gguf.types import GGMLType

#: the skill knob choosing an attention implementation, and what each value rounds q/k/v to (None: F32)
ATTENTION_KNOB = "attn"
ATTENTION_ROUNDING: dict[str, GGMLType | None] = {"naive": None, "flash": None, "omni": None,
                                                  "flash_f16": GGMLType.F16}


class NumericsError(ValueError):
    """The plan asks for arithmetic the emulating reference cannot reproduce."""


@functools.lru_cache(maxsize=None)
def vec_dot_type(weight_type: GGMLType) -> GGMLType:
    """The type ggml-cpu converts a matmul's activations to for weights of ``weight_type``."""
    from omnimodel import _runtime

    return GGMLType(_runtime.vec_dot_type(int(weight_type)))


def rounds(weight_type: GGMLType) -> bool:
    return vec_dot_type(weight_type) != GGMLType.F32


def round_activations(x: torch.Tensor, weight_type: GGMLType) -> torch.Tensor:
    """``x`` (..., K) as a matmul with ``weight_type`` weights multiplies it, in ``x``'s dtype.

    The value goes through float32 first (the runtime's activations are float32), then ggml-cpu's
    from_float of the vec_dot_type, row by row over the last axis."""
    if not rounds(weight_type):
        return x
    from omnimodel import _runtime

    flat = x.detach().reshape(-1, x.shape[-1]).to(torch.float32).cpu().numpy()
    out = _runtime.round_activations(int(weight_type), np.ascontiguousarray(flat))
    return torch.from_numpy(out).to(x.dtype).reshape(x.shape)


@dataclass(frozen=True)
class RuntimeNumerics:
    """Where the runtime rounds, read from a plan: per weight its GGML type, per attention module its
    q/k/v rounding."""

    weight_types: Mapping[str, GGMLType]  # state_dict weight name -> stored type
    attention: Mapping[str, GGMLType | None] = field(default_factory=dict)  # plan module name -> q/k/v rounding
    # matrices stored as HBVLA planes: the runtime rounds their Haar-domain activation z (Q1_0's vec_dot
    # type, Q8_0) for the plane products only, so the reference adds that rounding's effect to the output
    hbvla: frozenset[str] = frozenset()

    @classmethod
    def from_plan(cls, plan: Any) -> RuntimeNumerics:
        attention: dict[str, GGMLType | None] = {}
        for m in plan.modules:
            if ATTENTION_KNOB not in m.knobs:
                continue
            value = m.knobs[ATTENTION_KNOB]
            if value not in ATTENTION_ROUNDING:
                raise NumericsError(
                    f"{m.name}: knob {ATTENTION_KNOB}={value!r} has no entry in the emulating reference's "
                    f"ATTENTION_ROUNDING ({sorted(ATTENTION_ROUNDING)}); add how it rounds to validate/numerics.py"
                )
            attention[m.name] = ATTENTION_ROUNDING[value]
        # matrices and patch kernels: the weights of matmuls (1-D tensors only enter elementwise ops)
        hbvla = frozenset(t.name for t in plan.tensors if getattr(t, "is_hbvla", False))
        weights = {t.name: t.type for t in plan.tensors if len(t.shape) >= 2 and t.name not in hbvla}
        return cls(weights, attention, hbvla)

    def weight_type(self, weight_name: str) -> GGMLType | None:
        return self.weight_types.get(weight_name)

    def attention_rounding(self, module_path: str) -> GGMLType | None:
        """q/k/v rounding of the attention at ``module_path`` (the plan module owning it decides)."""
        best, value = "", None
        for name, rounding in self.attention.items():
            if (module_path == name or module_path.startswith(name + ".")) and len(name) > len(best):
                best, value = name, rounding
        return value

    def summary(self) -> dict[str, int]:
        """Matrices per activation rounding (vec_dot_type name -> count), for the report."""
        out: dict[str, int] = {}
        for t in self.weight_types.values():
            key = vec_dot_type(t).name
            out[key] = out.get(key, 0) + 1
        if self.hbvla:
            out["HBVLA"] = len(self.hbvla)  # Q8_0 of the Haar-domain activation, plane products only
        return dict(sorted(out.items()))


__all__ = [
    "ATTENTION_KNOB",
    "ATTENTION_ROUNDING",
    "NumericsError",
    "RuntimeNumerics",
    "round_activations",
    "rounds",
    "vec_dot_type",
]
