"""OpenVLA-OFT (L1-regression action head, parallel decoding): plain-PyTorch reference.

Public API:
    load_policy(dir, **kw) -> OpenVLAOFTPolicy      load a Hugging Face OFT checkpoint directory
    predict_action(policy, images, instruction, proprio) -> (chunk, action_dim) un-normalised actions
    run_policy(...) -> PolicyOutput                  same, with every intermediate input
    load_checkpoint(dir, **kw) -> LoadedCheckpoint  config + model + tokenizer + statistics
    write_miniature(dir, MiniatureSpec()) -> Path    tiny checkpoint in the real layout, from a seed
"""

from .checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint
from .config import ConfigError, OpenVLAOFTConfig
from .miniature import MiniatureSpec, random_observation, real_width_spec, write_miniature
from .modeling import OFTForwardOutput, OpenVLAOFT, SequenceLayout, unused_parameter_prefixes
from .policy import OpenVLAOFTPolicy, PolicyOutput, load_policy, predict_action, run_policy

__all__ = [
    "CheckpointError",
    "ConfigError",
    "LoadedCheckpoint",
    "MiniatureSpec",
    "OFTForwardOutput",
    "OpenVLAOFT",
    "OpenVLAOFTConfig",
    "OpenVLAOFTPolicy",
    "PolicyOutput",
    "SequenceLayout",
    "load_checkpoint",
    "load_policy",
    "predict_action",
    "random_observation",
    "real_width_spec",
    "run_policy",
    "unused_parameter_prefixes",
    "write_miniature",
]
