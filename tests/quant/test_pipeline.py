"""The quantization pass as convert runs it: options, calibration in memory-bounded passes, errors."""

from __future__ import annotations

import numpy as np
import pytest
from omnimodel.quant.pipeline import (
    QuantOptions,
    QuantPipelineError,
    calibrate_policy,
    layer_groups,
    load_samples,
    quantize_policy,
)


@pytest.fixture(scope="module")
def demo():
    import torch
    from omnimodel.arch.openvla_oft import load_policy
    from omnimodel.demo_assets import DEMO_POLICY_DIR

    torch.set_num_threads(1)
    return load_policy(DEMO_POLICY_DIR)


def test_calibration_in_passes_equals_one_pass(demo) -> None:
    """A 7B model calibrates layer group by layer group; the statistics must not depend on it."""
    opts = QuantOptions(bpw=3.0, max_samples=6)
    samples = load_samples(demo, opts)
    assert len(samples) == 6
    small = QuantOptions(bpw=3.0, max_samples=6, max_accumulator_bytes=100_000)
    groups = layer_groups(demo, small.max_accumulator_bytes)
    assert len(groups) > 3 and sum(len(g) for g in groups) == 30
    layers = [{n.rsplit(".", 3)[0] for n in g} for g in groups]  # whole layers stay together
    assert all(not (a & b) for i, a in enumerate(layers) for b in layers[i + 1:])
    one = calibrate_policy(demo, opts, samples, log=lambda s: None)
    many = calibrate_policy(demo, small, samples, log=lambda s: None)
    assert set(one.fisher) == set(many.fisher) == set(one.features)
    for n in one.fisher:
        np.testing.assert_allclose(many.fisher[n], one.fisher[n], rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(many.imatrix[n], one.imatrix[n], rtol=1e-6)
        np.testing.assert_allclose(many.features[n], one.features[n], rtol=1e-5, atol=1e-7)
    out = quantize_policy(demo, many, small, log=lambda s: None)
    assert abs(out.allocation.bpw - 3.0) <= 0.02 and out.report["method"] == "actquant"


def test_bad_options_and_data(demo, tmp_path) -> None:
    with pytest.raises(QuantPipelineError, match="method must be one of"):
        QuantOptions(bpw=2.5, method="nope").check()
    with pytest.raises(QuantPipelineError, match="--bpw"):
        QuantOptions().check()
    with pytest.raises(QuantPipelineError, match="lambda"):
        QuantOptions(bpw=3, lam=1.5).check()
    for tau in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(QuantPipelineError, match="--hsic-tau must be a positive number"):
            QuantOptions(bpw=3, hsic_tau=tau).check()
    with pytest.raises(QuantPipelineError, match="cannot go with --no-hsic"):
        QuantOptions(bpw=3, hsic=False, hsic_tau=2.0).check()
    with pytest.raises(QuantPipelineError, match="--hsic-tau applies to the solver's allocation"):
        QuantOptions(bpw=1.1, method="hbvla", hsic_tau=2.0).check()
    QuantOptions(bpw=2.5, hsic_tau=2.0).check()
    with pytest.raises(QuantPipelineError, match="not found"):
        load_samples(demo, QuantOptions(bpw=3, calib=tmp_path / "missing"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "dataset.json").write_text("{not json")
    with pytest.raises(QuantPipelineError, match="calibration data: .*dataset.json: not valid JSON"):
        load_samples(demo, QuantOptions(bpw=3, calib=tmp_path / "junk"))
