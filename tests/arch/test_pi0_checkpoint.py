"""pi0 / pi0.5 checkpoint loading (LeRobot and openpi-PyTorch layouts, dtypes, shards, tied tensors),
config / statistics / prompt parsing, the portable noise generator, and the loader's one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omnimodel.arch.pi0 import (
    CheckpointError,
    ConfigError,
    Pi0MiniatureSpec,
    gaussian_noise,
    load_checkpoint,
    load_policy,
    random_observation,
    real_width_spec,
    run_policy,
    write_miniature,
)
from omnimodel.arch.pi0.checkpoint import EMBED_KEY, EXPERT_LM_HEAD_KEY, LM_HEAD_KEY
from omnimodel.arch.pi0.config import Layout, NormMode, PromptFormat
from omnimodel.arch.pi0.policy import prepare_inputs
from omnimodel.arch.pi0.preprocess import resize_with_pad
from omnimodel.arch.pi0.tokenizer import discretize_state, prompt_text
from safetensors import safe_open
from safetensors.torch import load_file, save_file

TASK = "pick up the red cube"
SMALL = dict(vision=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         patch_size=14),
             paligemma=dict(width=32, depth=1, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=4),
             action_expert=dict(width=16, depth=1, mlp_dim=32, num_heads=8, num_kv_heads=1, head_dim=4))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def lerobot_dir(tmp_path_factory) -> Path:
    return write_miniature(tmp_path_factory.mktemp("pi05_lr"), Pi0MiniatureSpec(kind="pi05", seed=1, **SMALL))


@pytest.fixture()
def copy_dir(lerobot_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(lerobot_dir, tmp_path / "ckpt"))


def _actions(path: Path, spec: Pi0MiniatureSpec, **kw) -> np.ndarray:
    images, state = random_observation(spec, seed=3)
    return run_policy(load_policy(path, **kw), images, TASK, state, seed=1).normalized_actions


# ----------------------------------------------------------------------------------------------------
# Layouts and storage variants load to the same network
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pi05", "pi0"])
def test_layouts_and_storage_variants_agree(tmp_path: Path, kind: str):
    """The same seed written as LeRobot (prefixed, lm_head only, expert lm_head) and as openpi (no prefix,
    embed_tokens only, no expert lm_head, 3 shards) loads to identical parameters, hence the same network;
    bf16 storage differs only by bf16 rounding of the weights."""
    base = dict(kind=kind, seed=2, **SMALL)
    variants = {
        "lerobot": Pi0MiniatureSpec(**base),
        "openpi": Pi0MiniatureSpec(**base, layout="openpi", tied="embed_tokens", expert_lm_head=False, num_shards=3),
        "both_tied_unprefixed": Pi0MiniatureSpec(**base, tied="both", model_prefix=False),
    }
    loaded = {name: load_checkpoint(write_miniature(tmp_path / name, spec)) for name, spec in variants.items()}
    ref = loaded["lerobot"].model.state_dict()
    for name, ck in loaded.items():
        sd = ck.model.state_dict()
        assert sd.keys() == ref.keys(), name
        assert all(torch.equal(sd[k], ref[k]) for k in ref), name
    assert loaded["openpi"].config.layout is Layout.OPENPI and loaded["openpi"].config.kind == kind
    assert loaded["openpi"].config.camera_keys == ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
    bf16 = load_checkpoint(write_miniature(tmp_path / "bf16", Pi0MiniatureSpec(**base, dtype="bfloat16")))
    for k, v in bf16.model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, ref[k].to(torch.bfloat16).float()), k


def test_stored_names_follow_the_layouts(tmp_path: Path):
    lr = write_miniature(tmp_path / "lr", Pi0MiniatureSpec(kind="pi0", **SMALL))
    op = write_miniature(tmp_path / "op", Pi0MiniatureSpec(kind="pi05", layout="openpi", **SMALL))
    lr_keys, op_keys = set(load_file(lr / "model.safetensors")), set(load_file(op / "model.safetensors"))
    assert all(k.startswith("model.") for k in lr_keys)
    assert "model." + LM_HEAD_KEY in lr_keys and "model." + EMBED_KEY not in lr_keys
    assert "model." + EXPERT_LM_HEAD_KEY in lr_keys and "model.state_proj.weight" in lr_keys
    assert not any(k.startswith("model.") for k in op_keys) and "time_mlp_in.weight" in op_keys
    assert "paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.dense.weight" in op_keys
    cfg = json.loads((op / "config.json").read_text())
    assert {"action_dim", "action_horizon", "paligemma_variant", "action_expert_variant", "precision"} <= set(cfg)
    stats = json.loads((op / "assets/miniature/norm_stats.json").read_text())["norm_stats"]
    assert stats.keys() == {"state", "actions"}


def test_lerobot_processor_files(lerobot_dir: Path):
    """Statistics live in the processor pipelines' state files, named by their JSON steps."""
    pre = json.loads((lerobot_dir / "policy_preprocessor.json").read_text())
    names = [s["registry_name"] for s in pre["steps"]]
    assert names.index("normalizer_processor") < names.index("pi05_prepare_state_tokenizer_processor_step")
    step = pre["steps"][names.index("normalizer_processor")]
    with safe_open(str(lerobot_dir / step["state_file"]), "pt") as f:
        keys = set(f.keys())
    assert {"observation.state.q01", "observation.state.q99", "action.q01", "action.q99"} <= keys
    ck = load_checkpoint(lerobot_dir)
    assert ck.norm_stats.state.mode is NormMode.QUANTILES and ck.norm_stats.state.layout is Layout.LEROBOT
    with safe_open(str(lerobot_dir / step["state_file"]), "pt") as f:
        q01, q99 = f.get_tensor("observation.state.q01"), f.get_tensor("observation.state.q99")
    x = torch.tensor(np.linspace(-1, 1, q01.shape[0]), dtype=torch.float32)
    assert torch.allclose(ck.norm_stats.state.normalize(x), 2 * (x - q01) / (q99 - q01) - 1)
    y = ck.norm_stats.action.normalize(ck.norm_stats.action.unnormalize(torch.linspace(-1, 1, 7)))
    assert torch.allclose(y, torch.linspace(-1, 1, 7), atol=1e-6)


def test_openpi_normalization_formulas(tmp_path: Path):
    path = write_miniature(tmp_path / "op", Pi0MiniatureSpec(kind="pi0", layout="openpi", **SMALL))
    ck = load_checkpoint(path)
    raw = json.loads((path / "assets/miniature/norm_stats.json").read_text())["norm_stats"]
    mean, std = torch.tensor(raw["state"]["mean"]), torch.tensor(raw["state"]["std"])
    x = torch.linspace(-2, 2, mean.shape[0])
    assert ck.norm_stats.state.mode is NormMode.MEAN_STD  # openpi: z-score for pi0
    assert torch.allclose(ck.norm_stats.state.normalize(x), (x - mean) / (std + 1e-6))
    am, asd = torch.tensor(raw["actions"]["mean"]), torch.tensor(raw["actions"]["std"])
    z = torch.linspace(-1, 1, am.shape[0])
    assert torch.allclose(ck.norm_stats.action.unnormalize(z), z * (asd + 1e-6) + am)


def test_bf16_precision_stays_close_to_float32(lerobot_dir: Path):
    spec = Pi0MiniatureSpec(kind="pi05", seed=1, **SMALL)
    f32, b16 = _actions(lerobot_dir, spec), _actions(lerobot_dir, spec, precision="bfloat16")
    assert 0 < np.abs(f32 - b16).max() < 0.05 * max(1.0, np.abs(f32).max())


def test_bf16_precision_keeps_lerobot_float32_islands(lerobot_dir: Path):
    model = load_checkpoint(lerobot_dir, precision="bfloat16").model
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["paligemma_with_expert.paligemma.model.language_model.layers.0.self_attn.q_proj.weight"] == \
        torch.bfloat16
    assert dtypes["paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"] == torch.bfloat16
    for name in ("paligemma_with_expert.paligemma.model.vision_tower.vision_model.post_layernorm.weight",
                 "paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight",
                 "paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.dense.weight",
                 "paligemma_with_expert.gemma_expert.model.norm.dense.weight",
                 "action_in_proj.weight", "time_mlp_in.weight"):
        assert dtypes[name] == torch.float32, name


# ----------------------------------------------------------------------------------------------------
# Config, prompt, images, noise
# ----------------------------------------------------------------------------------------------------


def test_config_from_lerobot_json(lerobot_dir: Path):
    cfg = load_checkpoint(lerobot_dir).config
    assert cfg.kind == "pi05" and cfg.layout is Layout.LEROBOT
    assert cfg.camera_keys == ("observation.images.base_0_rgb", "observation.images.left_wrist_0_rgb")
    assert (cfg.state_dim, cfg.action_dim, cfg.max_state_dim, cfg.max_action_dim) == (8, 7, 32, 32)
    assert (cfg.chunk_size, cfg.n_action_steps, cfg.tokenizer_max_length, cfg.num_inference_steps) == (10, 5, 200, 10)
    assert cfg.paligemma.width == 32 and cfg.paligemma.vocab_size % 64 == 0 and cfg.vision.image_size == 56


def test_real_width_spec_widths():
    spec = real_width_spec("pi05", vision_depth=2, llm_layers=1)
    assert spec.image_size == 224 and spec.chunk_size == 50 and spec.vision["hidden_size"] == 1152
    assert spec.paligemma["width"] == 2048 and spec.paligemma["head_dim"] == 256 and spec.paligemma["depth"] == 1
    assert spec.action_expert["width"] == 1024 and spec.action_expert["depth"] == 1


def test_prompt_formats():
    state = np.array([-1.5, -1.0, 0.0, 0.999, 1.0], dtype=np.float32)
    # 256 bins over [-1, 1]: below -1 -> -1, -1 -> 0, 0 -> 128, at/above 1 - 2/256 -> 255
    assert discretize_state(state).tolist() == [-1, 0, 128, 255, 255]
    pi05 = prompt_text(PromptFormat("pi05", Layout.LEROBOT), "  pick_up\nthe cube ", state)
    assert pi05 == "Task: pick up the cube, State: -1 0 128 255 255;\nAction: "
    assert prompt_text(PromptFormat("pi0", Layout.LEROBOT), "pick_up the cube") == "pick_up the cube\n"
    assert prompt_text(PromptFormat("pi0", Layout.OPENPI), " pick_up the cube\n") == "pick up the cube"


def test_tokenizer_conventions(lerobot_dir: Path):
    tok = load_checkpoint(lerobot_dir).tokenizer
    prompt = tok.tokenize(PromptFormat("pi0", Layout.OPENPI), "open the door", max_length=48)
    assert prompt.ids[0] == 2 and prompt.ids[-1] == tok.encode("\n")[0] and len(tok.encode("\n")) == 1
    assert tok.encode("open")[0] == tok.encode("open the")[0]  # no dummy "▁" prefix
    assert all(len(tok.decode([i])) == 1 for i in tok.encode("0123456789"))  # digits split
    padded = tok.tokenize(PromptFormat("pi0", Layout.LEROBOT), "open the door", max_length=12, pad=True)
    assert len(padded.ids) == 12 and padded.ids[-1] == 0 and padded.mask.count(True) == len(prompt.ids)
    short = tok.tokenize(PromptFormat("pi0", Layout.LEROBOT), "open the door " * 10, max_length=6)
    assert short.truncated and len(short.ids) == 6


def test_resize_with_pad():
    img = torch.rand(3, 20, 40)
    out = resize_with_pad(img, 16)  # fits 8 x 16, 4 rows of zeros above and below
    assert out.shape == (3, 16, 16)
    assert torch.equal(out[:, :4], torch.zeros(3, 4, 16)) and torch.equal(out[:, 12:], torch.zeros(3, 4, 16))
    assert torch.allclose(out[:, 4:12], torch.nn.functional.interpolate(img[None], size=(8, 16), mode="bilinear",
                                                                        align_corners=False)[0].clamp(0, 1))
    same = torch.rand(3, 16, 16)
    assert torch.equal(resize_with_pad(same, 16), same)


def test_missing_camera_is_masked(lerobot_dir: Path):
    policy = load_policy(lerobot_dir)
    spec = Pi0MiniatureSpec(kind="pi05", seed=1, **SMALL)
    images, state = random_observation(spec, seed=3)
    x = prepare_inputs(policy, [None, images[1]], TASK, state)
    # LeRobot order: present cameras first, then the missing ones as -1 images with mask False
    assert x.image_mask.tolist() == [[True, False]] and torch.equal(x.images[0, 1], torch.full_like(x.images[0, 1], -1))
    full = run_policy(policy, images, TASK, state, seed=0).actions
    missing = run_policy(policy, [None, images[1]], TASK, state, seed=0).actions
    assert not np.allclose(full, missing)


def test_gaussian_noise_matches_its_specification():
    """An independent pure-Python SplitMix64 + Box-Muller, as a C runtime would write it."""
    mask = (1 << 64) - 1

    def splitmix(seed: int, i: int) -> int:
        z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    import math

    seed, n = 12345, 7
    want = []
    for k in range((n + 1) // 2):
        u1, u2 = (splitmix(seed, 2 * k) >> 11) * 2.0 ** -53, (splitmix(seed, 2 * k + 1) >> 11) * 2.0 ** -53
        r = math.sqrt(-2.0 * math.log1p(-u1))
        want += [r * math.cos(2 * math.pi * u2), r * math.sin(2 * math.pi * u2)]
    got = gaussian_noise(seed, (n,))
    assert got.dtype == torch.float32 and torch.equal(got, torch.tensor(want[:n], dtype=torch.float64).float())
    big = gaussian_noise(0, (100, 32, 32)).double()
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01
    assert torch.equal(gaussian_noise(3, (5, 4)), gaussian_noise(3, (20,)).reshape(5, 4))


# ----------------------------------------------------------------------------------------------------
# Errors: one line, naming the file and the tensor
# ----------------------------------------------------------------------------------------------------


def _rewrite(path: Path, edit) -> None:
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))


@pytest.mark.parametrize("case,match", [
    ("missing_tensor", r"missing tensor 'paligemma_with_expert\.gemma_expert\.model\.layers\.0\.mlp\.up_proj\.weight'"),
    ("wrong_shape", r"model\.safetensors: tensor 'model\.action_in_proj\.weight' has shape \(16, 31\)"),
    ("nan", r"model\.safetensors: tensor 'model\.time_mlp_out\.bias' contains NaN"),
    ("unexpected", r"model\.safetensors: unexpected tensor 'model\.state_proj\.weight'"),
    ("tied_differ", r"'model\.paligemma_with_expert\.paligemma\.lm_head\.weight' is stored next to"),
    ("int_tensor", r"tensor 'model\.action_out_proj\.bias' is I64"),
])
def test_tensor_errors(copy_dir: Path, case: str, match: str):
    up = "model.paligemma_with_expert.gemma_expert.model.layers.0.mlp.up_proj.weight"

    def edit(t):
        if case == "missing_tensor":
            del t[up]
        elif case == "wrong_shape":
            t["model.action_in_proj.weight"] = torch.zeros(16, 31)
        elif case == "nan":
            t["model.time_mlp_out.bias"] = torch.full_like(t["model.time_mlp_out.bias"], float("nan"))
        elif case == "unexpected":
            t["model.state_proj.weight"] = torch.zeros(16, 32)
        elif case == "tied_differ":
            t["model." + EMBED_KEY] = t["model." + LM_HEAD_KEY] + 1
        else:
            t["model.action_out_proj.bias"] = torch.zeros(32, dtype=torch.int64)

    _rewrite(copy_dir, edit)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(copy_dir)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("case,match", [
    ("no_config", r"config\.json: missing"),
    ("bad_type", r"config\.json: 'type' is 'act'; only 'pi0' and 'pi05'"),
    ("no_weights", r"neither model\.safetensors\.index\.json nor model\.safetensors"),
    ("corrupt_weights", r"model\.safetensors: cannot read safetensors file"),
    ("no_postprocessor", r"policy_postprocessor\.json: missing"),
    ("no_stats_file", r"policy_preprocessor_step_3_normalizer_processor\.safetensors: missing"),
    ("stats_lack_q99", r"missing 'observation\.state\.q99' \(needed for QUANTILES"),
    ("no_tokenizer", r"no PaliGemma tokenizer .* pass tokenizer="),
    ("widths_disagree", r"must share heads / kv heads / head_dim / depth"),
])
def test_file_errors(copy_dir: Path, case: str, match: str):
    cfg_path = copy_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    stats = copy_dir / "policy_preprocessor_step_3_normalizer_processor.safetensors"
    if case == "no_config":
        cfg_path.unlink()
    elif case == "bad_type":
        cfg_path.write_text(json.dumps(dict(cfg, type="act")))
    elif case == "no_weights":
        (copy_dir / "model.safetensors").unlink()
    elif case == "corrupt_weights":
        (copy_dir / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    elif case == "no_postprocessor":
        (copy_dir / "policy_postprocessor.json").unlink()
    elif case == "no_stats_file":
        stats.unlink()
    elif case == "stats_lack_q99":
        t = load_file(stats)
        del t["observation.state.q99"]
        save_file(t, str(stats))
    elif case == "no_tokenizer":
        (copy_dir / "tokenizer.model").unlink()
    else:
        cfg["omnimodel_overrides"]["action_expert"]["depth"] = 2
        cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=match) as info:
        load_checkpoint(copy_dir)
    assert "\n" not in str(info.value)


def test_tokenizer_from_another_path(copy_dir: Path, tmp_path: Path):
    """Real LeRobot checkpoints ship no tokenizer: the caller points at PaliGemma's."""
    moved = tmp_path / "paligemma_tokenizer.model"
    shutil.move(copy_dir / "tokenizer.model", moved)
    assert load_checkpoint(copy_dir, tokenizer=moved).tokenizer.path == moved


def test_bad_observation_inputs(lerobot_dir: Path):
    policy = load_policy(lerobot_dir)
    spec = Pi0MiniatureSpec(kind="pi05", seed=1, **SMALL)
    images, state = random_observation(spec)
    with pytest.raises(ValueError, match="2 camera"):
        run_policy(policy, images[:1], TASK, state)
    with pytest.raises(ValueError, match="state has 3 values"):
        run_policy(policy, images, TASK, state[:3])
    with pytest.raises(ValueError, match="uint8"):
        run_policy(policy, [images[0].astype(np.float32), images[1]], TASK, state)
    with pytest.raises(ValueError, match="noise must have shape"):
        run_policy(policy, images, TASK, state, noise=torch.zeros(1, 3, 32))
    with pytest.raises(ValueError, match="non-empty"):
        run_policy(policy, images, "  ", state)
