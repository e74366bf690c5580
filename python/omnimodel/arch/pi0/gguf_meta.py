"""The robot-side metadata of a pi0 / pi0.5 GGUF: everything C++ needs to turn a raw observation into the
graph's inputs and the graph's output into robot actions (cpp/src/vla/pi0_predict.cpp reads it).

    with GGUFStreamWriter(path, "pi05") as w:
        add_robot_metadata(w, policy)          # any time before the tensor data
        ...

Keys (``<arch>.robot.``; ``<arch>`` is the file's ``general.architecture``):

    preprocess          "pi0": selects the pi0 family's robot path in C++ (OpenVLA-OFT files lack the key)
    kind, layout        "pi0" | "pi05", "lerobot" | "openpi"
    camera_keys         string array, model order (LeRobot puts missing cameras after the present ones)
    image_size          square side S of the SigLIP input
    state_dim, action_dim, max_state_dim, max_action_dim, chunk_size, n_action_steps, num_inference_steps
    state_input         1: the graph takes ``state`` (pi0's state token); 0: the state is in the prompt
    prompt.template     "{task}" / "Task: {task}, State: {state};\\nAction: " ({{ }} literal braces)
    prompt.clean_task   1: strip, "_" -> " ", "\\n" -> " " (pi0.5 and openpi)
    prompt.append_newline   1: add "\\n" unless the text ends with one (LeRobot pi0)
    prompt.separate_text    text tokenised on its own and appended ("\\n" for openpi pi0, else "")
    prompt.state_bins   pi0.5's discretisation: bins over [-1, 1] (256)
    prompt.max_length   tokenizer_max_length: longer prompts are truncated to it
    bos_token_id, pad_token_id
    state_norm.mode, action_norm.mode   LeRobot NormalizationMode names (IDENTITY, MEAN_STD, MIN_MAX,
                        QUANTILES, QUANTILE10)
    state_norm.layout, action_norm.layout   whose formulas: "lerobot" (eps outside) or "openpi" (eps inside)
    state_norm.eps, action_norm.eps     float64 (1e-8 LeRobot, 1e-6 openpi)
    state_norm.<stat>, action_norm.<stat>   float32 arrays the mode uses (mean/std, min/max, q01/q99, q10/q90)

and the SentencePiece vocabulary as ``tokenizer.ggml.*`` (model "llama", tokens, scores, token_type with
user-defined pieces marked, unknown/bos/eos/padding ids, add_space_prefix = the model's add_dummy_prefix;
PaliGemma's has none). The formulas the C++ side reproduces are normalization.py's and tokenizer.py's.
"""

from __future__ import annotations

from typing import Any

from .config import Layout, NormMode
from .normalization import LEROBOT_EPS, OPENPI_EPS, FeatureStats
from .policy import Pi0Policy
from .sentencepiece_proto import MODEL_TYPE_BPE, parse_model

PREPROCESS_KIND = "pi0"
PI05_TEMPLATE = "Task: {task}, State: {state};\nAction: "
TOKEN_USER_DEFINED = 4


def robot_prefix(arch: str) -> str:
    return f"{arch}.robot."


def _add_norm(w: Any, key: str, feature: FeatureStats) -> None:
    w.add_string(key + "mode", feature.mode.value)
    w.add_string(key + "layout", feature.layout.value)
    w.add_float64(key + "eps", OPENPI_EPS if feature.layout is Layout.OPENPI else LEROBOT_EPS)
    if feature.mode is NormMode.IDENTITY:
        return
    for stat, values in sorted(feature.stats.items()):
        w.add_array(key + stat, [float(v) for v in values.tolist()], "float32")


def _add_vocabulary(w: Any, policy: Pi0Policy) -> None:
    tok = policy.tokenizer
    model = parse_model(tok.path.read_bytes(), tok.path.name)
    if model.model_type != MODEL_TYPE_BPE or not model.byte_fallback:
        raise ValueError(f"{tok.path.name}: the C++ tokenizer implements SentencePiece BPE with byte fallback "
                         f"(PaliGemma's), this model is type {model.model_type}, byte_fallback={model.byte_fallback}")
    if model.normalizer_name not in ("identity", "") or model.remove_extra_whitespaces or \
            not model.escape_whitespaces:
        raise ValueError(f"{tok.path.name}: normaliser '{model.normalizer_name}' (remove_extra_whitespaces="
                         f"{model.remove_extra_whitespaces}) is not PaliGemma's identity normalisation, which is all "
                         f"the C++ tokenizer implements")
    sp = tok._sp
    w.add_string("tokenizer.ggml.model", "llama")
    w.add_array("tokenizer.ggml.tokens", [p.piece for p in model.pieces], "string")
    w.add_array("tokenizer.ggml.scores", [float(p.score) for p in model.pieces], "float32")
    w.add_array("tokenizer.ggml.token_type", [int(p.type) for p in model.pieces], "int32")
    w.add_uint32("tokenizer.ggml.unknown_token_id", int(sp.unk_id()))
    w.add_uint32("tokenizer.ggml.bos_token_id", tok.bos_id)
    w.add_uint32("tokenizer.ggml.eos_token_id", int(sp.eos_id()))
    w.add_uint32("tokenizer.ggml.padding_token_id", tok.pad_id)
    w.add_bool("tokenizer.ggml.add_space_prefix", model.add_dummy_prefix)
    w.add_bool("tokenizer.ggml.add_bos_token", True)


def add_robot_metadata(w: Any, policy: Pi0Policy, arch: str | None = None) -> None:
    """Add the keys above to ``w`` (a ``GGUFStreamWriter`` / ``GGUFModelWriter``) for ``policy``;
    ``arch`` defaults to the policy's kind ("pi0" / "pi05"), the name its GGUF carries."""
    cfg = policy.config
    k = robot_prefix(arch or cfg.kind)
    w.add_string(k + "preprocess", PREPROCESS_KIND)
    w.add_string(k + "kind", cfg.kind)
    w.add_string(k + "layout", cfg.layout.value)
    w.add_array(k + "camera_keys", list(cfg.camera_keys), "string")
    w.add_uint32(k + "image_size", cfg.image_size)
    for name in ("state_dim", "action_dim", "max_state_dim", "max_action_dim", "chunk_size", "n_action_steps",
                 "num_inference_steps"):
        w.add_uint32(k + name, int(getattr(cfg, name)))
    w.add_uint32(k + "state_input", int(not cfg.is_pi05))
    openpi = cfg.layout is Layout.OPENPI
    w.add_string(k + "prompt.template", PI05_TEMPLATE if cfg.is_pi05 else "{task}")
    w.add_uint32(k + "prompt.clean_task", int(cfg.is_pi05 or openpi))
    w.add_uint32(k + "prompt.append_newline", int(not cfg.is_pi05 and not openpi))
    w.add_string(k + "prompt.separate_text", "\n" if (not cfg.is_pi05 and openpi) else "")
    w.add_uint32(k + "prompt.state_bins", 256)
    w.add_uint32(k + "prompt.max_length", cfg.tokenizer_max_length)
    w.add_uint32(k + "bos_token_id", cfg.bos_token_id)
    w.add_uint32(k + "pad_token_id", cfg.pad_token_id)
    _add_norm(w, k + "state_norm.", policy.norm_stats.state)
    _add_norm(w, k + "action_norm.", policy.norm_stats.action)
    _add_vocabulary(w, policy)


def add_preprocessing(w: Any, policy: Pi0Policy, prefix: str) -> None:
    """``add_robot_metadata`` for an exporter that holds its key prefix ``"<arch>."``."""
    add_robot_metadata(w, policy, prefix.removesuffix("."))


def write_robot_gguf(policy: Pi0Policy, path: Any, arch: str | None = None) -> Any:
    """A GGUF holding only the robot-side metadata (no tensors): what the preprocessing-only runtime
    (``omnimodel_params.preprocess_only``) opens, for tests and for splitting preprocessing off."""
    from omnimodel.gguf.writer import GGUFStreamWriter

    with GGUFStreamWriter(path, arch or policy.config.kind) as w:
        add_robot_metadata(w, policy, arch)
    return path


__all__ = ["PI05_TEMPLATE", "PREPROCESS_KIND", "add_preprocessing", "add_robot_metadata", "robot_prefix", "write_robot_gguf"]
