"""Where the installed package keeps the C library, its header and its CMake package config.

Robot code that links the runtime from C or C++ points CMake here:
    cmake -Domnimodel_DIR="$(omnimodel --cmake-dir)" ...
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent


def include_dir() -> Path:
    return PACKAGE_ROOT / "include"


def library_dir() -> Path:
    return PACKAGE_ROOT / "lib"


def cmake_dir() -> Path:
    return library_dir() / "cmake" / "omnimodel"
