"""pi0 and pi0.5 in the architecture registry: what exists today (loader, PyTorch reference, miniature).

Both families share this package; ``Pi0Config.kind`` tells them apart. ``convert`` stops at once with
``missing`` (one line, exit 2): the analyzer, plan spec, templates and C++ graph are issue 12 item 4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import re

from omnimodel.arch.registry import Architecture, register

from .config import ConfigError

# The quantized stacks: SigLIP's encoder layers, the PaliGemma Gemma layers and the action expert's layers,
# their attention and MLP matrices only (adaRMS's modulation ``dense`` stays high precision, like norms).
_LAYER_RE = re.compile(
    r"^(paligemma_with_expert\.(?:paligemma\.model\.(?:vision_tower\.vision_model\.encoder|language_model)"
    r"|gemma_expert\.model)\.layers\.\d+)\.(?:self_attn|mlp)\."
)

_PRECISION = {"float32": "float32", "float64": "float64", "bfloat16": "bfloat16"}


class _Pi0Family(Architecture):
    package = "omnimodel.arch.pi0"
    missing = "no runtime graph yet (issue 12 item 4: analyzer, plan spec, templates and C++ graph)"
    checkpoint_error = ConfigError  # CheckpointError derives from it

    def matches_config(self, config: dict[str, Any]) -> bool:
        # LeRobot's layout names the family; an openpi-PyTorch config does not (its tensors do).
        return config.get("type") == self.name

    def owns(self, policy: Any) -> bool:
        # a policy carries ``config``, its Pi0Model ``cfg``
        cfg = getattr(policy, "config", None) or getattr(policy, "cfg", None)
        return super().owns(policy) and getattr(cfg, "kind", None) == self.name

    def load_policy(self, checkpoint: Path, *, dtype: Any = None, lazy: bool = False,
                    unnorm_key: str | None = None) -> Any:
        """``dtype``: a torch dtype (float32 default); ``unnorm_key``: an openpi checkpoint's asset id.
        ``lazy`` is not supported by this loader yet (weights are read at once)."""
        from .policy import load_policy

        precision = "float32" if dtype is None else _PRECISION.get(str(dtype).removeprefix("torch."))
        if precision is None:
            raise ConfigError(f"{self.name}: cannot load in {dtype}")
        policy = load_policy(checkpoint, precision=precision, asset_id=unnorm_key)
        if policy.config.kind != self.name:
            raise ConfigError(f"{checkpoint}: a {policy.config.kind} checkpoint, not {self.name}")
        return policy

    def describe_policy(self, policy: Any) -> str:
        cfg = policy.config
        return (f"{cfg.kind}: {len(cfg.camera_keys)} camera(s) {cfg.image_size}px, PaliGemma "
                f"{cfg.paligemma.depth} layers x {cfg.paligemma.width}, expert {cfg.action_expert.width} wide, "
                f"chunk {cfg.chunk_size} x {cfg.action_dim} actions")

    def write_miniature(self, directory: Path, **spec: Any) -> Path:
        from .miniature import Pi0MiniatureSpec, write_miniature

        return write_miniature(directory, Pi0MiniatureSpec(kind=self.name, **spec))

    def prepare_inputs(self, policy: Any, images: Any, instruction: str, state: Any) -> Any:
        from .policy import prepare_inputs

        return prepare_inputs(policy, images, instruction, state)

    def predict_action(self, policy: Any, images: Any, instruction: str, state: Any, **kwargs: Any) -> Any:
        from .policy import predict_action

        return predict_action(policy, images, instruction, state, **kwargs)

    def statistics_keys(self, checkpoint: Path) -> tuple[list[str], str]:
        """An openpi checkpoint's asset ids (``assets/<id>/norm_stats.json``); a LeRobot one's single set."""
        from .calibration import STATS_KEY
        from .checkpoint import locate_files
        from .config import Layout

        files, _ = locate_files(checkpoint)
        if files.layout is Layout.LEROBOT:
            return [STATS_KEY], "the processor files"
        assets = sorted(p.parent.name for p in (files.root / "assets").glob("*/norm_stats.json"))
        if not assets:
            raise ConfigError(f"{checkpoint}: no assets/<asset_id>/norm_stats.json")
        return assets, "assets/*/norm_stats.json"

    def calibration_inputs(self, checkpoint: Path, unnorm_key: str, keys: list[str]) -> tuple[str, Any]:
        from .calibration import STATS_KEY, policy_inputs
        from .checkpoint import read_checkpoint_header

        header = read_checkpoint_header(checkpoint, asset_id=None if unnorm_key == STATS_KEY else unnorm_key)
        return unnorm_key, policy_inputs(header.config, header.norm_stats, str(checkpoint), unnorm_key, keys)

    def quant_layer(self, name: str) -> str | None:
        m = _LAYER_RE.match(name)
        return m.group(1) if m else None

    def unused_parameter_prefixes(self, model: Any) -> list[str]:
        from .modeling import unused_parameter_prefixes

        return unused_parameter_prefixes(model.cfg)

    def awq_scale_groups(self, model: Any) -> list[Any]:
        from .awq_groups import scale_groups

        return scale_groups(model)

    def eval_info(self, policy: Any) -> dict[str, Any]:
        cfg = policy.config
        return {"chunk": cfg.chunk_size, "action_dim": cfg.action_dim, "num_images": len(cfg.camera_keys),
                "image_size": cfg.image_size, "n_action_steps": cfg.n_action_steps,
                "num_inference_steps": cfg.num_inference_steps}

    def eval_step(self, policy: Any, images: Any, instruction: str, state: Any, seed: int) -> Any:
        return self.predict_action(policy, images, instruction, state, seed=seed)

    def training(self) -> Any:
        from .training import Pi0Training

        return Pi0Training(self.name)

    def calibration(self) -> Any:
        from .calibration import Pi0Calibration

        return Pi0Calibration()


@register
class Pi0Architecture(_Pi0Family):
    name = "pi0"
    title = "pi0"


@register
class Pi05Architecture(_Pi0Family):
    name = "pi05"
    title = "pi0.5"
