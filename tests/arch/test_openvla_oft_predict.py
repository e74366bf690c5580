"""The robot-side path in C++ (omnimodel_predict_action and its parts) against the Python policy.

The C++ runtime gets only raw uint8 frames, the instruction text and the raw proprio state; it
tokenises with the vocabulary stored in the GGUF, preprocesses the images and normalises the
proprio itself. Checked on the miniature: token ids equal to the Python tokenizer's (both the
tokenizer.json and the tokenizer.model flavour, every code point Python lower-cases), pixel values
bit-equal at native resolution and within one uint8 level when resizing, the action chunk within
1e-4 of the action range at F32, errors instead of crashes, and the standalone project
(omnimodel.codegen.standalone, with the generated graph compiled in) building with CMake alone and
printing the same chunk. The graph is the generated one (session fixture ``generated_oft_plugin``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omnimodel.arch.openvla_oft import MiniatureSpec, load_policy, random_observation, run_policy, write_miniature
from omnimodel.arch.openvla_oft.export import write_gguf
from omnimodel.arch.openvla_oft.preprocess import images_to_pixel_values
from omnimodel.arch.openvla_oft.tokenizer import load_prompt_tokenizer

from omnimodel import _runtime  # a broken build must fail these tests, not skip them

SPEC = MiniatureSpec(seed=0)
REPO = Path(__file__).resolve().parents[2]

INSTRUCTIONS = [
    "Put the black bowl on the plate",
    "pick up the alphabet soup and place it in the basket",
    "OPEN THE TOP DRAWER of the cabinet!!!",
    "move 3 cups, 12.5cm to the left (then stop).",
    "put the crème brûlée in the café's fridge",
    "Straße nach München: ÄÖÜ",
    "ΟΔΥΣΣΕΥΣ ΣΑΣ Σ ΑΣ. ΑΣ'Σ",  # Python's Final_Sigma rule
    "İstanbul ǅemal ǈ",  # multi-code-point and title-case lowering
    "日本語で指示する",
    "grab 🤖 the 🍎 now",
    "tabs\tand\nnewlines  and   spaces ",
    "x",
    "?",
    "a<s>b</s>c<unk>",  # special tokens in the raw text
    "{curly} braces %s \\n",
]
RAW_TEXTS = INSTRUCTIONS + ["", " ", "  leading", "trailing  ", "\u2581already", "<0x41>", "ÿ\u007f\u0001"]


pytestmark = pytest.mark.usefixtures("oft_generated_graph", "one_torch_thread")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("oft_predict")


@pytest.fixture(scope="module")
def policy(workdir: Path):
    return load_policy(write_miniature(workdir / "mini", SPEC))


@pytest.fixture(scope="module")
def gguf_f32(policy, workdir: Path) -> Path:
    return write_gguf(policy, workdir / "oft-f32.gguf", "f32")


@pytest.fixture(scope="module")
def model(gguf_f32: Path):
    with _runtime.Model(str(gguf_f32), n_threads=1) as m:
        yield m


@pytest.fixture(scope="module")
def observation():
    return random_observation(SPEC, seed=3)


def full_ids(policy, instruction: str) -> list[int]:
    prompt = torch.tensor([policy.tokenizer.encode_prompt(instruction)])
    return policy.model.full_input_ids(prompt)[0].tolist()


# --------------------------------------------------------------------------------------------------
# queries


def test_queries(model, policy):
    cfg = policy.config
    assert model.chunk_length == cfg.num_actions_chunk
    assert model.action_dim == cfg.action_dim
    assert model.image_size == cfg.vision.image_size
    assert model.n_images == cfg.num_images
    assert model.proprio_dim == cfg.proprio_projector.proprio_dim


def test_queries_on_a_non_vla_model_fail(tmp_path):
    from omnimodel.gguf.writer import GGUFModelWriter

    path = tmp_path / "mlp.gguf"
    with GGUFModelWriter(path, "omni-mlp") as w:
        w.add_uint32("omni-mlp.block_count", 1)
        w.add_tensor("layers.0.weight", np.ones((4, 4), np.float32), "F32")
    with _runtime.Model(str(path)) as m:
        with pytest.raises(_runtime.RuntimeStatusError, match="num_images"):
            _ = m.chunk_length
        with pytest.raises(_runtime.RuntimeStatusError):
            m.tokenize("hello")


# --------------------------------------------------------------------------------------------------
# tokenizer


@pytest.mark.parametrize("text", RAW_TEXTS)
def test_tokenize_equals_tokenizers(model, policy, text):
    expected = policy.tokenizer.encoder._tok.encode(text, add_special_tokens=False).ids
    assert model.tokenize(text) == expected


@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_input_ids_equal_python(model, policy, instruction):
    assert model.input_ids(instruction) == full_ids(policy, instruction)


def test_lowercasing_matches_python_for_every_code_point(model, policy):
    """Every code point str.lower() changes, in instructions the C++ side lower-cases itself."""
    changed = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and chr(c).lower() != chr(c)]
    assert len(changed) > 1000
    for i in range(0, len(changed), 300):
        text = "go " + " ".join(changed[i : i + 300])
        assert model.input_ids(text) == full_ids(policy, text), f"code points from {ord(changed[i]):#x}"


def test_sentencepiece_scores_flavour(policy, workdir):
    """A policy read from tokenizer.model exports scores instead of merges; ids still match."""
    sp_tok = load_prompt_tokenizer(workdir / "mini", policy.config.prompt, policy.config.bos_token_id,
                                   prefer="tokenizer.model")
    sp_policy = dataclasses.replace(policy, tokenizer=sp_tok)
    path = write_gguf(sp_policy, workdir / "oft-sp.gguf", "f32")
    with _runtime.Model(str(path)) as m:
        assert m.meta_str("tokenizer.ggml.model") == "llama"
        for text in RAW_TEXTS:
            if "<" in text:  # SentencePiece does not cut special tokens out of raw text; tokenizers does
                continue
            assert m.tokenize(text) == list(sp_tok.encoder._sp.EncodeAsIds(text)), text
        for ins in INSTRUCTIONS:
            assert m.input_ids(ins)[: len(sp_tok.encode_prompt(ins))] == sp_tok.encode_prompt(ins), ins


def test_bad_text(model):
    with pytest.raises(ValueError, match="NUL"):
        model.tokenize("a\0b")
    with pytest.raises(_runtime.RuntimeStatusError, match="non-empty"):
        model.input_ids("   ")
    with pytest.raises(_runtime.RuntimeStatusError, match="non-empty"):
        model.input_ids("")


# --------------------------------------------------------------------------------------------------
# images


def test_preprocess_native_is_bit_exact(model, policy, observation):
    images, _ = observation
    expected = images_to_pixel_values(images, policy.config.vision, policy.config.num_images).numpy()
    got = model.preprocess_images(images)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_preprocess_strided_frames(model, policy, observation):
    """A crop out of a bigger frame (rows padded) reads the same pixels."""
    images, _ = observation
    s = policy.config.vision.image_size
    big = [np.zeros((s + 5, s + 7, 3), np.uint8) for _ in images]
    for b, im in zip(big, images, strict=True):
        b[2 : 2 + s, 3 : 3 + s] = im
    crops = [b[2 : 2 + s, 3 : 3 + s] for b in big]
    np.testing.assert_array_equal(model.preprocess_images(crops), model.preprocess_images(list(images)))


@pytest.mark.parametrize("hw", [(80, 96), (40, 30), (57, 56), (224, 224)])
def test_preprocess_resized_within_one_level(model, policy, hw):
    rng = np.random.default_rng(hw[0] * 1000 + hw[1])
    cfg = policy.config
    # smooth-ish content (as a camera gives) plus noise, so both filter lobes matter
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    base = 127 + 100 * np.sin(xx[..., None] / 7.0 + np.arange(3)) * np.cos(yy[..., None] / 5.0)
    images = [np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8) for _ in range(cfg.num_images)]
    expected = images_to_pixel_values(images, cfg.vision, cfg.num_images).numpy()
    got = model.preprocess_images(images)
    std = np.asarray(cfg.vision.normalization[0].std, np.float32)[None, :, None, None]
    levels = np.abs(got - expected)[:, 0:3] * std * 255.0  # first tower, back in uint8 levels
    assert levels.max() <= 1.0 + 1e-3
    assert (levels > 0.5).mean() < 0.01


# --------------------------------------------------------------------------------------------------
# predict_action


def test_predict_action_equals_python(model, policy, observation):
    images, proprio = observation
    for instruction in ("Put the black bowl on the plate", "OPEN the drawer, then close it."):
        expected = run_policy(policy, images, instruction, proprio).actions
        got = model.predict_action(list(images), instruction, np.asarray(proprio, np.float32))
        assert got.shape == expected.shape == (policy.config.num_actions_chunk, policy.config.action_dim)
        rng = np.ptp(expected)
        assert np.abs(got - expected).max() <= 1e-4 * rng, instruction


def test_predict_action_bad_inputs(model, observation):
    images, proprio = observation
    p = np.asarray(proprio, np.float32)
    err = _runtime.RuntimeStatusError
    with pytest.raises(err, match="2 image") as e:
        model.predict_action(list(images[:1]), "go", p)
    assert e.value.status == "shape mismatch"
    with pytest.raises(err, match="proprio has 7 values"):
        model.predict_action(list(images), "go", p[:7])
    bad = p.copy()
    bad[3] = np.nan
    with pytest.raises(err, match=r"proprio\[3\] is not finite") as e:
        model.predict_action(list(images), "go", bad)
    assert e.value.status == "invalid argument"
    bad[3] = np.inf
    with pytest.raises(err, match="not finite"):
        model.predict_action(list(images), "go", bad)
    with pytest.raises(err, match="needs a 8-D proprio"):
        model.predict_action(list(images), "go", None)
    with pytest.raises(err, match="non-empty"):
        model.predict_action(list(images), " ", p)
    with pytest.raises(err, match="empty"):
        model.predict_action([images[0], np.zeros((0, 5, 3), np.uint8)], "go", p)
    with pytest.raises(ValueError, match="uint8"):
        model.predict_action([images[0], images[1].astype(np.float32)], "go", p)
    # the context still works after errors
    assert np.isfinite(model.predict_action(list(images), "go", p)).all()


# --------------------------------------------------------------------------------------------------
# the standalone project: CMake alone, example program prints the same chunk


def cached_ggml_dir() -> Path | None:
    """The ggml tree fetch_ggml.py cached (so the build does not download)."""
    sys.path.insert(0, str(REPO / "third_party" / "ggml"))
    try:
        import fetch_ggml  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    import json

    pin = json.loads((REPO / "third_party" / "ggml" / "pin.json").read_text())
    for cand in sorted(fetch_ggml.cache_root().glob(f"ggml-{pin['ggml_version']}-*/ggml")):
        if (cand / "CMakeLists.txt").is_file():
            return cand
    return None


def parse_chunk(stdout: str) -> np.ndarray:
    rows = [line.split()[2:] for line in stdout.splitlines() if line.startswith("action ")]
    return np.array([[float(v) for v in r] for r in rows])


def test_standalone_project_builds_and_predicts(policy, gguf_f32, observation, workdir, tmp_path,
                                               generated_oft_plugin):
    """The one test that compiles ggml (a few minutes on two cores): the project convert writes, with
    the rendered graph compiled in and registered without any plugin loading."""
    from omnimodel.codegen.standalone import write_standalone_project

    ggml = cached_ggml_dir()
    assert ggml is not None, "the pinned ggml tree is not cached: build the package once (pip install .)"
    assert shutil.which("cmake"), "cmake is needed (pip install cmake)"
    images, proprio = observation
    rendered = generated_oft_plugin.sources / "openvla_oft.cpp"
    project = write_standalone_project(workdir / "standalone", gguf_f32, [rendered])
    assert (project / "arch" / "openvla_oft.cpp").read_text() == rendered.read_text()
    # copy to an empty directory: the project must not point back into this checkout
    moved = tmp_path / "robot"
    shutil.copytree(project, moved)
    # the observation as the example reads it: raw RGB files and a text proprio file
    obs = tmp_path / "obs"
    obs.mkdir()
    for i, im in enumerate(images):
        (obs / f"image{i}.rgb").write_bytes(np.ascontiguousarray(im).tobytes())
    (obs / "proprio.txt").write_text(" ".join(repr(float(np.float32(v))) for v in proprio))

    build = tmp_path / "build"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIMODEL_")}
    subprocess.run(["cmake", "-S", str(moved), "-B", str(build), f"-DOMNIMODEL_GGML_DIR={ggml}",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, env=env, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, env=env, capture_output=True)
    exe = build / "control_loop"
    instruction = "Put the black bowl on the plate"
    res = subprocess.run(
        [str(exe), str(moved / gguf_f32.name), instruction, "--steps", "2", "--image-size",
         str(images[0].shape[1]), str(images[0].shape[0]), "--images"] + [str(obs / f"image{i}.rgb") for i in range(len(images))]
        + ["--proprio", str(obs / "proprio.txt"), "--threads", "1"],
        check=True, env=env, capture_output=True, text=True)
    # the graph is the generated source compiled in, registered without loading any plugin
    assert "arch=openvla-oft graph=linked:arch/openvla_oft.cpp " in res.stdout, res.stdout
    chunk = parse_chunk(res.stdout.split("step 1")[0])
    expected = run_policy(policy, images, instruction, np.asarray(proprio, np.float32).astype(np.float64)).actions
    assert chunk.shape == expected.shape
    assert np.abs(chunk - expected).max() <= 1e-4 * np.ptp(expected), res.stdout


def test_docs_show_the_complete_example():
    """docs/robot_integration.md carries the example program verbatim."""
    src = (REPO / "python/omnimodel/codegen/standalone_project/control_loop.c").read_text()
    assert "```c\n" + src + "```" in (REPO / "docs/robot_integration.md").read_text()
