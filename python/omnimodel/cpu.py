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


__all__ = ["cpu_features", "describe"]
