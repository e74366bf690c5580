"""GGML type rules per tensor for an ``outtype`` (the planner's choice; export.py writes what it says).

``f32`` writes everything F32; ``f16`` makes matrices (and the patch kernels, the token embedding)
F16; ``bf16`` the same in BF16 (the released checkpoints' own precision); ``q8_0`` makes matrices whose rows are a multiple of 32 Q8_0 and the rest F16. 1-D tensors
(norms, biases, LayerScale) and the position / class / register embeddings always stay F32: they are
tiny, and ggml's elementwise ops want F32 operands. A position embedding is either a parameter (timm's
``pos_embed``) or an embedding table looked up by position (Hugging Face SigLIP's
``position_embedding.weight``): both are added to activations, never multiplied.
"""

from __future__ import annotations

from omnimodel.gguf.types import GGMLType

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
KEEP_F32_LEAVES = ("cls_token", "reg_token", "pos_embed")
KEEP_F32_MODULES = ("position_embedding",)  # the module whose ``weight`` is the table


def tensor_type(name: str, shape: tuple[int, ...], outtype: str) -> GGMLType:
    """GGML type of one tensor for ``outtype``."""
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype must be one of {OUTTYPES}, got {outtype!r}")
    parts = name.split(".")
    kept = parts[-1] in KEEP_F32_LEAVES or (len(parts) > 1 and parts[-2] in KEEP_F32_MODULES)
    if outtype == "f32" or len(shape) < 2 or kept:
        return GGMLType.F32
    if outtype == "q8_0" and len(shape) == 2 and shape[-1] % 32 == 0:
        return GGMLType.Q8_0
    return GGMLType.BF16 if outtype == "bf16" else GGMLType.F16


__all__ = ["OUTTYPES", "KEEP_F32_LEAVES", "KEEP_F32_MODULES", "tensor_type"]
