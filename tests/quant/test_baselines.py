from __future__ import annotations

import numpy as np
import pytest
from omnimodel.quant import calibrate, plan_allocation, quantize_matrices
from omnimodel.quant.gptq import h_error, quantize_gptq
from omnimodel.quant.imatrix import quantize_imatrix
from omnimodel.quant.rtn import quantize_rtn


def _correlated(n=768, rows=32, seed=0):  # several 256-blocks: GPTQ feeds errors forward across them
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n)) / np.sqrt(n)
    X = rng.normal(size=(2048, n)) @ (np.eye(n) + 0.9 * A) * rng.gamma(1.0, 1.0, n)
    return (rng.normal(size=(rows, n)) * 0.02).astype(np.float32), X.T @ X / len(X)


@pytest.mark.parametrize("t", ["Q8_0", "Q4_K", "Q2_K", "IQ4_XS"])
def test_gptq_lowers_the_output_error(t):
    w, H = _correlated()
    g = quantize_gptq(w, t, H)
    n = w.shape[1]
    im = h_error(w, quantize_imatrix(w, t, np.diag(H)).values(n), H)
    rtn = h_error(w, quantize_rtn(w, t).values(n), H)
    assert g.errors["h"] < im < rtn * 1.0001
    assert abs(h_error(w, g.values(n), H) - g.errors["h"]) < 1e-9 * g.errors["h"]


def test_gptq_pads_and_handles_dead_inputs():
    w, H = _correlated(300)
    H[:, 5] = H[5, :] = 0.0  # an input that is always zero
    g = quantize_gptq(w, "Q4_K", H)
    assert g.pad_to == 512 and g.data.shape == (32, 2 * 144) and np.isfinite(g.errors["h"])


def test_baselines_in_the_pipeline(calibrated):
    st = calibrate(calibrated.policy, calibrated.samples[:3], hessian=True)
    name = "language_model.model.layers.0.mlp.down_proj.weight"
    assert st.hessian[name].shape == (512, 512)
    np.testing.assert_allclose(np.diag(st.hessian[name]), st.imatrix[name], rtol=1e-5)
    alloc = plan_allocation(calibrated.targets, calibrated.weights, calibrated.stats, 4.0)
    res = {m: quantize_matrices(calibrated.weights, alloc, m, st) for m in ("rtn", "imatrix", "gptq")}

    # summed over the matrices, the output-error proxy orders as the methods should
    def total_h(r):
        return sum(
            h_error(calibrated.weights[n], q.values(calibrated.weights[n].shape[1]), st.hessian[n])
            for n, q in r.tensors.items()
        )

    h = {m: total_h(r) for m, r in res.items()}
    assert h["gptq"] < h["imatrix"] < h["rtn"]
    with pytest.raises(ValueError, match="hessian"):
        quantize_matrices(calibrated.weights, alloc, "gptq", calibrated.stats)


def test_awq_preserves_the_fp_network_and_lowers_the_proxy(fresh_miniature):
    import torch
    from omnimodel.quant import matrix_targets, matrix_weights
    from omnimodel.quant.awq import awq_transform, scale_groups, search_scales
    from omnimodel.quant.fakequant import predict_normalized

    pol, samples = fresh_miniature(3)  # its own copy: AWQ edits the model
    st = calibrate(pol, samples, fisher=False, hessian=True)
    weights = {k: v.numpy() for k, v in matrix_weights(pol.model).items()}
    from omnimodel.quant.allocate import allocate, paper_errors

    tg = matrix_targets(pol.model)
    alloc = allocate(tg, paper_errors(tg, {n: float((w.astype(float) ** 2).sum()) for n, w in weights.items()}), 4.0)
    types = {t.name: t.type for t in alloc.tensors}
    groups = scale_groups(pol.model)
    assert len(groups) == 2 * 2 * 3 + 2 * 4  # 3 per used ViT block, 4 per Llama layer
    for g in groups[:4]:
        alpha, _, errs = search_scales(weights, g, types, st, (0.0, 0.5, 1.0))
        assert errs[alpha] <= errs[0.0]  # alpha = 0 is plain RTN: the search can only improve on it
    before = predict_normalized(pol, samples)
    chosen = awq_transform(pol.model, alloc, st, alphas=(0.0, 0.5))
    assert set(chosen) == {g.key for g in groups} and any(a > 0 for a in chosen.values())
    after = predict_normalized(pol, samples)
    np.testing.assert_allclose(after, before, atol=2e-5)  # the fold leaves the fp network unchanged
    changed = matrix_weights(pol.model)
    assert any(not torch.equal(changed[n], torch.from_numpy(weights[n])) for n in weights)
