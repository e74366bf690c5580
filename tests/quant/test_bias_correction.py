"""`convert --bias-correction`: the quantized policy's mean action shift on the calibration samples is
subtracted from the action head's output bias before the GGUF is written.

The demo policy is converted twice at 2.25 bpw (RTN, every matrix Q2_0 from an allocation file: no
calibration statistics, the fast encoder), with and without the option. The shift is measured here
independently of the pipeline, from the written GGUFs' own blocks and bias; without the option the file is
today's, byte for byte; a family without an output bias (flow matching) and the binarization methods are
refused with one line before anything is written.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from omnimodel.arch import registry
from omnimodel.arch.weights import swapped_weights
from omnimodel.cli.main import main
from omnimodel.gguf.reader import load_raw, load_tensor, read_gguf
from omnimodel.quant.fakequant import predict_normalized
from omnimodel.quant.pipeline import QuantOptions, load_samples
from omnimodel.quant.targets import quantized_linears
from omnimodel.validate.reference import GGUFWeights

import omnimodel._runtime  # noqa: F401  a broken build must fail, not skip

OFT = registry.get("openvla-oft")
BIAS = OFT.output_bias


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The demo is tiny: a second thread only contends (two cores), as convert itself runs with one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _demo_policy(dtype=None):
    return OFT.load_policy(OFT.demo_checkpoint, dtype=dtype, lazy=True)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """The demo at Q2_0 by RTN: 'plain' without the option, 'corrected' with it."""
    tmp = tmp_path_factory.mktemp("biascorr")
    alloc = tmp / "q2.txt"
    alloc.write_text("*=Q2_0\n")
    out = {}
    for name, extra in (("plain", []), ("corrected", ["--bias-correction"])):
        out[name] = tmp / name
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(["convert", "openvla-oft", "--demo", "--method", "rtn", "--allocation", str(alloc),
                       "--out", str(out[name]), *extra])
        assert rc == 0, name
    return out


@pytest.fixture(scope="module")
def samples():
    """The calibration samples convert measured on: the demo's split, the default options."""
    return load_samples(_demo_policy(), QuantOptions(bpw=2.5))


def _gguf_shift(out: Path, samples) -> np.ndarray:
    """Per action dimension, mean (policy running the GGUF's matrices and output bias - the checkpoint's
    full-precision policy) of the normalised actions on ``samples``."""
    policy = _demo_policy()
    full = predict_normalized(policy, samples)
    weights = GGUFWeights(out / "model.gguf", OFT.gguf_name)
    values = {name: weights.get(name) for name in [*quantized_linears(policy.model), BIAS]}
    with swapped_weights(policy.model, values):
        quantized = predict_normalized(policy, samples)
    return (quantized - full).reshape(-1, full.shape[-1]).mean(axis=0)


def test_the_correction_removes_the_measured_shift(converted, samples) -> None:
    before = _gguf_shift(converted["plain"], samples)
    after = _gguf_shift(converted["corrected"], samples)
    assert np.abs(before).max() > 0.02, before  # a 2-bit policy does shift its actions
    # what is left is the bf16 bias's rounding of the shift (the demo is bf16), not the shift
    assert np.abs(after).max() < 0.02 * np.abs(before).max(), (before, after)
    report = json.loads((converted["corrected"] / "quant_report.json").read_text())["bias_correction"]
    assert report["parameter"] == BIAS and report["samples"] == len(samples)
    np.testing.assert_allclose(report["shift"], before, atol=1e-5)  # the report's shift is the file's
    assert np.abs(report["residual_shift"]).max() < 0.02 * np.abs(before).max()
    assert report["mean_abs_error_before"] == pytest.approx(np.mean(report["abs_error_before"]))
    assert report["mean_abs_error_after"] < report["mean_abs_error_before"]


def test_the_bias_is_the_only_tensor_that_changes(converted) -> None:
    """The blocks the shift was measured with are the ones written; without the option the head's bias
    is the checkpoint's, exactly, and the report has no correction."""
    plain, corrected = (read_gguf(converted[k] / "model.gguf") for k in ("plain", "corrected"))
    assert [t.name for t in plain.tensors] == [t.name for t in corrected.tensors]
    changed = [t.name for t in plain.tensors
               if load_raw(plain, t.name).tobytes() != load_raw(corrected, t.name).tobytes()]
    assert changed == [OFT.gguf_name(BIAS)]
    stored = _demo_policy().model.get_parameter(BIAS).detach().float().numpy()
    assert load_raw(plain, OFT.gguf_name(BIAS)).tobytes() == stored.tobytes()
    assert "bias_correction" not in json.loads((converted["plain"] / "quant_report.json").read_text())
    # the corrected bias is the checkpoint's minus the reported shift, in the checkpoint's dtype
    shift = json.loads((converted["corrected"] / "quant_report.json").read_text())["bias_correction"]["shift"]
    expected = (torch.from_numpy(stored).bfloat16() - torch.tensor(shift).bfloat16()).float().numpy()
    np.testing.assert_array_equal(load_tensor(corrected, OFT.gguf_name(BIAS)), expected)


def test_the_corrected_model_passes_validation(converted) -> None:
    report = json.loads((converted["corrected"] / "validation_report.json").read_text())
    assert report["passed"] and report["reference_weights"] == "gguf"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["validate", str(converted["corrected"])]) == 0  # from the output directory alone


def test_the_output_bias_is_added_last_to_every_chunk_step(samples) -> None:
    """The hook's contract, which the correction relies on: a change of the bias moves each action
    dimension of every chunk step by exactly that change (fp32, so no rounding hides a wrong entry)."""
    policy = _demo_policy(torch.float32)
    base = predict_normalized(policy, samples[:3])
    delta = torch.tensor([0.1, -0.2, 0.3, -0.4])
    bias = OFT.action_output_bias(policy)
    with torch.no_grad():
        bias += delta
    moved = predict_normalized(policy, samples[:3]) - base
    np.testing.assert_allclose(moved, np.broadcast_to(delta.numpy(), moved.shape), atol=1e-5)


def test_quantize_policy_corrects_in_memory_too(tmp_path: Path, samples) -> None:
    """The in-memory pass (``quantize_policy``) applies the same correction; in fp32 nothing of the shift
    is left but float rounding, and the blocks it returns are the ones measured with."""
    from omnimodel.quant.fakequant import fake_quantized
    from omnimodel.quant.pipeline import quantize_policy

    alloc = tmp_path / "q2.txt"
    alloc.write_text("*=Q2_0\n")
    policy = _demo_policy(torch.float32)
    full = predict_normalized(policy, samples[:8])
    opts = QuantOptions(method="rtn", allocation=alloc, bias_correction=True)
    outcome = quantize_policy(policy, None, opts, log=lambda _m: None, samples=samples[:8])
    c = outcome.bias_correction
    assert c is not None and outcome.report["bias_correction"]["shift"] == list(c.shift)
    assert np.abs(c.shift).max() > 0.02 and np.abs(c.residual).max() < 1e-5
    with fake_quantized(policy, outcome.result):
        left = (predict_normalized(policy, samples[:8]) - full).reshape(-1, full.shape[-1]).mean(axis=0)
    np.testing.assert_allclose(left, c.residual, atol=1e-6)


@pytest.mark.parametrize("family", ["pi0", "pi05"])
def test_flow_matching_families_have_no_output_bias(family: str) -> None:
    arch = registry.get(family)
    assert arch.output_bias is None and "flow-matching" in arch.no_output_bias


def _one_line_error(capsys, args: list[str], *needles: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("omnimodel convert: error: "), err
    for n in needles:
        assert n in err[0], (n, err[0])


def test_a_flow_matching_checkpoint_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    ckpt = registry.get("pi0").write_miniature(tmp_path / "ckpt")
    out = tmp_path / "out"
    _one_line_error(capsys, ["convert", "pi0", "--checkpoint", str(ckpt), "--bpw", "4", "--bias-correction",
                             "--out", str(out)], "--bias-correction does not apply to pi0", "flow-matching")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no output, no staging directory


def test_the_api_refuses_before_the_staging_directory(tmp_path: Path) -> None:
    from omnimodel.convert import convert
    from omnimodel.errors import UsageError

    with pytest.raises(UsageError, match="does not apply to pi05, a flow-matching policy"):
        convert("pi05", tmp_path / "out", demo=True, quant=QuantOptions(bpw=4, bias_correction=True))
    assert list(tmp_path.iterdir()) == []


def test_binarization_and_unquantized_conversions_are_refused(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "out")
    _one_line_error(capsys, ["convert", "openvla-oft", "--method", "sign", "--bpw", "1.4", "--bias-correction",
                             "--out", out], "not to --method sign")
    _one_line_error(capsys, ["convert", "openvla-oft", "--demo", "--bias-correction", "--out", out],
                    "applies to quantized conversions")
    assert list(tmp_path.iterdir()) == []
