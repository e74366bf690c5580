"""A convert output with its vision and language matrices re-encoded in another GGML type, for timing.

    PYTHONPATH=python python benchmarks/retyped.py OUT Q4_K OUT-q4k [--rest bf16]

Every 2-D matrix of the ViT blocks and of the Llama layers (what ``convert --bpw`` quantizes) is
rounded to nearest in ``TYPE`` by omnimodel's encoders (rows zero-padded to the type's block, as the
quantizer stores them); everything else keeps ``--rest``. The plan, plugin and validation report are
copied so ``omnimodel bench`` and ``benchmarks/knob_variants.py`` run it. Nothing here checks parity:
this is a speed fixture for types whose real conversion needs calibration data (``convert --bpw``).
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np

QUANTIZED = re.compile(r"^(vision_backbone\.\w+\.blocks\.\d+\.|language_model\.model\.layers\.\d+\.).*weight$")


class _Encoded:
    def __init__(self, ggml_type, data: np.ndarray, pad_to: int) -> None:
        self.ggml_type, self.data, self.pad_to = ggml_type, data, pad_to


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path)
    ap.add_argument("type")
    ap.add_argument("out", type=Path)
    ap.add_argument("--rest", default="bf16", help="outtype of the tensors left alone (default bf16)")
    args = ap.parse_args()

    from omnimodel.arch.openvla_oft import export as oft_export
    from omnimodel.convert import REPORT_FILE, _load_policy
    from omnimodel.gguf.encoders import encode
    from omnimodel.gguf.types import parse_type, type_info
    from omnimodel.validate.report import ValidationReport

    t = parse_type(args.type)
    block = type_info(t).block_size
    src = args.source.absolute()
    rep = ValidationReport.read_json(src / REPORT_FILE)
    ck = Path(rep.checkpoint or "")
    policy = _load_policy(ck if ck.is_absolute() else src / ck)
    encoded = {}
    for name, w in oft_export.exported_tensors(policy).items():
        w = np.asarray(w, np.float32)
        if w.ndim != 2 or not QUANTIZED.match(name):
            continue
        pad_to = -(-w.shape[1] // block) * block
        padded = np.zeros((w.shape[0], pad_to), np.float32)
        padded[:, : w.shape[1]] = w
        encoded[name] = _Encoded(t, encode(padded, t), pad_to)
    args.out.mkdir(parents=True, exist_ok=True)
    for item in ("plan.json", "validation_report.json", "sources", "plugin"):
        s = src / item
        (shutil.copytree if s.is_dir() else shutil.copy2)(s, args.out / item, **({"dirs_exist_ok": True} if s.is_dir() else {}))
    if not ck.is_absolute():  # a relative checkpoint (the demo's copy) travels with the output
        shutil.copytree(src / ck, args.out / ck, dirs_exist_ok=True)
    oft_export.write_gguf(policy, args.out / "model.gguf", args.rest, encoded=encoded, method="rtn")
    print(f"{args.out}: {len(encoded)} matrices as {t.name}, the rest {args.rest}")


if __name__ == "__main__":
    main()
