"""The GGUF / runtime names of pi0's tensors and intermediates: the PyTorch paths, abbreviated.

ggml keeps a tensor's name in 63 bytes; openpi's module paths are longer (SigLIP's
``paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers.26.self_attn.out_proj.weight``
is 104). Like llama.cpp's short tensor names, the GGUF and the generated graph use the PyTorch path with
its fixed wrapper prefixes replaced (table below, first match wins); everything after the prefix -- layer
numbers, submodules, parameter names -- is the PyTorch path unchanged, so the longest name is 59 bytes::

    paligemma_with_expert.paligemma.model.vision_tower.vision_model  -> siglip
    paligemma_with_expert.paligemma.model.vision_tower               -> vision_tower
    paligemma_with_expert.paligemma.model.multi_modal_projector      -> multi_modal_projector
    paligemma_with_expert.paligemma.model.language_model             -> language_model
    paligemma_with_expert.gemma_expert.model                         -> gemma_expert

Top-level modules (``action_in_proj``, ``time_mlp_in``, ``state_proj``, the probes) keep their names.
"""

from __future__ import annotations

PREFIXES: tuple[tuple[str, str], ...] = (
    ("paligemma_with_expert.paligemma.model.vision_tower.vision_model", "siglip"),
    ("paligemma_with_expert.paligemma.model.vision_tower", "vision_tower"),
    ("paligemma_with_expert.paligemma.model.multi_modal_projector", "multi_modal_projector"),
    ("paligemma_with_expert.paligemma.model.language_model", "language_model"),
    ("paligemma_with_expert.gemma_expert.model", "gemma_expert"),
)

SIGLIP, PROJECTOR, GEMMA, EXPERT = "siglip", "multi_modal_projector", "language_model", "gemma_expert"


def _replace_prefix(name: str, pairs) -> str:
    for old, new in pairs:
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return name


def gguf_name(name: str) -> str:
    """A PyTorch parameter or module path -> its GGUF / runtime name (unchanged outside the table)."""
    return _replace_prefix(name, PREFIXES)


def torch_name(name: str) -> str:
    """The inverse of ``gguf_name``."""
    return _replace_prefix(name, ((short, long) for long, short in PREFIXES))


__all__ = ["EXPERT", "GEMMA", "PREFIXES", "PROJECTOR", "SIGLIP", "gguf_name", "torch_name"]
