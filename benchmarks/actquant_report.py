"""Tables and plot from `actquant_eval.py`'s runs (imported by its `report` command).

Numbers are read from each configuration's eval.json (written by `omnimodel eval`) and quant report
(written by `omnimodel convert`); nothing here computes a metric itself except the ratios between them.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from actquant_eval import ABLATION, ABLATION_BUDGETS, BUDGETS, METHODS, ablation_key, summary

from omnimodel.simbench.confidence import PairingError, format_rate, format_ratio, paired_retention, pooled_retention


def load_runs(runs: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(runs.glob("*/eval.json")):
        out[p.parent.name] = json.loads(p.read_text())
    return out


def _f(v: float, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _success(r: dict) -> str:
    """The closed-loop rate with its Wilson 95 % interval."""
    cl = r["eval"].get("closed_loop") or {}
    tasks = cl.get("tasks", {}).values()
    n = sum(t["episodes"] for t in tasks)
    return format_rate(sum(t["successes"] for t in tasks), n) if n else "-"


def _retention(r: dict, fp: dict | None) -> str:
    """Success relative to full precision on the same episodes, with the paired bootstrap 95 % interval."""
    if fp is None or not r["eval"].get("closed_loop") or not fp["eval"].get("closed_loop"):
        return "-"
    try:
        ret = paired_retention(r["eval"]["closed_loop"], fp["eval"]["closed_loop"])
    except PairingError:
        return "- (not paired)"
    return format_ratio(ret.ratio, ret.ci95, "-")


def _task_header(runs: dict[str, dict]) -> str:
    for r in runs.values():
        tasks = (r["eval"].get("closed_loop") or {}).get("tasks")
        if tasks:
            return ", ".join(tasks)
    return "tasks"


def main_table(runs: dict[str, dict]) -> list[str]:
    fp = runs.get("fp32")
    lines = [
        f"| method | bpw (budget) | achieved bpw | closed-loop success [95 %] | retention vs FP [95 %] | per task "
        f"({_task_header(runs)}) | L1 to demos | L1 to FP policy | min parity cosine |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if fp:
        s = summary(fp)
        lines.append(f"| full precision (PyTorch fp32) | 32 | 32 | {_success(fp)} | | "
                     f"{', '.join(str(v) for v in s['tasks'].values())} | {_f(s['l1_gt'], '.4f')} | "
                     f"{'-' if math.isnan(s['l1_gt']) else 0} | - |")
    grid = [f"{m}-{b:g}" for b in BUDGETS for m in METHODS]
    # other methods run into the same directory (e.g. `grid --methods hbvla,sign --bpw 2`) follow the grid
    extra = sorted((k for k in runs if k not in grid and k != "fp32" and not k.startswith("ablation")
                    and runs[k]["config"].get("method")), key=lambda k: -(runs[k]["config"]["bpw"] or 0))
    for key in grid + extra:
        r = runs.get(key)
        if r is None:
            continue
        b = r["config"]["bpw"]
        # a variant row (extra convert flags: bias correction, another calibration draw) names its variant
        m = _label(r)
        s = summary(r)
        q = r.get("quant", {})
        par = r.get("parity", {})
        lines.append(
            f"| {m} | {b:g} | {_f(q.get('vision_llm_bpw'), '.3f')} | {_success(r)} | {_retention(r, fp)} | "
            f"{', '.join(str(v) for v in s['tasks'].values())} | {_f(s['l1_gt'], '.4f')} | {_f(s['l1_fp'], '.4f')} | "
            f"{_f(par.get('min_cosine'), '.5f')} |"
        )
    return lines + draw_rows(runs)


def _draws(runs: dict[str, dict]) -> dict[tuple[str, str], list[str]]:
    """(method, budget) -> its run keys over calibration draws: the default draw plus every ``+sN``
    variant of it (``actquant-2.5``, ``actquant+s1-2.5``, ...; a variant's draws likewise:
    ``actquant+nohsic-2.5``, ``actquant+nohsic+s1-2.5``), where there is more than one."""
    out: dict[tuple[str, str], list[str]] = {}
    for key in runs:
        m = re.fullmatch(r"([a-z0-9+]+?)(?:\+s\d+)?-([0-9.]+)", key)
        if m and not key.startswith("ablation"):
            out.setdefault((m.group(1), m.group(2)), []).append(key)
    return {k: sorted(v) for k, v in out.items() if len(v) > 1 and f"{k[0]}-{k[1]}" in v}


def _label(r: dict) -> str:
    """A row's method as the tables name it: the method, or its variant's label."""
    return (r["config"].get("label") if r["config"].get("flags") else None) or r["config"]["method"]


def draw_rows(runs: dict[str, dict]) -> list[str]:
    """One row per method and budget run with several calibration draws: the mean over the draws, with
    the task-stratified bootstrap interval of each episode's mean outcome (``pooled_retention``)."""
    fp = runs.get("fp32")
    if fp is None or not fp["eval"].get("closed_loop"):
        return []
    lines = []
    for (method, budget), keys in _draws(runs).items():
        loops = [runs[k]["eval"].get("closed_loop") for k in keys]
        if not all(loops):
            continue
        try:
            pooled = pooled_retention(loops, fp["eval"]["closed_loop"])
        except PairingError:
            continue
        bpw = [runs[k].get("quant", {}).get("vision_llm_bpw") for k in keys]
        achieved = _f(sum(bpw) / len(bpw), ".3f") if all(b is not None for b in bpw) else "-"
        per_task = [sum(t) / len(t) for t in zip(*(summary(runs[k])["tasks"].values() for k in keys))]
        lo, hi = pooled.rate_ci95
        ret = format_ratio(pooled.ratio, pooled.ci95, "-")
        lines.append(
            f"| **{_label(runs[f'{method}-{budget}'])}, mean of {len(keys)} calibration draws** | {budget} | {achieved} | "
            f"{100 * pooled.rate:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] (bootstrap) | {ret} | "
            f"{', '.join(f'{v:.1f}' for v in per_task)} | - | - | - |"
        )
    return lines


def _ratio(a: float, b: float) -> str:
    """a / b as "1.23x"; "-" without an open loop (closed-loop-only grids have no L1)."""
    return "-" if math.isnan(a) or math.isnan(b) else f"{a / b:.2f}x"


def ratio_table(runs: dict[str, dict]) -> list[str]:
    lines = [
        "| bpw | baseline | its L1 to FP / ActQuant's | its L1 to demos / ActQuant's | success: baseline vs ActQuant |",
        "|---|---|---|---|---|",
    ]
    for b in (3.0, 2.5):
        aq = runs.get(f"actquant-{b:g}")
        if aq is None:
            continue
        sa = summary(aq)
        for m in METHODS[1:]:
            r = runs.get(f"{m}-{b:g}")
            if r is None:
                continue
            s = summary(r)
            lines.append(
                f"| {b:g} | {m} | {_ratio(s['l1_fp'], sa['l1_fp'])} | {_ratio(s['l1_gt'], sa['l1_gt'])} | "
                f"{s['success']:.1f} % vs {sa['success']:.1f} % |"
            )
    return lines


def ablation_table(runs: dict[str, dict]) -> list[str]:
    lines = ["| step | " + " | ".join(f"{b:g} bpw: success, L1 to FP, Fisher-weighted error" for b in ABLATION_BUDGETS)
             + " |", "|---|" + "---|" * len(ABLATION_BUDGETS)]
    for i, (label, _m, _f_) in enumerate(ABLATION):
        cells = []
        for b in ABLATION_BUDGETS:
            key = ablation_key(i, b)
            r = runs.get(key)
            if r is None:
                cells.append("-")
                continue
            s = summary(r)
            fe = r.get("quant", {}).get("fisher_error")
            cells.append(f"{s['success']:.1f} %, {_f(s['l1_fp'], '.4f')}, {_f(fe, '.3g')}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def plot(runs: dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    fp = runs.get("fp32")
    for m in METHODS:
        xs, succ, err = [], [], []
        for bb in BUDGETS:
            r = runs.get(f"{m}-{bb:g}")
            if r is None:
                continue
            s = summary(r)
            xs.append(bb)
            succ.append(s["success"])
            err.append(s["l1_fp"])
        style = "-o" if m == "actquant" else "--."
        a.plot(xs, succ, style, label=m, linewidth=2.5 if m == "actquant" else 1.2)
        b.plot(xs, err, style, label=m, linewidth=2.5 if m == "actquant" else 1.2)
    if fp:
        a.axhline(summary(fp)["success"], color="k", linestyle=":", label="full precision")
    a.set_xlabel("bits per weight (vision + language matrices)")
    a.set_ylabel("closed-loop success (%)")
    a.invert_xaxis()
    a.legend(fontsize=8)
    b.set_xlabel("bits per weight (vision + language matrices)")
    b.set_ylabel("held-out L1 to the full-precision actions")
    b.set_yscale("log")
    b.invert_xaxis()
    title = _arch(runs)
    fig.suptitle(f"{title} demo policy (Meta-World, {len(summary(fp)['tasks']) if fp else '?'} tasks), "
                 "quantized GGUF run by the compiled runtime")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _arch(runs: dict[str, dict]) -> str:
    """The family the runs converted (older runs, before the field: OpenVLA-OFT's demo)."""
    for r in runs.values():
        if r["config"].get("arch"):
            return r["config"]["arch"]
    return "openvla-oft"


def _seed(fp: dict | None) -> str:
    return str(((fp or {}).get("eval", {}).get("closed_loop") or {}).get("config", {}).get("seed", "?"))


def write_report(runs_dir: Path, doc: str | None, plot_path: str | None, tag: str | None = None) -> None:
    """The tables (and plot) into ``doc`` between ``<!-- TAG:begin/end -->``; TAG defaults to the family's
    (OpenVLA-OFT's demo keeps the original ``actquant_eval``), so one doc can hold several grids."""
    runs = load_runs(runs_dir)
    arch = _arch(runs)
    # OpenVLA-OFT's demo block is a section of docs/quantization.md; a further OpenVLA-OFT grid under its own
    # --tag (mt9) sits in a section of its own, a level deeper; another family's block inside its own doc's
    # closed-loop section, two levels deeper
    if arch != "openvla-oft":
        h = "####"
    else:
        h = "##" if tag in (None, "actquant_eval") else "###"
    fp = runs.get("fp32")
    eps = summary(fp)["episodes"] if fp else "?"
    heldout = (fp or {}).get("eval", {}).get("open_loop")
    open_loop = (f" Open loop: {heldout.get('samples', '?')} queries on {heldout.get('episodes', '?')} held-out "
                 "expert episodes (`collect-demos --train 0 --calib 5 --seed 7000`): mean |a - a_demo| and mean "
                 "|a - a_FP| over the normalised action chunk." if heldout else " No open loop was run.")
    parts = [
        f"{h} Methods x budgets",
        "",
        f"Closed loop: {eps} episodes per configuration (seed {_seed(fp)}, the same layouts for every row)."
        f"{open_loop} Success with its Wilson 95 % interval; retention = "
        "success / full precision's on the same episodes, with the paired (task-stratified) bootstrap 95 % "
        "interval.",
        "",
        *main_table(runs),
        "",
    ]
    ratios = ratio_table(runs)
    if len(ratios) > 2:  # a header alone: no ActQuant row to compare with at those budgets
        parts += [f"{h} ActQuant against each baseline at 3 and 2.5 bpw", "", *ratios, ""]
    if any(k.startswith("ablation") for k in runs):
        parts += [f"{h} Ablation (paper Table 4)", "", *ablation_table(runs), ""]
    text = "\n".join(parts)
    if plot_path:
        plot(runs, plot_path)
    if doc:
        p = Path(doc)
        old = p.read_text() if p.is_file() else ""
        # one block per family, so one doc can hold several (OpenVLA-OFT's keeps its original marker)
        tag = tag or ("actquant_eval" if arch == "openvla-oft" else f"actquant_eval:{arch}")
        start, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
        block = f"{start}\n{text}\n{end}"
        if start in old and end in old:
            new = old[: old.index(start)] + block + old[old.index(end) + len(end):]
        else:
            new = old + ("\n" if old else "") + block + "\n"
        p.write_text(new)
    print(text)
