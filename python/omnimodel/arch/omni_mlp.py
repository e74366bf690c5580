"""omni-mlp: the runtime's built-in dense-stack architecture, described from the Python side.

The C++ graph is `cpp/src/archs/omni_mlp.cpp`. This module writes such a model to GGUF and computes
the same forward pass in numpy, from the weights *as stored* (decoded from their GGML blocks), so a
comparison measures the runtime and not the quantization. `omnimodel doctor` and the runtime tests
both use it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from omnimodel.gguf.encoders import decode, encode
from omnimodel.gguf.types import REQUIRES_IMPORTANCE, GGMLType, parse_type
from omnimodel.gguf.writer import GGUFModelWriter

ARCH = "omni-mlp"


@dataclass(frozen=True)
class MLPConfig:
    widths: tuple[int, ...]  # input width, then each layer's output width
    norm: str = "layer"  # "layer" | "rms"
    norm_eps: float = 1e-5
    activation: str = "gelu"  # none | relu | silu | gelu | gelu_tanh | gelu_erf_fast (the runtime's vectorised erf)
    gemm: str = "ggml"  # matmul kernel for BF16 and the 1- to 4-bit types (docs/parity.md): ggml | omni (the runtime's own GEMMs)

    @property
    def n_layers(self) -> int:
        return len(self.widths) - 1


@dataclass
class MLPModel:
    config: MLPConfig
    #: Float weights by tensor name (PyTorch state_dict names and layout).
    weights: dict[str, np.ndarray]
    #: GGML type of each tensor; anything absent is stored as F32.
    types: dict[str, GGMLType] = field(default_factory=dict)

    def stored_weights(self) -> dict[str, np.ndarray]:
        """The weights as the runtime will see them: encoded to their types and decoded again."""
        out = {}
        for name, value in self.weights.items():
            t = self.types.get(name, GGMLType.F32)
            rows = value.reshape(-1, value.shape[-1])
            out[name] = decode(encode(rows, t, importance=uniform_importance(rows, t)), t, rows.shape[-1]).reshape(value.shape)
        return out


def uniform_importance(value: np.ndarray, t: GGMLType) -> np.ndarray | None:
    """The IQ types ggml quantizes only with an importance vector get a uniform one (plain RTN)."""
    return np.ones(value.shape[-1], np.float32) if t in REQUIRES_IMPORTANCE else None


def random_mlp(config: MLPConfig, weight_type: GGMLType | str, seed: int = 0) -> MLPModel:
    """Random weights of realistic scale; the matrices get `weight_type`, biases and norms stay F32."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    types: dict[str, GGMLType] = {}
    for il in range(config.n_layers):
        n_in, n_out = config.widths[il], config.widths[il + 1]
        p = f"layers.{il}."
        weights[p + "weight"] = (rng.standard_normal((n_out, n_in)) / math.sqrt(n_in)).astype(np.float32)
        weights[p + "bias"] = (0.1 * rng.standard_normal(n_out)).astype(np.float32)
        weights[p + "norm.weight"] = (1 + 0.1 * rng.standard_normal(n_out)).astype(np.float32)
        weights[p + "norm.bias"] = (0.1 * rng.standard_normal(n_out)).astype(np.float32)
        types[p + "weight"] = parse_type(weight_type)
    return MLPModel(config, weights, types)


def write_gguf(model: MLPModel, path: str | os.PathLike[str], *, method: str = "none") -> None:
    cfg = model.config
    with GGUFModelWriter(path, ARCH, method=method) as w:
        w.add_uint32(f"{ARCH}.block_count", cfg.n_layers)
        w.add_string(f"{ARCH}.norm", cfg.norm)
        w.add_float32(f"{ARCH}.norm_eps", cfg.norm_eps)
        w.add_string(f"{ARCH}.activation", cfg.activation)
        if cfg.gemm != "ggml":
            w.add_string(f"{ARCH}.gemm", cfg.gemm)
        for name, value in model.weights.items():
            t = model.types.get(name, GGMLType.F32)
            w.add_tensor(name, value, t, importance=uniform_importance(value, t))


def _activation(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "none":
        return x
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "silu":
        return x / (1 + np.exp(-x))
    if kind in ("gelu", "gelu_erf_fast"):
        erf = np.vectorize(math.erf)
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))
    if kind == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    raise ValueError(f"unknown activation {kind!r}")


def reference_forward(
    model: MLPModel, x: np.ndarray, *, stored: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Every named intermediate of the runtime graph, in float64, from the stored weights."""
    cfg = model.config
    w = stored if stored is not None else model.stored_weights()
    acts: dict[str, np.ndarray] = {}
    cur = np.asarray(x, dtype=np.float64)
    for il in range(cfg.n_layers):
        p = f"layers.{il}."
        cur = cur @ w[p + "weight"].astype(np.float64).T
        if p + "bias" in w:
            cur = cur + w[p + "bias"]
        acts[p + "linear"] = cur
        if p + "norm.weight" in w or p + "norm.bias" in w:
            if cfg.norm == "layer":
                cur = (cur - cur.mean(-1, keepdims=True)) / np.sqrt(cur.var(-1, keepdims=True) + cfg.norm_eps)
            else:
                cur = cur / np.sqrt((cur**2).mean(-1, keepdims=True) + cfg.norm_eps)
            cur = cur * w.get(p + "norm.weight", 1.0) + w.get(p + "norm.bias", 0.0)
            acts[p + "norm"] = cur
        if il + 1 < cfg.n_layers and cfg.activation != "none":
            cur = _activation(cur, cfg.activation)
            acts[p + "act"] = cur
    acts["out"] = cur
    return acts
