"""OpenVLA-OFT PyTorch reference: miniature checkpoint -> real loader -> forward, plus the pinned details
(bidirectional attention, action-slot alignment, un-normalisation) and the loader's error messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omnimodel.arch.openvla_oft import (
    CheckpointError,
    ConfigError,
    MiniatureSpec,
    OpenVLAOFT,
    load_checkpoint,
    load_policy,
    predict_action,
    random_observation,
    run_policy,
    unused_parameter_prefixes,
    write_miniature,
)
from omnimodel.arch.openvla_oft.config import build_config
from omnimodel.arch.openvla_oft.preprocess import images_to_pixel_values
from safetensors.torch import load_file, save_file

SPEC = MiniatureSpec(seed=0)
INSTRUCTION = "Put the black bowl on the plate"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The models are tiny: one thread is fastest and leaves the shared cores alone."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def mini_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_miniature(tmp_path_factory.mktemp("oft_mini"), SPEC)


@pytest.fixture(scope="module")
def policy(mini_dir: Path):
    return load_policy(mini_dir)


@pytest.fixture(scope="module")
def observation():
    return random_observation(SPEC, seed=1)


@pytest.fixture()
def copy_dir(mini_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(mini_dir, dst)
    return dst


# --------------------------------------------------------------------------------------------------
# Layout and forward
# --------------------------------------------------------------------------------------------------


def test_miniature_has_real_file_layout(mini_dir: Path) -> None:
    names = {p.name for p in mini_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors.index.json",
        "dataset_statistics.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer.model",
        "action_head--150000_checkpoint.pt",
        "proprio_projector--150000_checkpoint.pt",
    } <= names
    assert {f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)} <= names
    keys = set(json.loads((mini_dir / "model.safetensors.index.json").read_text())["weight_map"])
    # spot-check the real checkpoint's tensor names (reference section 1.8)
    for k in (
        "vision_backbone.featurizer.cls_token",
        "vision_backbone.featurizer.reg_token",
        "vision_backbone.featurizer.blocks.0.ls1.scale_factor",
        "vision_backbone.featurizer.blocks.2.attn.qkv.weight",
        "vision_backbone.fused_featurizer.attn_pool.latent",
        "vision_backbone.fused_featurizer.attn_pool.kv.weight",
        "vision_backbone.fused_featurizer.blocks.1.mlp.fc2.bias",
        "projector.fc3.weight",
        "language_model.model.embed_tokens.weight",
        "language_model.model.layers.1.self_attn.o_proj.weight",
        "language_model.model.layers.0.mlp.gate_proj.weight",
        "language_model.model.norm.weight",
        "language_model.lm_head.weight",
    ):
        assert k in keys, k
    assert not any("ls1" in k for k in keys if "fused_featurizer" in k)  # SigLIP has no LayerScale
    head = torch.load(mini_dir / "action_head--150000_checkpoint.pt", weights_only=True)
    assert all(k.startswith("module.model.") for k in head) and head["module.model.fc1.weight"].dtype == torch.bfloat16
    assert "module.model.mlp_resnet_blocks.1.ffn.1.weight" in head
    proprio = torch.load(mini_dir / "proprio_projector--150000_checkpoint.pt", weights_only=True)
    assert set(proprio) == {"module.fc1.weight", "module.fc1.bias", "module.fc2.weight", "module.fc2.bias"}


def test_forward_gives_action_chunk(policy, observation) -> None:
    images, proprio = observation
    actions = predict_action(policy, images, INSTRUCTION, proprio)
    assert actions.shape == (8, 7) and actions.dtype == np.float64 and np.isfinite(actions).all()

    out = run_policy(policy, images, INSTRUCTION, proprio)
    lay, cfg = out.layout, policy.config
    assert cfg.num_images == 2 and cfg.num_actions_chunk == 8 and cfg.num_action_slots == 56
    assert lay.num_prefix == 2 * 16 + 1 and lay.proprio_position == 33
    ids = out.input_ids[0].tolist()
    assert ids[0] == 1 and ids[-1] == 2 and len(ids) == lay.prompt_len + 56 + 1
    assert ids[lay.prompt_len - 1] == policy.tokenizer.empty_piece_id  # the "▁" after "Out:"
    assert lay.seq_len == 1 + 33 + (lay.prompt_len - 1) + 56 + 1
    assert out.pixel_values.shape == (1, 12, 56, 56)
    # the actions vary over the chunk and across instructions (the network is not degenerate)
    assert out.normalized_actions.std(axis=0).min() > 1e-3
    other = predict_action(policy, images, "open the top drawer of the cabinet", proprio)
    assert np.abs(other - actions).max() > 1e-3


def test_miniature_is_deterministic(tmp_path: Path, mini_dir: Path) -> None:
    again = write_miniature(tmp_path / "again", SPEC)
    for name in ("model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors"):
        a, b = load_file(mini_dir / name), load_file(again / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (mini_dir / "tokenizer.model").read_bytes() == (again / "tokenizer.model").read_bytes()
    other = write_miniature(tmp_path / "other", MiniatureSpec(seed=1))
    a, b = (
        load_file(mini_dir / "model-00001-of-00003.safetensors"),
        load_file(other / "model-00001-of-00003.safetensors"),
    )
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_loader_round_trips_every_tensor(mini_dir: Path) -> None:
    loaded = load_checkpoint(mini_dir)
    state = loaded.model.state_dict()
    on_disk: dict[str, torch.Tensor] = {}
    weight_map = json.loads((mini_dir / "model.safetensors.index.json").read_text())["weight_map"]
    for shard in sorted(set(weight_map.values())):
        on_disk.update(load_file(mini_dir / shard))
    for prefix, name in (
        ("action_head.", "action_head--150000_checkpoint.pt"),
        ("proprio_projector.", "proprio_projector--150000_checkpoint.pt"),
    ):
        for k, v in torch.load(mini_dir / name, weights_only=True).items():
            on_disk[prefix + k[len("module.") :]] = v
    assert set(on_disk) == set(state)
    for k, v in on_disk.items():
        assert torch.equal(state[k], v.float()), k  # bf16 -> fp32 is exact
    assert loaded.tensor_origin["action_head.model.fc2.weight"] == "action_head--150000_checkpoint.pt"
    assert loaded.tensor_origin["projector.fc1.weight"] == weight_map["projector.fc1.weight"]


def test_tokenizer_json_and_sentencepiece_agree(mini_dir: Path) -> None:
    fast = load_checkpoint(mini_dir).tokenizer
    slow = load_checkpoint(mini_dir, tokenizer_file="tokenizer.model").tokenizer
    assert (fast.source, slow.source) == ("tokenizer.json", "tokenizer.model")
    for text in (INSTRUCTION, "pick up the alphabet soup and place it in the basket", "Zebra 12345 café!", "x"):
        assert fast.encode_prompt(text) == slow.encode_prompt(text)
    assert fast.prompt_text("Open The Drawer") == "In: What action should the robot take to open the drawer?\nOut:"


# --------------------------------------------------------------------------------------------------
# Pinned semantics
# --------------------------------------------------------------------------------------------------


def _inputs(policy, observation, instruction: str = INSTRUCTION):
    images, proprio = observation
    out = run_policy(policy, images, instruction, proprio)
    return out.pixel_values, out.prompt_ids, out.proprio


def test_attention_is_bidirectional(policy, observation) -> None:
    model = policy.model
    pixels, prompt, proprio = _inputs(policy, observation)
    changed = prompt.clone()
    k = prompt.shape[1] - 3  # a late prompt token
    changed[0, k] = 5 if int(prompt[0, k]) != 5 else 6
    pos = model.layout(prompt.shape[1]).num_prefix + k  # its position in the LLM sequence
    with torch.no_grad():
        a = model(pixels, prompt, proprio).last_hidden_states
        b = model(pixels, changed, proprio).last_hidden_states
        # every earlier position (BOS, patches, proprio, earlier prompt) sees the later token
        assert (a[0, :pos] - b[0, :pos]).abs().amax(dim=-1).min() > 1e-6
        model.language_model.model.set_causal(True)
        try:  # the same check cannot pass under a causal mask
            a = model(pixels, prompt, proprio).last_hidden_states
            b = model(pixels, changed, proprio).last_hidden_states
            assert torch.equal(a[0, :pos], b[0, :pos])
        finally:
            model.language_model.model.set_causal(False)


def test_sequence_assembly(policy, observation) -> None:
    model = policy.model
    pixels, prompt, proprio = _inputs(policy, observation)
    seen = {}
    handle = model.language_model.model.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    try:
        with torch.no_grad():
            out = model(pixels, prompt, proprio)
    finally:
        handle.remove()
    x, lay = seen["x"][0], out.layout
    emb = model.language_model.model.embed_tokens.weight
    a0, a1 = lay.action_slots
    assert torch.equal(x[a0:a1], torch.zeros_like(x[a0:a1]))  # "empty" action embeddings
    assert torch.equal(x[lay.eos_position], emb[2])  # the stop token keeps its embedding
    assert torch.equal(x[0], emb[1])  # BOS first, then the image patches
    p0, p1 = lay.prompt_tokens
    assert torch.equal(x[p0:p1], emb[prompt[0, 1:]])
    with torch.no_grad():
        patches = model.projector(model.vision_backbone(pixels))[0]
        assert torch.equal(x[lay.patches[0] : lay.patches[1]], patches)
        assert torch.equal(x[lay.proprio_position], model.proprio_projector(proprio)[0])


def test_head_reads_the_position_before_each_action_slot(policy, observation) -> None:
    model = policy.model
    pixels, prompt, proprio = _inputs(policy, observation)
    with torch.no_grad():
        out = model(pixels, prompt, proprio)
        lay = out.layout
        # upstream: hidden[-1][:, NUM_PATCHES + NUM_PROMPT_TOKENS : ... + A], NUM_PROMPT_TOKENS = len(ids) - 1
        start = lay.num_prefix + (prompt.shape[1] - 1)
        assert lay.head_read == (start, start + 56) and start == lay.action_slots[0] - 1
        hidden = out.last_hidden_states
        assert torch.equal(model.action_head(hidden[:, start : start + 56]), out.normalized_actions)
        for shift in (-1, 1):
            shifted = model.action_head(hidden[:, start + shift : start + shift + 56])
            assert (shifted - out.normalized_actions).abs().max() > 1e-3, shift
        # the head reshapes (1, 56, D) into 8 steps of 7 concatenated slot states
        step3 = model.action_head.model(hidden[:, start + 21 : start + 28].reshape(1, -1))
        assert torch.allclose(step3, out.normalized_actions[:, 3], atol=1e-6)


def test_unnormalisation_matches_formula_and_mask(policy, observation, mini_dir: Path) -> None:
    images, proprio = observation
    out = run_policy(policy, images, INSTRUCTION, proprio)
    stats = json.loads((mini_dir / "dataset_statistics.json").read_text())[SPEC.dataset_key]
    q01, q99, mask = (np.array(stats["action"][k]) for k in ("q01", "q99", "mask"))
    x = out.normalized_actions.astype(np.float64)
    expected = np.where(mask, 0.5 * (x + 1) * (q99 - q01 + 1e-8) + q01, x)
    np.testing.assert_array_equal(out.actions, expected)
    assert not mask[-1] and np.array_equal(out.actions[:, -1], x[:, -1])  # gripper passes through
    pq01, pq99 = np.array(stats["proprio"]["q01"]), np.array(stats["proprio"]["q99"])  # no mask: all dims
    expected_p = np.clip(2 * (proprio - pq01) / (pq99 - pq01 + 1e-8) - 1, -1, 1)
    np.testing.assert_allclose(out.proprio[0].numpy(), expected_p, rtol=0, atol=1e-7)


def test_preprocess_uses_saved_bf16_normalisation(policy, mini_dir: Path) -> None:
    images, _ = random_observation(SPEC, seed=3)
    pixels = images_to_pixel_values(images, policy.config.vision, 2)
    pre = json.loads((mini_dir / "preprocessor_config.json").read_text())["tvf_normalize_params"]
    assert pre[0]["mean"][0] == 0.484375  # bf16-rounded 0.485
    x = torch.from_numpy(images[1]).permute(2, 0, 1).float() / 255
    for tower in (0, 1):
        mean = torch.tensor(pre[tower]["mean"])[:, None, None]
        std = torch.tensor(pre[tower]["std"])[:, None, None]
        assert torch.equal(pixels[0, 6 + 3 * tower : 9 + 3 * tower], (x - mean) / std)
    big, _ = random_observation(SPEC, seed=3, image_hw=(96, 128))
    assert images_to_pixel_values(big, policy.config.vision, 2).shape == (1, 12, 56, 56)


def test_unused_tensors_do_not_matter_and_hooks_fire(mini_dir: Path, observation) -> None:
    pol = load_policy(mini_dir)
    images, proprio = observation
    base = predict_action(pol, images, INSTRUCTION, proprio)
    prefixes = unused_parameter_prefixes(pol.config)
    assert "vision_backbone.featurizer.blocks.2." in prefixes and "language_model.lm_head." in prefixes
    with torch.no_grad():
        for name, p in pol.model.named_parameters():
            if name.startswith(tuple(prefixes)):
                p.add_(1.0)
    fired: dict[str, tuple] = {}
    names = [
        "vision_backbone.featurizer.blocks.1",
        "vision_backbone.featurizer.blocks.2",
        "vision_backbone.fused_featurizer.blocks.1",
        "projector",
        "proprio_projector",
        "language_model.model.layers.1",
        "language_model.model.norm",
        "action_head",
    ]
    mods = dict(pol.model.named_modules())

    def record(name: str):
        def hook(module, args, output) -> None:  # returning None keeps the output unchanged
            fired[name] = tuple(output.shape)

        return hook

    handles = [mods[n].register_forward_hook(record(n)) for n in names]
    try:
        np.testing.assert_array_equal(predict_action(pol, images, INSTRUCTION, proprio), base)
    finally:
        for h in handles:
            h.remove()
    assert "vision_backbone.featurizer.blocks.2" not in fired  # last block is never run
    assert fired["vision_backbone.featurizer.blocks.1"] == (1, 1 + 4 + 16, 32)  # CLS + 4 registers + patches
    assert fired["vision_backbone.fused_featurizer.blocks.1"] == (1, 16, 48)
    assert fired["projector"] == (1, 32, 64) and fired["proprio_projector"] == (1, 64)
    assert fired["action_head"] == (1, 8, 7)
    seq_len = pol.model.layout(len(pol.tokenizer.encode_prompt(INSTRUCTION))).seq_len
    assert fired["language_model.model.norm"] == (1, seq_len, 64)


def test_llama_matches_transformers(policy) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = policy.config.llm
    hc = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta,
        max_position_embeddings=cfg.max_position_embeddings,
    )
    hc._attn_implementation = "eager"
    hf = transformers.LlamaModel(hc).eval()
    ours = policy.model.language_model.model
    hf.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 40, cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # an all-zero additive 4-D mask = full bidirectional attention, as in the OFT transformers fork
        ref = hf(inputs_embeds=x, attention_mask=torch.zeros(1, 1, 40, 40)).last_hidden_state
        torch.testing.assert_close(ours(x), ref, rtol=1e-4, atol=1e-4)


def test_full_size_config_matches_released_checkpoint() -> None:
    """The real LIBERO config builds exactly the released tensors (reference 1.8/1.9/2.3/2.4 counts)."""
    hf = {
        "model_type": "openvla",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "use_fused_vision_backbone": True,
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None],
        "image_sizes": [224, 224],
        "image_resize_strategy": "resize-naive",
        "pad_token_id": 32000,
        "pad_to_multiple_of": 64,
        "text_config": {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16", "vocab_size": 32064},
    }
    cfg = build_config(
        hf,
        preprocessor_config=None,
        dataset_key="libero_10_no_noops",
        stats_action_dim=7,
        head_action_dim=7,
        head_hidden_dim=4096,
        head_num_blocks=2,
        proprio_dim=8,
    )
    assert (cfg.llm.hidden_size, cfg.llm.num_hidden_layers, cfg.llm.rms_norm_eps, cfg.llm.rope_theta) == (
        4096,
        32,
        1e-6,
        1e4,
    )
    assert cfg.num_prefix_embeddings == 2 * 256 + 1 and cfg.num_action_slots == 56
    with torch.device("meta"):
        state = OpenVLAOFT(cfg).state_dict()
    vla = [v for k, v in state.items() if not k.startswith(("action_head.", "proprio_projector."))]
    assert len(vla) == 982 and 2 * sum(v.numel() for v in vla) == 15_082_474_368  # index.json total_size (bf16)
    assert sum(v.numel() for k, v in state.items() if k.startswith("action_head.")) == 151_117_831
    assert sum(v.numel() for k, v in state.items() if k.startswith("proprio_projector.")) == 16_818_176
    assert state["language_model.model.embed_tokens.weight"].shape == (32064, 4096)
    assert state["vision_backbone.featurizer.pos_embed"].shape == (1, 256, 1024)
    assert state["vision_backbone.fused_featurizer.blocks.26.mlp.fc1.weight"].shape == (4304, 1152)


def test_float64_run_agrees_with_float32(mini_dir: Path, policy, observation) -> None:
    images, proprio = observation
    a32 = run_policy(policy, images, INSTRUCTION, proprio).normalized_actions
    a64 = run_policy(load_policy(mini_dir, dtype=torch.float64), images, INSTRUCTION, proprio).normalized_actions
    np.testing.assert_allclose(a32, a64, rtol=0, atol=1e-4)


def test_batched_forward_matches_single(policy, observation) -> None:
    pixels, prompt, proprio = _inputs(policy, observation)
    pixels2, prompt2, proprio2 = _inputs(policy, random_observation(SPEC, seed=7), "Put the red mug on the plate")
    assert prompt.shape == prompt2.shape
    with torch.no_grad():
        both = policy.model(torch.cat([pixels, pixels2]), torch.cat([prompt, prompt2]), torch.cat([proprio, proprio2]))
        one = policy.model(pixels2, prompt2, proprio2)
    torch.testing.assert_close(both.normalized_actions[1], one.normalized_actions[0], rtol=0, atol=1e-5)


def test_checkpoint_without_proprio(tmp_path: Path) -> None:
    spec = MiniatureSpec(seed=3, use_proprio=False, llm_layers=1)
    pol = load_policy(write_miniature(tmp_path / "noprop", spec))
    assert not (tmp_path / "noprop" / "proprio_projector--150000_checkpoint.pt").exists()
    images, _ = random_observation(spec, seed=2)
    out = run_policy(pol, images, INSTRUCTION)
    assert out.actions.shape == (8, 7) and out.layout.num_prefix == 32 and out.layout.proprio_position is None
    with pytest.raises(ValueError, match="no proprio projector"):
        predict_action(pol, images, INSTRUCTION, np.zeros(8))


def test_aloha_platform_bounds_normalisation(tmp_path: Path) -> None:
    spec = MiniatureSpec(seed=2, platform="aloha", llm_layers=1)
    pol = load_policy(write_miniature(tmp_path / "aloha", spec))
    images, proprio = random_observation(spec, seed=4)
    out = run_policy(pol, images, "fold the shirt", proprio)
    assert len(images) == 3 and out.actions.shape == (25, 14) and out.pixel_values.shape[1] == 18
    stats = json.loads((tmp_path / "aloha" / "dataset_statistics.json").read_text())[spec.dataset_key]["action"]
    lo, hi, mask = np.array(stats["min"]), np.array(stats["max"]), np.array(stats["mask"])
    x = out.normalized_actions.astype(np.float64)
    np.testing.assert_array_equal(out.actions, np.where(mask, 0.5 * (x + 1) * (hi - lo + 1e-8) + lo, x))


# --------------------------------------------------------------------------------------------------
# Errors name the problem
# --------------------------------------------------------------------------------------------------


def test_missing_shard(copy_dir: Path) -> None:
    (copy_dir / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00003\.safetensors.*missing"):
        load_checkpoint(copy_dir)


def test_corrupted_safetensors(copy_dir: Path) -> None:
    shard = copy_dir / "model-00001-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"model-00001-of-00003\.safetensors: cannot read"):
        load_checkpoint(copy_dir)


def test_non_finite_weights_are_named(copy_dir: Path) -> None:
    path = copy_dir / "action_head--150000_checkpoint.pt"
    head = torch.load(path, weights_only=True)
    head["module.model.fc2.bias"][3] = float("nan")
    torch.save(head, path)
    with pytest.raises(
        CheckpointError,
        match=r"action_head--150000_checkpoint\.pt: tensor 'action_head\.model\.fc2\.bias'"
        r" contains NaN",
    ):
        load_checkpoint(copy_dir)


def test_missing_tensor_is_named(copy_dir: Path) -> None:
    index_path = copy_dir / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    key = "projector.fc2.bias"
    shard = copy_dir / index["weight_map"].pop(key)
    tensors = load_file(shard)
    del tensors[key]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"missing tensor 'projector\.fc2\.bias'"):
        load_checkpoint(copy_dir)


def test_index_and_shard_disagree(copy_dir: Path) -> None:
    index_path = copy_dir / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["projector.fc2.bias"] = (
        "model-00003-of-00003.safetensors"
        if index["weight_map"]["projector.fc2.bias"] != "model-00003-of-00003.safetensors"
        else "model-00001-of-00003.safetensors"
    )
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"'projector\.fc2\.bias'.*model\.safetensors\.index\.json"):
        load_checkpoint(copy_dir)


def test_mismatched_action_head_shape(copy_dir: Path) -> None:
    path = copy_dir / "action_head--150000_checkpoint.pt"
    head = torch.load(path, weights_only=True)
    head["module.model.mlp_resnet_blocks.0.ffn.1.weight"] = torch.zeros(64, 65, dtype=torch.bfloat16)
    torch.save(head, path)
    with pytest.raises(
        CheckpointError,
        match=r"action_head--150000_checkpoint\.pt: tensor 'action_head\.model\."
        r"mlp_resnet_blocks\.0\.ffn\.1\.weight' has shape \(64, 65\)",
    ):
        load_checkpoint(copy_dir)


def test_action_head_wider_than_llm(copy_dir: Path) -> None:
    path = copy_dir / "action_head--150000_checkpoint.pt"
    head = torch.load(path, weights_only=True)
    for k in ("module.model.layer_norm1.weight", "module.model.layer_norm1.bias"):
        head[k] = torch.ones(7 * 65, dtype=torch.bfloat16)
    head["module.model.fc1.weight"] = torch.zeros(64, 7 * 65, dtype=torch.bfloat16)
    torch.save(head, path)
    with pytest.raises(CheckpointError, match=r"action_head--150000_checkpoint\.pt.*layer_norm1\.weight.*455"):
        load_checkpoint(copy_dir)


def test_action_dim_disagrees_with_statistics(copy_dir: Path) -> None:
    path = copy_dir / "dataset_statistics.json"
    stats = json.loads(path.read_text())
    for k in ("q01", "q99", "min", "max", "mean", "std", "mask"):
        stats[SPEC.dataset_key]["action"][k] = stats[SPEC.dataset_key]["action"][k][:6]
    path.write_text(json.dumps(stats))
    with pytest.raises(ConfigError, match=r"6-D actions but the action head predicts 7-D"):
        load_checkpoint(copy_dir)


def test_film_and_diffusion_are_refused(copy_dir: Path) -> None:
    film = copy_dir / "vision_backbone--150000_checkpoint.pt"
    torch.save({}, film)
    with pytest.raises(CheckpointError, match="FiLM"):
        load_checkpoint(copy_dir)
    film.unlink()
    index_path = copy_dir / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = copy_dir / index["weight_map"]["projector.fc1.weight"]
    tensors = load_file(shard)
    film_key = "vision_backbone.featurizer.blocks.0.scale.weight"
    tensors[film_key] = torch.zeros(32, 64, dtype=torch.bfloat16)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    index["weight_map"][film_key] = shard.name
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"'vision_backbone\.featurizer\.blocks\.0\.scale\.weight'.*FiLM"):
        load_checkpoint(copy_dir)
    torch.save({}, copy_dir / "noisy_action_projector--150000_checkpoint.pt")
    with pytest.raises(CheckpointError, match="diffusion"):
        load_checkpoint(copy_dir)


def test_config_errors(copy_dir: Path) -> None:
    path = copy_dir / "config.json"
    cfg = json.loads(path.read_text())
    path.write_text(json.dumps({**cfg, "timm_model_ids": ["vit_huge_patch14_clip_224", cfg["timm_model_ids"][1]]}))
    with pytest.raises(ConfigError, match="unsupported timm vision tower 'vit_huge_patch14_clip_224'"):
        load_checkpoint(copy_dir)
    path.write_text(json.dumps({**cfg, "use_film": True}))
    with pytest.raises(ConfigError, match="FiLM"):
        load_checkpoint(copy_dir)
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="unnorm_key 'bridge' not found"):
        load_checkpoint(copy_dir, unnorm_key="bridge")
    stats_path = copy_dir / "dataset_statistics.json"
    stats = json.loads(stats_path.read_text())
    stats_path.write_text(json.dumps({"my_robot": stats[SPEC.dataset_key]}))
    with pytest.raises(ConfigError, match="cannot tell the robot platform from dataset key 'my_robot'"):
        load_checkpoint(copy_dir)
    assert load_checkpoint(copy_dir, platform="libero").config.num_actions_chunk == 8
    stats_path.write_text(json.dumps({"my_robot": {}}))
    with pytest.raises(ConfigError, match=r"dataset_statistics.json\['my_robot'\]: missing 'action' statistics"):
        load_checkpoint(copy_dir, platform="libero")


def test_bad_inputs(policy, observation) -> None:
    images, proprio = observation
    with pytest.raises(ValueError, match=r"takes 2 image\(s\) per observation.*got 1"):
        predict_action(policy, images[:1], INSTRUCTION, proprio)
    with pytest.raises(ValueError, match=r"uint8 numpy array of shape \(H, W, 3\)"):
        predict_action(policy, [images[0].astype(np.float32), images[1]], INSTRUCTION, proprio)
    bad = proprio.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values at indices \[2\]"):
        predict_action(policy, images, INSTRUCTION, bad)
    with pytest.raises(ValueError, match="proprio has 7 values, the checkpoint expects 8"):
        predict_action(policy, images, INSTRUCTION, proprio[:7])
    with pytest.raises(ValueError, match="needs a 8-D proprio state"):
        predict_action(policy, images, INSTRUCTION, None)
    with pytest.raises(ValueError, match="non-empty"):
        predict_action(policy, images, "  ", proprio)
