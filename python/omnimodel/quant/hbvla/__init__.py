"""HBVLA (seed 000, METHODS.md section 2): 1-bit post-training binarization, stored and run natively.

    from omnimodel.quant import hbvla as hb
    q = hb.quantize_matrix(W, H, hb.hbvla())            # W (out, in); H = X X^T or the policy-aware X S X^T
    q.weight()                                          # the decoded weight the runtime computes with
    hb.write_matrix(gguf_writer, "blk.weight", q)       # Q1_0 planes + small tensors (storage.py)
    hb.count_bits(hb.encode_matrix(q, "blk"), q.shape)  # every stored bit, by kind
    hb.solve(shapes, target_bpw)                        # the knobs that meet a bpw target, or the range

Modules, one step each:

    config      the knobs; presets hbvla / hbvla_element / billm_style / sign_alpha, the paper's ablations
    hessian     H = X X^T and the policy-aware rectified H~ = X diag(a) X^T from a block's local loss
    saliency    column saliency w^2 / [H^-1]_jj^2, candidates, filling salient columns
    permutation greedy pairing-and-chaining column order (Algorithm 1), l2 or l1
    haar        one-level Haar, the coefficient layout of the stored planes, the activation-side transform
    binarize    two-group (dense/sparse) or per-block binarization with a shared mean, per row and band
    salient     the salient residual: column Haar, row-wise binarization
    feedback    GPTQ-style error feedback a column pair at a time
    method      quantize_matrix: the steps above on one matrix, salient count by reconstruction error
    matrix      store_matrix: one weight to stored tensors, HBVLA or the fallback type, with its bits
    storage     the GGUF layout (encode / decode / read / write), exact round trips
    execution   the runtime's computation in numpy and the bound on ggml's activation rounding
    size        the honest bit count, the bpw solver, the fallback type for shapes that do not suit

The C++ side is cpp/src/hbvla.{hpp,cpp} (``build_hbvla_linear`` / ``build_linear_any``).
"""

from .config import ABLATIONS, HbvlaConfig, billm_style, hbvla, hbvla_element, sign_alpha
from .execution import apply, q8_0_round, rounding_bound
from .hessian import HessianAccumulator, input_hessian, policy_aware_hessians, policy_aware_token_weights
from .matrix import StoredMatrix, store_matrix, write_stored
from .method import HbvlaMatrix, h_error, quantize_matrix
from .size import (
    BitBreakdown,
    BudgetError,
    Solution,
    count_bits,
    estimate_bits,
    fallback_bits,
    fallback_type,
    model_bpw,
    solve,
    suits_hbvla,
)
from .storage import (
    HbvlaFormatError,
    base_name,
    decode_matrix,
    encode_matrix,
    hbvla_base_of,
    hbvla_bases,
    read_matrix,
    write_matrix,
)

__all__ = [
    "ABLATIONS",
    "BitBreakdown",
    "BudgetError",
    "HbvlaConfig",
    "HbvlaFormatError",
    "HbvlaMatrix",
    "HessianAccumulator",
    "Solution",
    "StoredMatrix",
    "apply",
    "base_name",
    "billm_style",
    "count_bits",
    "decode_matrix",
    "encode_matrix",
    "estimate_bits",
    "fallback_bits",
    "fallback_type",
    "h_error",
    "hbvla",
    "hbvla_base_of",
    "hbvla_bases",
    "hbvla_element",
    "input_hessian",
    "model_bpw",
    "policy_aware_hessians",
    "policy_aware_token_weights",
    "q8_0_round",
    "quantize_matrix",
    "read_matrix",
    "rounding_bound",
    "sign_alpha",
    "solve",
    "store_matrix",
    "suits_hbvla",
    "write_matrix",
    "write_stored",
]
