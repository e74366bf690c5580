#!/usr/bin/env python3
"""`convert --method hbvla|sign|billm` on a real-width OpenVLA-OFT at reduced depth: parity, every stored bit.

    python benchmarks/hbvla_realwidth.py --work runs/hbvla_rw --vision-depth 2 --llm-layers 2 \\
        --jobs "hbvla 1.4,sign 1.2"

The checkpoint is ``real_width_spec(vision_depth, llm_layers, pretrained=True)`` (DINOv2-L + SigLIP-so400m
towers at 224 px, SmolLM2-135M's pretrained Llama), calibrated on a few random episodes that fit it
(``parity_realwidth.write_calibration``). Each job converts through the CLI, then ``omnimodel validate``
re-runs the parity check from the output directory; wall time and peak RSS of each command are recorded.
Prints one JSON record per job and writes them all to WORK/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_realwidth import (
    log,
    report_summary,
    run_cli,
    write_calibration,
    write_checkpoint,
)

PARTS = ("signs", "group_bits", "scales", "means", "permutation", "salient_idx", "salient_signs", "salient_scales",
         "salient_row_scales", "salient_means", "header", "padding", "fallback_bits")


def accounting_table(report: dict) -> str:
    """Where each stored bit goes (bits per weight by kind) for the first matrix of each shape in a
    convert's quant_report.json; the parts add up to the matrix's bytes in the GGUF."""
    seen, lines = set(), []
    head = "| matrix | shape | salient columns | " + " | ".join(PARTS) + " | total bpw |"
    lines += [head, "|" + "---|" * (len(PARTS) + 4)]
    for r in report["tensors"]:
        shape = tuple(r["shape"])
        if shape in seen or "bits" not in r:
            continue
        seen.add(shape)
        n = shape[0] * shape[1]
        short = r["name"].replace("vision_backbone.", "").replace("language_model.model.", "").replace(".weight", "")
        cells = [f"{r['bits'].get(k, 0) / n:.4f}" for k in PARTS]
        lines.append(f"| {short} | {shape[0]}x{shape[1]} | {r.get('n_salient', '-')} | " + " | ".join(cells)
                     + f" | {r['bits']['bpw']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--vision-depth", type=int, default=2)
    ap.add_argument("--llm-layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--jobs", default="hbvla 1.4", help="comma-separated 'METHOD BPW [ABLATION]'")
    ap.add_argument("--table", type=Path, metavar="QUANT_REPORT",
                    help="only print the bit accounting table of a convert's quant_report.json")
    args = ap.parse_args(argv)
    if args.table is not None:
        print(accounting_table(json.loads(args.table.read_text())), end="")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt = write_checkpoint(args.work, args)
    calib = write_calibration(args.work, ckpt)
    results = {}
    for job in args.jobs.split(","):
        method, bpw, *abl = job.split()
        name = "_".join([method, bpw.replace(".", "p"), *abl])
        d = args.work / f"out_{name}"
        extra = ["--hbvla-ablation", abl[0]] if abl else []
        log(f"convert {job} ...")
        conv = run_cli(["convert", "openvla-oft", "--checkpoint", str(ckpt), "--method", method, "--bpw", bpw,
                        "--calib", str(calib), "--out", str(d), "--force", "--keep-failed", "--threads",
                        str(args.threads), *extra], args.work / f"convert_{name}.log")
        rec: dict = {"convert": conv}
        if (d / "validation_report.json").is_file():
            rec["parity"] = report_summary(d)
            q = json.loads((d / "quant_report.json").read_text())
            rec["quant"] = {k: q[k] for k in ("vision_llm_bpw", "binarized_bpw", "vla_bpw", "total_bytes", "matrices",
                                              "bpw_by_kind")}
            rec["quant"]["config"] = {k: q["config"][k] for k in ("grouping", "salient_cap", "name")}
            val = run_cli(["validate", str(d), "--threads", str(args.threads)], args.work / f"validate_{name}.log")
            rec["validate"] = val
        results[job] = rec
        print(json.dumps({job: rec}, indent=1, default=str), flush=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
