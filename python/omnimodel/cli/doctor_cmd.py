"""`omnimodel doctor`: prove this installation end to end on a small built-in model.

For each weight type it writes an omni-mlp GGUF with our encoders, runs it in the compiled runtime
and compares every named intermediate with numpy computing from the same stored weights. It is the
first thing to run on a new machine (a Jetson, a CI box): if it passes, encoders, GGUF writer, ggml
build and runtime agree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from omnimodel.cli.command import Command

# The float and classic types, then every type the --bpw allocator can pick (quant.allocate's
# candidates: the IQ and 1-/2-bit types a converted model actually ships), so a passing doctor vouches
# for every type a convert output may hold.
_BASE_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q4_0", "Q3_K", "Q2_K", "IQ4_XS", "Q1_0"]


def default_types() -> list[str]:
    from omnimodel.quant.allocate import DEFAULT_CANDIDATES

    return _BASE_TYPES + [t.name for t in DEFAULT_CANDIDATES if t.name not in _BASE_TYPES]


MIN_COSINE = 0.999


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--types", help="comma-separated GGML weight types to check (default: the float and classic "
                   "types and every type the --bpw allocator can pick)")
    p.add_argument("--threads", type=int, default=0, help="runtime CPU threads (default: all)")
    p.add_argument("--out", type=Path, help="keep the GGUF files in this directory")


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from omnimodel import _runtime
    from omnimodel.arch import omni_mlp
    from omnimodel.gguf.reader import read_gguf
    from omnimodel.gguf.types import parse_type

    types = [parse_type(t) for t in (args.types or ",".join(default_types())).split(",") if t.strip()]
    from omnimodel.cpu import describe

    print(f"omnimodel {_runtime.version()}, ggml {_runtime.ggml_version()}")
    print(f"cpu features: {describe()}")
    cfg = omni_mlp.MLPConfig(widths=(1024, 512, 256), norm="layer", activation="gelu")
    x = np.random.default_rng(0).standard_normal((8, cfg.widths[0])).astype(np.float32)

    out_dir = args.out
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="omnimodel-doctor-")
        out_dir = Path(tmp.name)
    out_dir.mkdir(parents=True, exist_ok=True)

    header = f"{'type':<8} {'bpw':>7} {'file KiB':>9} {'min cosine':>11} {'max rel err':>12} {'ms':>7}  result"
    print(header)
    print("-" * len(header))
    failures = 0
    backend = "?"
    try:
        for t in types:
            model = omni_mlp.random_mlp(cfg, t, seed=int(t))
            path = out_dir / f"omni-mlp-{t.name.lower()}.gguf"
            omni_mlp.write_gguf(model, path)
            info = read_gguf(path)
            weight = info.tensor("layers.0.weight")
            with _runtime.Model(str(path), n_threads=args.threads) as m:
                backend = m.backend_name
                t0 = time.perf_counter()
                got = m.run({"x": x}, capture=["*"])
                ms = (time.perf_counter() - t0) * 1e3
            ref = omni_mlp.reference_forward(model, x)
            cos, rel = 1.0, 0.0
            for name, want in ref.items():
                have = got[name].astype(np.float64)
                denom = np.linalg.norm(have) * np.linalg.norm(want)
                cos = min(cos, float(np.sum(have * want) / denom) if denom else 1.0)
                rel = max(rel, float(np.abs(have - want).max() / (np.abs(want).max() or 1.0)))
            ok = cos >= MIN_COSINE and set(ref) <= set(got)
            failures += not ok
            print(f"{t.name:<8} {weight.bpw:>7.3f} {path.stat().st_size / 1024:>9.1f} {cos:>11.6f} {rel:>12.2e} "
                  f"{ms:>7.2f}  {'ok' if ok else 'FAIL'}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"\nbackend {backend}; each row compares {len(ref)} named intermediates with numpy on the same stored weights")
    if args.out is not None:
        print(f"files kept in {out_dir} (try: omnimodel inspect {out_dir}/omni-mlp-q4_k.gguf)")
    if failures:
        print(f"doctor: {failures} type(s) FAILED (cosine < {MIN_COSINE})", file=sys.stderr)
        return 1
    print("doctor: all checks passed")
    return 0


COMMAND = Command(
    name="doctor",
    help="check this installation: encoders, GGUF writer, ggml build and runtime agree with numpy",
    add_arguments=_add_arguments,
    run=_run,
)
