"""Cross-check omnimodel's pi0 / pi0.5 reference against LeRobot's own implementation, end to end.

Runs in an environment where ``lerobot[pi]`` imports (it is not an omnimodel dependency), with
omnimodel's ``python/`` on PYTHONPATH::

    PYTHONPATH=python /path/to/lerobot_venv/bin/python benchmarks/pi0_lerobot_crosscheck.py [--out report.json]

For each case it writes a miniature in the LeRobot layout, then

* LeRobot side: ``PI0Policy`` / ``PI05Policy.from_pretrained`` on the directory (its own key fixing,
  tied lm_head -> embed_tokens copy), ``PolicyProcessorPipeline.from_pretrained`` on our
  ``policy_preprocessor.json`` / ``policy_postprocessor.json`` (its normaliser reads our statistics
  files; its tokenizer step runs the Hugging Face GemmaTokenizer converted from our SentencePiece
  model), ``predict_action_chunk`` with the noise drawn from our seed, the post-processor; and the
  training ``forward`` (per-element flow-matching loss) on fixed actions / noise / time;
* omnimodel side: ``run_policy`` (unpadded and padded prompt) and ``flow_matching_loss``.

Two cases give LeRobot the same weights in the openpi-PyTorch naming instead (no ``model.`` prefix),
which its loader also accepts.

It compares every parameter as LeRobot loaded it, token ids, normalised state, every step's velocity
(hooks on LeRobot's ``action_out_proj`` vs our ``velocity.{i}`` probes), the final actions and the loss,
prints a JSON report and exits 1 if a difference exceeds its tolerance.

LeRobot hard-codes PaliGemma's widths (So400m SigLIP, Gemma 2B / 300M, 257152-token vocabulary); the
harness patches those constants to the miniature's widths (``get_gemma_config`` and the PaliGemma /
expert config objects before their modules are built). Nothing in the computation is patched.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from omnimodel.arch.pi0 import Pi0MiniatureSpec, load_policy, random_observation, run_policy, write_miniature
from omnimodel.arch.pi0.config import OVERRIDES_KEY
from omnimodel.arch.pi0.policy import gaussian_noise

TASK = "pick up the red cube"


def _patch_lerobot_widths(spec: Pi0MiniatureSpec, vocab_rows: int) -> None:
    import lerobot.policies.pi0.modeling_pi0 as m0
    import lerobot.policies.pi05.modeling_pi05 as m05
    import lerobot.policies.pi_gemma as pg

    widths = {"gemma_2b": spec.paligemma, "gemma_300m": spec.action_expert}

    def get_gemma_config(variant: str):
        w = widths[variant]
        return m05.GemmaConfig(width=w["width"], depth=w["depth"], mlp_dim=w["mlp_dim"], num_heads=w["num_heads"],
                               num_kv_heads=w["num_kv_heads"], head_dim=w["head_dim"])

    m0.get_gemma_config = m05.get_gemma_config = get_gemma_config
    if getattr(pg, "_omnimodel_patched", False):
        pg._omnimodel_sizes.update(spec=spec, vocab=vocab_rows)
        return
    pg._omnimodel_sizes = dict(spec=spec, vocab=vocab_rows)
    pali_init = pg.PaliGemmaForConditionalGenerationWithPiGemma.__init__
    expert_init = pg.PiGemmaForCausalLM.__init__

    def pali(self, config):
        s, v = pg._omnimodel_sizes["spec"], pg._omnimodel_sizes["vocab"]
        vc = config.vision_config
        vc.hidden_size = s.vision["hidden_size"]
        vc.num_hidden_layers = s.vision["num_hidden_layers"]
        vc.num_attention_heads = s.vision["num_attention_heads"]
        vc.intermediate_size = s.vision["intermediate_size"]
        vc.patch_size = s.vision["patch_size"]
        vc.projection_dim = s.paligemma["width"]
        config.text_config.vocab_size = v
        pali_init(self, config)

    def expert(self, config, **kw):
        config.vocab_size = pg._omnimodel_sizes["vocab"]
        expert_init(self, config, **kw)

    pg.PaliGemmaForConditionalGenerationWithPiGemma.__init__ = pali
    pg.PiGemmaForCausalLM.__init__ = expert
    pg._omnimodel_patched = True


def _patch_tokenizer(tokenizer_dir: Path) -> None:
    import lerobot.processor.tokenizer_processor as tp
    from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

    class _Local:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            return GemmaTokenizer.from_pretrained(str(tokenizer_dir))

    tp.AutoTokenizer = _Local


def run_case(kind: str, precision: str, image_hw: tuple[int, int] | None, drop_camera: bool, work: Path,
             openpi_weights: bool = False) -> dict:
    from lerobot.configs import PreTrainedConfig
    from lerobot.policies.pi0.modeling_pi0 import PI0Policy
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from lerobot.processor import PolicyProcessorPipeline

    spec = Pi0MiniatureSpec(kind=kind, seed=7, dtype="float32", num_cameras=2)
    name = f"{kind}_{precision}_{image_hw[0] if image_hw else 'model'}px"
    ours_dir = write_miniature(work / name, spec)
    vocab_rows = 64 * ((spec.spm_vocab_size + 63) // 64)
    # LeRobot's draccus config rejects our overrides key: give it a copy without (widths are patched instead)
    lr_dir = work / f"{name}_lerobot"
    shutil.copytree(ours_dir, lr_dir)
    cfg_json = json.loads((lr_dir / "config.json").read_text())
    cfg_json.pop(OVERRIDES_KEY)
    cfg_json["dtype"] = precision
    (lr_dir / "config.json").write_text(json.dumps(cfg_json))
    if openpi_weights:  # the openpi-PyTorch naming: no "model." prefix
        # (LeRobot's strict load wants both lm_head tensors stored; without them it warns "Missing key(s)")
        op = write_miniature(work / f"{name}_openpi", Pi0MiniatureSpec(kind=kind, seed=7, layout="openpi"))
        shutil.copy(op / "model.safetensors", lr_dir / "model.safetensors")
    _patch_lerobot_widths(spec, vocab_rows)
    _patch_tokenizer(ours_dir)

    cfg = PreTrainedConfig.from_pretrained(str(lr_dir))
    policy_cls = PI05Policy if kind == "pi05" else PI0Policy
    lr = policy_cls.from_pretrained(str(lr_dir), config=cfg)
    lr.eval()
    pre = PolicyProcessorPipeline.from_pretrained(str(lr_dir), config_filename="policy_preprocessor.json")
    post = PolicyProcessorPipeline.from_pretrained(str(lr_dir), config_filename="policy_postprocessor.json",
                                                   to_transition=_policy_action_to_transition(),
                                                   to_output=_transition_to_policy_action())

    ours = load_policy(ours_dir, precision=precision)
    lr_params = lr.model.state_dict()
    weights_equal = all(torch.equal(lr_params[k], v) for k, v in ours.model.state_dict().items())
    images, state = random_observation(spec, seed=11, image_hw=image_hw)
    if drop_camera:
        images[1] = None
    seed = 5
    noise = gaussian_noise(seed, (1, spec.chunk_size, spec.max_action_dim))

    # --- LeRobot inference ---
    batch = {"task": TASK, "observation.state": torch.from_numpy(state.copy())}
    for key, img in zip(spec.camera_keys, images, strict=True):
        if img is not None:
            batch[key] = torch.from_numpy(img).permute(2, 0, 1).to(torch.float32) / 255.0
    processed = pre(batch)
    lr.model.sample_noise = lambda shape, device: noise.clone().to(device)
    velocities: list[torch.Tensor] = []
    hook = lr.model.action_out_proj.register_forward_hook(lambda _m, _i, out: velocities.append(out.detach().clone()))
    with torch.no_grad():
        lr_chunk = lr.predict_action_chunk(processed)
    hook.remove()
    lr_actions = post(lr_chunk)[0].numpy()

    # --- omnimodel inference (unpadded and padded prompt) ---
    our_vel: list[torch.Tensor] = []
    hooks = [ours.model.velocity[i].register_forward_hook(lambda _m, _i, o: our_vel.append(o.detach().clone()))
             for i in range(spec.num_inference_steps)]
    out_padded = run_policy(ours, images, TASK, state, seed=seed, pad_prompt=True)
    vel_padded, our_vel = our_vel, []
    out = run_policy(ours, images, TASK, state, seed=seed)
    for h in hooks:
        h.remove()

    def vel_diff(ours_v: list[torch.Tensor]) -> float:
        return max(float((a.float() - b.float()).abs().max()) for a, b in zip(velocities, ours_v, strict=True))

    lr_tokens = processed["observation.language.tokens"][0].tolist()
    lr_mask = processed["observation.language.attention_mask"][0].tolist()
    report: dict = {
        "case": f"{kind} {precision}" + (f" images {image_hw}" if image_hw else "")
        + (" camera missing" if drop_camera else "") + (" openpi-named weights" if openpi_weights else ""),
        "weights_equal": weights_equal,  # every parameter as LeRobot loaded it (tied copy, prefix handling)
        "tokens_equal": lr_tokens == out_padded.inputs.prompt.ids and lr_mask == out_padded.inputs.prompt.mask,
        "valid_tokens": sum(lr_mask),
        # padded prompt: the same sequence LeRobot runs; unpadded: our default (pads removed)
        "max_abs_velocity_padded_prompt": vel_diff(vel_padded),
        "max_abs_actions_padded_prompt": float(np.abs(lr_actions - out_padded.actions).max()),
        "max_abs_velocity": vel_diff(our_vel),
        "max_abs_actions": float(np.abs(lr_actions - out.actions).max()),
        "action_scale": float(np.abs(lr_actions).max()),
        "velocity_scale": max(float(v.abs().max()) for v in velocities),
        "steps": len(velocities),
    }
    if kind == "pi0":
        report["max_abs_state"] = float((processed["observation.state"][0] - out.inputs.normalized_state).abs().max())

    # --- training loss (flow matching), one joint pass ---
    gen = torch.Generator().manual_seed(3)
    actions = torch.randn(1, spec.chunk_size, spec.max_action_dim, generator=gen)
    loss_noise = torch.randn(1, spec.chunk_size, spec.max_action_dim, generator=gen)
    time = torch.tensor([0.37])
    lr_images, lr_img_masks = lr._preprocess_images(processed)
    tokens = processed["observation.language.tokens"]
    masks = processed["observation.language.attention_mask"]
    with torch.no_grad():
        if kind == "pi05":
            lr_loss = lr.model.forward(lr_images, lr_img_masks, tokens, masks, actions, loss_noise, time)
        else:
            lr_loss = lr.model.forward(lr_images, lr_img_masks, tokens, masks, lr.prepare_state(processed), actions,
                                       loss_noise, time)
        x = out_padded.inputs
        our_loss = ours.model.flow_matching_loss(x.images, x.image_mask, x.tokens, x.token_mask, x.state, actions,
                                                 loss_noise, time)
    report["max_abs_loss"] = float((lr_loss.float() - our_loss.float()).abs().max())
    report["loss_scale"] = float(lr_loss.abs().max())
    return report


def _policy_action_to_transition():
    from lerobot.processor.converters import policy_action_to_transition

    return policy_action_to_transition


def _transition_to_policy_action():
    from lerobot.processor.converters import transition_to_policy_action

    return transition_to_policy_action


# Relative to the compared quantity's scale. With the padded prompt both sides run the same ops on the
# same shapes (found bit-identical with torch 2.13 / transformers 5.5.4); without padding the attention
# spans fewer keys, so float32 sums round differently and bf16 results may flip by an ulp.
SAME_SEQUENCE_TOL = 1e-6
UNPADDED_TOL = {"float32": 1e-5, "bfloat16": 2e-2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the JSON report here too")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = [("pi05", "float32", None, False, False), ("pi0", "float32", None, False, False),
             ("pi05", "float32", (48, 64), True, False), ("pi0", "float32", (64, 40), True, True),
             ("pi05", "bfloat16", None, False, True), ("pi0", "bfloat16", None, False, False)]
    reports, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, precision, hw, drop, openpi in cases:
            r = run_case(kind, precision, hw, drop, Path(tmp), openpi)
            tol = UNPADDED_TOL[precision]
            a_scale, v_scale = max(1.0, r["action_scale"]), max(1.0, r["velocity_scale"])
            ok = (r["weights_equal"] and r["tokens_equal"] and r["steps"] == 10
                  and r["max_abs_actions_padded_prompt"] <= SAME_SEQUENCE_TOL * a_scale
                  and r["max_abs_velocity_padded_prompt"] <= SAME_SEQUENCE_TOL * v_scale
                  and r["max_abs_loss"] <= SAME_SEQUENCE_TOL * max(1.0, r["loss_scale"])
                  and r["max_abs_actions"] <= tol * a_scale
                  and r["max_abs_velocity"] <= tol * v_scale
                  and r.get("max_abs_state", 0.0) <= 1e-6)
            r["ok"] = bool(ok)
            reports.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
            if not ok:
                failed.append(r["case"])
    text = json.dumps({"cases": reports, "failed": failed}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
