"""A self-contained C/C++ project for one converted model: runtime sources, the model's architecture
sources, the GGUF and an example control loop, built with CMake and a compiler alone.

    write_standalone_project("robot_policy", "oft.gguf", [Path("cpp/src/archs/openvla_oft.cpp")])
    # robot_policy/
    #   CMakeLists.txt              libomnimodel (shared) + the control_loop example
    #   runtime/cpp/{include,src}   the runtime core (C API, GGUF loading, blocks, tokenizer, preprocessing)
    #   runtime/third_party/ggml/   the ggml pin: pin.json, fetch_ggml.py, ggml.cmake
    #   arch/                       the architecture sources given (they replace same-named built-ins)
    #   examples/control_loop.c     load, query, loop: observation -> omnimodel_predict_action -> print
    #   oft.gguf
    #   README.md

The runtime sources come from the installed package (``omnimodel/share/runtime``, put there by the
top-level CMakeLists.txt's install rules) or, in a source checkout, from the repository itself.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import omnimodel

_HERE = Path(__file__).resolve().parent
_FILES = _HERE / "standalone_project"
_GGML_FILES = ("pin.json", "fetch_ggml.py", "ggml.cmake")


class StandaloneError(RuntimeError):
    pass


def runtime_source_root() -> Path:
    """The folder holding cpp/include, cpp/src and third_party/ggml: installed share/ or the checkout."""
    candidates = [_HERE.parent / "share" / "runtime", _HERE.parents[2]]
    for root in candidates:
        if (root / "cpp" / "include" / "omnimodel.h").is_file() and (root / "third_party" / "ggml" / "pin.json").is_file():
            return root
    raise StandaloneError(
        "the runtime sources are missing: looked in " + ", ".join(str(c) for c in candidates)
        + " (a wheel ships them under omnimodel/share/runtime; reinstall the package)"
    )


def _ignore(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or n.endswith((".pyc", ".o", ".so"))]


def write_standalone_project(
    out_dir: str | os.PathLike[str], gguf_path: str | os.PathLike[str], arch_sources: Sequence[str | os.PathLike[str]]
) -> Path:
    """Write the project to ``out_dir`` (created; must be empty or absent) and return its path."""
    out = Path(out_dir)
    gguf = Path(gguf_path)
    if not gguf.is_file():
        raise StandaloneError(f"{gguf}: no such GGUF file")
    sources = [Path(s) for s in arch_sources]
    for s in sources:
        if not s.is_file():
            raise StandaloneError(f"{s}: no such architecture source")
    if out.exists() and any(out.iterdir()):
        raise StandaloneError(f"{out}: exists and is not empty")
    root = runtime_source_root()

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(root / "cpp" / "include", out / "runtime" / "cpp" / "include", ignore=_ignore)
    shutil.copytree(root / "cpp" / "src", out / "runtime" / "cpp" / "src", ignore=_ignore)
    (out / "runtime" / "third_party" / "ggml").mkdir(parents=True)
    for name in _GGML_FILES:
        shutil.copy2(root / "third_party" / "ggml" / name, out / "runtime" / "third_party" / "ggml" / name)
    (out / "arch").mkdir()
    for s in sources:
        shutil.copy2(s, out / "arch" / s.name)
    (out / "examples").mkdir()
    shutil.copy2(_FILES / "control_loop.c", out / "examples" / "control_loop.c")
    shutil.copy2(gguf, out / gguf.name)

    pin = (root / "third_party" / "ggml" / "pin.json").read_text()
    ggml_version = re.search(r'"ggml_version"\s*:\s*"([^"]+)"', pin)
    name = re.sub(r"[^A-Za-z0-9_]", "_", gguf.stem) or "policy"
    values = {
        "PROJECT_NAME": f"omnimodel_{name}",
        "VERSION": omnimodel.__version__,
        "GGUF": gguf.name,
        "GGML_VERSION": ggml_version.group(1) if ggml_version else "(see pin.json)",
    }
    text = (_FILES / "CMakeLists.txt.in").read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    (out / "CMakeLists.txt").write_text(text)
    (out / "README.md").write_text(
        f"# {values['PROJECT_NAME']}\n\n"
        f"The omnimodel runtime {values['VERSION']} with this model's architecture ({', '.join(s.name for s in sources)})"
        f" and the model `{gguf.name}`.\n\n"
        "```bash\n"
        "cmake -S . -B build -DOMNIMODEL_GGML_DIR=/path/to/ggml   # or leave it out: the pin is fetched once\n"
        "cmake --build build -j\n"
        f"./build/control_loop {gguf.name} \"put the black bowl on the plate\" --steps 3\n"
        "```\n\n"
        "`examples/control_loop.c` is the whole program; `runtime/cpp/include/omnimodel.h` documents the API.\n"
    )
    return out


__all__ = ["StandaloneError", "runtime_source_root", "write_standalone_project"]
