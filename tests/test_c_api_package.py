"""Robot code's path: a C program built with CMake against the *installed* package."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from omnimodel.arch import omni_mlp
from omnimodel.paths import cmake_dir

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "c_list_tensors"


@pytest.fixture(scope="module")
def list_tensors(tmp_path_factory) -> Path:
    cmake = shutil.which("cmake")
    assert cmake, "cmake is needed to build the C example (pip install cmake)"
    assert (cmake_dir() / "omnimodelConfig.cmake").is_file(), (
        f"no CMake package at {cmake_dir()}: install omnimodel with `pip install .` before running this test"
    )
    build = tmp_path_factory.mktemp("c_example")
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
    subprocess.run(
        [cmake, "-S", str(EXAMPLE), "-B", str(build), f"-Domnimodel_DIR={cmake_dir()}", "-DCMAKE_BUILD_TYPE=Release"],
        check=True, capture_output=True, text=True, env=env,
    )
    subprocess.run([cmake, "--build", str(build)], check=True, capture_output=True, text=True, env=env)
    exe = build / "list_tensors"
    assert exe.is_file()
    return exe


def test_c_program_lists_tensors(list_tensors: Path, tmp_path: Path) -> None:
    model = omni_mlp.random_mlp(omni_mlp.MLPConfig(widths=(256, 128)), "Q4_K")
    path = tmp_path / "m.gguf"
    omni_mlp.write_gguf(model, path)
    proc = subprocess.run([str(list_tensors), str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "architecture: omni-mlp" in lines
    assert "tensors: 4" in lines
    # name, type, ne (ggml order), bytes
    assert "layers.0.weight\tq4_K\t256x128\t18432" in lines


def test_c_program_gets_an_error_code_for_a_bad_file(list_tensors: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(100))
    proc = subprocess.run([str(list_tensors), str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "error 3 (bad file format)" in proc.stderr and "bad magic" in proc.stderr
