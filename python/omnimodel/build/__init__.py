"""Build a rendered architecture plugin: CMake configure + build of one source file.

    from omnimodel.build import build_plugin
    so = build_plugin("gen/", "gen/build")        # -> gen/build/omnimodel_openvla_oft_<hash>.so
    omnimodel._runtime.load_plugin(so)

It compiles against the installed package's CMake config (``omnimodel --cmake-dir``), or, from a
source checkout whose package has none, against the dev build tree's (``<repo>/build/cpp``, or
``$OMNIMODEL_BUILD_DIR/cpp``). Only the one generated file is compiled; libomnimodel is linked, not
rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from omnimodel.paths import cmake_dir

_REPO = Path(__file__).resolve().parents[3]


class PluginBuildError(RuntimeError):
    """Configuring or compiling a plugin failed; the message ends with the tool's output tail."""


def package_dir() -> Path:
    """The directory holding omnimodelConfig.cmake that a plugin builds against."""
    candidates = []
    if os.environ.get("OMNIMODEL_BUILD_DIR"):
        candidates.append(Path(os.environ["OMNIMODEL_BUILD_DIR"]) / "cpp")
    candidates += [cmake_dir(), _REPO / "build" / "cpp"]
    for c in candidates:
        if (c / "omnimodelConfig.cmake").is_file() and (c / "omnimodelTargets.cmake").is_file():
            return c
    raise PluginBuildError(
        "no omnimodel CMake package to build a plugin against (looked in "
        + ", ".join(str(c) for c in candidates)
        + "): `pip install .`, or configure and build the dev tree with `cmake -S . -B build`"
    )


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _run(cmd: list[str], what: str, cwd: Path, log=None) -> None:
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise PluginBuildError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                               f"{_tail(proc.stdout + proc.stderr)}")


def build_plugin(sources_dir: str | os.PathLike[str], build_dir: str | os.PathLike[str], *,
                 verbose: bool = True) -> Path:
    """Configure and build the plugin rendered in ``sources_dir``; returns the path of the library."""
    src, build = Path(sources_dir).resolve(), Path(build_dir).resolve()
    manifest_path = src / "plugin.json"
    if not manifest_path.is_file() or not (src / "CMakeLists.txt").is_file():
        raise PluginBuildError(f"{src}: no plugin.json / CMakeLists.txt; render(plan, out_dir) writes them")
    manifest = json.loads(manifest_path.read_text())
    cmake = shutil.which("cmake")
    if cmake is None:
        raise PluginBuildError("cmake is not on PATH (pip install cmake)")
    pkg = package_dir()
    build.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        if verbose:
            print(f"[omnimodel.build] {msg}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    say(f"configuring {manifest['architecture']} plugin against {pkg}")
    _run([cmake, "-S", str(src), "-B", str(build), f"-Domnimodel_DIR={pkg}", "-DCMAKE_BUILD_TYPE=Release"],
         "CMake configure", build)
    say(f"compiling {manifest['source']}")
    _run([cmake, "--build", str(build)], "compiling the plugin", build)
    suffix = ".dll" if os.name == "nt" else ".dylib" if sys.platform == "darwin" else ".so"
    lib = build / (manifest["library"] + suffix)
    if not lib.is_file():
        raise PluginBuildError(f"the build succeeded but {lib} is missing")
    say(f"built {lib.name} in {time.monotonic() - t0:.1f}s")
    return lib


__all__ = ["build_plugin", "package_dir", "PluginBuildError"]
