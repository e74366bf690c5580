"""The compiled runtime against numpy: a GGUF written from Python, loaded and run in C++."""

from __future__ import annotations

import numpy as np
import pytest

from omnimodel import _runtime
from omnimodel.arch import omni_mlp
from omnimodel.gguf.types import GGMLType
from omnimodel.gguf.writer import GGUFModelWriter

from gguf_patch import patch_tensor_offset, patch_tensor_type

N_IN, N_OUT, N_TOK = 512, 256, 7
EPS = 1e-5


def write_mlp(path, weight_type, seed, *, norm="layer", n_layers=1, activation="gelu"):
    """Write an omni-mlp file; return the model description for the numpy reference."""
    widths = (N_IN,) + (N_OUT,) * n_layers
    model = omni_mlp.random_mlp(omni_mlp.MLPConfig(widths, norm=norm, norm_eps=EPS, activation=activation),
                                weight_type, seed=seed)
    omni_mlp.write_gguf(model, path)
    return model


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# (type, max abs error allowed on the normalised output). F32 is exact up to summation order; F16
# and the quantized types also see their activations rounded to F16 / Q8_0 / Q8_K inside the matmul.
CASES = [
    (GGMLType.F32, 1e-4),
    (GGMLType.F16, 2e-2),
    (GGMLType.Q8_0, 3e-2),
    (GGMLType.Q4_K, 3e-2),
    (GGMLType.Q2_0, 3e-2),
    (GGMLType.Q1_0, 3e-2),
]


@pytest.mark.parametrize("weight_type,tol", CASES, ids=[c[0].name for c in CASES])
def test_matmul_bias_norm_matches_numpy(tmp_path, weight_type, tol):
    path = tmp_path / f"mlp_{weight_type.name}.gguf"
    model = write_mlp(path, weight_type, seed=int(weight_type))
    x = np.random.default_rng(0).standard_normal((N_TOK, N_IN)).astype(np.float32)

    with _runtime.Model(str(path), n_threads=2) as m:
        assert m.architecture == "omni-mlp"
        types = {t["name"]: t["type"] for t in m.tensors()}
        assert types["layers.0.weight"] == int(weight_type)
        got = m.run({"x": x}, capture=["layers.0.linear"])

    ref = omni_mlp.reference_forward(model, x)
    assert got["out"].shape == (N_TOK, N_OUT)
    assert np.abs(got["out"] - ref["out"]).max() < tol
    assert cosine(got["out"], ref["out"]) > 0.9999
    # The captured pre-norm intermediate matches too.
    lin = got["layers.0.linear"]
    assert lin.shape == (N_TOK, N_OUT)
    assert np.abs(lin - ref["layers.0.linear"]).max() < tol * np.abs(ref["layers.0.linear"]).max()


def test_capture_all_names_every_intermediate(tmp_path):
    path = tmp_path / "mlp2.gguf"
    model = write_mlp(path, GGMLType.F32, seed=1, n_layers=2, norm="rms")
    x = np.random.default_rng(1).standard_normal((3, N_IN)).astype(np.float32)
    with _runtime.Model(str(path), n_threads=1) as m:
        got = m.run({"x": x}, capture=["*"])
        # Without capture only the output is kept, and asking for an intermediate is an error.
        only_out = m.run({"x": x})
        with pytest.raises(_runtime.RuntimeStatusError) as ei:
            m.result("layers.0.linear")
        assert ei.value.code == 6  # OMNIMODEL_ERR_NOT_FOUND
    ref = omni_mlp.reference_forward(model, x)
    expected = {"layers.0.linear", "layers.0.norm", "layers.0.act", "layers.1.linear", "layers.1.norm", "out"}
    assert expected <= set(got)
    for name in expected:
        assert np.abs(got[name] - ref[name]).max() < 1e-4, name
    assert set(only_out) == {"out"}
    np.testing.assert_array_equal(only_out["out"], got["out"])


def test_wrong_input_shape_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "mlp.gguf"
    write_mlp(path, GGMLType.F32, seed=2)
    with _runtime.Model(str(path)) as m:
        with pytest.raises(_runtime.RuntimeStatusError, match="expects inputs of width 512") as ei:
            m.run({"x": np.zeros((2, 100), np.float32)})
        assert ei.value.code == 5  # OMNIMODEL_ERR_SHAPE
        with pytest.raises(_runtime.RuntimeStatusError, match="needs input 'x'"):
            m.run({"y": np.zeros((2, N_IN), np.float32)})
        with pytest.raises(_runtime.RuntimeStatusError, match="non-finite"):
            m.run({"x": np.full((2, N_IN), np.nan, np.float32)})
        # The context stays usable after errors.
        assert m.run({"x": np.ones((2, N_IN), np.float32)})["out"].shape == (2, N_OUT)


def test_metadata_and_tensor_listing(tmp_path):
    path = tmp_path / "mlp.gguf"
    write_mlp(path, GGMLType.Q8_0, seed=3)
    with _runtime.Model(str(path), use_mmap=False) as m:
        assert m.meta_int("omni-mlp.block_count") == 1
        assert m.meta_float("omni-mlp.norm_eps") == pytest.approx(EPS)
        assert m.meta_str("general.architecture") == "omni-mlp"
        rows = {t["name"]: t for t in m.tensors()}
        assert rows["layers.0.weight"]["shape"] == (N_OUT, N_IN)
        assert rows["layers.0.weight"]["type_name"] == "q8_0"
        assert rows["layers.0.weight"]["n_bytes"] == N_OUT * N_IN // 32 * 34
        with pytest.raises(_runtime.RuntimeStatusError, match="missing"):
            m.meta_int("omni-mlp.nope")


# ---- bad files ---------------------------------------------------------------------------------


@pytest.fixture()
def good_file(tmp_path):
    path = tmp_path / "good.gguf"
    write_mlp(path, GGMLType.Q4_K, seed=4)
    return path


def load_error(path):
    with pytest.raises(_runtime.RuntimeStatusError) as ei:
        _runtime.Model(str(path))
    return ei.value


def test_missing_file(tmp_path):
    e = load_error(tmp_path / "nope.gguf")
    assert e.code == 2 and "cannot open" in str(e)


def test_bad_magic(tmp_path, good_file):
    data = bytearray(good_file.read_bytes())
    data[:4] = b"GGML"
    good_file.write_bytes(bytes(data))
    e = load_error(good_file)
    assert e.code == 3 and "bad magic" in str(e)


@pytest.mark.parametrize("keep", [2, 20, 200])
def test_truncated_header(tmp_path, good_file, keep):
    good_file.write_bytes(good_file.read_bytes()[:keep])
    e = load_error(good_file)
    assert e.code == 3, str(e)


def test_truncated_data(good_file):
    good_file.write_bytes(good_file.read_bytes()[:-100])
    e = load_error(good_file)
    assert e.code == 3 and "runs past the end" in str(e) and "layers.0.norm.bias" in str(e)


def test_tensor_offset_past_end(good_file):
    patch_tensor_offset(good_file, "layers.0.weight", 1 << 40)
    e = load_error(good_file)
    assert e.code == 3


@pytest.mark.parametrize("type_id", [4, 99, 2**31 - 1])
def test_unknown_type_id(good_file, type_id):
    patch_tensor_type(good_file, "layers.0.weight", type_id)
    e = load_error(good_file)
    assert e.code == 3 and "layers.0.weight" in str(e)


def test_unknown_architecture(tmp_path):
    path = tmp_path / "other.gguf"
    with GGUFModelWriter(path, "not-an-arch") as w:
        w.add_tensor("w", np.zeros((4, 32), np.float32), GGMLType.F32)
    e = load_error(path)
    assert e.code == 4 and "not-an-arch" in str(e)
    # model graphs are generated, not built in: the message says where to get one
    assert "load the plugin generated by `omnimodel convert`" in str(e)
    assert _runtime.graph_source("not-an-arch") == ""


def test_graph_source_of_a_builtin(good_file):
    assert _runtime.graph_source("omni-mlp") == "builtin:omni-mlp"
    with _runtime.Model(str(good_file), n_threads=1) as m:
        assert m.graph_source == "builtin:omni-mlp"


def test_gpu_backend_request_without_gpu(good_file):
    with pytest.raises(_runtime.RuntimeStatusError) as ei:
        _runtime.Model(str(good_file), backend="gpu")
    assert ei.value.code == 4


def test_timings_give_a_per_stage_split(tmp_path):
    path = tmp_path / "mlp3.gguf"
    write_mlp(path, GGMLType.F32, seed=5, n_layers=3)
    x = np.ones((4, N_IN), np.float32)
    with _runtime.Model(str(path), n_threads=1) as m:
        m.run({"x": x}, capture=["layers.0.norm", "layers.1.norm"])
        t = m.timings()
    assert t["build_s"] >= 0 and t["compute_s"] > 0
    first, second = t["ready_s"]["layers.0.norm"], t["ready_s"]["layers.1.norm"]
    assert 0 <= first <= second <= t["compute_s"]
    assert "out" not in t["ready_s"]  # only captured intermediates are timed


def _write_padded_mlp(path, stored_width, real_width=None):
    """omni-mlp with its matrix in Q4_K, rows of 80 stored zero-padded to ``stored_width``."""
    from omnimodel.gguf.encoders import decode, encode

    n_in, n_out = 80, 64
    model = omni_mlp.random_mlp(omni_mlp.MLPConfig((n_in, n_out), norm_eps=EPS), GGMLType.F32, seed=5)
    w = model.weights["layers.0.weight"]
    blocks = encode(np.pad(w, ((0, 0), (0, stored_width - n_in))), GGMLType.Q4_K)
    model.weights["layers.0.weight"] = decode(blocks, GGMLType.Q4_K, stored_width)[:, :n_in]
    cfg = model.config
    with GGUFModelWriter(path, "omni-mlp") as out:
        out.add_uint32("omni-mlp.block_count", cfg.n_layers)
        out.add_string("omni-mlp.norm", cfg.norm)
        out.add_float32("omni-mlp.norm_eps", cfg.norm_eps)
        out.add_string("omni-mlp.activation", cfg.activation)
        for name, value in model.weights.items():
            if name == "layers.0.weight":
                out.add_encoded(name, blocks, GGMLType.Q4_K, (n_out, stored_width), real_width=real_width)
            else:
                out.add_tensor(name, value, GGMLType.F32)
    return model


def test_row_padded_matrix_pads_the_activation(tmp_path):
    """A matrix stored with rows zero-padded to its block (80 -> 256 for Q4_K): the graph pads x to match."""
    path = tmp_path / "padded.gguf"
    model = _write_padded_mlp(path, 256, real_width=80)
    x = np.random.default_rng(1).standard_normal((N_TOK, 80)).astype(np.float32)
    with _runtime.Model(str(path), n_threads=1) as m:
        got = m.run({"x": x})
    ref = omni_mlp.reference_forward(model, x)
    assert cosine(got["out"], ref["out"]) > 0.9999
    assert np.abs(got["out"] - ref["out"]).max() < 3e-2


def test_padding_beyond_one_block_is_a_shape_error(tmp_path):
    """Only the real width rounded up to the type's block is accepted: 80 stored as 512 is a wrong model."""
    path = tmp_path / "overpadded.gguf"
    _write_padded_mlp(path, 512)
    x = np.zeros((N_TOK, 80), np.float32)
    with _runtime.Model(str(path), n_threads=1) as m:
        with pytest.raises(_runtime.RuntimeStatusError, match="expects inputs of width 512"):
            m.run({"x": x})
