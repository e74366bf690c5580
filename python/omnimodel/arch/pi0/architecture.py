"""pi0 and pi0.5 in the architecture registry: loader, PyTorch reference, miniature, and convert end to
end (analyzer ``omnimodel/analyze/pi0.py``, plan spec ``omnimodel/plan/archs/pi0.py``, glue template
``templates/archs/pi0.cpp.j2``, GGUF export ``export.py``, parity ``parity.py``).

Both families share this package; ``Pi0Config.kind`` tells them apart. Also here: the calibration
adapter (``calibration.py``: flow matching as L_act), AWQ's scale groups (``awq_groups.py``) and the demo
trainer (``training.py``); the robot side's metadata (``gguf_meta.py``) for the C++ preprocessing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omnimodel.arch.registry import Architecture, register
from omnimodel.demo_assets import DEMO_CALIB_DIR, PI05_DEMO_POLICY_DIR

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
    missing = None
    outtypes = ("f32", "f16", "bf16", "q8_0")
    checkpoint_error = ConfigError  # CheckpointError derives from it
    # validate compares the runtime's own preprocessing through OFT's entry points (input_ids of the
    # instruction alone; pi0.5's prompt also holds the state), and bench's memory probe calls predict_action
    # through them: pi0's C++ robot side is checked by tests/arch/test_pi0_predict.py instead
    runtime_preprocessing = False
    # vision: SigLIP + projector (every camera); gemma: the prefix's Gemma pass and every step's joint pass
    # (PaliGemmaWithExpert.forward runs both); the suffix embedding / Euler update are too small to split.
    bench_stages = {
        "vision": ("paligemma_with_expert.paligemma.model.vision_tower",
                   "paligemma_with_expert.paligemma.model.multi_modal_projector"),
        "gemma": ("paligemma_with_expert",),
    }
    runtime_stage_ends = {"vision": "multi_modal_projector"}
    # action_out_proj's bias is added to the predicted velocity, which the Euler loop integrates from
    # noise: not a constant shift of the normalised actions that a measured mean could be folded into.
    no_output_bias = ("a flow-matching policy: its action head predicts a velocity that the denoising steps "
                      "integrate, so an output bias is not an action shift")

    def matches_config(self, config: dict[str, Any]) -> bool:
        # LeRobot's layout names the family; an openpi-PyTorch config does not (its tensors do).
        return config.get("type") == self.name

    def matches_checkpoint(self, config: dict[str, Any], root: Path | None) -> bool:
        if self.matches_config(config) or "type" in config or root is None:
            return self.matches_config(config)
        # openpi's config.json does not name the kind: its tensors do (time_mlp_in for pi0.5, state_proj for pi0)
        from .checkpoint import CheckpointError, detect_layout, kind_from_tensors, locate_files, scan_tensors

        try:
            if detect_layout(config).value != "openpi":
                return False
            files, _ = locate_files(root)
            return kind_from_tensors(scan_tensors(files)) == self.name
        except CheckpointError:
            return False

    def owns(self, policy: Any) -> bool:
        config = getattr(policy, "config", None) or getattr(policy, "cfg", None)  # a policy or its Pi0Model
        return super().owns(policy) and getattr(config, "kind", None) == self.name

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

    def gguf_name(self, name: str) -> str:
        from .names import gguf_name

        return gguf_name(name)

    def analyze(self, checkpoint: Path, **kwargs: Any) -> Any:
        from omnimodel.analyze.pi0 import analyze_pi0

        return analyze_pi0(checkpoint, **kwargs)

    def plan_spec(self) -> Any:
        from omnimodel.plan.archs import pi0

        return pi0

    def write_gguf(self, policy: Any, path: Path, outtype: str, **kwargs: Any) -> Path:
        from . import export

        return export.write_gguf(policy, path, outtype, **kwargs)

    def exported_tensors(self, policy: Any) -> dict[str, Any]:
        from . import export

        return export.exported_tensors(policy)

    def runtime_inputs(self, inputs: Any) -> dict[str, Any]:
        from . import export

        return export.runtime_inputs(inputs)

    def parity_observation(self, policy: Any, seed: int) -> tuple[list[Any], Any]:
        from . import parity

        return parity.parity_observation(policy, seed)

    def model_args(self, model: Any, inputs: Any, dtype: Any) -> tuple[Any, ...]:
        from . import parity

        return parity.model_args(model, inputs, dtype)

    def reference_outputs(self, policy: Any, inputs: Any, out: Any) -> dict[str, Any]:
        return {}  # the model returns denoised_actions, which its probe already recorded

    def action_span(self, policy: Any) -> Any:
        from . import parity

        return parity.action_span(policy)

    def quant_layer(self, name: str) -> str | None:
        m = _LAYER_RE.match(name)
        return m.group(1) if m else None

    def unused_parameter_prefixes(self, model: Any) -> list[str]:
        from .modeling import unused_parameter_prefixes

        return unused_parameter_prefixes(model.cfg)

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

    def attention_projections(self, model: Any) -> dict[str, tuple[str, ...]]:
        """SigLIP's attention blocks are modules of their own. The Gemma stacks attend jointly (prefix and
        expert in one softmax, ``GemmaModel.forward``), so no module computes one stream's attention from
        its input: a decoder layer's forward (o_proj, gated residual, norm, MLP) is the block re-run for
        o_proj, and q/k/v keep H = X X^T."""
        from .modeling import GemmaDecoderLayer, SiglipAttention

        kinds = {SiglipAttention: ("q_proj", "k_proj", "v_proj", "out_proj"), GemmaDecoderLayer: ("self_attn.o_proj",)}
        return {name: kinds[type(m)] for name, m in model.named_modules() if type(m) in kinds}

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
    demo_checkpoint = PI05_DEMO_POLICY_DIR
    demo_calib = DEMO_CALIB_DIR  # the held-out split of the collection whose statistics the demo carries
    demo_note = ("the built-in tiny pi0.5 policy trained on Meta-World (LeRobot's layout, the real module "
                 "names; see docs/pi0.md)")
