"""GGUFModelWriter: round trips through our reader and gguf-py's, provenance, atomicity and error cases."""

from __future__ import annotations

import gc
import math
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

import omnimodel
import omnimodel.gguf.encoders as encoders
from omnimodel.errors import GGUFWriteError, OmnimodelError
from omnimodel.gguf import GGMLType, GGUFModelWriter, GGUFStreamWriter, load_raw, load_tensor, read_gguf, type_info
from omnimodel.gguf.values import GGUFValueType

RNG = np.random.default_rng(1234)

# (type, shape in PyTorch order, worst relative error allowed against the float input)
ROUND_TRIP = [
    (GGMLType.F32, (4, 64), 0.0),
    (GGMLType.F16, (3, 2, 32), 0.0),
    (GGMLType.BF16, (64,), 0.0),
    (GGMLType.Q8_0, (8, 96), 0.02),
    (GGMLType.Q4_K, (4, 512), 0.25),
    (GGMLType.Q1_0, (4, 256), 1.0),
]


def _weights(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _temp_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("rt") / "model.gguf"
    inputs = {f"blk.{i}.{t.name.lower()}": _weights(shape) for i, (t, shape, _) in enumerate(ROUND_TRIP)}
    with GGUFModelWriter(path, "omni-test", method="rtn", target_bpw=4.25) as w:
        for (t, _, _), (name, x) in zip(ROUND_TRIP, inputs.items()):
            w.add_tensor(name, x, t)
        w.add_uint8("test.u8", 255)
        w.add_int8("test.i8", -128)
        w.add_uint16("test.u16", 65535)
        w.add_int16("test.i16", -32768)
        w.add_uint32("test.u32", 2**32 - 1)
        w.add_int32("test.i32", -(2**31))
        w.add_uint64("test.u64", 2**64 - 1)
        w.add_int64("test.i64", -(2**63))
        w.add_float32("test.f32", 0.25)
        w.add_float64("test.f64", 1 / 3)
        w.add_bool("test.bool", False)
        w.add_string("test.str", "héllo\nworld")
        w.add_metadata("test.int", 7)
        w.add_metadata("test.bigint", 2**40)
        w.add_metadata("test.float", 1.5)
        w.add_metadata("test.np_u16", np.uint16(9))
        w.add_metadata("test.np_f64", np.float64(0.1))
        w.add_array("test.ints", [1, -2, 3])
        w.add_array("test.floats", [0.5, 1, 2.5])
        w.add_array("test.strs", ["a", "b", "c"])
        w.add_array("test.bools", [True, False])
        w.add_array("test.bytes", [1, 2, 3], "u8")
        w.add_array("test.np_f64s", np.array([0.1, 0.2]))
        w.add_array("test.vocab", [f"tok{i}" for i in range(1000)])
    return path, inputs


EXPECTED_METADATA: dict[str, tuple[object, str, GGUFValueType]] = {
    "test.u8": (255, "u8", GGUFValueType.UINT8),
    "test.i8": (-128, "i8", GGUFValueType.INT8),
    "test.u16": (65535, "u16", GGUFValueType.UINT16),
    "test.i16": (-32768, "i16", GGUFValueType.INT16),
    "test.u32": (2**32 - 1, "u32", GGUFValueType.UINT32),
    "test.i32": (-(2**31), "i32", GGUFValueType.INT32),
    "test.u64": (2**64 - 1, "u64", GGUFValueType.UINT64),
    "test.i64": (-(2**63), "i64", GGUFValueType.INT64),
    "test.f32": (0.25, "f32", GGUFValueType.FLOAT32),
    "test.f64": (1 / 3, "f64", GGUFValueType.FLOAT64),
    "test.bool": (False, "bool", GGUFValueType.BOOL),
    "test.str": ("héllo\nworld", "str", GGUFValueType.STRING),
    "test.int": (7, "i32", GGUFValueType.INT32),
    "test.bigint": (2**40, "i64", GGUFValueType.INT64),
    "test.float": (1.5, "f32", GGUFValueType.FLOAT32),
    "test.np_u16": (9, "u16", GGUFValueType.UINT16),
    "test.np_f64": (0.1, "f64", GGUFValueType.FLOAT64),
    "test.ints": ([1, -2, 3], "arr[i32]", GGUFValueType.ARRAY),
    "test.floats": ([0.5, 1.0, 2.5], "arr[f32]", GGUFValueType.ARRAY),
    "test.strs": (["a", "b", "c"], "arr[str]", GGUFValueType.ARRAY),
    "test.bools": ([True, False], "arr[bool]", GGUFValueType.ARRAY),
    "test.bytes": ([1, 2, 3], "arr[u8]", GGUFValueType.ARRAY),
    "test.np_f64s": ([0.1, 0.2], "arr[f64]", GGUFValueType.ARRAY),
}


def test_metadata_round_trip(round_trip: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = round_trip
    gf = read_gguf(path)
    for key, (value, label, _) in EXPECTED_METADATA.items():
        assert gf.metadata[key] == value, key
        assert gf.metadata_types[key] == label, key
    assert gf.metadata["test.vocab"][999] == "tok999"
    assert gf.metadata["general.architecture"] == "omni-test"
    assert "general.alignment" not in gf.metadata  # default alignment is implied


def test_metadata_seen_by_gguf_py(round_trip: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = round_trip
    r = gguf.GGUFReader(path)
    for key, (value, _, vtype) in EXPECTED_METADATA.items():
        field = r.get_field(key)
        assert field is not None, key
        assert field.types[0] == vtype, key
        got = field.contents()
        if isinstance(value, float):
            assert got == pytest.approx(value, rel=1e-7 if vtype == GGUFValueType.FLOAT32 else 0), key
        elif isinstance(value, list) and value and isinstance(value[0], float):
            assert got == pytest.approx(value, rel=1e-7), key
        else:
            assert got == value, key
    assert r.get_field("general.architecture").contents() == "omni-test"


def test_tensors_round_trip(round_trip: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, inputs = round_trip
    gf = read_gguf(path)
    assert [t.name for t in gf.tensors] == list(inputs)
    for (gt, shape, tol), (name, x) in zip(ROUND_TRIP, inputs.items()):
        t = gf.tensor(name)
        assert t.ggml_type == gt
        assert t.shape == shape
        assert t.n_elements == x.size
        assert t.n_bytes == math.prod(shape[:-1]) * type_info(gt).row_bytes(shape[-1])
        assert t.offset % gf.alignment == 0

        n_per_row = shape[-1]
        rows = x.size // n_per_row
        intended = encoders.encode(x.reshape(rows, n_per_row), gt)
        np.testing.assert_array_equal(load_raw(gf, name), intended, err_msg=name)

        y = load_tensor(gf, name)
        assert y.dtype == np.float32 and y.shape == shape
        if gt == GGMLType.F32:
            np.testing.assert_array_equal(y, x)
        elif gt == GGMLType.F16:
            np.testing.assert_array_equal(y, x.astype(np.float16).astype(np.float32))
        elif gt == GGMLType.BF16:
            np.testing.assert_allclose(y, x, rtol=2**-8)
        else:
            # Exactly the values the encoder chose, and those are a fair approximation of the input.
            chosen = encoders.quantize(x.reshape(rows, n_per_row), gt).values().reshape(shape)
            np.testing.assert_array_equal(y, chosen, err_msg=name)
            err = np.abs(y - x).max() / np.abs(x).max()
            assert err <= tol, f"{name}: relative error {err} > {tol}"


def test_tensors_seen_by_gguf_py(round_trip: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, inputs = round_trip
    r = gguf.GGUFReader(path)
    by_name = {t.name: t for t in r.tensors}
    for (gt, shape, _), (name, x) in zip(ROUND_TRIP, inputs.items()):
        t = by_name[name]
        assert int(t.tensor_type) == int(gt)
        assert tuple(int(d) for d in t.shape) == tuple(reversed(shape))  # ggml ne order
        if gt != GGMLType.Q1_0:  # gguf-py has no Q1_0 dequantizer
            ours = load_tensor(path, name).reshape(-1)
            np.testing.assert_array_equal(gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1), ours)
    assert r.data_offset == read_gguf(path).data_offset


def test_ggml_decodes_what_we_read(round_trip: tuple[Path, dict[str, np.ndarray]]) -> None:
    from omnimodel import _runtime as runtime
    path, inputs = round_trip
    gf = read_gguf(path)
    for (gt, shape, _), name in zip(ROUND_TRIP, inputs):
        if gt == GGMLType.F32:
            continue  # ggml has no to_float for the type that is already float
        by_ggml = runtime.ggml_dequantize(int(gt), load_raw(gf, name), shape[-1])
        np.testing.assert_array_equal(load_tensor(gf, name).reshape(by_ggml.shape), by_ggml, err_msg=name)


def test_provenance(round_trip: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = round_trip
    gf = read_gguf(path)
    md = gf.metadata
    assert md["omnimodel.version"] == omnimodel.__version__
    assert md["omnimodel.method"] == "rtn"
    assert md["omnimodel.target_bpw"] == pytest.approx(4.25)
    matrices = [t for t in gf.tensors if len(t.shape) >= 2]
    bpw = 8 * sum(t.n_bytes for t in matrices) / sum(t.n_elements for t in matrices)
    bpw_total = 8 * sum(t.n_bytes for t in gf.tensors) / sum(t.n_elements for t in gf.tensors)
    assert md["omnimodel.achieved_bpw"] == pytest.approx(bpw, rel=1e-6)
    assert md["omnimodel.achieved_bpw_total"] == pytest.approx(bpw_total, rel=1e-6)
    assert gf.metadata_types["omnimodel.achieved_bpw"] == "f32"
    # Q4_K holds the most matrix elements (2048), so the file reads as llama.cpp's Q4_K_M.
    assert md["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_K_M
    assert md["general.quantization_version"] == gguf.GGML_QUANT_VERSION


def test_all_f32_file_type_and_custom_alignment(tmp_path: Path) -> None:
    path = tmp_path / "f32.gguf"
    with GGUFModelWriter(path, "omni-test", alignment=64) as w:
        w.add_tensor("a", _weights((3, 5)), "F32")
        w.add_tensor("b", _weights((7,)), GGMLType.F32)
        w.add_tensor("c", 2.0, "f32")
    gf = read_gguf(path)
    assert gf.metadata["general.file_type"] == gguf.LlamaFileType.ALL_F32
    assert "general.quantization_version" not in gf.metadata
    assert gf.metadata["general.alignment"] == 64 and gf.alignment == 64
    assert gf.metadata["omnimodel.method"] == "none" and "omnimodel.target_bpw" not in gf.metadata
    assert gf.data_offset % 64 == 0 and all(t.offset % 64 == 0 for t in gf.tensors)
    assert gf.tensor("c").shape == (1,)
    r = gguf.GGUFReader(path)
    assert r.alignment == 64
    np.testing.assert_array_equal(r.tensors[1].data, load_tensor(gf, "b"))


def test_add_encoded_and_types_gguf_py_lacks(tmp_path: Path) -> None:
    path = tmp_path / "enc.gguf"
    x = _weights((2, 32))
    q8 = encoders.encode(x, GGMLType.Q8_0)
    q2_0 = RNG.integers(0, 256, size=(3, 2 * 18), dtype=np.uint8)  # Q2_0 is newer than gguf-py 0.19
    with GGUFModelWriter(path, "omni-test") as w:
        w.add_encoded("q8", q8, "Q8_0", (2, 32))
        w.add_encoded("q2", q2_0.tobytes(), GGMLType.Q2_0, [3, 128])
        with pytest.raises(GGUFWriteError, match="'bad'.*takes 68 bytes, got 67"):
            w.add_encoded("bad", q8.reshape(-1)[:-1], "Q8_0", (2, 32))
    gf = read_gguf(path)
    assert gf.tensor("q2").ggml_type == GGMLType.Q2_0 and gf.tensor("q2").shape == (3, 128)
    np.testing.assert_array_equal(load_raw(gf, "q2"), q2_0)
    np.testing.assert_array_equal(load_raw(gf, "q8"), q8)
    assert gf.metadata["general.file_type"] == 41  # llama_ftype MOSTLY_Q2_0: most elements are Q2_0


def test_torch_tensors_are_accepted(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    t = torch.arange(64, dtype=torch.bfloat16).reshape(2, 32)
    path = tmp_path / "torch.gguf"
    with GGUFModelWriter(path, "omni-test") as w:
        w.add_tensor("t", t, "F32")
    np.testing.assert_array_equal(load_tensor(path, "t"), np.arange(64, dtype=np.float32).reshape(2, 32))


# ---------------------------------------------------------------------- errors


def test_tensor_errors_name_the_tensor(tmp_path: Path) -> None:
    w = GGUFModelWriter(tmp_path / "e.gguf", "omni-test")
    x = _weights((2, 64))
    w.add_tensor("x" * 63, x, "F16")  # the longest name ggml accepts
    with pytest.raises(GGUFWriteError, match="is 64 bytes long; ggml allows at most 63"):
        w.add_tensor("y" * 64, x, "F16")
    w.add_tensor("dup", x, "F16")
    with pytest.raises(GGUFWriteError, match="tensor 'dup' was already added"):
        w.add_tensor("dup", x, "Q8_0")
    with pytest.raises(ValueError, match="'odd'.*multiple of 256"):
        w.add_tensor("odd", _weights((2, 96)), "Q4_K")
    with pytest.raises(GGUFWriteError, match="'five'.*5 dimensions"):
        w.add_tensor("five", np.zeros((1, 1, 1, 1, 32)), "F32")
    with pytest.raises(GGUFWriteError, match="'empty'.*empty"):
        w.add_tensor("empty", np.zeros((0, 32)), "F32")
    with pytest.raises(GGUFWriteError, match="'strs'.*real-valued"):
        w.add_tensor("strs", np.array(["a"]), "F32")
    with pytest.raises(GGUFWriteError, match="'t'.*unknown GGML type name 'Q9_9'"):
        w.add_tensor("t", x, "Q9_9")
    path = w.finish()
    assert [t.name for t in read_gguf(path).tensors] == ["x" * 63, "dup"]
    with pytest.raises(GGUFWriteError, match="cannot add tensor 'late'.*already finished"):
        w.add_tensor("late", x, "F32")
    with pytest.raises(GGUFWriteError, match="already finished"):
        w.add_metadata("late.key", 1)
    with pytest.raises(GGUFWriteError, match="already finished"):
        w.finish()


def test_encoder_value_error_gets_the_tensor_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(x: np.ndarray, t: GGMLType, importance: object = None, scales: object = None) -> np.ndarray:
        raise ValueError("importance has the wrong length")

    monkeypatch.setattr(encoders, "encode", refuse)
    with GGUFModelWriter(tmp_path / "e.gguf", "omni-test") as w:
        with pytest.raises(GGUFWriteError, match=r"tensor 'w' \(Q8_0, shape \[2, 32\]\): importance has the wrong"):
            w.add_tensor("w", _weights((2, 32)), "Q8_0")


def test_metadata_errors(tmp_path: Path) -> None:
    w = GGUFModelWriter(tmp_path / "m.gguf", "omni-test")
    w.add_metadata("k", 1)
    with pytest.raises(GGUFWriteError, match="'k' was already added"):
        w.add_metadata("k", 2)
    with pytest.raises(GGUFWriteError, match="'general.architecture'.*arch="):
        w.add_string("general.architecture", "llama")
    with pytest.raises(GGUFWriteError, match="'omnimodel.method'.*method="):
        w.add_string("omnimodel.method", "rtn")
    with pytest.raises(GGUFWriteError, match="'general.file_type'.*computed"):
        w.add_uint32("general.file_type", 1)
    with pytest.raises(GGUFWriteError, match="'small'.*300 does not fit in uint8"):
        w.add_uint8("small", 300)
    with pytest.raises(GGUFWriteError, match="'neg'.*does not fit in uint32"):
        w.add_uint32("neg", -1)
    with pytest.raises(GGUFWriteError, match="'mixed'.*one type"):
        w.add_array("mixed", [1, "a"])
    with pytest.raises(GGUFWriteError, match="'none'.*empty arrays"):
        w.add_array("none", [])
    with pytest.raises(GGUFWriteError, match="'nested'.*nested arrays"):
        w.add_metadata("nested", [[1], [2]])
    with pytest.raises(GGUFWriteError, match="'obj'.*dict cannot be stored"):
        w.add_metadata("obj", {"a": 1})
    with pytest.raises(GGUFWriteError, match="'huge'.*64 bits"):
        w.add_metadata("huge", 2**64)
    with pytest.raises(GGUFWriteError, match="'typo'.*unknown GGUF value type 'uint33'"):
        w.add_metadata("typo", 1, "uint33")
    w.abort()
    with pytest.raises(OmnimodelError, match="was aborted"):
        w.add_metadata("after", 1)
    assert _temp_leftovers(tmp_path) == [] and not (tmp_path / "m.gguf").exists()


def test_writer_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(GGUFWriteError, match="power of two"):
        GGUFModelWriter(tmp_path / "a.gguf", "omni-test", alignment=48)
    with pytest.raises(GGUFWriteError, match="does not exist"):
        GGUFModelWriter(tmp_path / "missing" / "a.gguf", "omni-test")
    with pytest.raises(GGUFWriteError, match="architecture"):
        GGUFModelWriter(tmp_path / "a.gguf", "")
    with pytest.raises(GGUFWriteError, match="method"):
        GGUFModelWriter(tmp_path / "a.gguf", "omni-test", method="")
    with pytest.raises(GGUFWriteError, match="target_bpw"):
        GGUFModelWriter(tmp_path / "a.gguf", "omni-test", target_bpw=-1)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- atomicity


def test_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_encode = encoders.encode
    calls = []

    def flaky(x: np.ndarray, t: GGMLType, importance: object = None, scales: object = None) -> np.ndarray:
        calls.append(t)
        if len(calls) == 2:
            raise RuntimeError("simulated encoder crash")
        return real_encode(x, t, importance=importance, scales=scales)

    monkeypatch.setattr(encoders, "encode", flaky)
    path = tmp_path / "model.gguf"
    with pytest.raises(RuntimeError, match="simulated"):
        with GGUFModelWriter(path, "omni-test") as w:
            w.add_tensor("a", _weights((4, 32)), "Q8_0")
            w.add_tensor("b", _weights((4, 32)), "Q8_0")
            w.add_tensor("c", _weights((4, 32)), "Q8_0")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"previous model")

    with pytest.raises(KeyError):
        with GGUFModelWriter(path, "omni-test") as w:
            w.add_tensor("a", _weights((4, 32)), "F16")
            raise KeyError("caller failed halfway")
    assert path.read_bytes() == b"previous model"
    assert _temp_leftovers(tmp_path) == []

    # A failure while finish() is copying the data is cleaned up the same way.
    import shutil

    def broken_copy(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", broken_copy)
    w = GGUFModelWriter(path, "omni-test")
    w.add_tensor("a", _weights((4, 32)), "F16")
    with pytest.raises(OSError, match="No space left"):
        w.finish()
    assert path.read_bytes() == b"previous model"
    assert _temp_leftovers(tmp_path) == []


def test_success_replaces_existing_file_with_normal_permissions(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"previous model")
    with GGUFModelWriter(path, "omni-test") as w:
        w.add_tensor("a", _weights((4, 32)), "F16")
    assert read_gguf(path).tensor("a").shape == (4, 32)
    assert _temp_leftovers(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_abandoned_writer_cleans_up(tmp_path: Path) -> None:
    w = GGUFModelWriter(tmp_path / "model.gguf", "omni-test")
    w.add_tensor("a", _weights((4, 32)), "F32")
    assert len(_temp_leftovers(tmp_path)) == 1  # the data spool
    del w
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_padded_matrix_counts_real_weights(tmp_path: Path) -> None:
    """A matrix stored zero-padded (a block type on a width it does not divide) records its real width,
    and bits per weight are counted per real weight, by the writer and by the reader."""
    from omnimodel.gguf.encoders import encode
    from omnimodel.gguf.reader import load_tensor, read_gguf

    w = np.random.default_rng(0).standard_normal((8, 80)).astype(np.float32)
    blocks = encode(np.pad(w, ((0, 0), (0, 176))), "Q4_K")
    path = tmp_path / "p.gguf"
    with GGUFModelWriter(path, "x") as out:
        t = out.add_encoded("m.weight", blocks, "Q4_K", (8, 256), real_width=80)
        assert t.n_weights == 640 and t.bpw == pytest.approx(8 * blocks.nbytes / 640)
        with pytest.raises(GGUFWriteError, match="rows of 300 pad to 512 for Q4_K, not 256"):
            out.add_encoded("bad.weight", blocks, "Q4_K", (8, 256), real_width=300)
    gf = read_gguf(path)
    rec = gf.tensor("m.weight")
    assert rec.real_width == 80 and rec.shape == (8, 256)
    assert gf.metadata["omnimodel.achieved_bpw"] == pytest.approx(8 * blocks.nbytes / 640)
    assert load_tensor(gf, "m.weight").shape == (8, 80)


# ---------------------------------------------------------------------- the stream writer


def _layout() -> list[tuple[str, GGMLType, tuple[int, ...], np.ndarray]]:
    rng = np.random.default_rng(7)
    return [
        (f"t{i}.{t.name.lower()}", t, shape, rng.standard_normal(shape).astype(np.float32))
        for i, (t, shape, _) in enumerate(ROUND_TRIP)
    ]


def _write_both(tmp_path: Path) -> tuple[Path, Path]:
    """The same tensors and metadata through both writers; the padded Q4_K matrix as pre-encoded blocks."""
    from omnimodel.gguf.encoders import encode

    padded = np.random.default_rng(8).standard_normal((8, 80)).astype(np.float32)
    blocks = encode(np.pad(padded, ((0, 0), (0, 176))), "Q4_K")
    spooled, streamed = tmp_path / "spool.gguf", tmp_path / "stream.gguf"
    with GGUFModelWriter(spooled, "omni-test", method="rtn", target_bpw=4.25) as w:
        w.add_string("test.str", "x")
        for name, t, _, x in _layout():
            w.add_tensor(name, x, t)
        w.add_encoded("p.weight", blocks, "Q4_K", (8, 256), real_width=80)
        w.add_array("test.vocab", [f"tok{i}" for i in range(100)])
    with GGUFStreamWriter(streamed, "omni-test", method="rtn", target_bpw=4.25) as s:
        s.add_string("test.str", "x")
        for name, t, shape, _ in _layout():
            s.declare(name, t, shape)
        s.declare("p.weight", "Q4_K", (8, 256), real_width=80)
        s.add_array("test.vocab", [f"tok{i}" for i in range(100)])
        for name, _, _, x in _layout():
            s.write_tensor(name, x)
        s.write_encoded("p.weight", blocks)
    return spooled, streamed


def test_stream_writer_writes_the_same_file(tmp_path: Path) -> None:
    spooled, streamed = _write_both(tmp_path)
    assert streamed.read_bytes() == spooled.read_bytes()
    gf = read_gguf(streamed)
    assert gf.tensor("p.weight").real_width == 80
    for name, _, shape, x in _layout():
        assert load_tensor(gf, name).shape == shape
    assert _temp_leftovers(tmp_path) == []


def test_stream_writer_has_no_spool(tmp_path: Path) -> None:
    """While data is written, the only temporary is the output itself, growing tensor by tensor."""
    path = tmp_path / "m.gguf"
    x = _weights((64, 256))
    with GGUFStreamWriter(path, "omni-test") as s:
        for i in range(3):
            s.declare(f"w{i}", "F32", x.shape)
        sizes = []
        for i in range(3):
            s.write_tensor(f"w{i}", x)
            (tmp,) = _temp_leftovers(tmp_path)
            sizes.append((tmp_path / tmp).stat().st_size)
    assert sizes[1] - sizes[0] == sizes[2] - sizes[1] == x.nbytes
    assert path.stat().st_size >= 3 * x.nbytes and _temp_leftovers(tmp_path) == []


def test_stream_writer_misuse_is_named_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"previous model")
    x = _weights((4, 32))
    with pytest.raises(GGUFWriteError, match="'b' was declared; the next to write is 'a'"):
        with GGUFStreamWriter(path, "omni-test") as s:
            s.declare("a", "F16", x.shape)
            s.declare("b", "F16", x.shape)
            s.write_tensor("b", x)
    with pytest.raises(GGUFWriteError, match="'c' was never declared"):
        with GGUFStreamWriter(path, "omni-test") as s:
            s.declare("a", "F16", x.shape)
            s.write_tensor("c", x)
    with pytest.raises(GGUFWriteError, match=r"declared with shape \[4, 64\], got \[4, 32\]"):
        with GGUFStreamWriter(path, "omni-test") as s:
            s.declare("a", "F16", (4, 64))
            s.write_tensor("a", x)
    with pytest.raises(GGUFWriteError, match="takes 256 bytes, got 10"):
        with GGUFStreamWriter(path, "omni-test") as s:
            s.declare("a", "F16", (4, 32))
            s.write_encoded("a", bytes(10))
    with pytest.raises(GGUFWriteError, match="1 declared tensor.s. never written, first 'b'"):
        with GGUFStreamWriter(path, "omni-test") as s:
            s.declare("a", "F16", x.shape)
            s.declare("b", "F16", x.shape)
            s.write_tensor("a", x)
    with pytest.raises(GGUFWriteError, match="already writing tensor data"):
        with GGUFStreamWriter(path, "omni-test") as s:
            s.declare("a", "F16", x.shape)
            s.write_tensor("a", x)
            s.add_string("late.key", "x")
    with pytest.raises(GGUFWriteError, match="rows of 300 pad to 512 for Q4_K, not 256"):
        GGUFStreamWriter(path, "omni-test").declare("p", "Q4_K", (8, 256), real_width=300)
    with pytest.raises(KeyError):
        with GGUFStreamWriter(path, "omni-test") as s:
            s.declare("a", "F16", x.shape)
            s.write_tensor("a", x)
            raise KeyError("caller failed halfway")
    gc.collect()
    assert path.read_bytes() == b"previous model"
    assert _temp_leftovers(tmp_path) == []


def test_abandoned_stream_writer_cleans_up(tmp_path: Path) -> None:
    s = GGUFStreamWriter(tmp_path / "model.gguf", "omni-test")
    s.declare("a", "F32", (4, 32))
    s.declare("b", "F32", (4, 32))
    s.write_tensor("a", _weights((4, 32)))
    assert len(_temp_leftovers(tmp_path)) == 1  # the output being written
    del s
    gc.collect()
    assert list(tmp_path.iterdir()) == []
