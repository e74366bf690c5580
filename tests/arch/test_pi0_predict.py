"""pi0 / pi0.5 robot side in C++ (cpp/src/vla/pi0_predict.cpp) against the Python reference.

The C++ runtime gets raw uint8 frames, the instruction and the raw robot state; from the metadata that
``arch/pi0/gguf_meta.py`` writes it builds the graph's inputs itself. Checked on miniatures of both
kinds, both checkpoint layouts and every normalisation mode, against ``policy.prepare_inputs``: token
ids equal, pixels bit-equal at native size and within float rounding when resized with padding, the
padded state equal, the seeded noise bit-equal, the un-normalised actions equal; bad input is an
error, never a crash. Without a graph the files are opened with ``preprocess_only`` (metadata only).

The end-to-end check (C predict_action == Python predict_action for the same seed) needs the pi0
graph (issue 12 item 4); it skips while the registry says that graph is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omnimodel.arch.pi0 import Pi0MiniatureSpec, load_policy, random_observation, write_miniature
from omnimodel.arch.pi0.gguf_meta import add_robot_metadata, write_robot_gguf
from omnimodel.arch.pi0.policy import gaussian_noise, predict_action, prepare_inputs
from omnimodel.gguf.writer import GGUFStreamWriter

from omnimodel import _runtime  # a broken build must fail these tests, not skip them

INSTRUCTIONS = [
    "pick up the red cube",
    "Put the black bowl on the plate",
    "  open_the_top drawer  ",
    "stack 3 blocks, then 12 more\nand stop",
    "put the crème brûlée in the café's fridge",
    "grab 🤖 the 🍎 now",
    "x",
    "a<bos>b<pad>c",
    "{braces} {task} {state} %s",
    "turn on the faucet " * 40,  # longer than tokenizer_max_length for pi0: truncated
]
RAW_TEXTS = INSTRUCTIONS + ["", " ", "\n", "\n\n", "Task: x, State: 1 -1 255;\nAction: ", "\u2581already", "ÿ\u007f\u0001"]

# (kind, layout, normalization_mapping override for LeRobot checkpoints)
CASES = [
    ("pi0", "lerobot", None),  # MEAN_STD
    ("pi05", "lerobot", None),  # QUANTILES
    ("pi0", "openpi", None),  # MEAN_STD, eps inside
    ("pi05", "openpi", None),  # QUANTILES, eps inside
    ("pi05", "lerobot", {"STATE": "MIN_MAX", "ACTION": "QUANTILE10"}),
    ("pi0", "lerobot", {"STATE": "IDENTITY", "ACTION": "MIN_MAX"}),
]


def _case_id(case) -> str:
    kind, layout, modes = case
    return f"{kind}-{layout}" + ("" if modes is None else "-" + "-".join(modes.values()))


@pytest.fixture(scope="module", params=CASES, ids=_case_id)
def case(request, tmp_path_factory):
    kind, layout, modes = request.param
    root = tmp_path_factory.mktemp(_case_id(request.param))
    spec = Pi0MiniatureSpec(kind=kind, layout=layout)
    ckpt = write_miniature(root / "ckpt", spec)
    if modes is not None:
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg["normalization_mapping"].update(modes)
        (ckpt / "config.json").write_text(json.dumps(cfg))
    policy = load_policy(ckpt)
    if modes is not None:
        assert policy.config.state_norm.value == modes["STATE"]
    path = write_robot_gguf(policy, root / "robot.gguf")
    with _runtime.Model(str(path), n_threads=1, preprocess_only=True) as model:
        yield spec, policy, model


def _bits(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32)).view(np.uint32)


def test_sizes(case):
    spec, policy, model = case
    cfg = policy.config
    assert (model.chunk_length, model.action_dim, model.image_size, model.n_images, model.proprio_dim,
            model.n_action_steps) == (cfg.chunk_size, cfg.action_dim, cfg.image_size, len(cfg.camera_keys),
                                      cfg.state_dim, cfg.n_action_steps)


def test_tokenizer_equals_sentencepiece(case):
    _, policy, model = case
    for text in RAW_TEXTS:
        assert model.tokenize(text) == policy.tokenizer.encode(text), repr(text)


@pytest.mark.parametrize("image_hw", [None, (48, 80), (100, 37), (7, 7)], ids=["native", "wide", "tall", "tiny"])
def test_inputs_equal_prepare_inputs(case, image_hw):
    spec, policy, model = case
    cfg = policy.config
    for i, instruction in enumerate(INSTRUCTIONS if image_hw is None else INSTRUCTIONS[:2]):
        images, state = random_observation(spec, seed=10 + i, image_hw=image_hw)
        if i == 1:
            state = state * 40.0  # far outside the statistics: pi0.5's bins -1 / 255, un-clipped normalisation
        ref = prepare_inputs(policy, images, instruction, state, seed=1000 + i)
        got = model.prepare_inputs(images, instruction, state, seed=1000 + i)
        assert got["input_ids"].reshape(-1).astype(np.int64).tolist() == ref.tokens[0].tolist(), repr(ref.prompt.text)
        assert got["input_ids"].shape == (1, len(ref.prompt.ids))
        assert got["pixel_values"].shape == tuple(ref.images.shape[1:])  # (cameras, 3, S, S): batch dropped
        if image_hw is None:
            np.testing.assert_array_equal(_bits(got["pixel_values"]), _bits(ref.images[0]))
        else:  # bilinear resize: the same formula, float summation order may differ
            np.testing.assert_allclose(got["pixel_values"], ref.images[0].numpy(), rtol=0, atol=2e-6)
        np.testing.assert_array_equal(got["image_mask"], ref.image_mask.numpy().astype(np.float32))
        np.testing.assert_array_equal(_bits(got["noise"]), _bits(ref.noise))
        if ref.state is None:
            assert "state" not in got
        else:
            np.testing.assert_array_equal(_bits(got["state"]), _bits(ref.state))
    if image_hw is None and cfg.tokenizer_max_length < 100:
        assert ref.prompt.truncated and got["input_ids"].shape[1] == cfg.tokenizer_max_length


def test_missing_camera_is_masked(case):
    spec, policy, model = case
    images, state = random_observation(spec, seed=5)
    images[0] = None
    ref = prepare_inputs(policy, images, "pick up the mug", state, seed=3)
    got = model.prepare_inputs(images, "pick up the mug", state, seed=3)
    np.testing.assert_array_equal(got["image_mask"], ref.image_mask.numpy().astype(np.float32))
    assert got["image_mask"][0, -1] == 0.0
    np.testing.assert_array_equal(_bits(got["pixel_values"]), _bits(ref.images[0]))


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**63 + 5, 2**64 - 1])
def test_noise_bit_equal(case, seed):
    spec, policy, model = case
    images, state = random_observation(spec, seed=2)
    got = model.prepare_inputs(images, "x", state, seed=seed)["noise"]
    ref = gaussian_noise(seed, (1, spec.chunk_size, spec.max_action_dim))
    np.testing.assert_array_equal(_bits(got), _bits(ref))


def test_unnormalized_actions_equal(case):
    spec, policy, model = case
    gen = torch.Generator().manual_seed(7)
    normalized = torch.randn(spec.chunk_size, spec.max_action_dim, generator=gen) * 1.5
    ref = policy.norm_stats.action.unnormalize(normalized[:, : spec.action_dim]).numpy()
    got = model.postprocess_actions(normalized.numpy())
    assert got.shape == (spec.chunk_size, spec.action_dim)
    np.testing.assert_array_equal(_bits(got), _bits(ref))


def test_bad_input_is_an_error(case):
    spec, policy, model = case
    err = _runtime.RuntimeStatusError
    images, state = random_observation(spec, seed=4)
    n_cams = len(policy.config.camera_keys)
    with pytest.raises(err, match=f"{n_cams} camera") as e:
        model.prepare_inputs(images[:-1], "x", state)
    assert e.value.status == "shape mismatch"
    with pytest.raises(err, match="at least one camera"):
        model.prepare_inputs([None] * n_cams, "x", state)
    with pytest.raises(err, match=f"the state has {spec.state_dim - 1} values"):
        model.prepare_inputs(images, "x", state[:-1])
    bad = state.copy()
    bad[2] = np.nan
    with pytest.raises(err, match=r"state\[2\] is not finite") as e:
        model.prepare_inputs(images, "x", bad)
    assert e.value.status == "invalid argument"
    with pytest.raises(err, match="NULL"):
        model.prepare_inputs(images, "x", None)
    for blank in ("", "  \n "):
        with pytest.raises(err, match="non-empty"):
            model.prepare_inputs(images, blank, state)
    thin = np.zeros((1, 500, 3), dtype=np.uint8)
    with pytest.raises(err, match="too thin"):
        model.prepare_inputs([thin] + images[1:], "x", state)
    with pytest.raises(err, match="max_action_dim"):
        model.postprocess_actions(np.zeros(5, dtype=np.float32))
    with pytest.raises(err, match="preprocessing only") as e:
        model.predict_action(images, "x", state)
    assert e.value.status == "unsupported"
    if policy.config.is_pi05:
        with pytest.raises(err, match="prepare_inputs"):
            model.input_ids("x")
    else:
        assert model.input_ids("pick up") == prepare_inputs(policy, images, "pick up", state).tokens[0].tolist()


class _Dropping:
    """A GGUF writer that leaves one key out (a file with missing metadata)."""

    def __init__(self, w: GGUFStreamWriter, drop: str) -> None:
        self._w, self._drop = w, drop

    def __getattr__(self, name: str):
        fn = getattr(self._w, name)

        def call(key, *args, **kwargs):
            if key != self._drop:
                fn(key, *args, **kwargs)

        return call


@pytest.mark.parametrize("drop", ["pi05.robot.state_norm.q99", "pi05.robot.camera_keys", "tokenizer.ggml.tokens",
                                  "pi05.robot.prompt.template"])
def test_missing_metadata_is_an_error(tmp_path, drop):
    spec = Pi0MiniatureSpec(kind="pi05")
    policy = load_policy(write_miniature(tmp_path / "ckpt", spec))
    path = tmp_path / "partial.gguf"
    with GGUFStreamWriter(path, "pi05") as w:
        add_robot_metadata(_Dropping(w, drop), policy)
    with _runtime.Model(str(path), preprocess_only=True) as model:
        with pytest.raises(_runtime.RuntimeStatusError, match=drop.split(".")[-1]) as e:
            _ = model.chunk_length
        assert e.value.status in ("not found", "invalid format")


@pytest.fixture(scope="module")
def pi0_graphs(tmp_path_factory) -> dict:
    """Per kind: the miniature, its policy, its F32 GGUF and its generated graph library; skips while
    the registry says the pi0 graph is missing (issue 12 item 4)."""
    from omnimodel.arch import registry

    if registry.get("pi05").missing:
        pytest.skip(f"no pi0 graph yet: {registry.get('pi05').missing}")
    from omnimodel.build import build_plugin
    from omnimodel.codegen.render import render
    from omnimodel.plan import make_plan

    root = tmp_path_factory.mktemp("pi0_graphs")
    out = {}
    for kind, layout in (("pi05", "lerobot"), ("pi0", "openpi")):
        spec = Pi0MiniatureSpec(kind=kind, layout=layout)
        ckpt = write_miniature(root / f"{kind}-ckpt", spec)
        policy = load_policy(ckpt)
        render(make_plan(registry.get(kind).analyze(ckpt), "f32"), root / f"{kind}-src")  # openpi names no family
        lib = build_plugin(root / f"{kind}-src", root / f"{kind}-build", verbose=False)
        gguf = registry.get(kind).write_gguf(policy, root / f"{kind}.gguf", "f32")
        out[kind] = (spec, policy, Path(gguf), Path(lib))
    return out


@pytest.mark.parametrize("kind", ["pi05", "pi0"])
def test_pi0_graph_end_to_end(pi0_graphs, kind):
    """C predict_action == Python predict_action for the same seed, and the same seed repeats exactly."""
    spec, policy, gguf, lib = pi0_graphs[kind]
    _runtime.load_plugin(str(lib))
    images, state = random_observation(spec, seed=9, image_hw=(60, 90))
    with _runtime.Model(str(gguf), n_threads=1) as model:
        for seed in (0, 17):
            ref = predict_action(policy, images, "pick up the red cube", state, seed=seed)
            got = model.predict_action(images, "pick up the red cube", state, seed=seed)
            span = np.maximum(np.abs(ref).max(axis=0), 1e-3)
            assert got.shape == ref.shape
            assert np.all(np.abs(got - ref) <= 1e-4 * span), np.abs(got - ref).max()  # F32: ~1e-6 seen
        again = model.predict_action(images, "pick up the red cube", state, seed=17)
        np.testing.assert_array_equal(again, got)


@pytest.mark.parametrize("kind", ["pi05", "pi0"])
def test_control_loop_example(pi0_graphs, kind, tmp_path):
    """The standalone project's example program (control_loop.c) on a pi0 GGUF: raw frames and state
    files in, the first n_action_steps actions of each chunk out, equal to Python's for seed + step.
    Compiled against the installed library with the graph from --plugin (the standalone project
    compiles the same file with the graph linked in; tests/arch/test_openvla_oft_predict.py builds it)."""
    import shutil
    import subprocess

    from omnimodel.paths import include_dir, library_dir

    spec, policy, gguf, lib = pi0_graphs[kind]
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (the package itself was built with one)"
    exe = tmp_path / "control_loop"
    src = Path(__file__).resolve().parents[2] / "python/omnimodel/codegen/standalone_project/control_loop.c"
    subprocess.run([cc, "-std=c99", "-O1", str(src), f"-I{include_dir()}", f"-L{library_dir()}", "-lomnimodel", "-lm",
                    f"-Wl,-rpath,{library_dir()}", "-o", str(exe)], check=True, capture_output=True, text=True)
    images, state = random_observation(spec, seed=11, image_hw=(50, 70))
    files = []
    for i, im in enumerate(images):
        files.append(tmp_path / f"cam{i}.rgb")
        files[-1].write_bytes(np.ascontiguousarray(im).tobytes())
    if kind == "pi05":  # the last camera missing: "-" on the command line, None in Python
        images[-1], files[-1] = None, "-"
    (tmp_path / "state.txt").write_text(" ".join(repr(float(v)) for v in state))
    instruction = "put the mug on the plate"
    res = subprocess.run([str(exe), str(gguf), instruction, "--steps", "2", "--seed", "40", "--plugin", str(lib),
                          "--threads", "1", "--image-size", "70", "50", "--images", *map(str, files), "--proprio",
                          str(tmp_path / "state.txt")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    n_steps = policy.config.n_action_steps  # openpi checkpoints execute their whole horizon
    assert f"n_action_steps={n_steps}" in res.stdout
    for step, text in enumerate(res.stdout.split("step ")[1:]):
        rows = [line.split()[2:] for line in text.splitlines() if line.startswith("action ")]
        got = np.array([[float(v) for v in r] for r in rows])
        ref = predict_action(policy, images, instruction, state, seed=40 + step)[:n_steps]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1e-3), res.stdout


def _reserialize(model: bytes, types: dict[int, int]) -> bytes:
    """``tokenizer.model`` with the types of some pieces changed (a protobuf rewrite of field 1)."""
    import struct

    from omnimodel.arch.pi0.sentencepiece_proto import _fields, _piece

    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return bytes(out)

    def field(number: int, wire: int, payload: bytes) -> bytes:
        return varint(number << 3 | wire) + (varint(len(payload)) if wire == 2 else b"") + payload

    out, index = b"", 0
    for number, wire, value in _fields(model):
        if number == 1:
            p = _piece(value)
            body = field(1, 2, p.piece.encode()) + field(2, 5, struct.pack("<f", p.score))
            body += field(3, 0, varint(types.get(index, p.type)))
            out += field(1, 2, body)
            index += 1
        else:
            out += field(number, wire, value if wire != 0 else varint(value))
    return out


def test_user_defined_and_unused_pieces_as_sentencepiece(tmp_path):
    """SentencePiece semantics the miniature's vocabulary does not exercise (PaliGemma's does: its
    user-defined pieces, e.g. "<loc0000>"): a user-defined piece is matched whole and never merged, a
    pair merging into an UNUSED piece is split back. Judged by the sentencepiece library itself."""
    import sentencepiece as spm

    spec = Pi0MiniatureSpec(kind="pi05", layout="openpi")
    ckpt = write_miniature(tmp_path / "ckpt", spec)
    original = (ckpt / "tokenizer.model").read_bytes()
    sp = spm.SentencePieceProcessor(model_proto=original)
    pieces = [sp.IdToPiece(i) for i in range(sp.GetPieceSize())]
    merged = [i for i, p in enumerate(pieces) if len(p) >= 3 and not p.startswith("<") and sp.IsUnused(i) is False]
    user = {i: 4 for i in merged[5:25:4]}  # mid-vocabulary words become user-defined
    unused = {i: 5 for i in merged[2:40:3] if i not in user}
    (ckpt / "tokenizer.model").write_bytes(_reserialize(original, {**user, **unused}))
    policy = load_policy(ckpt)
    sp = policy.tokenizer._sp
    assert sum(sp.IsUnused(i) for i in range(sp.GetPieceSize())) == len(unused)
    path = write_robot_gguf(policy, tmp_path / "robot.gguf")
    words = [pieces[i].replace("\u2581", " ") for i in list(user) + list(unused)]
    texts = RAW_TEXTS + [" ".join(words), "".join(words), "x".join(words[::-1])]
    with _runtime.Model(str(path), preprocess_only=True) as model:
        for text in texts:
            assert model.tokenize(text) == sp.EncodeAsIds(text), repr(text)
    changed = [t for t in texts if spm.SentencePieceProcessor(model_proto=original).EncodeAsIds(t) != sp.EncodeAsIds(t)]
    assert changed, "the edited types must change some encodings, or this test checks nothing"
