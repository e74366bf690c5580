"""`omnimodel export-llm SRC --out llm.gguf`: a converted model's Llama backbone as a llama.cpp GGUF.

The CLI knows no architecture: it reads SRC's ``general.architecture`` and hands over to that
architecture package's ``llm_export`` module (``omnimodel.arch.<arch>.llm_export.export_llm``), if it has one.
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

from omnimodel.cli.command import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", type=Path, help="a convert output directory or its model.gguf")
    p.add_argument("--out", type=Path, required=True, help="the llama-architecture GGUF to write")


def _exporter(src: Path):
    from omnimodel.convert import MODEL_FILE
    from omnimodel.errors import UsageError
    from omnimodel.gguf.reader import read_gguf

    path = src / MODEL_FILE if src.is_dir() else src
    if not path.is_file():
        raise UsageError(f"{src}: no such GGUF file or convert output directory")
    arch = read_gguf(path).architecture or ""
    package = arch.replace("-", "_")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", package):
        raise UsageError(f"{path}: architecture {arch!r} has no Llama backbone exporter")
    try:
        module = importlib.import_module(f"omnimodel.arch.{package}.llm_export")
    except ModuleNotFoundError:
        raise UsageError(f"{path}: architecture {arch!r} has no Llama backbone exporter") from None
    return module.export_llm


def _run(args: argparse.Namespace) -> int:
    result = _exporter(args.src)(args.src, args.out)
    print(result.summary())
    return 0


COMMAND = Command(
    name="export-llm",
    help="write a converted model's Llama backbone as a llama.cpp llama GGUF (same weights, any type)",
    add_arguments=_add_arguments,
    run=_run,
    description="Write the Llama backbone (token embedding, decoder layers, final norm) of a converted model "
    "as a llama-architecture GGUF that stock llama.cpp loads: llama.cpp's tensor names and llama.* metadata, "
    "the model's tokenizer, every weight byte for byte in its stored type (q/k rows reordered for llama.cpp's "
    "RoPE). For timing the same weights in llama-bench (benchmarks/llama_bench.py).",
)
