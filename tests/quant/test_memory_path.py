"""The memory-bounded quantization pass gives the statistics and blocks of the plain one: Fisher by
per-weight hooks vs one autograd.grad over every weight, spilled passes vs one in-memory pass, matrices
quantized while the GGUF is streamed vs all quantized first; and it computes only what it needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omnimodel.arch.openvla_oft.calibration import _prepare, _token_base, action_tokens
from omnimodel.quant.calibrate import calibrate
from omnimodel.quant.pipeline import (
    QuantOptions,
    calibrate_policy,
    calibration_needs,
    finish_outcome,
    load_samples,
    make_quantizer,
    plan,
    quantize_policy,
)
from omnimodel.quant.spill import SpilledArrays
from omnimodel.quant.targets import ModelWeights, quantized_linears


@pytest.fixture(scope="module")
def demo():
    from omnimodel.arch.openvla_oft import load_policy
    from omnimodel.demo_assets import DEMO_POLICY_DIR

    torch.set_num_threads(1)
    return load_policy(DEMO_POLICY_DIR)


@pytest.fixture(scope="module")
def samples(demo):
    return load_samples(demo, QuantOptions(bpw=3.0, max_samples=6))


def plain_fisher(policy, samples, lam: float) -> dict[str, np.ndarray]:
    """The straightforward Action-Mixed Fisher: per sample, one autograd.grad over every quantized
    weight at once, squared into fp32 sums (what calibrate did before its per-weight hooks)."""
    model = policy.model
    lin = quantized_linears(model)
    params = [m.weight for m in lin.values()]
    acc = {n: torch.zeros(m.weight.shape) for n, m in lin.items()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    try:
        for s in samples:
            pixels, prompt, proprio, target = _prepare(policy, s, torch.device("cpu"), torch.float32)
            out = model(pixels, prompt, proprio)
            l_act = (out.normalized_actions.float() - torch.tensor(target, dtype=torch.float32)[None]).abs().mean()
            logits = model.language_model.lm_head(out.action_hidden_states).float()[0]
            tok = torch.tensor(action_tokens(target.reshape(-1), _token_base(policy)), dtype=torch.long)
            loss = lam * l_act + (1.0 - lam) * F.cross_entropy(logits, tok)
            for n, g in zip(lin, torch.autograd.grad(loss, params)):
                g = g.float()
                acc[n] += g * g
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return {n: (v / len(samples)).numpy().astype(np.float32) for n, v in acc.items()}


def test_hooked_fisher_is_the_plain_fisher(demo, samples) -> None:
    want = plain_fisher(demo, samples, 0.5)
    got = calibrate(demo, samples, lam=0.5)
    assert set(got.fisher) == set(want)
    for n in want:
        np.testing.assert_array_equal(got.fisher[n], want[n])  # bit for bit: same gradients, same sums


def test_spilled_passes_equal_one_pass_in_memory(demo, samples, tmp_path) -> None:
    opts = QuantOptions(bpw=3.0, max_samples=6)
    one = calibrate_policy(demo, opts, samples, log=lambda s: None)
    lines: list[str] = []
    small = QuantOptions(bpw=3.0, max_samples=6, max_accumulator_bytes=200_000)
    many = calibrate_policy(demo, small, samples, log=lines.append, spill=tmp_path / "calib")
    assert any("pass 3/" in line for line in lines)
    assert not isinstance(many.fisher, dict)  # read from disk on access, not held
    files = sorted((tmp_path / "calib" / "fisher").glob("*.npy"))
    assert len(files) == len(one.fisher) == len(many.fisher)
    assert list(many.fisher) == list(one.fisher)  # model order survives the merge
    for n in one.fisher:
        np.testing.assert_array_equal(many.fisher[n], one.fisher[n])
        np.testing.assert_array_equal(many.imatrix[n], one.imatrix[n])
        np.testing.assert_array_equal(many.features[n], one.features[n])
    # and the allocation + blocks computed from them are the same
    a = quantize_policy(demo, one, opts, log=lambda s: None)
    b = quantize_policy(demo, many, small, log=lambda s: None)
    assert a.allocation.types() == b.allocation.types()
    for n, q in a.result.tensors.items():
        np.testing.assert_array_equal(b.result.tensors[n].data, q.data)


def test_spilled_arrays_refuse_a_second_copy(tmp_path) -> None:
    store = SpilledArrays(tmp_path)
    store.put("a.b.weight", np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(store["a.b.weight"], np.ones((2, 3)))
    with pytest.raises(ValueError, match="already stored"):
        store.put("a.b.weight", np.zeros(1))


def test_streamed_blocks_are_the_eager_blocks(demo, samples, tmp_path) -> None:
    """write_gguf(encoder=MatrixQuantizer) quantizes each matrix as the file is written; the file is
    byte for byte the one written from blocks all computed first, and the report is the same."""
    from omnimodel.arch.openvla_oft.export import write_gguf

    opts = QuantOptions(bpw=2.5, max_samples=6)
    stats = calibrate_policy(demo, opts, samples, log=lambda s: None)
    eager = quantize_policy(demo, stats, opts, log=lambda s: None)
    write_gguf(demo, tmp_path / "eager.gguf", "f16", encoded=eager.result.tensors, method="actquant")
    allocation = plan(demo, stats, opts)
    quantizer = make_quantizer(demo, allocation, stats, opts)
    write_gguf(demo, tmp_path / "streamed.gguf", "f16", encoder=quantizer, method="actquant")
    assert (tmp_path / "streamed.gguf").read_bytes() == (tmp_path / "eager.gguf").read_bytes()
    streamed = finish_outcome(demo, allocation, quantizer, opts)
    assert streamed.report["tensors"] == eager.report["tensors"]
    assert streamed.report["fisher_error"] == eager.report["fisher_error"]


def test_lazy_weights_are_the_model_weights(demo) -> None:
    from omnimodel.quant import matrix_weights

    lazy, eager = ModelWeights(demo.model), matrix_weights(demo.model)
    assert list(lazy) == list(eager)
    for n in eager:
        w = lazy[n]
        assert w.dtype == np.float32 and np.array_equal(w, eager[n].numpy())
        w[0, 0] += 1.0  # a copy: editing it leaves the model alone
        assert not np.array_equal(w, eager[n].numpy())


@pytest.mark.parametrize(
    ("opts", "features", "imatrix", "fisher", "hessian"),
    [
        (QuantOptions(bpw=2.5), True, False, True, False),
        (QuantOptions(bpw=2.5, method="rtn"), True, False, False, False),
        (QuantOptions(bpw=2.5, method="rtn", hsic=False), False, False, False, False),
        (QuantOptions(allocation="a.json", method="rtn"), False, False, False, False),
        (QuantOptions(allocation="a.json", method="rtn", fisher_score=True), False, False, True, False),
        (QuantOptions(allocation="a.json", method="imatrix"), False, True, False, False),
        (QuantOptions(allocation="a.json", method="gptq"), False, False, False, True),
        (QuantOptions(allocation="a.json", method="awq"), False, True, False, False),
        (QuantOptions(allocation="a.json", importance="magnitude"), False, False, False, False),
        (QuantOptions(bpw=3, method="rtn", error_model="measured"), True, False, True, False),
        # the encoder error model scores by the Fisher and encodes with the method's own statistics
        (QuantOptions(bpw=3, method="rtn", error_model="encoder"), True, False, True, False),
        (QuantOptions(bpw=3, method="gptq", error_model="encoder", hsic=False), False, False, True, True),
        (QuantOptions(bpw=3, method="imatrix", error_model="encoder"), True, True, True, False),
    ],
)
def test_calibration_needs(opts, features, imatrix, fisher, hessian) -> None:
    n = calibration_needs(opts)
    assert (n.features, n.imatrix, n.fisher, n.hessian) == (features, imatrix, fisher, hessian)


def test_rtn_with_a_complete_allocation_reads_no_data(demo, tmp_path) -> None:
    alloc = tmp_path / "all.txt"
    alloc.write_text("*=Q4_0\n")
    lines: list[str] = []
    # the calibration data is never opened: a path that does not exist is not an error here
    opts = QuantOptions(allocation=alloc, method="rtn", calib=tmp_path / "no-such-dataset")
    assert calibrate_policy(demo, opts, log=lines.append) is None
    assert "nothing to calibrate" in lines[0]
    out = quantize_policy(demo, None, opts, log=lambda s: None)
    assert set(out.allocation.type_histogram()) == {"Q4_0"} and "fisher_error" not in out.report


def test_forward_only_statistics_match_the_full_pass(demo, samples) -> None:
    full = calibrate(demo, samples[:3])
    fwd = calibrate(demo, samples[:3], fisher=False)
    assert not fwd.fisher
    for n in full.imatrix:
        np.testing.assert_array_equal(fwd.imatrix[n], full.imatrix[n])
        np.testing.assert_array_equal(fwd.features[n], full.features[n])


def test_bf16_calibration_is_close_to_fp32(samples) -> None:
    """A policy loaded as stored (bf16) calibrates in bf16 with fp32 accumulators: not the same numbers
    as fp32, but the same statistics for every practical purpose."""
    from omnimodel.arch.openvla_oft import load_policy
    from omnimodel.demo_assets import DEMO_POLICY_DIR

    fp32 = calibrate(load_policy(DEMO_POLICY_DIR), samples)
    bf16_policy = load_policy(DEMO_POLICY_DIR, dtype=None, lazy=True)
    assert next(bf16_policy.model.parameters()).dtype == torch.bfloat16
    bf16 = calibrate(bf16_policy, samples)
    for n, f in fp32.fisher.items():
        g = bf16.fisher[n]
        assert g.dtype == np.float32
        assert np.corrcoef(f.ravel(), g.ravel())[0, 1] > 0.99, n
        assert abs(g.sum() / f.sum() - 1) < 0.1, n
        np.testing.assert_allclose(bf16.imatrix[n], fp32.imatrix[n], rtol=0.05, atol=1e-3 * fp32.imatrix[n].max())


def test_recomputed_blocks_give_the_same_statistics(samples) -> None:
    """Activation checkpointing (every transformer block recomputed in backward) changes no statistic,
    in fp32 and in the bf16 of a policy loaded as stored; the recomputation's hook calls are ignored."""
    from omnimodel.arch.openvla_oft import load_policy
    from omnimodel.demo_assets import DEMO_POLICY_DIR

    for dtype in (torch.float32, None):
        policy = load_policy(DEMO_POLICY_DIR, dtype=dtype, lazy=True)
        plain = calibrate(policy, samples[:3], recompute=False)
        again = calibrate(policy, samples[:3])
        for field in ("fisher", "imatrix", "features", "inputs"):
            a, b = getattr(plain, field), getattr(again, field)
            assert set(a) == set(b)
            for n in a:
                np.testing.assert_array_equal(b[n], a[n])
        assert "forward" not in vars(policy.model.language_model.model.layers[0])  # restored
