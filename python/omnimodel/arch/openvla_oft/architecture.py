"""OpenVLA-OFT in the architecture registry: where each stage finds this family's code.

The reference, loader and exporter live in this package; the analyzer in ``omnimodel/analyze/openvla_oft.py``,
the plan spec in ``omnimodel/plan/archs/openvla_oft.py``, the graph's glue in
``templates/archs/openvla_oft.cpp.j2`` (docs/architectures.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omnimodel.arch.registry import Architecture, register
from omnimodel.demo_assets import DEMO_CALIB_DIR, DEMO_POLICY_DIR

from . import export, parity
from .config import ConfigError

# The quantized stacks: vision_backbone.<tower>.blocks.<i>.   and   language_model.model.layers.<i>.
_LAYER_RE = re.compile(
    r"^(vision_backbone\.(?:featurizer|fused_featurizer)\.blocks\.\d+|language_model\.model\.layers\.\d+)\."
)


@register
class OpenVLAOFTArchitecture(Architecture):
    name = export.ARCH  # "openvla-oft"
    title = "OpenVLA-OFT"
    package = "omnimodel.arch.openvla_oft"
    outtypes = tuple(export.OUTTYPES)
    demo_checkpoint = DEMO_POLICY_DIR
    demo_calib = DEMO_CALIB_DIR
    demo_default = True  # the first family with a demo: train-demo's default
    demo_note = ("the built-in tiny OpenVLA-OFT policy trained on Meta-World (real file layout; see "
                 "docs/simbench.md)")
    checkpoint_error = ConfigError  # CheckpointError derives from it
    bench_stages = {
        "vision": ("vision_backbone", "projector", "proprio_projector"),
        "llm": ("language_model.model",),
        "head": ("action_head",),
    }
    runtime_stage_ends = {"vision": "projector", "llm": "language_model.model.norm"}
    # The L1 head's last linear layer: MLPResNet maps each chunk step's hidden states to action_dim
    # outputs, so its bias (action_dim,) is added to every step of the (chunk, action_dim) output.
    output_bias = "action_head.model.fc2.bias"

    def matches_config(self, config: dict[str, Any]) -> bool:
        return config.get("model_type") == "openvla"

    def load_policy(self, checkpoint: Path, *, dtype: Any = None, lazy: bool = False,
                    unnorm_key: str | None = None) -> Any:
        from .policy import load_policy

        return load_policy(checkpoint, dtype=dtype, lazy=lazy, unnorm_key=unnorm_key)

    def write_miniature(self, directory: Path, **spec: Any) -> Path:
        from .miniature import MiniatureSpec, write_miniature

        return write_miniature(directory, MiniatureSpec(**spec))

    def predict_action(self, policy: Any, images: Any, instruction: str, state: Any, **kwargs: Any) -> Any:
        from .policy import predict_action

        return predict_action(policy, images, instruction, state, **kwargs)

    def describe_policy(self, policy: Any) -> str:
        cfg = policy.config
        return (f"{cfg.num_images} image(s) {cfg.vision.image_size}px, LLM {cfg.llm.num_hidden_layers} layers x "
                f"{cfg.llm.hidden_size}, chunk {cfg.num_actions_chunk} x {cfg.action_dim} actions")

    def statistics_keys(self, checkpoint: Path) -> tuple[list[str], str]:
        from .checkpoint import statistics_keys

        return statistics_keys(checkpoint)

    def calibration_inputs(self, checkpoint: Path, unnorm_key: str, keys: list[str]) -> tuple[str, Any]:
        from omnimodel.quant.calib_check import PolicyInputs

        from .checkpoint import header_norm_stats, read_checkpoint_header

        header = read_checkpoint_header(checkpoint, unnorm_key=unnorm_key)
        inputs = PolicyInputs.from_config(header.config, header_norm_stats(header), str(checkpoint), keys)
        return header.dataset_key, inputs

    def analyze(self, checkpoint: Path, **kwargs: Any) -> Any:
        from omnimodel.analyze.openvla_oft import analyze_openvla_oft

        return analyze_openvla_oft(checkpoint, **kwargs)

    def plan_spec(self) -> Any:
        from omnimodel.plan.archs import openvla_oft

        return openvla_oft

    def write_gguf(self, policy: Any, path: Path, outtype: str, **kwargs: Any) -> Path:
        return export.write_gguf(policy, path, outtype, **kwargs)

    def parity_observation(self, policy: Any, seed: int) -> tuple[list[Any], Any]:
        return parity.parity_observation(policy, seed)

    def prepare_inputs(self, policy: Any, images: Any, instruction: str, state: Any) -> Any:
        from .policy import prepare_inputs

        return prepare_inputs(policy, images, instruction, state)

    def runtime_inputs(self, inputs: Any) -> dict[str, Any]:
        return export.runtime_inputs(inputs)

    def model_args(self, model: Any, inputs: Any, dtype: Any) -> tuple[Any, ...]:
        return parity.model_args(model, inputs, dtype)

    def reference_hooks(self, model: Any, put: Any, keep: Any) -> list[Any]:
        return parity.reference_hooks(model, put, keep)

    def reference_outputs(self, policy: Any, inputs: Any, out: Any) -> dict[str, Any]:
        return parity.reference_outputs(policy, out)

    def action_span(self, policy: Any) -> Any:
        return parity.action_span(policy)

    def quant_layer(self, name: str) -> str | None:
        m = _LAYER_RE.match(name)
        return m.group(1) if m else None

    def unused_parameter_prefixes(self, model: Any) -> list[str]:
        from .modeling import unused_parameter_prefixes

        return unused_parameter_prefixes(model.cfg)

    def exported_tensors(self, policy: Any) -> dict[str, Any]:
        return export.exported_tensors(policy)

    def attention_projections(self, model: Any) -> dict[str, tuple[str, ...]]:
        from .modeling import LlamaAttention, ViTAttention

        kinds = {ViTAttention: ("qkv", "proj"), LlamaAttention: ("q_proj", "k_proj", "v_proj", "o_proj")}
        return {name: kinds[type(m)] for name, m in model.named_modules() if type(m) in kinds}

    def awq_scale_groups(self, model: Any) -> list[Any]:
        from .awq_groups import scale_groups

        return scale_groups(model)

    def eval_info(self, policy: Any) -> dict[str, Any]:
        cfg = policy.config
        return {"dataset_key": policy.norm_stats.key, "platform": cfg.platform.name, "chunk": cfg.num_actions_chunk,
                "action_dim": cfg.action_dim, "num_images": cfg.num_images, "image_size": cfg.vision.image_size,
                "proprio_dim": cfg.proprio_projector.proprio_dim if cfg.use_proprio else 0}

    def eval_step(self, policy: Any, images: Any, instruction: str, state: Any, seed: int) -> Any:
        return self.predict_action(policy, images, instruction, state if policy.config.use_proprio else None)

    def training(self) -> Any:
        from .training import OFTTraining

        return OFTTraining()

    def calibration(self) -> Any:
        from .calibration import OFTCalibration

        return OFTCalibration()
