"""Training OpenVLA-OFT demo policies (``omnimodel train-demo``; the loop is ``simbench.train.train``).

What is OFT's here, following its fine-tuning recipe where it can:

* the model is the reference ``OpenVLAOFT`` (real module names), sized by a ``ModelSize``; its checkpoint
  directory comes from ``write_miniature`` (same file layout, tokenizer, configs) with
  ``dataset_statistics.json`` replaced by the collected dataset's, and a tokenizer trained on the
  dataset's instructions, so prompts are whole words, not byte fallback;
* a sample is one step t of an episode: both camera images, the instruction, the proprio state, and
  the target chunk = actions t .. t+chunk-1 (past the episode end, the last action repeats);
* actions and proprio are normalised with the q01/q99 bounds (BOUNDS_Q99), loss = mean |pred - target|
  over the normalised chunk, as OFT's L1-regression head is trained;
* a batch holds samples of one task, so every prompt in it has the same length (no padding needed);
* trained weights are written back in the checkpoint layout (one ``model.safetensors``, the head and
  proprio projector as DDP-style ``.pt`` files) so ``load_policy`` and the evaluator load them as is.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from omnimodel.simbench.episodes import STATISTICS_FILE, EpisodeDataset, read_manifest
from omnimodel.simbench.samples import TaskSamples

from .config import ConfigError, NormalizationType
from .normalization import parse_norm_stats


@dataclass(frozen=True)
class ModelSize:
    """Widths and depths of both ViT towers (kept equal here) and the Llama stack."""

    arch: ClassVar[str] = "openvla-oft"  # the family whose trainer builds it (simbench.train.trainer_for)

    name: str
    image_size: int
    vit_dim: int
    vit_depth: int  # the last block is never read (OFT reads block depth-2)
    vit_heads: int
    llm_hidden: int
    llm_layers: int
    llm_heads: int

    def miniature_spec(self, seed: int = 0, instructions: tuple[str, ...] = (), proprio_dim: int | None = None) -> Any:
        from omnimodel.arch.openvla_oft import MiniatureSpec

        vit = dict(
            embed_dim=self.vit_dim, depth=self.vit_depth, num_heads=self.vit_heads, mlp_hidden_dim=4 * self.vit_dim
        )
        return MiniatureSpec(
            seed=seed,
            platform="metaworld",
            image_size=self.image_size,
            dino=vit,
            siglip=dict(vit),
            llm_hidden=self.llm_hidden,
            llm_intermediate=int(self.llm_hidden * 8 / 3) // 8 * 8,  # Llama's ~8/3 ratio
            llm_layers=self.llm_layers,
            llm_heads=self.llm_heads,
            num_shards=1,
            proprio_dim=proprio_dim,
            instructions=tuple(instructions),
            # With the instructions in the corpus a larger vocabulary turns their words into whole pieces
            # (pick-place's prompt: 38 -> 27 tokens); 400 stays the default so plain miniatures don't change.
            spm_vocab_size=600 if instructions else 400,
        )


SIZES: dict[str, ModelSize] = {
    s.name: s
    for s in (
        ModelSize("tiny", 56, 64, 3, 2, 128, 2, 4),
        ModelSize("small", 84, 128, 5, 4, 256, 4, 4),
        # small's widths and depths at tiny's 56 px: 5.5x tiny's parameters at ~60 % of small's step
        # time, the size that trains within an hour of one core (the mt9 demo policy, docs/simbench.md)
        ModelSize("small56", 56, 128, 5, 4, 256, 4, 4),
        ModelSize("base", 84, 192, 7, 6, 384, 6, 6),
        # tiny's towers with a Llama as wide as the realwidth benchmark's backbone (576, head_dim 64): the
        # demo whose language matrices are wide enough for HBVLA's ~1.3 bpw (its per-row and per-column
        # costs spread over 576-1536 weights; tiny's 128 cannot go below ~1.85)
        ModelSize("wide56", 56, 64, 3, 2, 576, 1, 9),
    )
}


def init_checkpoint(
    out_dir: str | os.PathLike[str], size: ModelSize, dataset_root: str | os.PathLike[str], seed: int = 0
) -> Path:
    """A fresh (randomly initialised) checkpoint of ``size`` whose statistics are the dataset's and whose
    tokenizer knows the dataset's instructions (sorted, so the vocabulary does not depend on file order)."""
    from omnimodel.arch.openvla_oft import write_miniature

    manifest = read_manifest(dataset_root)
    instructions = tuple(sorted(set(manifest.tasks.values())))
    out = write_miniature(out_dir, size.miniature_spec(seed, instructions, len(manifest.proprio_names) or None))
    shutil.copyfile(Path(dataset_root) / STATISTICS_FILE, out / STATISTICS_FILE)
    return out


def _bounds_normalize(x: np.ndarray, stats: Any) -> np.ndarray:
    """OFT's BOUNDS_Q99 normalisation (the statistics' low/high are q01/q99), clipped to [-1, 1]."""
    scaled = np.where(stats.mask, 2.0 * (x - stats.low) / (stats.high - stats.low + 1e-8) - 1.0, x)
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


class ChunkSamples(TaskSamples):
    """All training samples in memory: images stay uint8, targets are normalised once."""

    def __init__(self, dataset: EpisodeDataset, split: str, policy: Any) -> None:
        super().__init__()
        cfg = policy.config
        chunk = cfg.num_actions_chunk
        self.prompts: dict[str, list[int]] = {}
        self.targets: list[np.ndarray] = []  # per episode (T, chunk, A) normalised
        self.proprio: list[np.ndarray] = []  # per episode (T, P) normalised
        for ep in dataset.episodes(split):
            self.add(ep)
            a = _bounds_normalize(ep.actions.astype(np.float64), policy.norm_stats.action)
            idx = np.minimum(np.arange(ep.num_steps)[:, None] + np.arange(chunk)[None], ep.num_steps - 1)
            self.targets.append(a[idx])
            self.proprio.append(_bounds_normalize(ep.proprio.astype(np.float64), policy.norm_stats.proprio))
            self.prompts.setdefault(ep.task, policy.tokenizer.encode_prompt(ep.instruction))
        self.close(split)

    def batch(
        self, rng: np.random.Generator, batch_size: int, policy: Any, shift: int = 0
    ) -> tuple[Any, Any, Any, Any]:
        import torch

        from omnimodel.arch.openvla_oft.preprocess import images_to_pixel_values

        cfg = policy.config
        task, picks = self.pick(rng, batch_size)
        pixels = torch.cat(
            [images_to_pixel_values(self.views(e, t, cfg.num_images, rng, shift), cfg.vision, cfg.num_images)
             for e, t in picks]
        )
        prompt = torch.tensor([self.prompts[task]] * batch_size, dtype=torch.long)
        proprio = torch.from_numpy(np.stack([self.proprio[e][t] for e, t in picks]))
        target = torch.from_numpy(np.stack([self.targets[e][t] for e, t in picks]))
        return pixels, prompt, proprio, target


_CONFIG_FILES = (
    "config.json",
    "preprocessor_config.json",
    "dataset_statistics.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def save_trained(policy: Any, init_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, step: int) -> Path:
    """Weights in the checkpoint layout: VLA tensors bf16 in model.safetensors (as released), head bf16,
    proprio projector fp32; the non-weight files copied from the initial checkpoint."""
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The loader refuses a directory with two head files or an index next to a single file: clear old ones.
    for pattern in ("model*.safetensors*", "action_head--*_checkpoint.pt", "proprio_projector--*_checkpoint.pt"):
        for stale in out.glob(pattern):
            stale.unlink()
    for name in _CONFIG_FILES:
        src, dst = Path(init_dir) / name, out / name
        if src.is_file() and not (dst.exists() and src.samefile(dst)):  # re-saving in place: keep them
            shutil.copyfile(src, dst)
    state = {k: v.detach().cpu() for k, v in policy.model.state_dict().items()}
    vla = {
        k: v.to(torch.bfloat16).contiguous()
        for k, v in state.items()
        if not k.startswith(("action_head.", "proprio_projector."))
    }
    save_file(vla, str(out / "model.safetensors"), metadata={"format": "pt"})
    head = {
        "module." + k[len("action_head.") :]: v.to(torch.bfloat16)
        for k, v in state.items()
        if k.startswith("action_head.")
    }
    torch.save(head, out / f"action_head--{step}_checkpoint.pt")
    proprio = {
        "module." + k[len("proprio_projector.") :]: v.float()
        for k, v in state.items()
        if k.startswith("proprio_projector.")
    }
    if proprio:
        torch.save(proprio, out / f"proprio_projector--{step}_checkpoint.pt")
    (out / "omnimodel_training.json").write_text(json.dumps({"step": step, "init": str(init_dir)}, indent=2) + "\n")
    return out


def _shared_proprio_bounds_equal(old: Path, new: Path, count: int) -> bool:
    """Whether both statistics files bound the first ``count`` proprio values alike (same normalisation)."""
    try:
        a, b = json.loads(old.read_text()), json.loads(new.read_text())
        shared = a.keys() & b.keys()
        bounds = [[parse_norm_stats(s, key, NormalizationType.BOUNDS_Q99, str(f), need_proprio=True).proprio
                   for s, f in ((a, old), (b, new))] for key in shared]
    except (ConfigError, KeyError, TypeError, ValueError):
        return False
    return bool(shared) and all(np.allclose(x.low[:count], y.low[:count]) and np.allclose(x.high[:count], y.high[:count])
                                for x, y in bounds)


def extend_state(init_dir: str | os.PathLike[str], dataset_root: str | os.PathLike[str],
                 out_dir: str | os.PathLike[str]) -> Path:
    """``init_dir`` as the starting point for a dataset whose proprio state has more values than the
    checkpoint projects: a copy in ``out_dir`` whose proprio projector takes the new values with zero
    weights and whose statistics are the dataset's, so the copy computes exactly what the checkpoint did
    (the new values are appended after the old ones, e.g. ``collect-demos --object-state`` after
    ``--goal-state``) until training teaches it to use them. ``init_dir`` itself when nothing is missing."""
    import torch

    from omnimodel.errors import UsageError

    init, out = Path(init_dir), Path(out_dir)
    wanted = len(read_manifest(dataset_root).proprio_names)
    heads = sorted(init.glob("proprio_projector--*_checkpoint.pt"))
    if len(heads) != 1 or not wanted:
        return init  # no proprio input (or no state): nothing to extend; the loader checks the rest
    try:
        projector = torch.load(heads[0], map_location="cpu", weights_only=True)
        fc1 = projector["module.fc1.weight"]
    except Exception as e:  # noqa: BLE001  a truncated or foreign file: one line naming it, not a traceback
        raise UsageError(f"--init {init}: cannot read {heads[0].name} ({' '.join(str(e).split())[:200]})") from e
    have = int(fc1.shape[1])
    if have == wanted:
        return init
    if have > wanted:
        raise UsageError(f"--init {init}: the checkpoint projects a {have}-D proprio state, the dataset has only "
                         f"{wanted} values")
    if not _shared_proprio_bounds_equal(init / STATISTICS_FILE, Path(dataset_root) / STATISTICS_FILE, have):
        print(f"note: the dataset's statistics of the first {have} proprio values differ from the checkpoint's; "
              "the extended policy starts close to, not equal to, the checkpoint", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    for f in init.iterdir():
        if f.is_file() and f != heads[0]:
            shutil.copyfile(f, out / f.name)
    shutil.copyfile(Path(dataset_root) / STATISTICS_FILE, out / STATISTICS_FILE)
    projector["module.fc1.weight"] = torch.cat([fc1, fc1.new_zeros(fc1.shape[0], wanted - have)], dim=1)
    torch.save(projector, out / heads[0].name)
    print(f"extended the proprio input from {have} to {wanted} values (new weights zero): {out}", flush=True)
    return out


class OFTTraining:
    """The trainer adapter (``Architecture.training()``): what ``simbench.train.train`` asks of a family."""

    sizes = SIZES

    def init_checkpoint(self, out_dir: str | os.PathLike[str], size: ModelSize,
                        dataset_root: str | os.PathLike[str], seed: int = 0) -> Path:
        return init_checkpoint(out_dir, size, dataset_root, seed)

    def load(self, checkpoint_dir: str | os.PathLike[str]) -> Any:
        from . import load_policy

        policy = load_policy(checkpoint_dir)
        policy.model.float()
        return policy

    def samples(self, dataset: EpisodeDataset, split: str, policy: Any) -> ChunkSamples:
        return ChunkSamples(dataset, split, policy)

    def extend_state(self, init_dir: str | os.PathLike[str], dataset_root: str | os.PathLike[str],
                     out_dir: str | os.PathLike[str]) -> Path:
        return extend_state(init_dir, dataset_root, out_dir)

    def loss(self, policy: Any, batch: tuple[Any, ...], generator: Any) -> Any:
        """Mean |normalised chunk - target| (OFT's L1-regression objective)."""
        pixels, prompt, proprio, target = batch
        out = policy.model(pixels, prompt, proprio if policy.config.use_proprio else None)
        return (out.normalized_actions - target).abs().mean()

    def save_trained(self, policy: Any, init_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                     step: int) -> Path:
        return save_trained(policy, init_dir, out_dir, step=step)


__all__ = ["SIZES", "ChunkSamples", "ModelSize", "OFTTraining", "extend_state", "init_checkpoint", "save_trained"]
