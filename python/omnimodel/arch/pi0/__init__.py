"""pi0 / pi0.5 (PaliGemma + flow-matching action expert): plain-PyTorch reference for both.

Public API:
    load_policy(dir, **kw) -> Pi0Policy              load a LeRobot or openpi-PyTorch checkpoint directory
    predict_action(policy, images, instruction, state, seed) -> (chunk, action_dim) un-normalised actions
    run_policy(...) -> PolicyOutput                   same, with the exact network inputs
    load_checkpoint(dir, **kw) -> LoadedCheckpoint   config + model + tokenizer + statistics
    write_miniature(dir, Pi0MiniatureSpec(kind="pi05")) -> Path   tiny checkpoint in the real layout
    real_width_spec(kind, vision_depth=, llm_layers=) -> Pi0MiniatureSpec   real widths, few layers
"""

from .checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, read_checkpoint_header
from .config import ConfigError, Layout, Pi0Config
from .miniature import Pi0MiniatureSpec, random_observation, real_width_spec, write_miniature
from .modeling import Pi0Model, PrefixCache, make_attention_mask, sincos_time_embedding, unused_parameter_prefixes
from .policy import Pi0Policy, PolicyInputs, PolicyOutput, gaussian_noise, load_policy, predict_action, run_policy

__all__ = [
    "CheckpointError",
    "ConfigError",
    "Layout",
    "LoadedCheckpoint",
    "Pi0Config",
    "Pi0MiniatureSpec",
    "Pi0Model",
    "Pi0Policy",
    "PolicyInputs",
    "PolicyOutput",
    "PrefixCache",
    "gaussian_noise",
    "load_checkpoint",
    "load_policy",
    "make_attention_mask",
    "predict_action",
    "random_observation",
    "read_checkpoint_header",
    "real_width_spec",
    "run_policy",
    "sincos_time_embedding",
    "unused_parameter_prefixes",
    "write_miniature",
]
