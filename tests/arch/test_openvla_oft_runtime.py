"""OpenVLA-OFT in the C++ runtime (``openvla-oft`` graph) against the PyTorch reference, on a miniature.

The graph under test is the *generated* one: the session fixture ``generated_oft_plugin`` (tests/conftest.py)
analyzes the miniature, plans it, renders templates/ into C++, builds the plugin and loads it, replacing the
runtime's ``openvla-oft`` architecture.

Both run on exactly the same inputs (``run_policy``'s pixel values, token ids and normalised proprio).
Every intermediate the runtime names after a PyTorch module is compared with that module's forward-hook
output: at F32 each must reach cosine >= 0.99999 and the action chunk must match to 1e-4 of the action
range. F16 and Q8_0 are held to cosine >= 0.999 (Q8_0's final action chunk against the reference run with
the weights as stored, see ``test_quantized``). Plus the pinned details: bidirectional attention (a causal
runtime must disagree), the head reading the row before each action slot, and errors instead of aborts.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from omnimodel.arch.openvla_oft import MiniatureSpec, load_policy, random_observation, run_policy, write_miniature
from omnimodel.arch.openvla_oft.export import exported_tensors, runtime_inputs, tensor_type, write_gguf
from omnimodel.arch.openvla_oft.modeling import unused_parameter_prefixes
from omnimodel.gguf.encoders import decode, encode
from omnimodel.gguf.types import GGMLType

from omnimodel import _runtime  # a broken build must fail these tests, not skip them

SPEC = MiniatureSpec(seed=0)
INSTRUCTION = "Put the black bowl on the plate"


pytestmark = pytest.mark.usefixtures("oft_generated_graph", "one_torch_thread")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("oft_runtime")


@pytest.fixture(scope="module")
def policy(workdir: Path):
    return load_policy(write_miniature(workdir / "mini", SPEC))


@pytest.fixture(scope="module")
def observation():
    return random_observation(SPEC, seed=3)


def run_with_hooks(policy, observation):
    """run_policy with every named module's outputs collected (concatenated over repeated calls)."""
    images, proprio = observation
    seen: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, module in policy.model.named_modules():
        if name:
            handles.append(
                module.register_forward_hook(
                    lambda _m, _i, out, name=name: seen.setdefault(name, []).append(out.detach().float().clone())
                )
            )
    try:
        out = run_policy(policy, images, INSTRUCTION, proprio)
    finally:
        for h in handles:
            h.remove()
    return out, {k: torch.cat(v, 0).numpy() for k, v in seen.items()}


@pytest.fixture(scope="module")
def reference(policy, observation):
    return run_with_hooks(policy, observation)


def run_runtime(path: Path, out) -> dict[str, np.ndarray]:
    with _runtime.Model(str(path), n_threads=1) as m:
        return m.run(runtime_inputs(out), capture=["*"])


@pytest.fixture(scope="module")
def f32_results(policy, reference, workdir):
    path = write_gguf(policy, workdir / "oft-f32.gguf", "f32")
    return run_runtime(path, reference[0])


def cosine(a, b) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def matched(results: dict[str, np.ndarray], hooks: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for name, value in results.items():
        if name in hooks:
            ref = hooks[name]
            assert value.size == ref.size, f"{name}: runtime {value.shape} vs reference {ref.shape}"
            out[name] = cosine(value.reshape(ref.shape), ref)
    return out


def expected_names(cfg) -> list[str]:
    names = ["vision_backbone", "projector", "language_model.model.norm", "action_head"]
    for tower, vit in (("featurizer", cfg.vision.featurizer), ("fused_featurizer", cfg.vision.fused_featurizer)):
        p = f"vision_backbone.{tower}"
        names += [p, f"{p}.patch_embed"]
        names += [f"{p}.blocks.{i}" for i in range(vit.feature_block_index + 1)]
    names += [f"language_model.model.layers.{i}" for i in range(cfg.llm.num_hidden_layers)]
    if cfg.use_proprio:
        names.append("proprio_projector")
    return names


# --------------------------------------------------------------------------------------------------
# F32 parity


def test_f32_every_intermediate_matches(policy, reference, f32_results) -> None:
    _, hooks = reference
    cos = matched(f32_results, hooks)
    missing = [n for n in expected_names(policy.config) if n not in cos]
    assert not missing, f"runtime does not expose {missing}"
    assert len(cos) >= 30
    bad = {n: c for n, c in cos.items() if not c >= 0.99999}
    assert not bad, f"cosine < 0.99999: {bad}"
    for name in cos:
        assert len(name) < 64


def test_f32_action_chunk_matches(policy, reference, f32_results) -> None:
    out, _ = reference
    stats = policy.norm_stats.action
    got = f32_results["normalized_actions"]
    assert got.shape == (policy.config.num_actions_chunk, policy.config.action_dim)
    # normalised actions live in [-1, 1]: range 2
    assert np.abs(got - out.normalized_actions).max() <= 1e-4 * 2.0
    # un-normalised in the graph (float32) from the GGUF statistics
    span = np.where(stats.mask, stats.high - stats.low, 2.0)
    assert (np.abs(f32_results["actions"] - out.actions) <= 1e-4 * span).all()


def test_action_slot_alignment(policy, reference, f32_results) -> None:
    """The head reads the final-normed hidden state one position *before* each action slot."""
    out, hooks = reference
    layout = out.layout
    start, stop = layout.head_read
    assert start == layout.num_prefix + layout.prompt_len - 1 == layout.action_slots[0] - 1
    hidden = f32_results["language_model.model.norm"]
    assert hidden.shape[0] == layout.seq_len
    read = f32_results["action_hidden_states"]
    assert cosine(read, out.action_hidden_states[0].numpy()) >= 0.99999
    np.testing.assert_array_equal(read, hidden[start:stop])
    # the slots' own rows are a different thing: a one-row shift would be caught
    assert cosine(hidden[start + 1 : stop + 1], out.action_hidden_states[0].numpy()) < 0.99


def test_attention_is_bidirectional(policy, observation, reference, workdir, generated_oft_plugin) -> None:
    """The plan's attn_mask knob flipped to causal, re-rendered and rebuilt: that graph disagrees with OFT
    and agrees with a causal reference. (The correct graph is restored afterwards.)"""
    from omnimodel.build import build_plugin
    from omnimodel.codegen.render import render

    out, hooks = reference
    plan = generated_oft_plugin.plan.with_knob("language_model.model", "attn_mask", "causal")
    render(plan, workdir / "causal_src")
    try:
        _runtime.load_plugin(build_plugin(workdir / "causal_src", workdir / "causal_build", verbose=False))
        causal = run_runtime(workdir / "oft-f32.gguf" if (workdir / "oft-f32.gguf").is_file()
                             else write_gguf(policy, workdir / "oft-f32.gguf", "f32"), out)
    finally:
        generated_oft_plugin.reload()
    assert cosine(causal["language_model.model.layers.0"], hooks["language_model.model.layers.0"]) < 0.999
    assert np.abs(causal["normalized_actions"] - out.normalized_actions).max() > 1e-2

    causal_policy = copy.deepcopy(policy)
    causal_policy.model.language_model.model.set_causal(True)
    images, proprio = observation
    causal_out = run_policy(causal_policy, images, INSTRUCTION, proprio)
    assert np.abs(causal["normalized_actions"] - causal_out.normalized_actions).max() <= 2e-4


# --------------------------------------------------------------------------------------------------
# Quantized


def stored_weight_policy(policy, outtype: str):
    """A copy of the policy whose weights are what the GGUF stores (encoded and decoded)."""
    p2 = copy.deepcopy(policy)
    sd = p2.model.state_dict()
    with torch.no_grad():
        for name, t in exported_tensors(policy).items():
            v = t.float().numpy()
            gt = tensor_type(name, v.shape, outtype)
            rows = v.reshape(-1, v.shape[-1])
            sd[name].copy_(torch.from_numpy(decode(encode(rows, gt), gt, rows.shape[-1]).reshape(v.shape)))
    return p2


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_quantized(policy, observation, reference, workdir, outtype) -> None:
    out, hooks = reference
    res = run_runtime(write_gguf(policy, workdir / f"oft-{outtype}.gguf", outtype), out)
    cos = matched(res, hooks)
    assert all(n in cos for n in expected_names(policy.config))
    # every intermediate against the float reference
    bad = {n: c for n, c in cos.items() if n != "action_head" and not c >= 0.999}
    assert not bad, f"{outtype}: cosine < 0.999: {bad}"
    # the action chunk: F16 against the float reference; Q8_0 also quantizes activations, and on this
    # 64-wide miniature its action chunk reaches ~0.9990 against float weights, so it is held to 0.999
    # against the reference run with the stored (decoded Q8_0) weights, and to 0.998 against float.
    actions = res["normalized_actions"]
    if outtype == "f16":
        assert cosine(actions, out.normalized_actions) >= 0.999
    else:
        stored_out, _ = run_with_hooks(stored_weight_policy(policy, outtype), observation)
        assert cosine(actions, stored_out.normalized_actions) >= 0.999
        assert cosine(actions, out.normalized_actions) >= 0.998


# --------------------------------------------------------------------------------------------------
# Export and errors


def test_export_contents(policy, workdir, f32_results) -> None:
    path = workdir / "oft-q8.gguf"
    write_gguf(policy, path, "q8_0")
    skip = tuple(unused_parameter_prefixes(policy.config))
    state = policy.model.state_dict()
    with _runtime.Model(str(path), n_threads=1) as m:
        rows = {r["name"]: r for r in m.tensors()}
        assert set(rows) == {k for k in state if not k.startswith(skip)}
        for name, r in rows.items():
            shape = tuple(state[name].shape)  # ggml drops leading 1s (cls_token (1, 1, D) -> (D,))
            assert tuple(r["shape"]) == shape[len(shape) - len(r["shape"]) :] and np.prod(shape) == np.prod(r["shape"])
            if len(r["shape"]) == 1 or name.endswith(("cls_token", "reg_token", "pos_embed")):
                assert r["type"] == GGMLType.F32, name
        assert rows["language_model.model.layers.0.self_attn.q_proj.weight"]["type"] == GGMLType.Q8_0
        cfg = policy.config
        assert m.meta_int("openvla-oft.num_actions_chunk") == cfg.num_actions_chunk
        assert m.meta_int("openvla-oft.causal_attention") == 0
        assert m.meta_float("openvla-oft.llm.rope_theta") == pytest.approx(cfg.llm.rope_theta)
        assert m.meta_str("openvla-oft.norm_stats.type") == policy.norm_stats.normalization.value
        assert m.meta_int("openvla-oft.vision.featurizer.reg_tokens") == cfg.vision.featurizer.reg_tokens


def test_bad_inputs_raise_instead_of_abort(policy, reference, workdir) -> None:
    out, _ = reference
    path = workdir / "oft-f32.gguf"
    good = runtime_inputs(out)
    vocab = policy.config.llm.vocab_size
    cases = {
        "pixels": dict(good, pixel_values=good["pixel_values"][:, :3]),
        "id range": dict(good, input_ids=np.where(np.arange(good["input_ids"].size) == 3, vocab, good["input_ids"])),
        "id fraction": dict(good, input_ids=good["input_ids"] + 0.5),
        "too few ids": dict(good, input_ids=good["input_ids"][:, :10]),
        "proprio": dict(good, proprio=good["proprio"][:, :3]),
        "no proprio": {k: v for k, v in good.items() if k != "proprio"},
    }
    with _runtime.Model(str(path), n_threads=1) as m:
        for what, inputs in cases.items():
            with pytest.raises(_runtime.RuntimeStatusError):
                m.run(inputs)
        # and the context still works afterwards
        np.testing.assert_allclose(m.run(good)["normalized_actions"], out.normalized_actions, atol=2e-4)
