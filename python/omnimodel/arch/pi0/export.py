"""pi0 / pi0.5 -> GGUF for the runtime's generated ``pi0`` / ``pi05`` graph (``templates/archs/pi0.cpp.j2``).

    policy = load_policy(checkpoint_dir)
    write_gguf(policy, "pi05.gguf", outtype="f16")

Every tensor the cached-prefix inference reads is written under its PyTorch ``state_dict`` name with the
wrapper prefixes abbreviated (``names.gguf_name``: ggml names hold 63 bytes); ``unused_parameter_prefixes``
(the PaliGemma stack's final norm and its last layer after the K/V projections) and the tied / expert
``lm_head`` are not written. Types follow the planner's rules (``plan.types.tensor_type``) or a plan's
per-tensor types.

Metadata, under ``pi0.`` or ``pi05.`` (the GGUF's ``general.architecture``): ``num_cameras``,
``image_size``, ``chunk_size``, ``n_action_steps``, ``max_state_dim``, ``max_action_dim``, ``state_dim``,
``action_dim``, ``num_inference_steps``, ``min_period`` / ``max_period`` (float64: the sincos time
embedding's periods), ``tokenizer_max_length``, ``layout``; ``vision.*`` (SigLIP: ``block_count``,
``embedding_length``, ``head_count``, ``feed_forward_length``, ``patch_size``, ``layer_norm_eps``);
``paligemma.*`` and ``expert.*`` (``block_count``, ``embedding_length``, ``feed_forward_length``,
``head_count``, ``head_count_kv``, ``head_dim``, ``rms_norm_eps``, ``rope_theta``, ``vocab_size``, ``variant``).
The tokenizer, prompt format, cameras and normalisation statistics the C++ robot side reads are added by
``gguf_meta.add_preprocessing`` (keys under ``<arch>.robot.`` and ``tokenizer.ggml.*``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnimodel.arch.gguf_tensors import write_tensors
from omnimodel.gguf.types import GGMLType
from omnimodel.gguf.writer import GGUFStreamWriter
from omnimodel.plan.types import OUTTYPES

from .config import GemmaConfig
from .gguf_meta import add_preprocessing
from .modeling import unused_parameter_prefixes
from .names import gguf_name
from .policy import Pi0Policy, PolicyInputs


def exported_tensors(policy: Pi0Policy) -> dict[str, torch.Tensor]:
    """The state_dict entries the runtime graph reads, by PyTorch name."""
    skip = tuple(unused_parameter_prefixes(policy.config))
    return {k: v for k, v in policy.model.state_dict().items() if not k.startswith(skip)}


def _add_gemma(w: GGUFStreamWriter, p: str, g: GemmaConfig, variant: str) -> None:
    w.add_uint32(p + "block_count", g.depth)
    w.add_uint32(p + "embedding_length", g.width)
    w.add_uint32(p + "feed_forward_length", g.mlp_dim)
    w.add_uint32(p + "head_count", g.num_heads)
    w.add_uint32(p + "head_count_kv", g.num_kv_heads)
    w.add_uint32(p + "head_dim", g.head_dim)
    w.add_float32(p + "rms_norm_eps", g.rms_norm_eps)
    w.add_float32(p + "rope_theta", g.rope_theta)
    w.add_uint32(p + "vocab_size", g.vocab_size)
    w.add_string(p + "variant", variant)


def write_gguf(
    policy: Pi0Policy,
    path: str | os.PathLike[str],
    outtype: str = "f32",
    *,
    types: Mapping[str, GGMLType] | None = None,
    encoder: Any = None,
    method: str = "none",
    target_bpw: float | None = None,
) -> Path:
    """Write ``policy`` as a ``pi0`` / ``pi05`` GGUF, streamed one tensor at a time. ``types``: per-tensor
    GGML types by GGUF name (a plan's ``tensor_types()``); ``encoder``: a per-matrix quantizer keyed by
    PyTorch names (``arch.openvla_oft.export.MatrixEncoder``)."""
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype must be one of {OUTTYPES}, got {outtype!r}")
    cfg = policy.config
    k = f"{cfg.kind}."
    exported = exported_tensors(policy)
    with GGUFStreamWriter(path, cfg.kind, method=method, target_bpw=target_bpw) as w:
        w.add_uint32(k + "num_cameras", len(cfg.camera_keys))
        w.add_uint32(k + "image_size", cfg.image_size)
        w.add_uint32(k + "chunk_size", cfg.chunk_size)
        w.add_uint32(k + "n_action_steps", cfg.n_action_steps)
        w.add_uint32(k + "max_state_dim", cfg.max_state_dim)
        w.add_uint32(k + "max_action_dim", cfg.max_action_dim)
        w.add_uint32(k + "state_dim", cfg.state_dim)
        w.add_uint32(k + "action_dim", cfg.action_dim)
        w.add_uint32(k + "num_inference_steps", cfg.num_inference_steps)
        w.add_float64(k + "min_period", float(cfg.min_period))
        w.add_float64(k + "max_period", float(cfg.max_period))
        w.add_uint32(k + "tokenizer_max_length", cfg.tokenizer_max_length)
        w.add_string(k + "layout", cfg.layout.value)
        v = cfg.vision
        w.add_uint32(k + "vision.block_count", v.num_hidden_layers)
        w.add_uint32(k + "vision.embedding_length", v.hidden_size)
        w.add_uint32(k + "vision.head_count", v.num_attention_heads)
        w.add_uint32(k + "vision.feed_forward_length", v.intermediate_size)
        w.add_uint32(k + "vision.patch_size", v.patch_size)
        w.add_float32(k + "vision.layer_norm_eps", v.layer_norm_eps)
        _add_gemma(w, k + "paligemma.", cfg.paligemma, cfg.paligemma_variant)
        _add_gemma(w, k + "expert.", cfg.action_expert, cfg.action_expert_variant)

        # the robot side's metadata: the tokenizer (tokenizer.ggml.*), prompt format, cameras, normalisation
        add_preprocessing(w, policy, k)

        write_tensors(w, exported, outtype=outtype, types=types, encoder=encoder, gguf_name=gguf_name)
    return Path(path)


def runtime_inputs(x: PolicyInputs) -> dict[str, np.ndarray]:
    """The runtime graph's inputs for what the reference is fed (the contract of templates/archs/pi0.cpp.j2):
    pixel_values (cameras, 3, S, S) -- the runtime's inputs have at most 4 dimensions, so the batch of
    one is dropped --, image_mask (1, cameras) 1/0, input_ids (1, L) of the valid prompt, state (1,
    max_state_dim) for pi0, noise (1, chunk, max_action_dim)."""
    valid = x.token_mask[0].to(torch.bool)
    inputs = {
        "pixel_values": x.images[0].to(torch.float32).numpy(),
        "image_mask": x.image_mask.to(torch.float32).numpy(),
        "input_ids": x.tokens[:, valid].to(torch.float32).numpy(),
        "noise": x.noise.to(torch.float32).numpy(),
    }
    if x.state is not None:
        inputs["state"] = x.state.to(torch.float32).numpy()
    return inputs


__all__ = ["exported_tensors", "runtime_inputs", "write_gguf"]
