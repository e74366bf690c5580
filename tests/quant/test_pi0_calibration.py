"""pi0 / pi0.5 calibration: the flow-matching loss as L_act (lambda = 1), deterministic per sample, and the
quantized set exactly the matrices the actions depend on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from omnimodel.arch.pi0.calibration import Pi0Calibration, noise_level, sample_seed
from omnimodel.arch.pi0.policy import run_policy
from omnimodel.arch.registry import get
from omnimodel.quant.calibrate import calibrate
from omnimodel.quant.samples import CalibSample
from omnimodel.quant.targets import matrix_targets


def _samples(policy, n: int, seed: int = 0) -> list[CalibSample]:
    cfg = policy.config
    rng = np.random.default_rng(seed)
    return [
        CalibSample(
            images=[rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in cfg.camera_keys],
            instruction=f"pick up block {k}",
            proprio=rng.normal(size=cfg.state_dim),
            actions=rng.normal(size=(cfg.chunk_size, cfg.action_dim)),
        )
        for k in range(n)
    ]


@pytest.fixture(scope="module", params=["pi05", "pi0"])
def policy(request, tmp_path_factory):
    arch = get(request.param)
    return arch.load_policy(arch.write_miniature(Path(tmp_path_factory.mktemp(request.param)) / "ckpt"))


def test_fisher_is_the_flow_matching_loss_and_covers_every_target(policy) -> None:
    samples = _samples(policy, 2)
    stats = calibrate(policy, samples, lam=0.5, fisher=True)
    assert stats.lam == 1.0  # no LM pathway: L_AMF = L_act whatever --lambda says
    assert stats.losses["ce"] == 0.0 and stats.losses["act"] > 0.0
    names = [t.name for t in matrix_targets(policy.model)]
    assert set(stats.fisher) == set(names)
    # every quantized matrix influences the loss: none of the unused prefix weights slipped in
    assert all(float(stats.fisher[n].sum()) > 0.0 for n in names)
    assert set(stats.inputs) == {"vision", "llm", "expert"}
    # activation checkpointing of the split Gemma layers recomputes the same gradients
    plain = calibrate(policy, samples, fisher=True, recompute=False)
    for n in names:
        np.testing.assert_array_equal(stats.fisher[n], plain.fisher[n])


def test_quantized_stacks(policy) -> None:
    layers = {t.layer for t in matrix_targets(policy.model)}
    cfg = policy.config
    assert any(".vision_model.encoder.layers." in k for k in layers)
    assert sum(".gemma_expert.model.layers." in k for k in layers) == cfg.action_expert.depth
    assert sum(".language_model.layers." in k for k in layers) == cfg.paligemma.depth
    names = [t.name for t in matrix_targets(policy.model)]
    assert not any(".dense." in n or "action_" in n or "time_mlp" in n or "projector" in n for n in names)


def test_unused_prefixes_get_no_gradient(policy) -> None:
    arch = get(policy.config.kind)
    calib = Pi0Calibration()
    args, _ = calib.prepare(policy, _samples(policy, 1)[0], torch.device("cpu"), torch.float32)
    params = dict(policy.model.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    try:
        calib.losses(policy, calib.forward(policy, args), np.zeros(1))[0].backward()
        skip = tuple(arch.unused_parameter_prefixes(policy.model))
        unused = [n for n in params if n.startswith(skip)]
        assert unused, "the prefix stack's last layer has unused weights"
        for n in unused:
            g = params[n].grad
            assert g is None or float(g.abs().max()) == 0.0, n
        used = [n for n in params if not n.startswith(skip) and ".layers." in n and n.endswith("proj.weight")]
        assert all(params[n].grad is not None and float(params[n].grad.abs().max()) > 0.0 for n in used)
    finally:
        for p in params.values():
            p.requires_grad_(False)
            p.grad = None


def test_samples_are_deterministic_and_time_follows_openpi(policy) -> None:
    calib = Pi0Calibration()
    s = _samples(policy, 2)
    a1, t1 = calib.prepare(policy, s[0], torch.device("cpu"), torch.float32)
    a2, t2 = calib.prepare(policy, s[0], torch.device("cpu"), torch.float32)
    for x, y in zip(a1, a2):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y)
    assert sample_seed(s[0]) != sample_seed(s[1])
    # t ~ 0.999 Beta(1.5, 1) + 0.001: mean 0.999 * 0.6 + 0.001
    ts = np.array([noise_level(k) for k in range(4000)])
    assert ts.min() >= 0.001 and ts.max() < 1.0
    assert abs(ts.mean() - 0.6004) < 0.01
    # the normalised target chunk is what the statistics make of the raw actions
    raw = torch.tensor(s[0].actions, dtype=torch.float32)
    np.testing.assert_allclose(t1, policy.norm_stats.action.normalize(raw).numpy(), rtol=1e-6)


def test_predict_normalized_is_the_policy(policy) -> None:
    calib = Pi0Calibration()
    s = _samples(policy, 1)[0]
    args, _ = calib.prepare(policy, s, torch.device("cpu"), torch.float32)
    got = calib.predict_normalized(policy, args)
    ref = run_policy(policy, s.images, s.instruction, np.asarray(s.proprio, np.float32), seed=sample_seed(s))
    np.testing.assert_array_equal(got, ref.normalized_actions)


def test_missing_state_is_refused(policy) -> None:
    s = dataclasses.replace(_samples(policy, 1)[0], proprio=None)
    with pytest.raises(ValueError, match="robot state"):
        Pi0Calibration().prepare(policy, s, torch.device("cpu"), torch.float32)


def _write_episodes(policy, out: Path, *, action_dim: int | None = None, cameras: int | None = None) -> Path:
    from omnimodel.simbench.episodes import Episode, write_dataset

    cfg = policy.config
    rng = np.random.default_rng(3)
    n_cam = len(cfg.camera_keys) if cameras is None else cameras
    eps = [
        Episode(
            instruction="stack the cups",
            images=rng.integers(0, 256, size=(12, n_cam, 48, 48, 3), dtype=np.uint8),
            proprio=rng.normal(size=(12, cfg.state_dim)).astype(np.float32),
            actions=rng.normal(size=(12, action_dim or cfg.action_dim)).astype(np.float32) * 0.3,
            camera_names=tuple(f"cam{i}" for i in range(n_cam)),
            task="synthetic",
            source="tests/quant/test_pi0_calibration.py",
        )
        for _ in range(2)
    ]
    write_dataset(out, {"calib": eps}, "synthetic_dataset", created_by={"tool": "test"})
    return out


def test_samples_from_a_dataset_through_the_pipeline(policy, tmp_path: Path) -> None:
    from omnimodel.quant.pipeline import QuantOptions, QuantPipelineError, load_samples

    data = _write_episodes(policy, tmp_path / "ok")
    samples = load_samples(policy, QuantOptions(bpw=4.0, calib=data, steps_per_episode=2))
    cfg = policy.config
    assert len(samples) == 4
    assert all(s.actions.shape == (cfg.chunk_size, cfg.action_dim) and len(s.images) == len(cfg.camera_keys)
               for s in samples)
    stats = calibrate(policy, samples[:2], fisher=False)
    assert stats.n_samples == 2 and all(v.shape[0] == 2 for v in stats.features.values())
    # the checks speak in one line, before anything heavy
    bad = _write_episodes(policy, tmp_path / "dims", action_dim=cfg.action_dim + 1)
    with pytest.raises(QuantPipelineError, match=f"{cfg.action_dim + 1}-D"):
        load_samples(policy, QuantOptions(bpw=4.0, calib=bad))
    one_cam = _write_episodes(policy, tmp_path / "cams", cameras=1)
    with pytest.raises(QuantPipelineError, match="camera"):
        load_samples(policy, QuantOptions(bpw=4.0, calib=one_cam))
    # without --calib the family's demo split is tried (pi0: none; pi0.5: the shipped demo's, which does not
    # fit a checkpoint of other dimensions): either way the error says to pass --calib
    with pytest.raises(QuantPipelineError, match="--calib"):
        load_samples(policy, QuantOptions(bpw=4.0))


def test_header_only_inputs_match_the_loaded_policy(policy, tmp_path: Path) -> None:
    arch = get(policy.config.kind)
    ckpt = arch.write_miniature(tmp_path / "again")
    keys, _ = arch.statistics_keys(ckpt)
    key, inputs = arch.calibration_inputs(ckpt, keys[0], keys)
    loaded = Pi0Calibration().policy_inputs(arch.load_policy(ckpt))
    assert (inputs.num_images, inputs.image_size, inputs.proprio_dim, inputs.action_dim) == (
        loaded.num_images, loaded.image_size, loaded.proprio_dim, loaded.action_dim)
    np.testing.assert_array_equal(inputs.action_stats.low, loaded.action_stats.low)


def test_awq_folds_keep_the_fp_network(policy, tmp_path: Path) -> None:
    from omnimodel.quant.allocate import allocate, paper_errors
    from omnimodel.quant.awq import awq_transform, scale_groups
    from omnimodel.quant.fakequant import predict_normalized

    arch = get(policy.config.kind)
    own = arch.load_policy(arch.write_miniature(tmp_path / "awq"))  # its own copy: AWQ edits the model
    samples = _samples(own, 2)
    stats = calibrate(own, samples, fisher=False, hessian=True)
    targets = matrix_targets(own.model)
    sizes = {t.name: float(own.model.get_parameter(t.name).detach().double().pow(2).sum()) for t in targets}
    alloc = allocate(targets, paper_errors(targets, sizes), 4.0)
    groups = scale_groups(own.model)
    cfg = own.config
    # per SigLIP layer 3 groups; per Gemma layer 3 (MQA: no o_proj fold); the prefix's last layer keeps k,v only
    assert len(groups) == 3 * cfg.vision.num_hidden_layers + 3 * (cfg.paligemma.depth - 1) + 1 + 3 * cfg.action_expert.depth
    before = predict_normalized(own, samples)
    chosen = awq_transform(own.model, alloc, stats, alphas=(0.0, 0.5))
    assert any(a > 0 for a in chosen.values())
    np.testing.assert_allclose(predict_normalized(own, samples), before, atol=5e-5)


@pytest.mark.parametrize("adaptive", [False, True])
def test_gemma_norm_fold_divides_its_output(adaptive: bool) -> None:
    from omnimodel.arch.pi0.awq_groups import fold_gemma_norm
    from omnimodel.arch.pi0.modeling import GemmaRMSNorm

    torch.manual_seed(0)
    d = 16
    norm = GemmaRMSNorm(d, 1e-6, cond_dim=8 if adaptive else None).double()
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_(0, 0.5)
    x, cond = torch.randn(2, 5, d, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)

    def run() -> torch.Tensor:
        if not adaptive:
            return norm(x)
        scale, shift, _gate = norm.modulation(cond)
        return norm(x, scale, shift)

    before = run()
    gate = norm.modulation(cond)[2].clone() if adaptive else None
    s = torch.rand(d, dtype=torch.float64) + 0.5
    with torch.no_grad():
        fold_gemma_norm(norm)(s)
    torch.testing.assert_close(run(), before / s)
    if adaptive:  # the gate rows are untouched: the residual gate scales the block's output, not its input
        assert torch.equal(norm.modulation(cond)[2], gate)
