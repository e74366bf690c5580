"""The attention knob: naive (matmul, softmax, matmul) and flash (ggml_flash_attn_ext on F32 K/V) graphs
of one OpenVLA-OFT miniature both pass the validator at f32 and f16; flash_f16 (K/V rounded to F16) at
f16, the only precision whose thresholds allow that rounding.

The miniature has 112 px images (8 x 8 patches: 69 DINOv2 tokens, 64 SigLIP) and a 170-token Llama
sequence, so ggml runs its tiled flash kernel (>= 64 query rows); the default 56 px miniature of the
other tests covers the row-by-row one.
"""

from __future__ import annotations

import pytest

from omnimodel import _runtime


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    from omnimodel.analyze import analyze
    from omnimodel.arch.openvla_oft import MiniatureSpec, load_policy, write_miniature
    from omnimodel.arch.openvla_oft import export as oft_export
    from omnimodel.plan import make_plan
    from omnimodel.validate.reference import parity_observation, run_reference

    root = tmp_path_factory.mktemp("attn")
    ckpt = write_miniature(root / "ckpt", MiniatureSpec(seed=1, image_size=112))
    policy = load_policy(ckpt)
    images, proprio = parity_observation(policy, 0)
    ref = run_reference(policy, images, "put the bowl on the plate", proprio, dtype="float64")
    ggufs = {t: oft_export.write_gguf(policy, root / f"{t}.gguf", t) for t in ("f32", "f16")}
    return root, make_plan(analyze(ckpt), "f32"), ref, ggufs


def _plugin(plan, attn: str, root):
    from omnimodel.build import build_plugin
    from omnimodel.codegen.render import render

    for m in plan.modules:
        if m.skill in ("vit_tower", "llama_stack"):
            plan = plan.with_knob(m.name, "attn", attn)
    render(plan, root / f"src-{attn}")
    return build_plugin(root / f"src-{attn}", root / f"build-{attn}", verbose=False)


@pytest.mark.parametrize("attn", ["naive", "flash", "flash_f16", "omni"])
def test_attention_path_passes_the_validator(mini, attn, generated_oft_plugin) -> None:
    from omnimodel.validate.parity import check_parity, run_runtime

    root, plan, ref, ggufs = mini
    assert ref.inputs["input_ids"].shape[1] + 2 * 64 + 1 >= 64  # tiled flash rows
    lib = _plugin(plan, attn, root)
    try:
        _runtime.load_plugin(lib)
        tensors = {}
        for outtype, gguf in ggufs.items():
            if attn == "flash_f16" and outtype == "f32":
                continue  # K/V in F16: 2^-11 relative, above the f32 thresholds by design
            tensors[outtype] = run_runtime(gguf, ref.inputs, threads=2)
            report = check_parity(tensors[outtype], ref, outtype)
            assert report.passed, (attn, outtype, report.first_failure)
            assert len(report.results) >= 40 and report.unmatched == []
        with _runtime.Model(str(ggufs["f32"]), n_threads=1) as m:
            m.set_profile(True)
            m.run(ref.inputs)
            ops = {n["op"] for n in m.profile()}
        assert ("FLASH_ATTN_EXT" in ops) == attn.startswith("flash"), ops
        assert ("CUSTOM" in ops) == (attn == "omni"), ops
        assert ("SOFT_MAX" in ops) == (attn == "naive"), ops
    finally:
        generated_oft_plugin.reload()
