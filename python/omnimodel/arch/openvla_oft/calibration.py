"""OpenVLA-OFT's calibration adapter: what ``quant.calibrate`` needs to know about this network.

    policy_inputs(policy) / chunk_size      what each step takes (the calibration-data check), the chunk length
    prepare(policy, sample, device, dtype)  a calibration sample -> (model arguments, normalised target chunk)
    forward(policy, args)                   the pass the losses are taken on (the model's own forward)
    predict_normalized(policy, args)        the normalised action chunk (fake-quantized comparisons)
    losses(policy, out, target)             L_act (OFT's L1 over the normalised chunk) and L_CE (the LM
                                            head's cross-entropy against OpenVLA's discretised action tokens)
    blocks(policy)                          the units activation checkpointing recomputes
    input_modules(policy)                   HSIC domain -> the module whose input is the domain's X
    domain_of(name)                         which domain a quantized matrix belongs to
    uses_per_sample(policy, name)           how often the forward uses a matrix per sample

L_CE: at the positions the head reads, each one predicts the next action slot; OpenVLA's ActionTokenizer
puts 256 uniform bins on [-1, 1] and token = base - bin.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnimodel.quant.calib_check import PolicyInputs

from .normalization import normalize_proprio
from .policy import OpenVLAOFTPolicy
from .preprocess import images_to_pixel_values

N_ACTION_BINS = 256  # OpenVLA's ActionTokenizer


def action_tokens(normalized: np.ndarray, base: int, n_bins: int = N_ACTION_BINS) -> np.ndarray:
    """OpenVLA's discretisation: digitize into ``n_bins`` uniform edges on [-1, 1]; token = base - bin."""
    bins = np.linspace(-1.0, 1.0, n_bins)
    return base - np.digitize(np.clip(normalized, -1.0, 1.0), bins)


def _prepare(policy: OpenVLAOFTPolicy, s, device: torch.device, dtype: torch.dtype):
    cfg = policy.config
    pixels = images_to_pixel_values(s.images, cfg.vision, cfg.num_images).to(device, dtype)
    prompt = torch.tensor([policy.tokenizer.encode_prompt(s.instruction)], dtype=torch.long, device=device)
    proprio = None
    if cfg.use_proprio:
        if s.proprio is None:
            raise ValueError("this checkpoint needs proprio in every calibration sample")
        p = normalize_proprio(np.asarray(s.proprio, dtype=np.float64).reshape(-1), policy.norm_stats.proprio)
        # fp32, as run_policy feeds it: the model casts it to its proprio projector's own dtype
        proprio = torch.tensor(p, dtype=torch.float32, device=device)[None]
    target = normalize_proprio(np.asarray(s.actions, dtype=np.float64), policy.norm_stats.action)  # same bounds rule
    chunk, adim = cfg.num_actions_chunk, cfg.action_dim
    if target.shape != (chunk, adim):
        raise ValueError(f"calibration target chunk has shape {target.shape}, the policy predicts {(chunk, adim)}")
    return pixels, prompt, proprio, target


def _token_base(policy: OpenVLAOFTPolicy) -> int:
    # HF LlamaTokenizer.vocab_size counts SentencePiece pieces only (32000), i.e. the id of the added PAD.
    pad = policy.config.llm.pad_token_id
    return int(pad) if pad is not None else int(policy.tokenizer.vocab_size)


class OFTCalibration:
    """The adapter object (stateless; ``Architecture.calibration()`` returns one)."""

    lm_pathway = True  # OpenVLA's discretised action tokens give L_CE

    def policy_inputs(self, policy: OpenVLAOFTPolicy) -> PolicyInputs:
        return PolicyInputs.from_policy(policy)

    def chunk_size(self, policy: OpenVLAOFTPolicy) -> int:
        return int(policy.config.num_actions_chunk)

    def forward(self, policy: OpenVLAOFTPolicy, args):
        return policy.model(*args)

    def predict_normalized(self, policy: OpenVLAOFTPolicy, args) -> np.ndarray:
        return policy.model(*args).normalized_actions[0].float().cpu().numpy()

    def prepare(self, policy: OpenVLAOFTPolicy, s, device: torch.device, dtype: torch.dtype):
        pixels, prompt, proprio, target = _prepare(policy, s, device, dtype)
        return (pixels, prompt, proprio), target

    def losses(self, policy: OpenVLAOFTPolicy, out, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        dev = out.normalized_actions.device
        tgt = torch.tensor(target, dtype=torch.float32, device=dev)[None]
        l_act = (out.normalized_actions.float() - tgt).abs().mean()
        logits = policy.model.language_model.lm_head(out.action_hidden_states).float()[0]  # (A, vocab)
        tok = torch.tensor(action_tokens(target.reshape(-1), _token_base(policy)), dtype=torch.long, device=dev)
        return l_act, F.cross_entropy(logits, tok)

    def blocks(self, policy: OpenVLAOFTPolicy) -> list[nn.Module]:
        """The ViT blocks of both towers and the Llama layers."""
        m = policy.model
        return [*m.vision_backbone.featurizer.blocks, *m.vision_backbone.fused_featurizer.blocks,
                *m.language_model.model.layers]

    def input_modules(self, policy: OpenVLAOFTPolicy) -> dict[str, nn.Module]:
        """Each ViT tower's embedded patches and the LLM's input embedding sequence (X in S_l, METHODS 1a)."""
        m = policy.model
        vb = m.vision_backbone
        return {"featurizer": vb.featurizer.blocks[0], "fused_featurizer": vb.fused_featurizer.blocks[0],
                "llm": m.language_model.model.layers[0]}

    def domain_of(self, name: str) -> str:
        if name.startswith("vision_backbone.featurizer."):
            return "featurizer"
        if name.startswith("vision_backbone.fused_featurizer."):
            return "fused_featurizer"
        return "llm"

    def uses_per_sample(self, policy: OpenVLAOFTPolicy, name: str) -> int:
        """Each vision tower runs once per camera image; the LLM once."""
        return policy.config.num_images if self.domain_of(name) != "llm" else 1


__all__ = ["N_ACTION_BINS", "OFTCalibration", "action_tokens"]
