"""The teacher-forced local check (docs/parity.md "Teacher forcing"): a correct runtime whose float32
drift flips one activation rounding passes; a small fault still fails, at the same first tensor.

The model is the OpenVLA-OFT miniature in float32 with one rounding point, the Q8_0 matmul of layer 0's
o_proj, so R' (float32 + 2^-24 noise) has nothing upstream to flip. The "runtime" is a correct float32
implementation of R: R computed in float32, in which one element of o_proj's input (the attention core,
captured as ``...o_proj:input``) sits a few float32 ulps of the tensor's RMS on the other side of a Q8_0
rounding boundary -- what the runtime's own exp and summation order do to an element that happens to lie
that close. Downstream it is computed correctly from that value. One flip moves the element by a whole
Q8_0 step, far above anything R' does: the global rule fails it, the local one passes it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnimodel.gguf.types import GGMLType

POINT = "language_model.model.layers.0.self_attn.o_proj"
FLIPPED = POINT + ":input"


@pytest.fixture(scope="module")
def flip_setup(tmp_path_factory, generated_oft_plugin):
    from omnimodel.analyze import analyze
    from omnimodel.arch.openvla_oft import MiniatureSpec, load_policy, write_miniature
    from omnimodel.arch.openvla_oft import export as oft_export
    from omnimodel.plan import make_plan
    from omnimodel.validate.parity import ParityCheck

    generated_oft_plugin.reload()
    root = tmp_path_factory.mktemp("teacher_forcing")
    ckpt = write_miniature(root / "ckpt", MiniatureSpec(seed=0))
    policy = load_policy(ckpt)
    plan = make_plan(analyze(ckpt), "f32").with_tensor_types({f"{POINT}.weight": GGMLType.Q8_0}, outtype="mixed")
    gguf = oft_export.write_gguf(policy, root / "mixed.gguf", "f32", types=plan.tensor_types())
    check = ParityCheck(policy, gguf)
    names = set(check.run_runtime())  # what the generated graph captures, the attention core included
    assert FLIPPED in names
    return policy, plan, check, names


def _float32_runtime(policy, plan, check, names, *, flipped: np.ndarray | None = None, eps: float | None = None):
    """R in float32 (a correct float32 implementation), optionally with o_proj's input replaced by
    ``flipped`` and downstream computed from it, optionally with layer 1's RMSNorm eps changed (a fault)."""
    from omnimodel.validate.numerics import RuntimeNumerics
    from omnimodel.validate.reference import StoreSink, TeacherForcing, run_reference

    norm = policy.model.language_model.model.layers[1].input_layernorm
    saved = norm.eps
    norm.eps = eps if eps is not None else saved
    try:
        store = StoreSink(np.float32)
        run_reference(policy, check.inputs, dtype="float32", weights=check.weights,
                      numerics=RuntimeNumerics.from_plan(plan), keep=names.__contains__, sink=store,
                      force=TeacherForcing({FLIPPED: flipped}) if flipped is not None else None)
    finally:
        norm.eps = saved
    out = store.tensors()
    if flipped is not None:
        out[FLIPPED] = flipped
    return out


def _flip_nearest(x: np.ndarray) -> tuple[np.ndarray, float]:
    """``x`` with the element nearest a Q8_0 rounding boundary (not a block's largest) mirrored across it,
    and how far it moved relative to x's RMS."""
    from omnimodel.validate.numerics import round_activations

    blocks = x.astype(np.float64).reshape(-1, 32)
    top = np.abs(blocks).max(1, keepdims=True)
    t = blocks * 127.0 / top  # ggml's Q8_0: round(x * 127 / max|x|)
    gap = np.abs(t - (np.floor(t) + 0.5))
    gap[np.abs(blocks) == top] = np.inf
    b, i = np.unravel_index(int(np.argmin(gap)), gap.shape)
    moved = blocks.copy()
    moved[b, i] = (2.0 * (np.floor(t[b, i]) + 0.5) - t[b, i]) * top[b, 0] / 127.0
    out = moved.reshape(x.shape).astype(np.float32)
    before = round_activations(torch.from_numpy(np.ascontiguousarray(x)), GGMLType.Q8_0).numpy()
    after = round_activations(torch.from_numpy(out), GGMLType.Q8_0).numpy()
    assert int((before != after).sum()) == 1  # exactly one rounding flipped, by one step
    return out, float(np.abs(out - x).max() / np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_a_rounding_flip_passes_given_the_runtimes_inputs(flip_setup) -> None:
    from omnimodel.validate.compare import compare_all

    policy, plan, check, names = flip_setup
    clean = _float32_runtime(policy, plan, check, names)
    assert check.validate(clean, plan).passed  # the float32 implementation itself is correct
    flipped, move = _flip_nearest(clean[FLIPPED])
    assert move < 1e-5  # a float32-sized difference of the attention core
    runtime = _float32_runtime(policy, plan, check, names, flipped=flipped)

    refs = check.references(plan, set(runtime))
    old, _ = compare_all(runtime, refs.emulating.tensors, check.tolerance, noise=refs.noise)
    first_old = next(r for r in old if not r.passed)
    assert first_old.name == POINT.rsplit(".", 1)[0]  # the old rule: o_proj's output (self_attn) fails
    assert first_old.error > 20 * first_old.bound

    report = check.validate(runtime, plan)
    assert report.passed, report.first_failure
    attn = report.result(first_old.name)
    assert attn.passed_locally and attn.local_error < attn.local_bound / 4
    assert report.result(FLIPPED).passed and not report.result(FLIPPED).passed_locally  # F32 core: global
    assert sum(r.passed_locally for r in report.results) >= 3  # everything downstream of the flip


@pytest.mark.parametrize("flip", [False, True])
def test_a_small_fault_still_fails_at_the_same_tensor(flip_setup, flip: bool) -> None:
    """RMSNorm eps 1e-5 for 1e-6 in layer 1 (9e-6 relative RMS at its first capture, 6x the bound):
    without a flip both rules name it; behind the flip the old rule names the flip instead, the new
    rule the fault."""
    policy, plan, check, names = flip_setup
    flipped = None
    if flip:
        flipped, _ = _flip_nearest(_float32_runtime(policy, plan, check, names)[FLIPPED])
    runtime = _float32_runtime(policy, plan, check, names, flipped=flipped, eps=1e-5)
    report = check.validate(runtime, plan)
    first = report.first_failure
    assert not report.passed and first is not None
    assert first.name == "language_model.model.layers.1.self_attn.o_proj:input", first
    assert first.local_error > first.local_bound  # wrong given correct inputs: the local check fails it too
    assert all(r.passed for r in report.results[: report.results.index(first)])
