"""The numbers a quantization is reported with (METHODS 1): Vision+LLM BPW, VLA BPW and size.

"Vision+LLM BPW" is the average over the quantized matrices (what the budget constrains); "VLA BPW" and
"Mem" cover every tensor the GGUF stores: the quantized matrices at their allocated (honest, padded)
size, everything else at the type ``plan.types`` gives it for the base outtype (F16 matrices, F32 norms
and biases by default).
"""

from __future__ import annotations

from typing import Any

from omnimodel.arch.registry import for_policy
from omnimodel.gguf.types import type_info
from omnimodel.plan.types import tensor_type

from .allocate import Allocation
from .quantize import QuantResult


def size_report(policy: Any, allocation: Allocation, base_outtype: str = "f16") -> dict[str, Any]:
    alloc = {t.name: t for t in allocation.tensors}
    q_bytes = q_n = other_bytes = other_n = 0
    for name, value in for_policy(policy).exported_tensors(policy).items():
        shape = tuple(int(d) for d in value.shape)
        n = 1
        for d in shape:
            n *= d
        if name in alloc:
            ta = alloc[name]
            q_bytes += ta.shape[0] * type_info(ta.type).row_bytes(ta.pad_to)
            q_n += n
        else:
            gt = tensor_type(name, shape, base_outtype)
            rows = n // shape[-1] if shape else 1
            other_bytes += rows * type_info(gt).row_bytes(shape[-1] if shape else 1)
            other_n += n
    return {
        "vision_llm_bpw": 8.0 * q_bytes / q_n if q_n else 0.0,
        "vla_bpw": 8.0 * (q_bytes + other_bytes) / (q_n + other_n),
        "quantized_bytes": q_bytes,
        "other_bytes": other_bytes,
        "total_bytes": q_bytes + other_bytes,
        "quantized_params": q_n,
        "other_params": other_n,
    }


def quant_report(
    policy: Any, allocation: Allocation, result: QuantResult, base_outtype: str = "f16"
) -> dict[str, Any]:
    """JSON-ready: sizes, the type mix, the allocation, and per tensor which candidate won and its errors."""
    out = {
        "method": result.method,
        "budget_bpw": allocation.budget_bpw,
        "error_model": allocation.error_model,  # what the solver weighed the types by (None: from a file)
        **size_report(policy, allocation, base_outtype),
        "types": allocation.type_histogram(),
        "padded": allocation.padded(),
        "rows_won": result.rows_won(),
        "tensors": result.report(),
    }
    if all("fisher" in q.errors for q in result.tensors.values()):
        out["fisher_error"] = result.fisher_error()
    return out


__all__ = ["quant_report", "size_report"]
