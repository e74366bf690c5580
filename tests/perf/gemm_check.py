"""What the GEMM tests of every weight family (tests/perf/test_{k,i}quant_gemm.py) check the same way: one
linear layer run by the runtime, held to float64 arithmetic on the rounded activations and to ggml's own
kernel, and the proof that omnimodel's kernel (a CUSTOM op) is what multiplied the weight."""

from __future__ import annotations

import numpy as np

from omnimodel import _runtime
from omnimodel.cpu import runs_omni_gemm

U32 = 2.0**-24  # unit roundoff of float32


def run_linear(path, x, threads, profile=False):
    """(the output of ``layers.0.linear`` as (tokens, rows), the node profile or None)."""
    with _runtime.Model(str(path), n_threads=threads) as mdl:
        mdl.set_profile(profile)
        out = mdl.run({"x": x}, capture=["layers.0.linear"])
        return out["layers.0.linear"].reshape(x.shape[0], -1), (mdl.profile() if profile else None)


def weight_kernels(prof) -> list[str]:
    """The ops that read a weight: ["CUSTOM"] for omnimodel's GEMM, ["MUL_MAT"] for ggml's."""
    return [n["op"] for n in prof if n["src0_is_weight"]]


def expected_kernel(gemm: str) -> str:
    return "CUSTOM" if gemm == "omni" and runs_omni_gemm() else "MUL_MAT"


def check_sums(omni_path, ref: np.ndarray, x, want: np.ndarray, scale: np.ndarray, n_terms: int, what) -> None:
    """At 1 and 2 threads: within n_terms float32 roundings of the float64 sum ``want`` (``scale``: the sum
    of magnitudes), within twice that of ggml's own kernel ``ref``, and computed by the CUSTOM op."""
    for threads in (1, 2):
        got, prof = run_linear(omni_path, x, threads, profile=True)
        err = np.abs(got - want)
        assert (err <= n_terms * U32 * scale + 1e-30).all(), (what, threads, (err / (scale + 1e-30)).max())
        # ggml's own kernel rounds the activations identically: the two differ by summation order only
        assert (np.abs(got - ref) <= 2 * n_terms * U32 * scale + 1e-30).all(), (what, threads)
        # and it is this kernel that ran: a CUSTOM op reads the weight, no MUL_MAT does
        assert weight_kernels(prof) == ["CUSTOM"], what
