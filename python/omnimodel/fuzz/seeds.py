"""Seed files for the fuzzer: the toy models `omnimodel doctor` writes, a convert output (the demo
policy's GGUF and its generated graph plugin), and a real llama.cpp GGUF that a registry package
ships (SmolLM2-135M-Instruct, reduced to its metadata and first block so a mutant costs kilobytes of
writing, not 100 MB)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from omnimodel.fuzz.mutate import GGML_TYPES, Layout, parse, serialise
from omnimodel.fuzz.run import Seed

#: The toy types: every family the allocator can pick (float, legacy, K, IQ, 1-/2-bit).
TOY_TYPES = ("F32", "F16", "Q8_0", "Q4_K", "Q2_K", "IQ4_NL", "Q2_0", "Q1_0")


def toy_seeds(types: tuple[str, ...] = TOY_TYPES) -> list[Seed]:
    from omnimodel.arch import omni_mlp
    from omnimodel.gguf.types import parse_type

    cfg = omni_mlp.MLPConfig(widths=(256, 256, 256), norm="layer", activation="gelu")
    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in types:
            t = parse_type(name)
            path = Path(tmp) / f"{name}.gguf"
            omni_mlp.write_gguf(omni_mlp.random_mlp(cfg, t, seed=int(t)), path)
            seeds.append(Seed(f"toy-{name.lower()}", path.read_bytes()))
    return seeds


def convert_output_seed(out_dir: Path, name: str = "demo") -> Seed:
    """A `omnimodel convert` output directory's model.gguf with its plugin."""
    plugins = sorted((out_dir / "plugin").glob("*.so"))
    if not plugins:
        raise FileNotFoundError(f"{out_dir}/plugin has no .so: not a convert output")
    return Seed(name, (out_dir / "model.gguf").read_bytes(), str(plugins[-1]))


def _tensor_bytes(ttype: int, ne: list[int]) -> int:
    blk, size = GGML_TYPES[ttype]
    n = 1
    for d in ne[1:]:
        n *= d
    return n * (ne[0] // blk * size)


def slim(lay: Layout, keep) -> Layout:
    """The layout with only the tensors `keep(name)` accepts, data repacked at the alignment."""
    tensors, chunks, offset = [], [], 0
    for t in lay.tensors:
        if not keep(t.name.decode()):
            continue
        n = _tensor_bytes(t.type, t.ne)
        chunks.append(bytes(lay.data[t.offset : t.offset + n]) + bytes((-n) % lay.alignment))
        tensors.append(replace(t, offset=offset))
        offset += n + (-n) % lay.alignment
    return replace(lay, tensors=tensors, data=b"".join(chunks))


def llama_seed() -> Seed:
    from omnimodel.arch.pretrained_llama import fetch_gguf

    import mmap

    # mapped, not read: the fuzzer's parent forks thousands of children and must stay small
    with open(fetch_gguf(), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            small = slim(parse(view), lambda n: n.startswith("blk.0.") or n == "output_norm.weight")
            data = serialise(small)
        finally:
            small = None
            view.release()
    return Seed("smollm2-q4_1", data)
