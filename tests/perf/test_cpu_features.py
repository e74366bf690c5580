"""ggml is built as llama.cpp builds it for the CPU, and says so: a configuration regression (llamafile
or OpenMP dropped, a -march=native build that lost this host's SIMD) fails here, not in a benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnimodel import _runtime

# /proc/cpuinfo flag -> ggml's feature name (what the kernels were compiled to use)
_SIMD = {
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "bmi2": "bmi2",
    "avx512f": "avx512",
    "avx512_vbmi": "avx512_vbmi",
    "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "asimd": "neon",
    "asimddp": "dotprod",
}


def _host_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def test_llamafile_openmp_and_repack_are_compiled_in() -> None:
    f = _runtime.cpu_features()
    assert f["llamafile"] is True, f"llamafile's tinyBLAS is not compiled in: {f}"
    assert f["openmp"] is True, f"ggml runs its own thread pool, not OpenMP: {f}"
    assert f["repack"] is True, f"the CPU repack buffer type is not compiled in: {f}"
    assert isinstance(f["extra_buffer_types"], list)


def test_native_build_uses_every_simd_extension_this_host_has() -> None:
    f = _runtime.cpu_features()
    if not f["native"]:
        pytest.skip("portable build (OMNIMODEL_NATIVE=OFF): the kernels target a baseline CPU on purpose")
    host = _host_flags()
    if not host:
        pytest.skip("no /proc/cpuinfo flags to compare with")
    missing = sorted(ggml for flag, ggml in _SIMD.items() if flag in host and not f.get(ggml, False))
    assert not missing, f"this CPU has {missing} but the native ggml build does not use them: {f}"
    # x86 hosts with AVX2 get the repack kernels; they show up as an extra weight buffer type
    if "avx2" in host:
        assert "CPU_REPACK" in f["extra_buffer_types"]


def test_version_and_doctor_print_the_features(capsys) -> None:
    from omnimodel.cli.main import main, version_string

    text = version_string()
    assert "llamafile" in text and "openmp" in text, text
    assert main(["doctor", "--types", "F32"]) == 0
    out = capsys.readouterr().out
    assert "cpu features:" in out and "llamafile" in out
