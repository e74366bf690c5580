"""Training pi0 / pi0.5 demo policies (``omnimodel train-demo --arch pi05``; the loop is ``simbench.train``).

What is this family's, following openpi / LeRobot's training where it can:

* the model is the reference ``Pi0Model`` (real module names), sized by a ``Pi0Size``; its checkpoint is
  written by ``write_miniature`` in LeRobot's layout (config.json, ``model.``-prefixed model.safetensors,
  processor pipelines), with the processors' statistics replaced by the collected dataset's (state =
  the proprio, action = the actions; mean/std/min/max/q01/q99) and a SentencePiece model that knows the
  dataset's instructions;
* a sample is one step t of an episode: every camera's image, the instruction (pi0.5: with the state
  discretised into the prompt), the normalised state and the target chunk t .. t+chunk-1 (past the
  episode's end the last action repeats), normalised and zero-padded to ``max_action_dim``;
* the loss is flow matching (``Pi0Model.flow_matching_loss``): x_t = t noise + (1 - t) actions, the
  squared error of the predicted velocity against noise - actions over the real action dimensions, with
  t ~ Beta(1.5, 1) * 0.999 + 0.001 and standard normal noise drawn from the loop's seeded generator;
* a batch holds samples of one task; pi0.5's prompts differ in length with the state's digits, so they
  are padded to the batch's longest with their mask (the prefix-LM mask then ignores the padding);
* trained weights are written in the initial checkpoint's stored names and dtypes (its tied ``lm_head``
  included), the other files copied, so ``load_policy``, ``convert`` and ``eval`` read it as a release.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omnimodel.simbench.episodes import STATISTICS_FILE, EpisodeDataset, read_manifest
from omnimodel.simbench.samples import TaskSamples

from .miniature import Pi0MiniatureSpec, write_miniature
from .normalization import ACTION_KEY, POSTPROCESSOR_FILE, PREPROCESSOR_FILE, STATE_KEY

_BETA_ALPHA, _T_SCALE, _T_OFFSET = 1.5, 0.999, 0.001  # openpi's sample_time
_DATASET_STATS = ("mean", "std", "min", "max", "q01", "q99")


@dataclass(frozen=True)
class Pi0Size:
    """Widths and depths of a demo policy: SigLIP, the PaliGemma Gemma stack and the action expert."""

    name: str
    arch: str  # "pi0" | "pi05"
    image_size: int
    vision: dict[str, int]
    paligemma: dict[str, int]
    action_expert: dict[str, int]
    chunk_size: int = 8
    num_inference_steps: int = 10
    spm_vocab_size: int = 512  # the miniature corpus plus the instructions: <= ~590 pieces are learnable
    extra: dict[str, Any] = field(default_factory=dict)  # further Pi0MiniatureSpec fields

    def miniature_spec(self, *, seed: int, num_cameras: int, state_dim: int, action_dim: int,
                       instructions: tuple[str, ...]) -> Pi0MiniatureSpec:
        return Pi0MiniatureSpec(
            kind=self.arch, layout="lerobot", seed=seed, image_size=self.image_size, num_cameras=num_cameras,
            vision=dict(self.vision), paligemma=dict(self.paligemma), action_expert=dict(self.action_expert),
            state_dim=state_dim, action_dim=action_dim, chunk_size=self.chunk_size,
            n_action_steps=self.chunk_size, num_inference_steps=self.num_inference_steps,
            spm_vocab_size=self.spm_vocab_size, instructions=instructions, expert_lm_head=False,
            **self.extra,
        )


def _sizes(arch: str) -> dict[str, Pi0Size]:
    # head_dim is shared by both stacks (their attention is joint); 8 query heads, 1 K/V head, as released
    return {
        "tiny": Pi0Size("tiny", arch, 56,
                        dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=2, intermediate_size=256,
                             patch_size=14),
                        dict(width=128, depth=2, mlp_dim=384, num_heads=8, num_kv_heads=1, head_dim=16),
                        dict(width=64, depth=2, mlp_dim=192, num_heads=8, num_kv_heads=1, head_dim=16)),
        "small": Pi0Size("small", arch, 84,
                         dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                              patch_size=14),
                         dict(width=256, depth=4, mlp_dim=768, num_heads=8, num_kv_heads=1, head_dim=32),
                         dict(width=128, depth=4, mlp_dim=384, num_heads=8, num_kv_heads=1, head_dim=32)),
    }


PI0_SIZES: dict[str, Pi0Size] = _sizes("pi0")
PI05_SIZES: dict[str, Pi0Size] = _sizes("pi05")


def _dataset_stats(dataset_root: Path) -> dict[str, dict[str, np.ndarray]]:
    """The dataset's statistics entry (OFT's schema, written by collect-demos) as state / action arrays."""
    raw = json.loads((dataset_root / STATISTICS_FILE).read_text())
    entry = next(iter(raw.values()))
    return {feature: {k: np.asarray(entry[part][k], dtype=np.float32) for k in _DATASET_STATS}
            for feature, part in ((STATE_KEY, "proprio"), (ACTION_KEY, "action"))}


def _write_statistics(ckpt: Path, stats: dict[str, dict[str, np.ndarray]]) -> None:
    """Replace the statistics in both processor pipelines' normaliser files (LeRobot keeps a copy in each)."""
    import torch
    from safetensors.torch import save_file

    flat = {f"{feature}.{k}": torch.from_numpy(v.copy()) for feature, d in stats.items() for k, v in d.items()}
    for pipeline in (PREPROCESSOR_FILE, POSTPROCESSOR_FILE):
        for step in json.loads((ckpt / pipeline).read_text())["steps"]:
            if "state_file" in step:
                save_file(flat, str(ckpt / step["state_file"]))


def init_checkpoint(out_dir: str | os.PathLike[str], size: Pi0Size, dataset_root: str | os.PathLike[str],
                    seed: int = 0) -> Path:
    """A randomly initialised LeRobot-layout checkpoint of ``size`` for the dataset's cameras, state and
    action dimensions, statistics and instructions (sorted: the vocabulary does not depend on file order)."""
    root = Path(dataset_root)
    manifest = read_manifest(root)
    spec = size.miniature_spec(seed=seed, num_cameras=len(manifest.camera_names),
                               state_dim=len(manifest.proprio_names), action_dim=len(manifest.action_names),
                               instructions=tuple(sorted(set(manifest.tasks.values()))))
    out = write_miniature(out_dir, spec)
    _write_statistics(out, _dataset_stats(root))
    return out


class Pi0ChunkSamples(TaskSamples):
    """All training samples in memory: images stay uint8; states, targets and prompts are prepared once."""

    def __init__(self, dataset: EpisodeDataset, split: str, policy: Any) -> None:
        import torch

        from .config import prompt_format

        super().__init__()
        cfg = policy.config
        chunk, fmt = cfg.chunk_size, prompt_format(cfg)
        self.states: list[np.ndarray] = []  # per episode (T, state_dim) normalised
        self.targets: list[np.ndarray] = []  # per episode (T, chunk, max_action_dim) normalised, padded
        self.prompts: list[list[list[int]]] = []  # per episode, per step: token ids
        for ep in dataset.episodes(split):
            self.add(ep)
            state = policy.norm_stats.state.normalize(torch.from_numpy(ep.proprio.astype(np.float32))).numpy()
            actions = policy.norm_stats.action.normalize(torch.from_numpy(ep.actions.astype(np.float32))).numpy()
            idx = np.minimum(np.arange(ep.num_steps)[:, None] + np.arange(chunk)[None], ep.num_steps - 1)
            target = np.zeros((ep.num_steps, chunk, cfg.max_action_dim), dtype=np.float32)
            target[:, :, : cfg.action_dim] = actions[idx]
            self.states.append(state)
            self.targets.append(target)
            if cfg.is_pi05:  # the discretised state is part of the prompt: one per step
                prompts = [policy.tokenizer.tokenize(fmt, ep.instruction, state[t],
                                                     max_length=cfg.tokenizer_max_length).ids
                           for t in range(ep.num_steps)]
            else:
                ids = policy.tokenizer.tokenize(fmt, ep.instruction, max_length=cfg.tokenizer_max_length).ids
                prompts = [ids] * ep.num_steps
            self.prompts.append(prompts)
        self.close(split)

    def batch(self, rng: np.random.Generator, batch_size: int, policy: Any, shift: int = 0) -> tuple[Any, ...]:
        """(images, image_mask, tokens, token_mask, state, actions) for ``Pi0Model.flow_matching_loss``."""
        import torch

        from .preprocess import prepare_images

        cfg = policy.config
        n_cam = len(cfg.camera_keys)
        _task, picks = self.pick(rng, batch_size)
        prepared = [prepare_images(self.views(e, t, n_cam, rng, shift), n_cam, cfg.image_size) for e, t in picks]
        images = torch.stack([p.pixels for p in prepared])
        image_mask = torch.stack([p.mask for p in prepared])
        ids = [self.prompts[e][t] for e, t in picks]
        longest = max(len(i) for i in ids)
        pad = int(cfg.pad_token_id)
        tokens = torch.tensor([i + [pad] * (longest - len(i)) for i in ids], dtype=torch.int64)
        token_mask = torch.tensor([[True] * len(i) + [False] * (longest - len(i)) for i in ids])
        state = None
        if not cfg.is_pi05:
            state = torch.zeros(batch_size, cfg.max_state_dim)
            state[:, : cfg.state_dim] = torch.from_numpy(np.stack([self.states[e][t] for e, t in picks]))
        actions = torch.from_numpy(np.stack([self.targets[e][t] for e, t in picks]))
        return images, image_mask, tokens, token_mask, state, actions


def sample_time(batch: int, generator: Any) -> Any:
    """openpi's t ~ Beta(1.5, 1) * 0.999 + 0.001 (inverse CDF of Beta(1.5, 1): u^(2/3))."""
    import torch

    u = torch.rand(batch, generator=generator)
    return _T_SCALE * u.pow(1.0 / _BETA_ALPHA) + _T_OFFSET


def save_trained(policy: Any, init_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 step: int) -> Path:
    """The trained weights under the initial checkpoint's stored names and dtypes; its other files copied."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from .checkpoint import EMBED_KEY, LEROBOT_PREFIX, LM_HEAD_KEY

    init, out = Path(init_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("model*.safetensors*"):
        stale.unlink()
    for src in init.iterdir():
        if src.is_file() and not src.name.startswith("model") and src.name != "omnimodel_training.json":
            dst = out / src.name
            if not (dst.exists() and src.samefile(dst)):
                shutil.copyfile(src, dst)
    state = {k: v.detach().cpu() for k, v in policy.model.state_dict().items()}
    stored: dict[str, torch.Tensor] = {}
    with safe_open(str(init / "model.safetensors"), framework="pt") as f:
        for key in f.keys():
            name = key[len(LEROBOT_PREFIX):] if key.startswith(LEROBOT_PREFIX) else key
            value = state.get(name)
            if value is None and name == LM_HEAD_KEY:
                value = state[EMBED_KEY]  # tied: the trained embedding is the head
            if value is None:
                value = f.get_tensor(key)  # a tensor the forward never reads (kept as initialised)
            dtype = torch.bfloat16 if f.get_slice(key).get_dtype() == "BF16" else torch.float32
            stored[key] = value.to(dtype)
    save_file({k: v.contiguous() for k, v in stored.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "omnimodel_training.json").write_text(json.dumps({"step": step, "init": str(init)}, indent=2) + "\n")
    return out


class Pi0Training:
    """The trainer adapter (``Architecture.training()``) of one of the two kinds."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sizes = PI05_SIZES if kind == "pi05" else PI0_SIZES

    def init_checkpoint(self, out_dir: str | os.PathLike[str], size: Pi0Size, dataset_root: str | os.PathLike[str],
                        seed: int = 0) -> Path:
        return init_checkpoint(out_dir, size, dataset_root, seed)

    def load(self, checkpoint_dir: str | os.PathLike[str]) -> Any:
        from .policy import load_policy

        return load_policy(checkpoint_dir)  # float32

    def samples(self, dataset: EpisodeDataset, split: str, policy: Any) -> Pi0ChunkSamples:
        return Pi0ChunkSamples(dataset, split, policy)

    def loss(self, policy: Any, batch: tuple[Any, ...], generator: Any) -> Any:
        import torch

        images, image_mask, tokens, token_mask, state, actions = batch
        noise = torch.randn(actions.shape, generator=generator)
        t = sample_time(actions.shape[0], generator)
        err = policy.model.flow_matching_loss(images, image_mask, tokens, token_mask, state, actions, noise, t)
        return err[..., : policy.config.action_dim].mean()

    def save_trained(self, policy: Any, init_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                     step: int) -> Path:
        return save_trained(policy, init_dir, out_dir, step=step)


__all__ = ["PI0_SIZES", "PI05_SIZES", "Pi0ChunkSamples", "Pi0Size", "Pi0Training", "init_checkpoint",
           "sample_time", "save_trained"]
