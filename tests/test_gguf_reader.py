"""read_gguf on good and damaged files: every damage is a GGUFFormatError with a specific message."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from omnimodel.errors import GGUFFormatError
from omnimodel.gguf import GGMLType, GGUFModelWriter, TensorNotFoundError, load_tensor, read_gguf, read_gguf_bytes

# Names chosen so they occur exactly once in the file, which lets the tests find their tensor infos.
FIRST, SECOND = "layer.first", "layer.secnd"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("good") / "good.gguf"
    rng = np.random.default_rng(7)
    with GGUFModelWriter(path, "omni-test", alignment=64) as w:
        w.add_string("test.name", "reader fixture")
        w.add_array("test.vocab", [f"t{i}" for i in range(50)])
        w.add_array("test.scores", np.linspace(0, 1, 50, dtype=np.float32))
        w.add_tensor(FIRST, rng.standard_normal((4, 64)), "Q8_0")
        w.add_tensor(SECOND, rng.standard_normal((2, 3, 32)), "F32")
    return path.read_bytes()


def _write(tmp_path: Path, blob: bytes, name: str = "bad.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def _error(tmp_path: Path, blob: bytes) -> GGUFFormatError:
    path = _write(tmp_path, blob)
    with pytest.raises(GGUFFormatError) as info:
        read_gguf(path)
    err = info.value
    assert err.path == str(path) and str(path) in str(err) and err.reason in str(err)
    assert "\n" not in str(err)
    return err


def _patch(blob: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(blob)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def _tensor_info_at(blob: bytes, name: str) -> tuple[int, int]:
    """(offset of the n_dims field, n_dims) for the named tensor's info."""
    at = blob.index(name.encode()) + len(name)
    return at, struct.unpack_from("<I", blob, at)[0]


def _type_field(blob: bytes, name: str) -> int:
    at, n_dims = _tensor_info_at(blob, name)
    return at + 4 + 8 * n_dims


def test_good_file(tmp_path: Path, good: bytes) -> None:
    gf = read_gguf(_write(tmp_path, good, "good.gguf"))
    assert gf.version == 3 and gf.alignment == 64 and gf.file_size == len(good)
    assert gf.metadata["test.name"] == "reader fixture"
    assert gf.metadata["test.scores"][-1] == 1.0 and len(gf.metadata["test.vocab"]) == 50
    first, second = gf.tensors
    assert (first.name, first.ggml_type, first.shape, first.n_bytes) == (FIRST, GGMLType.Q8_0, (4, 64), 4 * 2 * 34)
    assert (second.ggml_type, second.shape, second.ne, second.n_elements) == (GGMLType.F32, (2, 3, 32), (32, 3, 2), 192)
    assert second.offset == 320  # 272 bytes of Q8_0 padded to 64
    assert gf.data_offset % 64 == 0
    assert load_tensor(gf, SECOND).shape == (2, 3, 32)
    with pytest.raises(TensorNotFoundError, match="no tensor named 'missing'"):
        load_tensor(gf, "missing")
    assert read_gguf_bytes(good).metadata == gf.metadata


def test_bad_magic(tmp_path: Path, good: bytes) -> None:
    err = _error(tmp_path, b"PK\x03\x04" + good[4:])
    assert err.reason == "not a GGUF file: bad magic b'PK\\x03\\x04' (expected b'GGUF')"


@pytest.mark.parametrize("blob", [b"", b"GG"])
def test_tiny_files(tmp_path: Path, blob: bytes) -> None:
    assert "not a GGUF file: only" in _error(tmp_path, blob).reason


@pytest.mark.parametrize(
    ("version", "message"),
    [(1, "unsupported GGUF version 1"), (99, "unsupported GGUF version 99"), (3 << 24, "big-endian")],
)
def test_bad_version(tmp_path: Path, good: bytes, version: int, message: str) -> None:
    assert message in _error(tmp_path, _patch(good, 4, "<I", version)).reason


def test_truncated_at_several_points(tmp_path: Path, good: bytes) -> None:
    ti_first, _ = _tensor_info_at(good, FIRST)
    gf = read_gguf_bytes(good)
    cuts = {
        10: "truncated file: the tensor count needs 8 bytes at offset 8 but only 2 remain",
        30: "metadata",  # inside the first key
        good.index(b"test.vocab") + 20: "metadata 'test.vocab'",
        ti_first + 6: f"tensor {FIRST!r}",
        gf.data_offset: f"tensor {FIRST!r} data runs past the end of the file: needs 272 bytes at offset {gf.data_offset} but only 0",
        len(good) - 1: f"tensor {SECOND!r} data runs past the end of the file",
    }
    for cut, message in cuts.items():
        reason = _error(tmp_path, good[:cut]).reason
        assert message in reason, (cut, reason)
        assert "truncated" in reason or "past the end" in reason, (cut, reason)


def test_every_truncation_is_a_format_error(good: bytes) -> None:
    # Whatever the cut, never a struct.error / IndexError / UnicodeDecodeError.
    for cut in range(len(good)):
        with pytest.raises(GGUFFormatError):
            read_gguf_bytes(good[:cut])


def test_random_corruption_is_a_format_error_or_parses(good: bytes) -> None:
    rng = np.random.default_rng(0)
    header_end = read_gguf_bytes(good).data_offset
    for _ in range(300):
        blob = bytearray(good)
        for at in rng.integers(0, header_end, size=3):
            blob[at] = rng.integers(0, 256)
        try:
            read_gguf_bytes(bytes(blob))
        except GGUFFormatError:
            pass


def test_unknown_type_id(tmp_path: Path, good: bytes) -> None:
    at = _type_field(good, SECOND)
    assert _error(tmp_path, _patch(good, at, "<I", 99)).reason == f"tensor {SECOND!r} has unknown GGML type id 99"
    # Ids ggml retired (Q4_2 = 4) are unknown too.
    assert "unknown GGML type id 4" in _error(tmp_path, _patch(good, at, "<I", 4)).reason


def test_row_not_multiple_of_block(tmp_path: Path, good: bytes) -> None:
    at, _ = _tensor_info_at(good, FIRST)
    reason = _error(tmp_path, _patch(good, at + 4, "<Q", 48)).reason
    assert reason == f"tensor {FIRST!r} is Q8_0 but its rows hold 48 elements, not a multiple of the 32-element block"


def test_too_many_dims(tmp_path: Path, good: bytes) -> None:
    at, _ = _tensor_info_at(good, SECOND)
    assert "has 5 dimensions; ggml supports at most 4" in _error(tmp_path, _patch(good, at, "<I", 5)).reason


def test_tensor_data_past_end(tmp_path: Path, good: bytes) -> None:
    offset_field = _type_field(good, SECOND) + 4
    reason = _error(tmp_path, _patch(good, offset_field, "<Q", 1 << 20)).reason
    assert reason.startswith(f"tensor {SECOND!r} data runs past the end of the file: needs 768 bytes at offset")
    assert "but only 0 are available" in reason


def test_misaligned_offset(tmp_path: Path, good: bytes) -> None:
    offset_field = _type_field(good, SECOND) + 4
    reason = _error(tmp_path, _patch(good, offset_field, "<Q", 300)).reason
    assert reason == f"tensor {SECOND!r} data offset 300 is not a multiple of the alignment 64"


def test_overlapping_tensors(tmp_path: Path, good: bytes) -> None:
    offset_field = _type_field(good, SECOND) + 4
    reason = _error(tmp_path, _patch(good, offset_field, "<Q", 256)).reason
    assert reason == f"tensors {FIRST!r} and {SECOND!r} overlap in the data section"


def test_duplicate_tensor_name(tmp_path: Path, good: bytes) -> None:
    blob = good.replace(SECOND.encode(), FIRST.encode())
    assert _error(tmp_path, blob).reason == f"tensor {FIRST!r} appears twice in the tensor table"


def test_absurd_string_length(tmp_path: Path, good: bytes) -> None:
    reason = _error(tmp_path, _patch(good, 24, "<Q", 1 << 62)).reason  # the first key's length
    assert reason.startswith(f"metadata key #0 claims a length of {1 << 62} bytes at offset 24")
    assert "truncated or corrupt" in reason


def test_absurd_counts(tmp_path: Path, good: bytes) -> None:
    assert "tensor count 1152921504606846976" in _error(tmp_path, _patch(good, 8, "<Q", 1 << 60)).reason
    assert "metadata count 1152921504606846976" in _error(tmp_path, _patch(good, 16, "<Q", 1 << 60)).reason
    # The element count of the test.vocab array: key, u32 value type, u32 element type, then the count.
    at = good.index(b"test.vocab") + len("test.vocab") + 8
    reason = _error(tmp_path, _patch(good, at, "<Q", 1 << 61)).reason
    assert f"metadata 'test.vocab' element count {1 << 61}" in reason and "cannot fit" in reason


def test_unknown_value_type(tmp_path: Path, good: bytes) -> None:
    at = good.index(b"test.name") + len("test.name")
    assert _error(tmp_path, _patch(good, at, "<I", 13)).reason == "metadata 'test.name' has unknown value type id 13"


def test_bad_alignment_value(tmp_path: Path, good: bytes) -> None:
    at = good.index(b"general.alignment") + len("general.alignment") + 4
    reason = _error(tmp_path, _patch(good, at, "<I", 48)).reason
    assert reason == "general.alignment must be a non-zero power of two, found 48"


def test_invalid_utf8_key(tmp_path: Path, good: bytes) -> None:
    blob = good.replace(b"test.name", b"test.\xffame")
    assert "is not valid UTF-8" in _error(tmp_path, blob).reason
