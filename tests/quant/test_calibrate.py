from __future__ import annotations

import numpy as np
import pytest
import torch
from omnimodel.quant import CalibStats, calibrate
from omnimodel.arch.openvla_oft.calibration import action_tokens
from omnimodel.quant.samples import chunk_targets, samples_from_episodes
from omnimodel.quant.targets import quantized_linears


def test_targets_are_vision_and_llm_linears_only(calibrated):
    names = [t.name for t in calibrated.targets]
    assert names and all(n.endswith(".weight") for n in names)
    assert all(
        n.startswith(
            (
                "vision_backbone.featurizer.blocks.",
                "vision_backbone.fused_featurizer.blocks.",
                "language_model.model.layers.",
            )
        )
        for n in names
    )
    cfg = calibrated.policy.config
    # the last ViT block is never run by OFT, so it is neither calibrated nor quantized
    last = cfg.vision.featurizer.depth - 1
    assert not any(n.startswith(f"vision_backbone.featurizer.blocks.{last}.") for n in names)
    assert len(names) == 2 * 7 + 2 * 2 * 4  # 2 LLM layers x 7, 2 towers x 2 used blocks x 4


def test_shapes_and_non_negativity(calibrated):
    st = calibrated.stats
    lin = quantized_linears(calibrated.policy.model)
    assert set(st.fisher) == set(st.imatrix) == set(st.features) == set(lin)
    for n, m in lin.items():
        assert st.imatrix[n].shape == (m.in_features,) and st.imatrix[n].dtype == np.float32
        assert st.fisher[n].shape == tuple(m.weight.shape) and st.fisher[n].dtype == np.float32
        assert np.all(st.imatrix[n] >= 0) and np.all(st.fisher[n] >= 0)
        assert np.all(np.isfinite(st.fisher[n])) and st.fisher[n].sum() > 0
        assert st.features[n].shape[0] == st.n_samples
    assert set(st.inputs) == {"featurizer", "fused_featurizer", "llm"}
    cfg = calibrated.policy.config
    assert st.actions.shape == (st.n_samples, cfg.num_actions_chunk * cfg.action_dim)


def test_imatrix_is_mean_squared_input(calibrated):
    """E[x_j^2] over every token, checked against an independent hook on one LLM matrix."""
    pol = calibrated.policy
    name = "language_model.model.layers.1.mlp.down_proj.weight"
    mod = quantized_linears(pol.model)[name]
    seen = []
    h = mod.register_forward_hook(lambda m, a, o: seen.append(a[0].detach().reshape(-1, a[0].shape[-1]).double()))
    try:
        st = calibrate(pol, calibrated.samples[:2], fisher=False)
    finally:
        h.remove()
    x = torch.cat(seen)
    np.testing.assert_allclose(st.imatrix[name], (x * x).mean(0).numpy(), rtol=1e-5)
    assert st.fisher == {}


def test_lambda_limits_and_blend(calibrated):
    pol, samples, st = calibrated.policy, calibrated.samples, calibrated.stats
    f1 = calibrate(pol, samples, lam=1.0).fisher
    f0 = calibrate(pol, samples, lam=0.0).fisher
    for n in st.fisher:
        np.testing.assert_allclose(f1[n], st.fisher_act[n], rtol=1e-4, atol=1e-12)
        np.testing.assert_allclose(f0[n], st.fisher_ce[n], rtol=1e-4, atol=1e-12)
    n = "language_model.model.layers.0.self_attn.q_proj.weight"
    # the square is of the blended gradient: F(1/2) is not the blend of the two Fishers, but it is bounded by it
    # (Cauchy-Schwarz: (a/2 + b/2)^2 <= a^2/2 + b^2/2)
    blend = 0.5 * (st.fisher_act[n] + st.fisher_ce[n])
    assert np.all(st.fisher[n] <= blend * (1 + 1e-4) + 1e-12)
    assert not np.allclose(st.fisher[n], blend)
    with pytest.raises(ValueError, match="lambda"):
        calibrate(pol, samples[:1], lam=1.5)


def test_action_tokens_follow_openvla():
    base = 32000
    tok = action_tokens(np.array([-1.0, -0.999, 0.0, 1.0, 2.0]), base)
    assert tok.tolist() == [base - 1, base - 1, base - 128, base - 256, base - 256]


def test_save_load_roundtrip(calibrated, tmp_path):
    st = calibrated.stats
    st.save(tmp_path / "calib.npz")
    back = CalibStats.load(tmp_path / "calib.npz")
    assert back.n_samples == st.n_samples and back.lam == st.lam
    for n in st.fisher:
        np.testing.assert_array_equal(back.fisher[n], st.fisher[n])
        np.testing.assert_array_equal(back.imatrix[n], st.imatrix[n])
    np.testing.assert_array_equal(back.actions, st.actions)


class _Ep:
    def __init__(self, T: int) -> None:
        self.num_steps = T
        self.instruction = "open the drawer"
        self.actions = np.arange(T * 4, dtype=np.float32).reshape(T, 4)
        self.proprio = np.zeros((T, 4), np.float32)

    def observation(self, t):
        return [np.zeros((8, 8, 3), np.uint8)], self.proprio[t]


def test_episode_adapter():
    a = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_array_equal(chunk_targets(a, 4, 3), a[[4, 5, 5]])
    s = samples_from_episodes([_Ep(20), _Ep(3)], chunk=5, steps_per_episode=4)
    assert len(s) == 4 + 3
    assert all(x.actions.shape == (5, 4) for x in s)
    assert samples_from_episodes([_Ep(20)], chunk=5, max_samples=2).__len__() == 2


def test_subset_passes_equal_one_full_pass(calibrated):
    """Memory-aware calibration: disjoint subsets of matrices per pass give the full pass's statistics."""
    pol, samples, st = calibrated.policy, calibrated.samples, calibrated.stats
    names = sorted(st.fisher)
    part = [n for n in names if ".layers.1." in n]
    sub = calibrate(pol, samples, lam=0.5, only=part)
    assert set(sub.fisher) == set(part)
    for n in part:
        np.testing.assert_allclose(sub.fisher[n], st.fisher[n], rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(sub.imatrix[n], st.imatrix[n], rtol=1e-6)
    with pytest.raises(ValueError, match="not quantized"):
        calibrate(pol, samples[:1], only=["language_model.lm_head.weight"])
