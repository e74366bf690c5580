"""The `omnimodel` command: --version, inspect (text and JSON) and clean failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import omnimodel
from omnimodel.cli.main import COMMANDS, main
from omnimodel.gguf import GGUFModelWriter


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m omnimodel ...` with the same omnimodel this test imported."""
    package_root = str(Path(omnimodel.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "omnimodel", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "small.gguf"
    rng = np.random.default_rng(3)
    with GGUFModelWriter(path, "omni-test", method="rtn", target_bpw=8.5) as w:
        w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(32000)])
        w.add_string("general.name", "tiny")
        w.add_tensor("blk.0.attn_q.weight", rng.standard_normal((64, 128)), "Q8_0")
        w.add_tensor("blk.0.attn_norm.weight", rng.standard_normal(128), "F32")
    return path


@pytest.fixture()
def corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(b"\x00" * 64)
    return path


def test_version_subprocess() -> None:
    proc = _run_module("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"omnimodel {omnimodel.__version__}")


def test_version_names_the_pinned_ggml(capsys: pytest.CaptureFixture[str]) -> None:
    # The runtime must have been built against the ggml that third_party/ggml pins.
    pin = json.loads((Path(__file__).resolve().parents[1] / "third_party" / "ggml" / "pin.json").read_text())
    assert main(["--version"]) == 0
    first, features = capsys.readouterr().out.splitlines()
    assert first == f"omnimodel {omnimodel.__version__} (ggml {pin['ggml_version']})"
    assert features.startswith("cpu features: ")  # tests/perf/test_cpu_features.py checks what it lists


def test_cmake_dir_points_at_the_package_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cmake-dir"]) == 0
    cmake_dir = Path(capsys.readouterr().out.strip())
    assert cmake_dir.name == "omnimodel" and cmake_dir.parent.name == "cmake"


def test_inspect_text(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(small)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "blk.0.attn_q.weight" in line)
    assert row.split()[1:4] == ["Q8_0", "[64,", "128]"] and row.split()[-1] == "8.500"
    assert "[32000 strings]" in out and "tok31999" not in out
    assert "omnimodel.method" in out and "rtn" in out
    assert "general.file_type" in out and "MOSTLY_Q8_0" in out
    assert "tensors:          2" in out
    # (64*128*8.5 + 128*32) / (64*128 + 128) bits over everything; 8.5 over the single (Q8_0) matrix,
    # named as everywhere else (provenance.BpwFigures)
    assert "quantized 8.500 bpw (the --bpw measure, target 8.5), matrices 8.500 bpw, file 8.862 bpw" in out
    assert f"{small.stat().st_size:,} bytes" in out
    by_type = out.split("by type:")[1]
    assert "Q8_0" in by_type and "8,192" in by_type and "F32" in by_type


def test_inspect_json(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--json", str(small)]) == 0
    report = json.loads(capsys.readouterr().out)
    q = report["tensors"][0]
    assert q == {"name": "blk.0.attn_q.weight", "type": "Q8_0", "shape": [64, 128], "n_elements": 8192,
                 "n_bytes": 8704, "bpw": 8.5}
    assert report["totals"]["n_tensors"] == 2 and report["totals"]["file_size"] == small.stat().st_size
    assert report["totals"]["bpw_matrices"] == 8.5 and report["totals"]["bpw_quantized"] == 8.5
    assert report["metadata"]["tokenizer.ggml.tokens"] == "[32000 strings]"
    assert report["metadata_types"]["tokenizer.ggml.tokens"] == "arr[str]"
    assert report["metadata"]["omnimodel.achieved_bpw"] == pytest.approx(8.5)
    assert {row["type"]: row["count"] for row in report["by_type"]} == {"F32": 1, "Q8_0": 1}


def test_inspect_corrupt_file_exits_2_cleanly(corrupt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(corrupt)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert str(corrupt) in lines[0] and "not a GGUF file: bad magic" in lines[0]


def test_inspect_corrupt_file_subprocess(corrupt: Path) -> None:
    proc = _run_module("inspect", str(corrupt))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "bad magic" in proc.stderr and str(corrupt) in proc.stderr


def test_inspect_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.gguf"
    assert main(["inspect", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"omnimodel inspect: error: {missing}: No such file or directory"


def test_debug_shows_the_traceback(corrupt: Path) -> None:
    from omnimodel.errors import GGUFFormatError

    with pytest.raises(GGUFFormatError):
        main(["inspect", str(corrupt), "--debug"])
    with pytest.raises(GGUFFormatError):
        main(["--debug", "inspect", str(corrupt)])


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "inspect" in capsys.readouterr().err


def test_commands_are_registered_once() -> None:
    names = [c.name for c in COMMANDS]
    assert "inspect" in names and len(names) == len(set(names))


def test_sigterm_during_convert_leaves_nothing_behind(tmp_path) -> None:
    """A kill (SIGTERM) while converting unwinds like Ctrl-C: 'interrupted', exit 130, no staging
    directory and no output left in the destination's folder."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "omnimodel", "convert", "openvla-oft", "--demo", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.partial-") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "convert ended before its staging directory appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    # 130 from main's KeyboardInterrupt path; the interpreter reports -SIGINT instead when the interrupt
    # reaches it again at shutdown (seen under load) -- the cleanup has run either way. Without the
    # handler the process dies by SIGTERM (-15) and the staging directory stays.
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err)
    assert "omnimodel: interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_runtime_refusal_mid_convert_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    """The compiled runtime raising inside a command (here: running the graph it just built) is a one-line
    error with exit 2, and convert leaves neither output nor staging behind."""
    from omnimodel import _runtime
    from omnimodel.cli.main import main
    from omnimodel.validate.parity import ParityCheck

    def refuse(self, *args, **kwargs):
        raise _runtime.RuntimeStatusError("tensor 'x.weight' is missing from 'model.gguf' (architecture demo)")

    monkeypatch.setattr(ParityCheck, "run_runtime", refuse)
    out = tmp_path / "out"
    assert main(["convert", "openvla-oft", "--demo", "--outtype", "f32", "--out", str(out)]) == 2
    # stderr also carries the plugin build's progress lines; apart from them the error is the only line
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("[omnimodel.build]")]
    assert err == ["omnimodel convert: error: the runtime: tensor 'x.weight' is missing from 'model.gguf' "
                   "(architecture demo)"]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_convert_speed_hint_names_the_kept_matrices_of_a_quantized_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    """A quantized conversion keeps its projector / patch embeddings / head at --outtype (default f16): on an
    AVX512-BF16 CPU convert says bf16 multiplies them faster; elsewhere, or at bf16 already, it says nothing."""
    import omnimodel.cpu
    from omnimodel.cli.convert_cmd import _speed_hint

    monkeypatch.setattr(omnimodel.cpu, "cpu_features", lambda: {"avx512_bf16": True})
    assert "unquantized" in (_speed_hint("f16", quantized=True) or "")
    assert "unquantized" not in (_speed_hint("f16") or "unquantized")  # the float conversion's own hint
    assert _speed_hint("bf16", quantized=True) is None
    monkeypatch.setattr(omnimodel.cpu, "cpu_features", lambda: {"avx512_bf16": False})
    assert _speed_hint("f16", quantized=True) is None
