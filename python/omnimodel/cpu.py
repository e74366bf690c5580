"""What the compiled ggml CPU backend uses: SIMD extensions, llamafile's tinyBLAS, OpenMP, weight repacking.

``omnimodel --version`` and ``omnimodel doctor`` print ``describe()``; tests/perf/test_cpu_features.py holds
the build to it (llamafile and OpenMP compiled in; a native build using every SIMD extension the host has).
"""

from __future__ import annotations

from typing import Any


def cpu_features() -> dict[str, Any] | None:
    """``omnimodel._runtime.cpu_features()``, or None without a loadable runtime."""
    try:
        from omnimodel import _runtime
    except (ImportError, OSError):
        return None
    get = getattr(_runtime, "cpu_features", None)
    try:
        return dict(get()) if get is not None else None
    except Exception:  # noqa: BLE001  --version must work even with a half-broken runtime build
        return None


def runs_omni_gemm(features: dict[str, Any] | None = None) -> bool:
    """Whether ``gemm=omni`` runs omnimodel's own int8 GEMMs here (cpp/src/gemm_*.cpp need AVX512 with
    VNNI and VBMI; elsewhere the knob falls back to ggml's kernels)."""
    f = cpu_features() if features is None else features
    return bool(f and f.get("avx512") and f.get("avx512_vnni") and f.get("avx512_vbmi"))


def describe(features: dict[str, Any] | None = None) -> str:
    """One line: 'avx2 avx512 ... llamafile openmp repack(CPU_REPACK) native' ('unknown' without a runtime)."""
    f = cpu_features() if features is None else features
    if f is None:
        return "unknown"
    build = ("llamafile", "openmp", "repack", "native")
    simd = [k for k, v in f.items() if v is True and k not in build]
    flags = [k if f.get(k) else f"no-{k}" for k in build]
    if f.get("repack") and f.get("extra_buffer_types"):
        flags[2] = f"repack({','.join(f['extra_buffer_types'])})"
    return " ".join(simd + flags)


__all__ = ["cpu_features", "describe", "runs_omni_gemm"]
